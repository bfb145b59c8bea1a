"""Dense output and events for fixed-step solves.

A fixed-step solve with `dense=True` or an `event` keeps the state at every step of its
grid. Between two steps the solution is the cubic Hermite interpolant of the two
states and their derivatives `f(t, y)`, accurate to O(h^4), the order of `RK4`. An
event is a sign change of `cond(t, y, args)` between two steps; its time is the root of
`cond` on that step's interpolant, found by optimistix's Newton solver, whose implicit
derivative gives `d t_event / d(y0, args)` by the implicit function theorem.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optimistix as optx

from ._fixed import step_list

__all__ = ["HermiteInterpolation", "step_grid", "locate_event", "after_event"]


class HermiteInterpolation(eqx.Module):
    """Piecewise cubic Hermite interpolation through `(ts[i], ys[i])` with slopes
    `fs[i]`; `evaluate(t)` for a scalar `t` inside `[ts[0], ts[-1]]`."""

    ts: jax.Array
    ys: object
    fs: object

    def evaluate(self, t):
        ts = self.ts
        i = jnp.clip(jnp.searchsorted(ts, t, side="right") - 1, 0, ts.shape[0] - 2)
        h = ts[i + 1] - ts[i]
        s = (t - ts[i]) / h
        s2, s3 = s * s, s * s * s
        w_y0, w_f0 = 2 * s3 - 3 * s2 + 1, (s3 - 2 * s2 + s) * h
        w_y1, w_f1 = 3 * s2 - 2 * s3, (s3 - s2) * h

        def one(y, f):
            return (w_y0 * y[i] + w_f0 * f[i] + w_y1 * y[i + 1]
                    + w_f1 * f[i + 1]).astype(y.dtype)

        return jtu.tree_map(one, self.ys, self.fs)


def step_grid(ts, ts_host, counts):
    """Every step boundary of a fixed-step solve over `ts` with `counts` equal steps
    per interval (an int for all, or one per interval), and the index of each time of
    `ts` in it. Traced `ts` need an int `counts` (`substeps`)."""
    if isinstance(counts, int):
        k = counts
        frac = jnp.arange(k, dtype=ts.dtype) / k
        inner = ts[:-1, None] + (ts[1:] - ts[:-1])[:, None] * frac[None, :]
        grid = jnp.concatenate([inner.reshape(-1), ts[-1:]])
        return grid, np.arange(ts.shape[0]) * k
    t_steps, _, save_index = step_list(ts_host, np.asarray(counts))
    grid = jnp.asarray(np.concatenate([t_steps, ts_host[-1:]]), ts.dtype)
    # the saved times themselves, as `ts` holds them (not recomputed from steps)
    index = np.concatenate([[0], save_index + 1])
    grid = grid.at[index].set(ts)
    return grid, index


def locate_event(cond, interp: HermiteInterpolation, args):
    """The first time where `cond(t, y(t), args)` changes sign along the grid of
    `interp`, refined to a root on the step's interpolant; `inf` when it never does.
    Returns `(t_event, happened)`."""
    ts = interp.ts
    g = jax.vmap(lambda t, y: cond(t, y, args))(ts, interp.ys)
    change = jnp.sign(g[:-1]) != jnp.sign(g[1:])
    happened = jnp.any(change)
    i = jnp.argmax(change)  # the first step with a sign change
    lo, hi = ts[i], ts[i + 1]
    # secant guess inside the step, then Newton on the interpolant
    denom = g[i + 1] - g[i]
    frac = jnp.where(denom != 0, -g[i] / jnp.where(denom != 0, denom, 1), 0.5)
    guess = lo + jnp.clip(frac, 0, 1) * (hi - lo)
    tol = 100 * float(jnp.finfo(ts.dtype).eps)  # Newton converges quadratically

    def fn(t, _):
        return cond(t, interp.evaluate(t), args)

    # throw=False: where rounding keeps |cond| above `tol`, the iterate after
    # max_steps is the root to rounding all the same
    root = optx.root_find(fn, optx.Newton(rtol=tol, atol=tol), guess, throw=False,
                          max_steps=64).value
    root = jnp.clip(root, lo, hi)
    return jnp.where(happened, root, jnp.inf), happened


def after_event(ys, ts, t_event):
    """`ys` with the states saved after `t_event` replaced by `inf` (as diffrax does
    for a terminated solve)."""
    late = ts > t_event
    return jtu.tree_map(
        lambda y: jnp.where(late.reshape((-1,) + (1,) * (y.ndim - 1)), jnp.inf, y), ys)
