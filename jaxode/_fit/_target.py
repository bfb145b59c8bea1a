"""The posterior density that `sample` draws from, on the fit's `Problem`.

The sampler moves in unconstrained coordinates `theta`, one per estimated number of
the fit (the layout of `v`: parameters, fitted initial states, noise parameters). Each
number has a support `(low, high)` (its prior's, cut by the fit's `positive` and
`bounds`) and maps to its natural value by

- the identity on the real line,
- `low + exp(r)` or `high − exp(r)` on a half-line,
- `low + (high − low)·sigmoid(r)` on an interval,

where `r = center + L·theta`: `center` is the fit's estimate and `L` the Cholesky
factor of its covariance in `r` units (the Laplace approximation), so that the
posterior is roughly a standard normal in `theta`, correlations taken out, from the
first warmup step; a diagonal mass matrix then suits it. The log-density is the log prior plus the log
Jacobian of the map plus the fit's log-likelihood (`Problem.predict` and
`Problem.loss`: the same solve, observation and noise model as `fit`).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._problem import Problem

REAL, LOWER, UPPER, INTERVAL = 0, 1, 2, 3


def kinds_of(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The map of each number from its support."""
    lo_fin, hi_fin = np.isfinite(low), np.isfinite(high)
    return np.where(lo_fin & hi_fin, INTERVAL,
                    np.where(lo_fin, LOWER, np.where(hi_fin, UPPER, REAL)))


def to_raw(x, low, high, kind, xp=np):
    """Natural values -> unconstrained `r` (the inverse of `Target.natural`)."""
    if xp is np:
        with np.errstate(divide="ignore", invalid="ignore"):
            return _to_raw(x, low, high, kind, np)
    return _to_raw(x, low, high, kind, xp)


def _to_raw(x, low, high, kind, xp):
    lo = xp.where(kind != REAL, low, 0.0)
    lo = xp.where(xp.isfinite(lo), lo, 0.0)
    hi = xp.where(xp.isfinite(high), high, 0.0)
    width = xp.where(kind == INTERVAL, hi - lo, 1.0)
    safe = lambda c, a: xp.where(c, a, 1.0)  # noqa: E731
    p = safe(kind == INTERVAL, (x - lo) / width)
    return xp.where(kind == LOWER, xp.log(safe(kind == LOWER, x - lo)),
                    xp.where(kind == UPPER, xp.log(safe(kind == UPPER, hi - x)),
                             xp.where(kind == INTERVAL, xp.log(p) - xp.log1p(-p), x)))


def raw_slope(x, low, high, kind) -> np.ndarray:
    """`dr/dx` at natural values `x` (host)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.where(kind == INTERVAL, high - low, 1.0)
        p = np.where(kind == INTERVAL, (x - low) / width, 0.5)
        return np.where(kind == LOWER, 1.0 / (x - low),
                        np.where(kind == UPPER, -1.0 / (high - x),
                                 np.where(kind == INTERVAL, 1.0 / (width * p * (1 - p)),
                                          1.0)))


class Target(eqx.Module):
    """The log posterior density in `theta` (see the module docstring).

    - `prob`: the fit's problem, its noise model one with a likelihood (a known or
      estimated scale, or none).
    - `low`, `high`, `kind`: the support and map of every number.
    - `center`, `chol`: `r = center + chol @ theta` (`chol` lower triangular).
    - `priors`: `(prior, indices)` pairs: a prior (its numbers as arrays) and the
      numbers of `v` it applies to.
    """

    prob: Problem
    low: jax.Array
    high: jax.Array
    kind: jax.Array
    center: jax.Array
    chol: jax.Array
    priors: tuple

    @property
    def size(self) -> int:
        return self.center.shape[0]

    def natural(self, theta):
        """`theta` -> natural values and the log Jacobian `log |dx/dtheta|`."""
        r = self.center + self.chol @ theta
        kind = self.kind
        lo = jnp.where(jnp.isfinite(self.low), self.low, 0.0)
        hi = jnp.where(jnp.isfinite(self.high), self.high, 0.0)
        width = jnp.where(kind == INTERVAL, hi - lo, 1.0)
        # each branch sees a harmless argument where it is not taken, so that its
        # derivative there is finite (and multiplied by zero)
        r_lower = jnp.where(kind == LOWER, r, 0.0)
        r_upper = jnp.where(kind == UPPER, r, 0.0)
        r_int = jnp.where(kind == INTERVAL, r, 0.0)
        x = jnp.where(kind == LOWER, lo + jnp.exp(r_lower),
                      jnp.where(kind == UPPER, hi - jnp.exp(r_upper),
                                jnp.where(kind == INTERVAL,
                                          lo + width * jax.nn.sigmoid(r_int), r)))
        log_jac = jnp.where(
            (kind == LOWER) | (kind == UPPER), r,
            jnp.where(kind == INTERVAL, jnp.log(width) + jax.nn.log_sigmoid(r_int)
                      + jax.nn.log_sigmoid(-r_int), 0.0))
        return x, jnp.sum(log_jac) + jnp.sum(jnp.log(jnp.diag(self.chol)))

    def log_prior(self, x):
        return sum(jnp.sum(prior.log_prob(x[np.asarray(idx)]))
                   for prior, idx in self.priors)

    def log_likelihood(self, x):
        """The fit's log-likelihood at natural values `x` (its objective, negated)."""
        prob = self.prob
        v = prob.transform.to_u(x, jnp)
        return -prob.loss(prob.predict(v), v)

    def log_density(self, theta):
        """The log posterior density in `theta` (up to a constant); `-inf` where it
        is not finite (a failed solve, a value outside a prior's support)."""
        x, log_jac = self.natural(theta)
        value = self.log_prior(x) + log_jac + self.log_likelihood(x)
        return jnp.where(jnp.isfinite(value), value, -jnp.inf)

    def value_and_grad(self, theta):
        """The log density and its gradient: in forward mode (one tangent per number)
        when the fit's solve options say so (`adjoint="forward"`, the default),
        else in reverse mode through the configured adjoint. A non-finite value has
        a zero gradient."""
        if self.prob.config.forward_mode:
            both = lambda t: (self.log_density(t),) * 2  # noqa: E731
            grad, value = jax.jacfwd(both, has_aux=True)(theta)
        else:
            value, grad = jax.value_and_grad(self.log_density)(theta)
        ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))
        return value, jnp.where(ok, grad, 0.0)

    def logdensity_fn(self):
        """The log density as a function of `theta` whose derivative is
        `value_and_grad`'s (what a sampler differentiates)."""

        @jax.custom_vjp
        def logdensity(theta):
            return self.log_density(theta)

        def forward(theta):
            value, grad = self.value_and_grad(theta)
            return value, grad

        def backward(grad, cotangent):
            return (cotangent * grad,)

        logdensity.defvjp(forward, backward)
        return logdensity
