"""`Solution`, the result of every solve, and its statistics."""

import functools
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Bool, Int

from ._errors import is_concrete, short
from ._types import Y

__all__ = ["Solution", "solve_stats"]


class Solution(eqx.Module):
    """The result of `solve`.

    - `ts`: the save times, shape `(time,)`.
    - `ys`: the state at `ts`, a pytree like `y0` whose leaves have shape
      `(time, *leaf.shape)`.
    - `stats`: `num_steps`, `num_accepted`, `num_rejected` and `nfe` (vector-field
      evaluations; -1 where a solver cannot report it, as for implicit solvers).
    - `ok`: True when the solve reached the end of `ts` (or its event) with finite
      values (per element under `vmap`).
    - `result`: why it ended, as diffrax reports it: a `diffrax.RESULTS` item
      (`successful`, `event_occurred`, `max_steps_reached`, `nonfinite`, ...; per
      element under `vmap`). `diffrax.RESULTS[sol.result]` is its message.
    - `t_event`: with an `event`, the time of the first event; `inf` when there was
      none, or when no event was asked for.
    - `event_times`: the times of all events, padded with `inf` to the event's
      `max_events` (one for a terminal event); `event_count`: how many there were.
    - `evaluate(t)`: with `dense=True`, the state at any `t` in `[ts[0], ts[-1]]`
      (`inf` after a terminal event, as in `ys`).
    """

    ts: Array
    ys: Y
    stats: dict[str, Int[Array, ""]]
    ok: Bool[Array, ""]
    t_event: Array = eqx.field(default_factory=lambda: jnp.array(jnp.inf))
    interpolation: Any = None
    result: Any = eqx.field(default_factory=lambda: diffrax.RESULTS.successful)
    event_times: Array = eqx.field(default_factory=lambda: jnp.full((1,), jnp.inf))

    @property
    def event_count(self) -> Array:
        return jnp.sum(jnp.isfinite(self.event_times), axis=-1)

    @property
    def evaluate(self) -> Callable[[Any], Y]:
        """`sol.evaluate(t)`: the state at time(s) `t`: a scalar gives a state like
        `y0`, an array of times gives leaves of shape `(*t.shape, *leaf.shape)`.
        Needs `dense=True`. A plain function of `t` (so `jax.jit(sol.evaluate)`
        works); `inf` after a terminal event, as in `ys`.

        **Raises:** `ValueError` without dense output, or for a concrete `t` outside
        `[ts[0], ts[-1]]` (a traced one is checked at run time).
        """
        return functools.partial(evaluate_at, self)


def evaluate_at(sol: Solution, t: Any) -> Y:
    if sol.interpolation is None:
        raise ValueError("`evaluate` needs dense output: solve with `dense=True`.")
    t = jnp.asarray(t, sol.ts.dtype)
    lo, hi = sol.ts[0], sol.ts[-1]
    if is_concrete((t, lo, hi)):
        outside = np.asarray(t)[(np.asarray(t) < np.asarray(lo))
                                | (np.asarray(t) > np.asarray(hi))]
        if outside.size:
            raise ValueError(
                f"`t`={short(outside)} is outside the span of the solution "
                f"[{float(lo):g}, {float(hi):g}]; `evaluate` does not extrapolate.")
    else:
        t = eqx.error_if(t, jnp.any((t < lo) | (t > hi)),
                         "jaxode.Solution.evaluate: `t` is outside the span of "
                         "the solution; `evaluate` does not extrapolate.")
    flat = jax.vmap(sol.interpolation.evaluate)(jnp.reshape(t, (-1,)))
    out = jtu.tree_map(lambda y: jnp.reshape(y, t.shape + y.shape[1:]), flat)
    # after a terminal event the solution does not exist, as `ys` says
    late = t > sol.t_event
    return jtu.tree_map(lambda y: jnp.where(
        late.reshape(t.shape + (1,) * (y.ndim - t.ndim)), jnp.inf, y), out)


def solve_stats(num_steps, num_accepted, num_rejected, nfe, num_jacobians=0,
           num_lu=0) -> dict[str, jax.Array]:
    as_int = lambda v: jnp.asarray(v, dtype=jnp.int32)  # noqa: E731
    return {
        "num_steps": as_int(num_steps),
        "num_accepted": as_int(num_accepted),
        "num_rejected": as_int(num_rejected),
        "nfe": as_int(nfe),
        "num_jacobians": as_int(num_jacobians),
        "num_lu": as_int(num_lu),
    }
