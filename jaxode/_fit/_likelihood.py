"""Distributions: the negative log-likelihood of one observation and its Fisher weight.

Every distribution is written per observation `y` with model prediction `mu` and,
when it has one, a noise parameter on log scale `s` (`log sigma` for the continuous
ones, `log phi` for the negative binomial's dispersion). The Fisher weight is
`E[(d nll / d mu)^2]`, the curvature that Fisher scoring (and, for least squares,
Gauss–Newton) uses for the model's predictions. How the observations of a fit are
scored with a distribution (least squares, known or estimated sigma) is `_noise`.
"""

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_TINY = 1e-10  # predictions of positive models are floored here before a log


def _pos(mu):
    return jnp.maximum(mu, _TINY)


class Distribution(eqx.Module):
    """One observation's likelihood.

    - `has_scale`: a noise parameter exists, called `scale_name`;
      `always_estimated`: it cannot be given, only estimated.
    - `least_squares`: with `sigma=None` the fit is plain least squares on
      `residual`, sigma pooled afterwards.
    - `smooth`: the likelihood has no kinks, so the gradient test of convergence
      applies.
    - `curvature(y, mu, s)`: the weight Gauss–Newton steps use; the Fisher weight,
      except where the likelihood has kinks.
    - `draw(key, mu, s)`: new observations, shaped like `mu` (posterior predictive
      draws).
    """

    name: ClassVar[str] = ""
    has_scale: ClassVar[bool] = True
    scale_name: ClassVar[str] = "sigma"
    always_estimated: ClassVar[bool] = False
    counts: ClassVar[bool] = False
    positive_data: ClassVar[bool] = False
    least_squares: ClassVar[bool] = False
    smooth: ClassVar[bool] = True

    def curvature(self, y, mu, s):
        return self.fisher(mu, s)

    def initial_log_scale(self, data, observed, column, k) -> np.ndarray:
        """A start for the log noise parameter of each of the `k` observables: a
        tenth of each observable's typical size."""
        return np.array([
            math.log(0.1 * (np.sqrt(np.mean(data[observed & (column == c)] ** 2))
                            or 1.0))
            if (observed & (column == c)).any() else 0.0 for c in range(k)])

    def log_jacobian(self, data: np.ndarray) -> float:
        """What the likelihood of `data` adds to that of `residual` (least squares)."""
        return 0.0

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


class Normal(Distribution):
    name: ClassVar[str] = "normal"
    least_squares: ClassVar[bool] = True

    def residual(self, y, mu):
        return y - mu

    def nll(self, y, mu, s):
        z = (y - mu) * jnp.exp(-s)
        return 0.5 * z * z + s + _HALF_LOG_2PI

    def fisher(self, mu, s):
        return jnp.exp(-2 * s) + 0 * mu

    def draw(self, key, mu, s):
        return mu + jnp.exp(s) * jax.random.normal(key, jnp.shape(mu), mu.dtype)


class LogNormal(Distribution):
    name: ClassVar[str] = "lognormal"
    positive_data: ClassVar[bool] = True
    least_squares: ClassVar[bool] = True

    def residual(self, y, mu):
        return jnp.log(y) - jnp.log(_pos(mu))

    def initial_log_scale(self, data, observed, column, k):
        return np.full(k, math.log(0.3))

    def log_jacobian(self, data):
        return float(np.sum(np.log(data)))

    def nll(self, y, mu, s):
        z = (jnp.log(y) - jnp.log(_pos(mu))) * jnp.exp(-s)
        return 0.5 * z * z + s + jnp.log(y) + _HALF_LOG_2PI

    def fisher(self, mu, s):
        return jnp.exp(-2 * s) / _pos(mu) ** 2

    def draw(self, key, mu, s):
        z = jax.random.normal(key, jnp.shape(mu), mu.dtype)
        return jnp.exp(jnp.log(_pos(mu)) + jnp.exp(s) * z)


class Laplace(Distribution):
    name: ClassVar[str] = "laplace"
    smooth: ClassVar[bool] = False

    def nll(self, y, mu, s):
        return jnp.abs(y - mu) * jnp.exp(-s) + s + math.log(2.0)

    def fisher(self, mu, s):
        return jnp.exp(-2 * s) + 0 * mu

    def curvature(self, y, mu, s):
        # iteratively reweighted least squares for |r|: weight 1 / (b |r|)
        r = jnp.abs(y - mu)
        return jnp.exp(-s) / jnp.maximum(r, 1e-6 * (jnp.abs(y) + 1.0))

    def draw(self, key, mu, s):
        return mu + jnp.exp(s) * jax.random.laplace(key, jnp.shape(mu), mu.dtype)


class Poisson(Distribution):
    name: ClassVar[str] = "poisson"
    has_scale: ClassVar[bool] = False
    counts: ClassVar[bool] = True

    def nll(self, y, mu, s):
        mu = _pos(mu)
        return mu - y * jnp.log(mu) + gammaln(y + 1)

    def fisher(self, mu, s):
        return 1.0 / _pos(mu)

    def draw(self, key, mu, s):
        return jax.random.poisson(key, _pos(mu)).astype(mu.dtype)


class NegBinomial(Distribution):
    """Mean `mu`, dispersion `phi`: variance `mu + mu²/phi` (Poisson as phi -> inf)."""

    name: ClassVar[str] = "negbinomial"
    scale_name: ClassVar[str] = "dispersion"
    always_estimated: ClassVar[bool] = True
    counts: ClassVar[bool] = True

    def nll(self, y, mu, s):
        mu, phi = _pos(mu), jnp.exp(s)
        log_pm = jnp.logaddexp(s, jnp.log(mu))  # log(phi + mu)
        return -(gammaln(y + phi) - gammaln(phi) - gammaln(y + 1)
                 + phi * (s - log_pm) + y * (jnp.log(mu) - log_pm))

    def fisher(self, mu, s):
        mu, phi = _pos(mu), jnp.exp(s)
        return phi / (mu * (phi + mu))

    def initial_log_scale(self, data, observed, column, k):
        return np.full(k, math.log(10.0))

    def draw(self, key, mu, s):
        # a Poisson draw whose rate is gamma distributed (shape phi, mean mu)
        k_gamma, k_poisson = jax.random.split(key)
        phi = jnp.exp(s) + 0 * mu
        rate = jax.random.gamma(k_gamma, phi, dtype=mu.dtype) / phi * _pos(mu)
        return jax.random.poisson(k_poisson, rate).astype(mu.dtype)


DISTRIBUTIONS = {d.name: d for d in (Normal(), LogNormal(), Laplace(), Poisson(),
                                     NegBinomial())}
