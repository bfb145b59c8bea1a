"""Multiple shooting: the time span cut into `k` segments whose start states are
optimised beside the parameters, with a continuity penalty that grows during the run.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._fixed import plan_grid, step_list
from .._fixed_solve import solve_fixed_grid
from .._engine import solve_with
from .._solvers import AbstractStepper
from ._problem import resolve_args
from ._transform import unit_of


class Segments(eqx.Module):
    """Index tables so that all segments are solved at once under `vmap`.

    Segment `j` runs over grid points `bounds[j] … bounds[j+1]`. Adaptive solvers
    save at the segment's own times, padded to a common length with extra save times
    inside the last interval; fixed-step solvers run the segment's own steps, padded
    with steps of size zero (which leave the state unchanged). `seg_of`, `slot_of`
    give, for every grid point after the first, the segment and output slot that
    predict it; the last slot is each segment's end."""

    k: int = eqx.field(static=True)
    seg_of: tuple = eqx.field(static=True)
    slot_of: tuple = eqx.field(static=True)
    seg_times: tuple | None = eqx.field(static=True)
    seg_t: jax.Array | None
    seg_h: jax.Array | None
    seg_save: jax.Array | None
    s_scale: jax.Array  # (B, k - 1, D): start states are optimised in these units


def _boundaries(grid, k):
    span = grid[-1] - grid[0]
    bounds = [0]
    for j in range(1, k):
        i = int(np.argmin(np.abs(grid - (grid[0] + j * span / k))))
        bounds.append(min(max(i, bounds[-1] + 1), len(grid) - 1 - (k - j)))
    return bounds + [len(grid) - 1]


def setup(k, *, grid, obs_index, ys, observed, y0, solver, dt, dtype,
          observe_is_identity):
    """The segment tables and the starting segment states (relative units, flat)."""
    grid = np.asarray(grid)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"`shooting` must be a positive integer, got {k!r}.")
    if k >= len(grid):
        raise ValueError(
            f"`shooting`={k} needs at least {k + 1} distinct times (t0 and the "
            f"observation times), but there are {len(grid)}.")
    bounds = _boundaries(grid, k)
    b, d = y0.shape
    # start states: observed values interpolated at the boundaries when the states
    # are observed directly; otherwise the initial state
    s0 = np.broadcast_to(y0[:, None, :], (b, k - 1, d)).copy()
    mag = unit_of(y0)[:, None, :] * np.ones((1, k - 1, 1))
    if observe_is_identity:
        gy = np.full((b, len(grid), d), np.nan)
        gy[:, obs_index] = np.where(observed, ys, np.nan)
        for bi in range(b):
            for di in range(d):
                ok = np.isfinite(gy[bi, :, di])
                if ok.any():
                    s0[bi, :, di] = np.interp(grid[bounds[1:-1]], grid[ok], gy[bi, ok, di])
                    m = np.nanmax(np.abs(gy[bi, ok, di]))
                    mag[bi, :, di] = m if m > 0 else 1.0
    lengths = [bounds[j + 1] - bounds[j] + 1 for j in range(k)]
    n_slots = max(lengths)
    seg_of, slot_of = [], []
    for j in range(k):
        for i in range(1, lengths[j]):
            seg_of.append(j)
            slot_of.append(i if i < lengths[j] - 1 else n_slots - 1)
    seg_times = seg_t = seg_h = seg_save = None
    if not isinstance(solver, AbstractStepper):
        local = []
        for j in range(k):
            pts = grid[bounds[j]: bounds[j + 1] + 1]
            tail = np.linspace(pts[-2], pts[-1], n_slots - len(pts) + 2)[1:]
            local.append(tuple(np.concatenate([pts[:-1], tail]).tolist()))
        seg_times = tuple(local)
    else:
        ts_, hs_, saves = [], [], []
        for j in range(k):
            pts = grid[bounds[j]: bounds[j + 1] + 1]
            counts, _ = plan_grid(pts, dt, dtype)  # the rule `solve` uses
            steps, sizes, save = step_list(pts, counts)
            ts_.append(steps)
            hs_.append(sizes)
            saves.append(np.concatenate(
                [save[:-1], np.full(n_slots - 1 - len(save), save[-1]), save[-1:]]))
        n = max(len(t) for t in ts_)
        seg_t = jnp.asarray(np.stack([np.concatenate([t, np.full(n - len(t), t[-1])])
                                      for t in ts_]), dtype)
        seg_h = jnp.asarray(np.stack([np.concatenate([h, np.zeros(n - len(h))])
                                      for h in hs_]), dtype)
        seg_save = jnp.asarray(np.stack(saves))
    seg = Segments(k=k, seg_of=tuple(seg_of), slot_of=tuple(slot_of),
                   seg_times=seg_times, seg_t=seg_t, seg_h=seg_h, seg_save=seg_save,
                   s_scale=jnp.asarray(mag, dtype))
    return seg, (s0 / mag).reshape(-1)


def predict(prob, v):
    """Observables of all segments (flat, in the order of `prob.obs.data`), then the
    continuity defects between segments."""
    seg = prob.shooting
    g = prob.groups[0]
    flat, y0s, _ = prob.split(v[: prob.n_v])
    params = prob.unflatten(flat)
    y0 = y0s[0]
    b, d = y0.shape
    s = v[prob.n_v:].reshape(b, seg.k - 1, d) * seg.s_scale
    starts = jnp.concatenate([y0[:, None], s], axis=1)  # (B, k, D)
    p = resolve_args(params, g.args)
    if seg.seg_t is not None:
        def one(y, t_steps, h_steps, save):
            ys, _, _ = solve_fixed_grid(prob.f, prob.config.solver, y, None, t_steps,
                                        h_steps, save, None, p, False,
                                        prob.config.adjoint)
            return ys
        per = jax.vmap(one)
        out = jax.vmap(lambda st: per(st, seg.seg_t, seg.seg_h, seg.seg_save))(starts)
    else:
        def one(y, ts):
            return solve_with(prob.config, prob.f, y, ts, p).ys
        times = jnp.asarray(np.asarray(seg.seg_times), y0.dtype)
        per = jax.vmap(one)
        out = jax.vmap(lambda st: per(st, times))(starts)  # (B, k, slots, D)
    path = jnp.concatenate(
        [y0[:, None], out[:, np.asarray(seg.seg_of), np.asarray(seg.slot_of)]], axis=1)
    states = path[:, np.asarray(g.obs_index)]
    mu = prob.observe(g, params, g.t_obs, states).reshape(-1)
    defects = (out[:, :-1, -1] - s).reshape(-1)
    return mu, defects
