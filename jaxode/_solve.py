"""`solve`: the one entry point for initial value problems.

The front door: the options go through `_engine.configure` (the one validator, which
`ensemble`, `fit`, `NeuralODE` and `CNF` use too) and the solve runs in the engine.
A jaxode stepper (`Euler`, `Midpoint`, `Heun`, `RK4`) runs in the fixed-step loops of
`_fixed` (a `lax.scan` over the steps, with adjoint objects of their own); any other
solver (by name, or any diffrax solver, Rosenbrock methods included) runs through
`diffrax.diffeqsolve` with a PI step-size controller (`_adaptive`). Events that do not
end the solve run as a `lax.scan` of continuations. All return a `Solution`.
"""

from collections.abc import Callable
from typing import Any

from ._engine import ADJOINTS, SOLVERS, configure, solve_with
from ._solution import Solution
from ._types import Args, VectorField, Y

__all__ = ["solve", "Solution", "SOLVERS", "ADJOINTS"]


def solve(
    f: VectorField,
    y0: Y,
    ts: Any,
    args: Args = None,
    *,
    solver: Any = "tsit5",
    dt: float | None = None,
    substeps: int | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    adjoint: Any = "recursive",
    max_steps: int = 4096,
    throw: bool = True,
    progress: bool = False,
    event: Callable[[Any, Y, Args], Any] | None = None,
    dense: bool = False,
    jac: Callable[[Any, Y, Args], Any] | None = None,
    mass: Any = None,
) -> Solution:
    """Solve `dy/dt = f(t, y, args)` from `y(ts[0]) = y0` and return `y` at `ts`.

    **Arguments:**

    - `f`: vector field `f(t, y, args) -> dy/dt`, same pytree, shapes and dtypes
      as `y0`.
    - `y0`: initial state, any pytree of arrays (a list of numbers is one array);
      integer values are promoted to floating point, and every leaf to the wider of
      its float type and that of `ts` (float32 `y0` with float64 `ts` solves in
      float64), for fixed and adaptive steps alike.
    - `ts`: 1-D, strictly increasing save times; the solve runs from `ts[0]` to
      `ts[-1]`.
    - `args`: passed to `f` unchanged.
    - `solver`: a name — fixed step: `"euler"`, `"midpoint"`, `"heun"`, `"rk4"`;
      adaptive: `"tsit5"` (default), `"dopri5"`, `"dopri8"`, `"bosh3"`; stiff:
      `"rodas5p"` (= `"stiff"`, the stiff default: linearly implicit Rosenbrock,
      order 5, for rtol 1e-4 ... 1e-10, and index-1 DAEs with `mass`), `"rodas5"`,
      `"rosenbrock23"` (order 2, for rtol 1e-3 ... 1e-5) and `"kvaerno5"` (implicit
      Runge–Kutta, order 5) — or a jaxode stepper (`jaxode.RK4()`) or any diffrax
      solver instance.
    - `dt`: fixed-step solvers: the largest step. Each interval of `ts` is split
      into equal steps no longer than `dt`; a span within rounding of `k·dt` (a few
      ulps of the dtype of `ts`, as a float32 `linspace` has) takes exactly `k`
      steps. `None` takes one step per interval, "one RNN step per time step".
      Needs concrete `ts` (the step count sets array shapes). Adaptive solvers: the
      initial step (`None` chooses it automatically).
    - `substeps`: fixed-step solvers: exactly `k` equal steps in every interval of
      `ts`. The static alternative to `dt` when `ts` is traced (a jitted loss that
      takes `ts` as an argument).
    - `rtol`, `atol`: tolerances of the PID step-size controller (adaptive only):
      numbers, or for an array state one per component (broadcasting to its shape).
    - `adjoint`: how gradients are computed: `"recursive"` (checkpointed backprop
      through the solver, default; memory grows like √steps for fixed steps),
      `"backsolve"` (the continuous adjoint of Chen et al. 2018: memory independent
      of the number of steps, gradient exact to the solver's order), `"direct"`
      (backprop storing every step: the fastest gradient, memory linear in steps),
      `"forward"` (for `jax.jvp` / `jax.jacfwd`), or a `diffrax.AbstractAdjoint`.
      Fixed-step solvers honour all four; with them `"recursive"` and
      `"backsolve"` support reverse mode only (use `"direct"` or `"forward"` for
      `jax.jvp`/`jax.jacfwd`); with `"backsolve"` the gradient with respect to
      `ts` is that of the exact flow (`dL/dt_i = dL/dy_i · f(t_i, y_i)`), not of
      the discrete steps.
    - `max_steps`: the most steps an adaptive solve may take.
    - `throw`: raise on failure. With `throw=False` a failure is reported in
      `sol.ok` (per element under `vmap`), and the values after the failure are
      `inf`/`NaN`, never plausible numbers. Called eagerly (also under an eager
      `vmap` or `grad`), the solve raises after its compiled program has run, from
      flags the program returns. Inside a caller's `jax.jit` the check is part of
      that program (`equinox.error_if`, a host callback), and on CPU jaxlib runs a
      program holding a host callback synchronously on the calling thread: about
      10 % slower on a large vmapped fixed-step solve. Where that matters, pass
      `throw=False` and check `sol.ok`, or call `solve` (or `ensemble`) outside the
      `jit`. A check whose result the program does not use is dropped: under
      `jax.jit(jax.grad(...))`, which returns only the gradient, nothing raises.
    - `progress`: show a tqdm progress bar.
    - `event`: `cond(t, y, args) -> scalar`; the solve stops where `cond` changes
      sign (a terminal event). Its time, found by Newton's method on the solver's
      interpolant (the cubic Hermite interpolant of the steps for fixed-step
      solvers), is `sol.t_event` (`inf` if none; per member under `vmap`), and the
      saved states after it are `inf`. Gradients of `t_event` with respect to `y0`
      and `args` follow from the implicit function theorem. A boolean `cond` stops
      at the end of the step where it becomes True. Fixed-step solves compute every
      step and then look for the sign change; adaptive ones stop there.
    - `dense`: keep what `sol.evaluate(t)` needs to give the state at any `t` in
      the span: diffrax's interpolation for adaptive solvers; for fixed steps the
      state at every step and its derivative (one more `f` evaluation per step),
      interpolated by cubic Hermite polynomials (error O(h^4)).
      Neither `event` nor `dense` works with `adjoint="backsolve"`.
    - `jac`: Rosenbrock solvers: the Jacobian `jac(t, y, args) -> ∂f/∂y`, an
      `(n, n)` array for a state of `n` numbers (of the flattened state, for a
      pytree). By default `jax.jacfwd` of `f` (one batch of `n` forward-mode
      products per step).
    - `mass`: Rodas solvers: a constant `(n, n)` mass matrix `M`, possibly
      singular, to solve `M dy/dt = f(t, y, args)`: index-1 differential-algebraic
      equations, where a zero row of `M` makes its equation algebraic. `y0` must be
      consistent (the algebraic equations hold at `ts[0]` to `10·(atol +
      rtol·max|y0|)`), or the solve raises.

    **Returns:** a `Solution`; `sol.ys` leaves have shape `(len(ts), *leaf.shape)`.

    **Raises:** `ValueError` for bad inputs (the message names the argument and the
    value); at run time, an error when the solve fails and `throw=True`.

    Works under `jax.jit`, `jax.vmap` and `jax.grad`. Tolerances, `y0`, `args` and
    `ts` are traced values: changing them does not recompile, except that a
    fixed-step solve with `dt` compiles once per step count (`len(ts)`, `dt` and the
    spans of `ts` set the number of steps; `substeps` fixes it).
    """
    config = configure(
        solver=solver, adjoint=adjoint, dt=dt, substeps=substeps, rtol=rtol,
        atol=atol, max_steps=max_steps, throw=throw, progress=progress, event=event,
        dense=dense, jac=jac, mass=mass)
    return solve_with(config, f, y0, ts, args)
