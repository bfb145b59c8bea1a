"""Statistics at the optimum: covariance from the Fisher information, Wald intervals
on each parameter's own scale, convergence, and profile likelihoods."""

import math
from typing import NamedTuple

import numpy as np

from ._data import from_u


def _scipy_stats():
    # imported on first use: scipy.stats takes longer to import than the rest of
    # jaxode together, and `import jaxode; jaxode.solve(...)` never needs it
    import scipy.stats

    return scipy.stats


def t_quantile(q: float, dof: float) -> float:
    """The `q` quantile of Student's t distribution with `dof` degrees of freedom
    (SciPy's `scipy.stats.t.ppf`)."""
    if not 0 < q < 1:
        raise ValueError(f"`q` must be in (0, 1), got {q!r}.")
    if not dof > 0:
        raise ValueError(f"`dof` must be > 0, got {dof!r}.")
    return float(_scipy_stats().t.ppf(q, dof))


def quantile(level: float, mode: str, dof: int) -> float:
    """Two-sided `level` quantile: Student-t on `n − p` degrees of freedom for least
    squares (sigma estimated from the residuals), normal for likelihoods."""
    if not 0 < level < 1:
        raise ValueError(f"`level` must be in (0, 1), got {level!r}.")
    if mode == "ls":
        return t_quantile(0.5 + level / 2, dof) if dof > 0 else math.inf
    return float(_scipy_stats().norm.ppf(0.5 + level / 2))


def chi2_quantile(level: float, dof: int = 1) -> float:
    """The `level` quantile of the χ² distribution (the likelihood-ratio threshold)."""
    return float(_scipy_stats().chi2.ppf(level, dof))


def covariance_v(mode, info, loss, n, dof):
    """Covariance of the optimiser coordinates `v`.

    Least squares (`loss` = RSS/n, `info` = 2JᵀJ/n): `s² (JᵀJ)⁻¹` with
    `s² = RSS/(n − p)`. Likelihoods: the inverse Fisher information."""
    m = info.shape[0]
    if not np.all(np.isfinite(info)) or (mode == "ls" and dof <= 0):
        return np.full((m, m), np.inf)
    inv = np.linalg.pinv(info, hermitian=True)
    if mode == "ls":
        return (loss * n / dof) * (2.0 / n) * inv
    return inv


def converged(grad, info, jac, weight, data_abs, loss, mode, dtype, curvature):
    """First-order optimality, invariant to scaling: every coordinate's score is
    small against its own curvature (for least squares: every column of the
    Jacobian is nearly orthogonal to the residuals), allowing for the rounding of
    the data (each residual carries an error of about `eps · |data|`).

    Or the point is as good as the arithmetic can tell: the Newton (Gauss–Newton,
    Fisher scoring) step on the loss's `curvature` would lower the loss by less
    than 16 roundings of the loss. A float32 loss through an adaptive solve is
    smooth only down to the solver's tolerance (the accepted steps change with the
    parameters), so its gradient at the optimum can fail the first test although
    no step improves the loss."""
    d = np.abs(np.diag(info))
    denom = np.sqrt(2 * d * loss) if mode == "ls" else np.sqrt(d)
    tol = 1e-4 if mode == "ls" else 1e-3
    eps = np.finfo(dtype).eps
    floor = 8 * eps * (np.abs(jac).T @ (weight * data_abs))
    ok = np.abs(grad) <= tol * denom + floor + 1e-12
    if not np.all(np.isfinite(jac)):
        return False
    if np.all(ok):
        return True
    try:  # the predicted decrease of the undamped step, half the Newton decrement
        decrease = 0.5 * grad @ np.linalg.solve(curvature, grad)
    except np.linalg.LinAlgError:
        return False
    return bool(np.isfinite(decrease) and 0 <= decrease <= 16 * eps * (abs(loss) + 1))


class Profile(NamedTuple):
    """A profile likelihood: `values` of the parameter, the likelihood-ratio
    statistic `deviance` (0 at the estimate, χ² with one degree of freedom under
    the null), the `threshold` at `level`, and the `interval` where the deviance
    stays below it (`-inf`/`inf`, or a bound, where it never crosses)."""

    name: str
    values: np.ndarray
    deviance: np.ndarray
    estimate: float
    level: float
    threshold: float
    interval: tuple


def crossing(u, dev, threshold, i_best):
    """Where the deviance first rises above `threshold` on each side of `i_best`
    (linear interpolation); None when it never does."""
    out = []
    for step in (-1, 1):
        found = None
        i = i_best
        while 0 <= i + step < len(u):
            j = i + step
            if np.isfinite(dev[j]) and dev[j] >= threshold:
                a, b = dev[i], dev[j]
                w = (threshold - a) / (b - a) if b != a else 1.0
                found = u[i] + w * (u[j] - u[i])
                break
            i = j
        out.append(found)
    return out


def natural(kind, unit, u):
    """Optimiser coordinate(s) `u` of one parameter -> natural value(s)."""
    class S(NamedTuple):
        kind: np.ndarray
        unit: np.ndarray
    return from_u(S(np.asarray(kind), np.asarray(unit)), np.asarray(u), np)

