"""Noise models: how a fit scores its observations with a `Distribution`.

`fit(noise=..., sigma=...)` picks one (`resolve_noise`):

- `LeastSquares`: `sigma=None` for normal or lognormal noise. The objective is the
  mean squared residual; sigma is pooled from the residuals afterwards, intervals
  use Student's t on `n − p` degrees of freedom.
- `KnownScale`: sigma given, one per observable; the objective is the negative
  log-likelihood.
- `EstimatedScale`: `sigma="estimate"` (the default for Laplace noise, always for the
  negative binomial's dispersion): one log noise parameter per observable is
  optimised with the parameters, at the end of `v`.
- `NoScale`: a distribution without a noise parameter (Poisson).

Each owns what depends on that choice: the objective and its Fisher weights, the
continuity penalty of multiple shooting, the start of its noise parameters, the
quantile of its intervals, its covariance, deviance and likelihood figures.
"""

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import short
from ._likelihood import DISTRIBUTIONS, Distribution
from ._stats import normal_quantile, t_quantile


class Observations(eqx.Module):
    """Every observation of a fit, flat: `data` (unobserved entries hold a safe 1.0),
    whether each is `observed`, and the observable (`column`) it belongs to."""

    data: jax.Array
    observed: jax.Array
    column: jax.Array


class NoiseModel(eqx.Module):
    """The likelihood of a fit: a `Distribution` and what is known of its scale.
    `s` is always the noise part of `v` (empty unless the scale is estimated)."""

    dist: Distribution = eqx.field(static=True)
    mode: ClassVar[str] = ""  # a label of the kind: "ls", "known", "estimate", "none"
    n_pooled: ClassVar[int] = 0  # numbers estimated after the fit (AIC, BIC)
    grad_tol: ClassVar[float] = 1e-3  # first-order test, relative to the curvature

    @property
    def n_noise(self) -> int:
        """Noise parameters in `v`."""
        return 0

    def sigma_argument(self):
        """The `sigma=` of `fit` that gives this model again."""
        return None

    # -- the objective, inside the compiled loop
    def log_scale(self, s, column):
        """The log noise parameter of every entry."""
        return jnp.zeros(column.shape, s.dtype)

    def loss(self, obs: Observations, mu, s):
        """The total negative log-likelihood of the observed entries."""
        nll = self.dist.nll(obs.data, mu, self.log_scale(s, obs.column))
        return jnp.sum(jnp.where(obs.observed, nll, 0.0))

    def weight(self, obs: Observations, mu, s, fisher=True):
        """Fisher weight of each prediction (the expected curvature of `loss` in
        `mu`); with `fisher=False` the curvature Gauss–Newton steps use."""
        s = self.log_scale(s, obs.column)
        w = (self.dist.fisher(mu, s) if fisher
             else self.dist.curvature(obs.data, mu, s))
        return jnp.where(obs.observed, w, 0.0)

    def defect_cost(self, penalty, defects, obs: Observations, s_scale):
        """The continuity penalty of multiple shooting, in the units of `loss`."""
        d = defects / s_scale.reshape(-1)
        return penalty * jnp.sum(d * d)

    def defect_weight(self, penalty, obs: Observations, s_scale):
        """The Gauss–Newton weight of each continuity defect."""
        return 2 * penalty / s_scale.reshape(-1) ** 2

    def initial_log_scale(self, data, observed, column) -> np.ndarray:
        """Starting values of the noise parameters."""
        return np.zeros(0)

    # -- statistics at the optimum
    def quantile(self, p: float, dof: int) -> float:
        """The `p` quantile of the estimates' sampling distribution."""
        return normal_quantile(p)

    def determined(self, dof: int) -> bool:
        """Whether the data determine a covariance."""
        return True

    def scale_covariance(self, inv, loss, n, dof):
        """Covariance of `v` from the pseudo-inverse of the information."""
        return inv

    def score_unit(self, curvature_diag, loss):
        """The size of a gradient that counts as large for each coordinate."""
        return np.sqrt(curvature_diag)

    def deviance(self, losses, best, n):
        """The likelihood-ratio statistic of `losses` against the `best` loss."""
        return 2.0 * (losses - best)

    def nll(self, loss: float, n: int, observed_data: np.ndarray) -> float:
        """The negative log-likelihood at the estimate."""
        return loss

    def scales(self, loss, n, dof, s_hat, k) -> dict:
        """The `sigma` and `dispersion` a result reports."""
        return {"sigma": None, "dispersion": None}


class LeastSquares(NoiseModel):
    mode: ClassVar[str] = "ls"
    n_pooled: ClassVar[int] = 1
    grad_tol: ClassVar[float] = 1e-4

    def loss(self, obs, mu, s):
        """The mean squared residual over the observed entries."""
        r = self.dist.residual(obs.data, mu)
        return jnp.sum(jnp.where(obs.observed, r * r, 0.0)) / jnp.sum(obs.observed)

    def weight(self, obs, mu, s, fisher=True):
        w = (self.dist.fisher(mu, 0.0) if fisher
             else self.dist.curvature(obs.data, mu, 0.0))
        w = 2.0 * w / jnp.sum(obs.observed)
        return jnp.where(obs.observed, w, 0.0)

    def defect_cost(self, penalty, defects, obs, s_scale):
        return penalty * jnp.sum(defects * defects) / jnp.sum(obs.observed)

    def defect_weight(self, penalty, obs, s_scale):
        wd = 2 * penalty / jnp.sum(obs.observed)
        return jnp.full(s_scale.size, wd)

    def quantile(self, p, dof):
        return t_quantile(p, dof) if dof > 0 else math.inf

    def determined(self, dof):
        return dof > 0

    def scale_covariance(self, inv, loss, n, dof):
        """`s² (JᵀJ)⁻¹` with `s² = RSS/(n − p)` (`loss` = RSS/n, `info` = 2JᵀJ/n)."""
        return (loss * n / dof) * (2.0 / n) * inv

    def score_unit(self, curvature_diag, loss):
        return np.sqrt(2 * curvature_diag * loss)

    def deviance(self, losses, best, n):
        return n * np.log(losses / best)

    def nll(self, loss, n, observed_data):
        """With sigma at its maximum-likelihood value; an exact fit has an unbounded
        likelihood."""
        nll = 0.5 * n * (math.log(2 * math.pi * loss) + 1.0) if loss > 0 else -math.inf
        return nll + self.dist.log_jacobian(observed_data)

    def scales(self, loss, n, dof, s_hat, k):
        sigma = math.sqrt(loss * n / dof) if dof > 0 else math.inf
        return {"sigma": np.full(k, sigma), "dispersion": None}


class KnownScale(NoiseModel):
    sigma: jax.Array  # one per observable
    mode: ClassVar[str] = "known"

    def sigma_argument(self):
        return np.asarray(self.sigma, np.float64)

    def log_scale(self, s, column):
        return jnp.log(self.sigma)[column]

    def scales(self, loss, n, dof, s_hat, k):
        return {"sigma": np.asarray(self.sigma, np.float64), "dispersion": None}


class EstimatedScale(NoiseModel):
    n_cols: int = eqx.field(static=True)
    mode: ClassVar[str] = "estimate"

    @property
    def n_noise(self):
        return self.n_cols

    def sigma_argument(self):
        return "estimate"

    def log_scale(self, s, column):
        return s[column]

    def initial_log_scale(self, data, observed, column):
        return self.dist.initial_log_scale(data, observed, column, self.n_cols)

    def scales(self, loss, n, dof, s_hat, k):
        return {"sigma": None, "dispersion": None, self.dist.scale_name: s_hat}


class NoScale(NoiseModel):
    mode: ClassVar[str] = "none"


def get_distribution(noise) -> Distribution:
    if isinstance(noise, Distribution):
        return noise
    if noise not in DISTRIBUTIONS:
        raise ValueError(
            f"`noise`={short(noise)} is not a noise model; choose one of "
            f"{', '.join(repr(k) for k in DISTRIBUTIONS)}.")
    return DISTRIBUTIONS[noise]


def resolve_noise(noise, sigma, n_cols: int) -> NoiseModel:
    """The noise model of `fit(noise=..., sigma=...)` for `n_cols` observables.

    `sigma` is `None` (least squares, or estimated where there is no least-squares
    form), `"estimate"`, or known values, one or one per observable."""
    dist = get_distribution(noise)
    if not dist.has_scale:
        if sigma is not None:
            raise ValueError(
                f"`sigma`={short(sigma)} has no meaning for noise='{dist.name}', "
                "whose variance is fixed by its mean; leave `sigma` unset.")
        return NoScale(dist)
    if dist.always_estimated:
        if sigma not in (None, "estimate"):
            raise ValueError(
                f"`sigma`={short(sigma)}: noise='{dist.name}' estimates its "
                f"{dist.scale_name} (one per observable); leave `sigma` unset.")
        return EstimatedScale(dist, n_cols)
    if sigma is None:
        return LeastSquares(dist) if dist.least_squares else EstimatedScale(dist, n_cols)
    if isinstance(sigma, str):
        if sigma != "estimate":
            raise ValueError(
                f"`sigma`={sigma!r} must be 'estimate', known positive values (one "
                "per observable), or None.")
        return EstimatedScale(dist, n_cols)
    values = np.asarray(sigma, dtype=np.float64)
    if values.ndim > 1 or (values.ndim == 1 and values.shape[0] != n_cols):
        raise ValueError(
            f"`sigma` has shape {values.shape}; give one value or one per observable "
            f"({n_cols}).")
    if not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"`sigma`={short(sigma)} must be finite and > 0.")
    return KnownScale(dist, np.broadcast_to(values, (n_cols,)).copy())
