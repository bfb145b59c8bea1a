"""Noise models: the negative log-likelihood of one observation and its Fisher weight.

Every model is written per observation `y` with model prediction `mu` and, when the
model has one, a noise parameter on log scale `s` (`log sigma` for the continuous
models, `log phi` for the negative binomial's dispersion). The Fisher weight is
`E[(d nll / d mu)^2]`, the curvature that Fisher scoring (and, for least squares,
Gauss–Newton) uses for the model's predictions.
"""

import math

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from .._errors import short

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_TINY = 1e-10  # predictions of positive models are floored here before a log


def _pos(mu):
    return jnp.maximum(mu, _TINY)


class NoiseModel:
    # `curvature(y, mu, s)`: the weight Gauss–Newton steps use; the Fisher weight,
    # except where the likelihood has kinks
    """One observation's likelihood. `estimated`: the model has a noise parameter
    that is fitted (one per observable); `least_squares`: with `sigma=None` the
    model is plain least squares on `residual` with sigma pooled afterwards."""

    name = ""
    has_scale = True  # a sigma (or dispersion) parameter exists
    scale_name = "sigma"
    counts = False
    positive_data = False
    least_squares = False

    def curvature(self, y, mu, s):
        return self.fisher(mu, s)

    def check(self, ys: np.ndarray, observed: np.ndarray, where: str) -> None:
        data = ys[observed]
        if self.positive_data and np.any(data <= 0):
            bad = data[data <= 0][0]
            raise ValueError(
                f"`noise`='{self.name}' needs positive observations, but {where} "
                f"holds {bad!r}; drop or mask zeros, or use noise='normal'.")
        if self.counts and np.any((data < 0) | (data != np.round(data))):
            bad = data[(data < 0) | (data != np.round(data))][0]
            raise ValueError(
                f"`noise`='{self.name}' is a model of counts (whole numbers >= 0), but "
                f"{where} holds {bad!r}.")


class Normal(NoiseModel):
    name = "normal"
    least_squares = True

    def residual(self, y, mu):
        return y - mu

    def nll(self, y, mu, s):
        z = (y - mu) * jnp.exp(-s)
        return 0.5 * z * z + s + _HALF_LOG_2PI

    def fisher(self, mu, s):
        return jnp.exp(-2 * s) + 0 * mu


class LogNormal(NoiseModel):
    name = "lognormal"
    positive_data = True
    least_squares = True

    def residual(self, y, mu):
        return jnp.log(y) - jnp.log(_pos(mu))

    def nll(self, y, mu, s):
        z = (jnp.log(y) - jnp.log(_pos(mu))) * jnp.exp(-s)
        return 0.5 * z * z + s + jnp.log(y) + _HALF_LOG_2PI

    def fisher(self, mu, s):
        return jnp.exp(-2 * s) / _pos(mu) ** 2


class Laplace(NoiseModel):
    name = "laplace"

    def nll(self, y, mu, s):
        return jnp.abs(y - mu) * jnp.exp(-s) + s + math.log(2.0)

    def fisher(self, mu, s):
        return jnp.exp(-2 * s) + 0 * mu

    def curvature(self, y, mu, s):
        # iteratively reweighted least squares for |r|: weight 1 / (b |r|)
        r = jnp.abs(y - mu)
        return jnp.exp(-s) / jnp.maximum(r, 1e-6 * (jnp.abs(y) + 1.0))


class Poisson(NoiseModel):
    name = "poisson"
    has_scale = False
    counts = True

    def nll(self, y, mu, s):
        mu = _pos(mu)
        return mu - y * jnp.log(mu) + gammaln(y + 1)

    def fisher(self, mu, s):
        return 1.0 / _pos(mu)


class NegBinomial(NoiseModel):
    """Mean `mu`, dispersion `phi`: variance `mu + mu²/phi` (Poisson as phi -> inf)."""

    name = "negbinomial"
    scale_name = "dispersion"
    counts = True

    def nll(self, y, mu, s):
        mu, phi = _pos(mu), jnp.exp(s)
        log_pm = jnp.logaddexp(s, jnp.log(mu))  # log(phi + mu)
        return -(gammaln(y + phi) - gammaln(phi) - gammaln(y + 1)
                 + phi * (s - log_pm) + y * (jnp.log(mu) - log_pm))

    def fisher(self, mu, s):
        mu, phi = _pos(mu), jnp.exp(s)
        return phi / (mu * (phi + mu))


NOISE_MODELS = {m.name: m for m in (Normal(), LogNormal(), Laplace(), Poisson(),
                                    NegBinomial())}


def get_noise(noise) -> NoiseModel:
    if isinstance(noise, NoiseModel):
        return noise
    if noise not in NOISE_MODELS:
        raise ValueError(
            f"`noise`={short(noise)} is not a noise model; choose one of "
            f"{', '.join(repr(k) for k in NOISE_MODELS)}.")
    return NOISE_MODELS[noise]


def check_sigma(sigma, model: NoiseModel, n_obs_cols: int):
    """`sigma` as `None` (least squares, or estimated where there is no least-squares
    form), `"estimate"`, or known values `(K,)`. Returns `(mode, values)` with mode
    one of "ls", "known", "estimate", "none"."""
    if not model.has_scale:
        if sigma is not None:
            raise ValueError(
                f"`sigma`={short(sigma)} has no meaning for noise='{model.name}', "
                "whose variance is fixed by its mean; leave `sigma` unset.")
        return "none", None
    if model.scale_name == "dispersion":
        if sigma not in (None, "estimate"):
            raise ValueError(
                f"`sigma`={short(sigma)}: noise='negbinomial' estimates its dispersion "
                "(one per observable); leave `sigma` unset.")
        return "estimate", None
    if sigma is None:
        return ("ls" if model.least_squares else "estimate"), None
    if isinstance(sigma, str):
        if sigma != "estimate":
            raise ValueError(
                f"`sigma`={sigma!r} must be 'estimate', known positive values (one "
                "per observable), or None.")
        return "estimate", None
    values = np.asarray(sigma, dtype=np.float64)
    if values.ndim > 1 or (values.ndim == 1 and values.shape[0] != n_obs_cols):
        raise ValueError(
            f"`sigma` has shape {values.shape}; give one value or one per observable "
            f"({n_obs_cols}).")
    if not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"`sigma`={short(sigma)} must be finite and > 0.")
    return "known", np.broadcast_to(values, (n_obs_cols,)).copy()
