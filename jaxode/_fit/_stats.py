"""Statistics at the optimum: quantiles, covariance from the Fisher information,
convergence, and where a profile crosses its threshold."""

import numpy as np


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


def normal_quantile(q: float) -> float:
    """The `q` quantile of the standard normal distribution."""
    return float(_scipy_stats().norm.ppf(q))


def quantile(level: float, noise, dof: int) -> float:
    """Two-sided `level` quantile of the estimates under `noise` (a `NoiseModel`)."""
    if not 0 < level < 1:
        raise ValueError(f"`level` must be in (0, 1), got {level!r}.")
    return noise.quantile(0.5 + level / 2, dof)


def chi2_quantile(level: float, dof: int = 1) -> float:
    """The `level` quantile of the χ² distribution (the likelihood-ratio threshold)."""
    return float(_scipy_stats().chi2.ppf(level, dof))


def covariance_v(noise, info, loss, n, dof):
    """Covariance of the optimiser coordinates `v` under `noise` (a `NoiseModel`):
    the inverse Fisher information, scaled by the pooled sigma for least squares;
    infinite where the information is not finite or the data do not determine it."""
    m = info.shape[0]
    if not np.all(np.isfinite(info)) or not noise.determined(dof):
        return np.full((m, m), np.inf)
    inv = np.linalg.pinv(info, hermitian=True)
    return noise.scale_covariance(inv, loss, n, dof)


def converged(grad, info, jac, weight, data_abs, loss, noise, dtype, curvature):
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
    denom = noise.score_unit(d, loss)
    tol = noise.grad_tol
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


# ----- convergence of MCMC chains (Vehtari, Gelman, Simpson, Carpenter and
# Bürkner, "Rank-normalization, folding, and localization: an improved R-hat",
# Bayesian Analysis 16, 2021): blackjax's R-hat and ESS on split, rank-normalised
# chains


def _split_chains(x: np.ndarray) -> np.ndarray:
    """`(chains, draws, ...)` -> `(2·chains, draws // 2, ...)`: each chain's halves
    (an odd draw count drops the middle draw)."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half:]], axis=0)


def _rank_normalise(x: np.ndarray) -> np.ndarray:
    """Each column's draws, pooled over the chains, replaced by the normal scores of
    their ranks, `Φ⁻¹((r − 3/8) / (S + 1/4))` (ties share their average rank)."""
    import scipy.special

    chains, draws = x.shape[:2]
    flat = x.reshape(chains * draws, -1)
    ranks = _scipy_stats().rankdata(flat, axis=0)
    z = scipy.special.ndtri((ranks - 0.375) / (flat.shape[0] + 0.25))
    return z.reshape(x.shape)


def r_hat(x) -> np.ndarray:
    """The rank-normalised split R-hat of every column of `x`, shape
    `(chains, draws, n)`: the larger of the split R-hat of the rank-normalised draws
    (bulk) and of their distances from the median (tail). Near 1 for chains that
    mix; the usual bound is 1.01."""
    from blackjax.diagnostics import potential_scale_reduction

    split = _split_chains(np.asarray(x, np.float64))
    folded = np.abs(split - np.median(split.reshape(-1, *split.shape[2:]), axis=0))
    bulk = potential_scale_reduction(_rank_normalise(split))
    tail = potential_scale_reduction(_rank_normalise(folded))
    return np.maximum(np.asarray(bulk), np.asarray(tail)).reshape(x.shape[2:])


def bulk_ess(x) -> np.ndarray:
    """The bulk effective sample size of every column of `x`, shape
    `(chains, draws, n)`: the effective sample size of the split, rank-normalised
    draws (Geyer's initial monotone sequence, as in Stan)."""
    from blackjax.diagnostics import effective_sample_size

    split = _split_chains(np.asarray(x, np.float64))
    return np.asarray(effective_sample_size(_rank_normalise(split))).reshape(
        x.shape[2:])
