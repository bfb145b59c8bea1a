"""Profile likelihoods: one number held at each value of a grid while every other
estimated number is re-optimised by the fit's own compiled loop."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from . import _stats
from ._loop import run_loop, with_steps

_PROFILE_STEPS = 40  # Gauss–Newton steps at each point of a profile


class Profile(eqx.Module):
    """A profile likelihood: `values` of the parameter, the likelihood-ratio
    statistic `deviance` (0 at the estimate, χ² with one degree of freedom under
    the null), the `threshold` at `level`, and the `interval` where the deviance
    stays below it (`-inf`/`inf`, or a bound, where it never crosses)."""

    name: str = eqx.field(static=True)
    values: np.ndarray
    deviance: np.ndarray
    estimate: float = eqx.field(static=True)
    level: float = eqx.field(static=True)
    threshold: float = eqx.field(static=True)
    interval: tuple = eqx.field(static=True)


def profiles(res, index, level, values, n) -> list[Profile]:
    """The profiles of the numbers `index` of `v` (see `FitResult.profile`)."""
    if not 0 < level < 1:
        raise ValueError(f"`level` must be in (0, 1), got {level!r}.")
    model = res._fitted_model()
    q = _stats.quantile(level, res._noise_model, res.dof)
    threshold = _stats.chi2_quantile(level)
    loop = with_steps(model.loop, 0, _PROFILE_STEPS)
    out = []
    for j in index:
        one = res._transform[j]
        if values is not None:
            grid = one.to_u(np.sort(np.asarray(values, np.float64).ravel()))
        else:
            se = res._se_v[j]
            span = min(2 * q * se, 3.0) if np.isfinite(se) else 3.0
            span = max(span, 1e-6 * max(1.0, abs(res._v[j])))
            grid = res._v[j] + span * np.linspace(-1, 1, n)
        grid = np.clip(grid, res._lo[j], res._hi[j])
        losses = _profile_losses(res, loop, model.dtype, j, grid)
        best = min(res.loss, float(np.nanmin(losses)))
        dev = res._noise_model.deviance(losses, best, res.n_obs)
        i_best = int(np.nanargmin(np.where(np.isfinite(dev), dev, np.nan)))
        low, high = _stats.crossing(grid, dev, threshold, i_best)
        ends = one.from_u(np.array([res._lo[j] if low is None else low,
                                    res._hi[j] if high is None else high]))
        out.append(Profile(name=res._labels[j], values=one.from_u(grid), deviance=dev,
                           estimate=float(one.from_u(res._v[j])), level=level,
                           threshold=threshold,
                           interval=(float(ends[0]), float(ends[1]))))
    return out


def _profile_losses(res, loop, dtype, j, grid):
    """The best loss with coordinate `j` held at each grid value: Gauss–Newton
    steps on the others, walking outwards from the estimate, each point
    warm-started at its neighbour's solution (the fit's compiled loop)."""
    free = np.ones((1, res._v.size))
    free[0, j] = 0.0
    free = jnp.asarray(free, dtype)
    losses = np.full(len(grid), np.nan)
    centre = int(np.argmin(np.abs(grid - res._v[j])))
    for direction in (range(centre, len(grid)), range(centre - 1, -1, -1)):
        v = res._v.copy()
        for i in direction:
            v[j] = grid[i]
            state, _ = run_loop(loop, jnp.asarray(v[None], dtype), free)
            losses[i] = float(np.asarray(state.best_loss)[0])
            if np.isfinite(losses[i]):
                v = np.array(state.best_v, np.float64)[0]
    return losses
