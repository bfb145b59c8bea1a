"""`NeuralODE`: a learned vector field integrated by `jaxode.solve`, with exact counts
of vector-field evaluations in the forward and the backward pass.

Counting works by two hooks placed in the compiled program, so they fire every time the
program runs, including calls served from the jit cache:

- a `jax.debug.callback` in the vector field counts each evaluation of `f`;
- an identity with a custom VJP in front of `f` counts each vector-Jacobian product
  through `f`, i.e. each evaluation of the adjoint dynamics in the backward pass.
"""

import functools
import threading
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, PyTree

from .._errors import check_field
from .._engine import Config, configure, solve_with
from .._solution import Solution

__all__ = ["NeuralODE", "NFECounter"]


class NFECounter:
    """Run-time counts of vector-field evaluations of one `NeuralODE`.

    - `forward`: evaluations of `f` (in a gradient step this includes the ones the
      backward pass makes: recomputation for `"recursive"`, the primal half of each
      adjoint evaluation for `"backsolve"`).
    - `backward`: vector-Jacobian products through `f`, one per evaluation of the
      adjoint dynamics: the backward NFE.

    Reading a count waits for pending device work (`jax.effects_barrier`). Under
    `jax.vmap` a batched evaluation counts once. Use `reset()` between measurements,
    or `with counter.measure() as m:` which records the counts made inside the block.
    """

    def __init__(self) -> None:
        self._forward = 0
        self._backward = 0
        self._lock = threading.Lock()

    def _add_forward(self, *_: Any) -> None:
        with self._lock:
            self._forward += 1

    def _add_backward(self, *_: Any) -> None:
        with self._lock:
            self._backward += 1

    @property
    def forward(self) -> int:
        jax.effects_barrier()
        return self._forward

    @property
    def backward(self) -> int:
        jax.effects_barrier()
        return self._backward

    def reset(self) -> None:
        jax.effects_barrier()
        with self._lock:
            self._forward = 0
            self._backward = 0

    def measure(self) -> "_Measurement":
        """Context manager: `m.forward`, `m.backward` counted inside the block."""
        return _Measurement(self)

    def __repr__(self) -> str:
        return f"NFECounter(forward={self.forward}, backward={self.backward})"


class _Measurement:
    def __init__(self, counter: NFECounter) -> None:
        self.counter = counter
        self.forward = 0
        self.backward = 0

    def __enter__(self) -> "_Measurement":
        self._f0, self._b0 = self.counter.forward, self.counter.backward
        return self

    def __exit__(self, *exc: Any) -> None:
        self.forward = self.counter.forward - self._f0
        self.backward = self.counter.backward - self._b0


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _tap(counter: NFECounter, y: Any) -> Any:
    return y


def _tap_fwd(counter, y):
    return y, None


def _tap_bwd(counter, _, ct):
    jax.debug.callback(counter._add_backward)
    return (ct,)


_tap.defvjp(_tap_fwd, _tap_bwd)


class _Field(eqx.Module):
    """`f(t, y, (vector_field, args)) = vector_field(t, y, args)`, with the counting
    hooks.

    The learned vector field travels in `solve`'s `args`, so every adjoint (backsolve
    included) differentiates its parameters; the hooks are static, so jit caches one
    program.
    """

    counter: NFECounter | None = eqx.field(static=True)
    tap: bool = eqx.field(static=True)

    def __call__(self, t, y, field_args):
        vector_field, args = field_args
        if self.counter is not None:
            jax.debug.callback(self.counter._add_forward)
            if self.tap:
                y = _tap(self.counter, y)
        return vector_field(t, y, args)


class NeuralODE(eqx.Module):
    """`y(t1)` from `dy/dt = vector_field(t, y, args)`, `y(0) = y0`: a continuous-depth
    layer.

    **Arguments:**

    - `vector_field`: a callable (usually an `eqx.Module`) `vector_field(t, y, args)
      -> dy/dt`, same pytree, shapes and dtypes as `y`: the calling convention of
      `jaxode.solve` and of diffrax's `ODETerm`. Its arrays are the parameters;
      `args` is whatever the caller passes to `model(y0, ts, args)` (default
      `None`), e.g. a conditioning input.
    - `t1`: the end time (the "depth"); the solve runs over `[0, t1]`.
    - `solver`: any solver name of `jaxode.solve` (`"dopri5"`, `"tsit5"`, `"rk4"`,
      ...), a jaxode stepper or a diffrax solver.
    - `rtol`, `atol`: tolerances of an adaptive solver (overridable per call).
    - `adjoint`: `"backsolve"` (the continuous adjoint, memory independent of the
      number of steps), `"recursive"` (checkpointed backprop through the solver),
      `"direct"`, `"forward"`, or a `diffrax.AbstractAdjoint`. Fixed-step solvers
      honour it too: `"backsolve"` integrates the adjoint system backwards with the
      same stepper.
    - `dt`: fixed-step solvers: the step (`None`: one step over `[0, t1]`);
      adaptive solvers: the first step (`None`: chosen automatically).
    - `max_steps`: the most steps of an adaptive solve.
    - `count_nfe`: keep an `NFECounter` in `self.counter` (opt-in, default False).
      The hooks cost a host callback per evaluation, and a program holding one cannot
      go into JAX's persistent compilation cache; without them, `model.solve(y0)`
      still reports the forward evaluations in `stats["nfe"]`, counted inside the
      compiled program. With `adjoint="forward"` only forward evaluations are
      counted. Passing an `NFECounter` shares it: models built with the same counter
      hit the same jit cache entry (the counter is a static field, compared by
      identity).

    **Raises:** `ValueError` for a `vector_field` that does not take `(t, y, args)`,
    an unknown solver or adjoint, `t1 <= 0`, non-positive tolerances or `max_steps`.

    Calling the model: `model(y0)` returns `y(t1)` of the solve over `[0, t1]`;
    `model(y0, ts)` starts from `y(ts[0]) = y0` and returns the states at the times
    `ts` (1-D, strictly increasing) stacked on a leading axis; `model(y0, ts, args)`
    passes `args` to the vector field. `model.solve(y0, ts, args)` returns the full
    `jaxode.Solution` (with `stats["nfe"]`, the forward evaluations).
    """

    vector_field: Callable[..., PyTree]
    t1: float = eqx.field(static=True)
    config: Config = eqx.field(static=True)
    counter: NFECounter | None = eqx.field(static=True)

    def __init__(
        self,
        vector_field: Callable[..., PyTree],
        *,
        t1: float = 1.0,
        solver: Any = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-3,
        adjoint: Any = "backsolve",
        dt: float | None = None,
        max_steps: int = 4096,
        count_nfe: "bool | NFECounter" = False,
    ):
        check_field("vector_field", vector_field, "vector_field(t, y, args)")
        t1 = float(t1)
        if not t1 > 0:
            raise ValueError(f"`t1` must be > 0, got {t1!r}.")
        self.config = configure(solver=solver, adjoint=adjoint, rtol=rtol, atol=atol,
                                dt=dt, max_steps=max_steps)
        self.vector_field = vector_field
        self.t1 = t1
        if isinstance(count_nfe, NFECounter):
            self.counter = count_nfe
        else:
            self.counter = NFECounter() if count_nfe else None

    # the options as `configure` resolved them (names became solver and adjoint objects)
    solver = property(lambda self: self.config.solver)
    adjoint = property(lambda self: self.config.adjoint)
    rtol = property(lambda self: self.config.rtol)
    atol = property(lambda self: self.config.atol)
    dt = property(lambda self: self.config.dt)
    max_steps = property(lambda self: self.config.max_steps)

    @property
    def fixed_step(self) -> bool:
        """True for a fixed-step solver (`"euler"`, `"rk4"`, ..., a jaxode stepper)."""
        return self.config.fixed_step

    def _field(self) -> _Field:
        return _Field(self.counter, not self.config.forward_mode)

    def solve(self, y0: PyTree, ts: Array | None = None, args: Any = None, *,
              rtol=None, atol=None, throw: bool = True) -> Solution:
        """The `jaxode.Solution` from `y(0) = y0` saved at `ts` (default `[0, t1]`),
        with `args` passed to the vector field.

        `rtol`/`atol` override the model's tolerances for this call (traced values:
        changing them does not recompile).
        """
        if ts is None:
            # NumPy, so the times stay concrete under `jit` (a fixed-step solve
            # with `dt` counts its steps from them)
            ts = np.array([0.0, self.t1], dtype=jnp.result_type(float))
        config = self.config.with_tolerances(rtol, atol).replace(throw=throw)
        # fixed-step solvers honour the adjoint too (backsolve included)
        return solve_with(config, self._field(), y0, ts, (self.vector_field, args))

    def __call__(self, y0: PyTree, ts: Array | None = None, args: Any = None, *,
                 rtol=None, atol=None) -> PyTree:
        """`y(t1)` (`ts=None`) or the states at `ts` stacked on a leading axis."""
        sol = self.solve(y0, ts, args, rtol=rtol, atol=atol)
        if ts is None:
            return jtu.tree_map(lambda a: a[-1], sol.ys)
        return sol.ys
