"""The solve engine: one typed, validated configuration, and the run it describes.

`configure` is the one validator of the options every solve takes (solver, adjoint,
steps, tolerances, `max_steps`, `throw`, progress, event, dense output, `jac`,
`mass`): names become objects once, here, and every combination that cannot work
is a `ValueError` naming the argument and the value. `solve`, `ensemble`, `fit`,
`NeuralODE` and `CNF` all build a `Config` through it, and `solve_with` runs one:
`prepare` checks and promotes `y0` and `ts`, `Config.check` the shapes the options
meet in them, and `run` sends a fixed-step solver to `_fixed_solve` and any other to
`_adaptive`. With `throw`, `run` raises a run-time failure after the compiled
program has run when it was called eagerly, and puts the check in the program only
when a program is being built around it (see `_errors`).
"""

import dataclasses
import numbers
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._adaptive import solve_adaptive, warn_float32_stiff
from ._dense import Event, as_event
from ._errors import (
    check_choice,
    check_finite,
    check_numeric,
    check_positive,
    check_same_structure,
    check_times,
    is_concrete,
    is_staged,
    output_shape,
    raise_unless,
    short,
)
from ._fixed import FIXED_ADJOINTS, FixedAdjoint, FixedBacksolve, FixedDirect, \
    FixedForward, FixedRecursive
from ._fixed_solve import run_fixed
from ._rosenbrock import AbstractRosenbrock, Rodas5, Rodas5P, Rosenbrock23
from ._solution import Solution, solve_stats
from ._solvers import STEPPERS, AbstractStepper
from ._types import Args, VectorField, Y

__all__ = ["Config", "configure", "prepare", "run", "run_checked", "solve_with",
           "SOLVERS", "ADJOINTS", "as_float"]

SOLVERS: dict[str, Callable[[], Any]] = {
    **STEPPERS,
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "bosh3": diffrax.Bosh3,
    "kvaerno5": diffrax.Kvaerno5,
    "rodas5p": Rodas5P,
    "rodas5": Rodas5,
    "rosenbrock23": Rosenbrock23,
    "stiff": Rodas5P,  # the default stiff method
}

ADJOINTS: dict[str, Callable[[], diffrax.AbstractAdjoint]] = {
    "recursive": diffrax.RecursiveCheckpointAdjoint,
    "backsolve": diffrax.BacksolveAdjoint,
    "direct": diffrax.DirectAdjoint,
    "forward": diffrax.ForwardMode,
}

# what a diffrax adjoint means for a fixed-step solve
_FIXED_OF_DIFFRAX = {
    diffrax.RecursiveCheckpointAdjoint: FixedRecursive,
    diffrax.BacksolveAdjoint: FixedBacksolve,
    diffrax.DirectAdjoint: FixedDirect,
    diffrax.ForwardMode: FixedForward,
}


class Config(eqx.Module):
    """Everything a solve needs besides `f`, `y0`, `ts` and `args`, resolved and
    checked: built by `configure`, never by hand.

    - `solver`: a jaxode stepper or a diffrax solver (with the user's `jac`/`mass`).
    - `adjoint`: a `FixedAdjoint` for a stepper, a `diffrax.AbstractAdjoint` else.
    - `rtol`, `atol`: numbers or arrays (traced under `ensemble`, so new values do
      not recompile).
    - `dt`, `substeps`: the step (fixed) or first step (adaptive); a fixed count.
    - `plan`: a fixed-step plan `(steps per interval, uniform spans)` made on the
      host before tracing (`ensemble` with traced times), else None.
    - `max_steps`, `throw`, `progress`, `event` (an `Event` or None), `dense`.
    """

    solver: Any
    adjoint: Any
    rtol: Any
    atol: Any
    dt: Any
    substeps: int | None = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    throw: bool = eqx.field(static=True)
    progress: bool = eqx.field(static=True)
    event: Event | None
    dense: bool = eqx.field(static=True)
    plan: Any = eqx.field(static=True, default=None)

    @property
    def fixed_step(self) -> bool:
        return isinstance(self.solver, AbstractStepper)

    @property
    def forward_mode(self) -> bool:
        """Gradients in forward mode (`adjoint="forward"`): no custom VJPs."""
        return isinstance(self.adjoint, (diffrax.ForwardMode, FixedForward))

    def replace(self, **changes) -> "Config":
        """A copy with some fields changed (the caller keeps them valid)."""
        return dataclasses.replace(self, **changes)

    def with_tolerances(self, rtol: Any = None, atol: Any = None) -> "Config":
        """A copy with new tolerances (None keeps one), checked as by `configure`."""
        check_positive("rtol", rtol)
        check_positive("atol", atol)
        return self.replace(rtol=self.rtol if rtol is None else rtol,
                            atol=self.atol if atol is None else atol)

    def check(self, f: VectorField, y0: Y, ts: jax.Array, args: Args) -> None:
        """Trace-time checks of the options against the state: tolerance shapes,
        the shapes `jac`, `mass`, the event's condition and its reset return."""
        del f  # the solve programs check the vector field while they trace
        _check_tolerance("rtol", self.rtol, y0)
        _check_tolerance("atol", self.atol, y0)
        _check_jac_and_mass(self.solver, y0, ts, args)
        if self.event is not None:
            _check_event(self.event, y0, ts, args)


def configure(
    *,
    solver: Any = "tsit5",
    adjoint: Any = "recursive",
    dt: Any = None,
    substeps: int | None = None,
    rtol: Any = 1e-6,
    atol: Any = 1e-6,
    max_steps: int = 4096,
    throw: bool = True,
    progress: bool = False,
    event: Any = None,
    dense: bool = False,
    jac: Callable | None = None,
    mass: Any = None,
) -> Config:
    """The one validator: the options of `solve` (same names, same meanings) as a
    `Config`. **Raises:** `ValueError` naming the argument and the value."""
    solver = _with_jac_and_mass(resolve_solver(solver), jac, mass, adjoint)
    fixed = isinstance(solver, AbstractStepper)
    adjoint = _resolve_fixed_adjoint(adjoint) if fixed else resolve_adjoint(adjoint)
    for name, value in (("dt", dt), ("rtol", rtol), ("atol", atol)):
        check_positive(name, value)
    if (isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral)
            or max_steps < 1):
        raise ValueError(f"`max_steps` must be a positive integer, got {max_steps!r}.")
    _check_steps(solver, dt, substeps)
    event = as_event(event)
    _check_event_and_dense(event, dense, adjoint)
    return Config(solver=solver, adjoint=adjoint, rtol=rtol, atol=atol, dt=dt,
                  substeps=substeps, max_steps=int(max_steps), throw=throw,
                  progress=progress, event=event, dense=dense)


def resolve_solver(solver: Any) -> Any:
    """A solver name, a jaxode stepper or a diffrax solver, as a solver object."""
    if isinstance(solver, str):
        return SOLVERS[check_choice("solver", solver.lower(), SOLVERS)]()
    if isinstance(solver, (AbstractStepper, diffrax.AbstractSolver)):
        return solver
    raise ValueError(
        f"`solver`={short(solver)} is neither a solver name "
        f"({', '.join(sorted(SOLVERS))}), a jaxode stepper nor a diffrax solver."
    )


def resolve_adjoint(adjoint: Any) -> diffrax.AbstractAdjoint:
    """An adjoint name or a diffrax adjoint, as a diffrax adjoint object."""
    if isinstance(adjoint, str):
        return ADJOINTS[check_choice("adjoint", adjoint.lower(), ADJOINTS)]()
    if isinstance(adjoint, diffrax.AbstractAdjoint):
        return adjoint
    raise ValueError(
        f"`adjoint`={short(adjoint)} is neither an adjoint name "
        f"({', '.join(sorted(ADJOINTS))}) nor a diffrax.AbstractAdjoint."
    )


def _resolve_fixed_adjoint(adjoint: Any) -> FixedAdjoint:
    """The fixed-step adjoint object of a name, a diffrax adjoint or itself."""
    if isinstance(adjoint, FixedAdjoint):
        return adjoint
    if isinstance(adjoint, str):
        return FIXED_ADJOINTS[check_choice("adjoint", adjoint.lower(), ADJOINTS)]()
    fixed = _FIXED_OF_DIFFRAX.get(type(adjoint))
    if fixed is None:
        raise ValueError(
            f"`adjoint`={short(adjoint)} is not supported by fixed-step solvers; use "
            "'recursive', 'backsolve', 'direct' or 'forward'.")
    return fixed()


def _is_backsolve(adjoint: Any) -> bool:
    return isinstance(adjoint, (diffrax.BacksolveAdjoint, FixedBacksolve)) or (
        adjoint == "backsolve")


def _check_steps(solver, dt, substeps) -> None:
    """`dt` and `substeps`: exclusive, `substeps` a positive integer for fixed-step
    solvers only, `dt` required by a non-adaptive diffrax solver."""
    if substeps is not None:
        if dt is not None:
            raise ValueError(
                f"pass `dt` or `substeps`, not both (got dt={dt!r}, "
                f"substeps={substeps!r}).")
        if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
            raise ValueError(
                f"`substeps` must be a positive integer, got {substeps!r}.")
        if not isinstance(solver, AbstractStepper):
            raise ValueError(
                f"`substeps`={substeps!r} is for fixed-step solvers; the adaptive "
                f"solver {type(solver).__name__} chooses its own steps.")
    if (dt is None and isinstance(solver, diffrax.AbstractSolver)
            and not isinstance(solver, diffrax.AbstractAdaptiveSolver)):
        raise ValueError(
            f"`dt` is required for the non-adaptive diffrax solver {solver!r}.")



def _check_tolerance(name: str, tol, y0) -> None:
    """A tolerance is a scalar, or (for an array state) an array that broadcasts to
    the state's shape: one per component."""
    shape = np.shape(tol)
    if shape == ():
        return
    state = jnp.shape(y0) if isinstance(y0, (jax.Array, np.ndarray)) else None
    if state is not None:
        try:
            if np.broadcast_shapes(shape, state) == state:
                return
        except ValueError:
            pass
    raise ValueError(
        f"`{name}` must be a number or one per component of `y0` (shape "
        f"{state if state is not None else 'of a pytree: use a number'}), got shape "
        f"{shape}: {short(tol)}.")



def _with_jac_and_mass(solver, jac, mass, adjoint):
    """The solver with the user's `jac` and `mass` as its fields, or a `ValueError`
    where the solver cannot use them."""
    if jac is None and mass is None:
        return solver
    if jac is not None and not callable(jac):
        raise ValueError(f"`jac` must be a function jac(t, y, args), got {short(jac)}.")
    takes = AbstractRosenbrock if mass is not None else (AbstractRosenbrock,
                                                         Rosenbrock23)
    name = "mass" if mass is not None else "jac"
    if not isinstance(solver, takes):
        raise ValueError(
            f"`{name}` is for the Rosenbrock solvers ('rodas5p', 'rodas5'"
            f"{'' if mass is not None else ', rosenbrock23'}); the solver "
            f"{type(solver).__name__} does not use it.")
    if mass is not None and _is_backsolve(adjoint):
        raise ValueError(
            "`adjoint`='backsolve' does not support `mass` (the adjoint of a DAE is "
            "not the adjoint ODE it solves backwards); use 'recursive' or 'direct'.")
    changes = {k: v for k, v in (("jac", jac), ("mass", mass)) if v is not None}
    return eqx.tree_at(lambda s: [getattr(s, k) for k in changes], solver,
                       list(changes.values()), is_leaf=lambda x: x is None)


def _check_jac_and_mass(solver, y0, ts, args):
    """Trace-time shapes: `jac(t, y0, args)` and `mass` must be `(n, n)`."""
    if not isinstance(solver, (AbstractRosenbrock, Rosenbrock23)):
        return
    n = sum(int(np.size(leaf)) for leaf in jtu.tree_leaves(y0))
    if solver.jac is not None:
        out = output_shape("jac", solver.jac, ts[0], y0, args)
        fits = isinstance(out, jax.ShapeDtypeStruct) and out.size == n * n and (
            out.ndim == 2 or isinstance(y0, jax.Array) and out.shape == 2 * y0.shape)
        if not fits:
            got = (str(out.shape) if isinstance(out, jax.ShapeDtypeStruct)
                   else short(out))
            raise ValueError(
                f"`jac` must return the ({n}, {n}) Jacobian of f for a state of {n} "
                f"numbers; it returned shape {got}.")
    mass = getattr(solver, "mass", None)
    if mass is not None:
        check_numeric("mass", mass)
        if jnp.shape(mass) != (n, n):
            raise ValueError(
                f"`mass` must be an ({n}, {n}) matrix for a state of {n} numbers, got "
                f"shape {jnp.shape(mass)}.")
        check_finite("mass", mass)


def _check_event_and_dense(event, dense, adjoint) -> None:
    """`dense` is a bool; neither it nor an event works with a backsolve adjoint, and
    dense output does not go with an event that does not end the solve."""
    if not isinstance(dense, bool):
        raise ValueError(f"`dense` must be True or False, got {short(dense)}.")
    if event is not None and not event.terminal and dense:
        raise ValueError(
            "`dense=True` with an event that does not end the solve (terminal=False) "
            "is not supported: save the times you need in `ts`.")
    if (event is not None or dense) and _is_backsolve(adjoint):
        raise ValueError(
            f"`adjoint`='backsolve' does not support "
            f"{'`event`' if event is not None else '`dense=True`'} (the backward "
            "solve has no interpolant to differentiate); use 'recursive' or "
            "'direct'.")


def _check_event(event: Event, y0, ts, args) -> None:
    """The event's condition returns a real or boolean scalar, its reset a state
    like `y0`."""
    if event.reset is not None:
        out = output_shape("reset", event.reset, ts[0], y0, args)
        check_same_structure("reset", out, jax.eval_shape(lambda y: y, y0), "y0")
    out = output_shape("event", event.cond, ts[0], y0, args)
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != () or not (
            jnp.issubdtype(out.dtype, jnp.floating) or out.dtype == jnp.bool_):
        got = (f"{out.dtype}{list(out.shape)}" if isinstance(out, jax.ShapeDtypeStruct)
               else short(out))
        raise ValueError(
            "`event` must return one real (or boolean) scalar, whose sign change "
            f"marks the event; it returned {got}.")


# ------------------------------------------------------------------------ run


def as_float(x: Any) -> jax.Array:
    """`x` as an array of floating point (integers promoted to the default float)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    return x


def prepare(y0: Y, ts: Any, args: Args, *, ts_checked: bool = False
            ) -> tuple[Y, jax.Array, np.ndarray | None]:
    """`y0` and `ts` checked and as the solve holds them, and a host copy of
    concrete `ts` (None when traced): a fixed-step grid needs the values. A traced
    `ts` gets a run-time check that it increases, unless `ts_checked` (the caller
    has checked its values on the host before tracing)."""
    # under `jit`, `jnp.asarray` turns even a NumPy constant into a tracer
    check_numeric("ts", ts)
    ts_host = np.asarray(ts, dtype=np.float64) if is_concrete(ts) else None
    ts = as_float(ts)
    if ts_host is not None:  # the values as the solve holds them (float32 rounding)
        ts_host = ts_host.astype(ts.dtype).astype(np.float64)
    check_times("ts", ts if ts_host is None else ts_host)
    if isinstance(y0, list) and all(isinstance(leaf, (int, float, np.number))
                                    for leaf in jtu.tree_leaves(y0)):
        y0 = np.asarray(y0)  # a list of numbers is one state vector
    check_numeric("y0", y0)
    # the state takes the wider of its own and the times' float types (as diffrax
    # does), for fixed and adaptive steps alike
    y0 = jtu.tree_map(as_float, y0)
    y0 = jtu.tree_map(lambda y: y.astype(jnp.promote_types(y.dtype, ts.dtype)), y0)
    check_finite("y0", y0)
    check_finite("args", jtu.tree_map(
        lambda a: a if eqx.is_array_like(a) else None, args))
    if ts_host is None and not ts_checked:
        ts = eqx.error_if(ts, jnp.any(jnp.diff(ts) <= 0),
                          "jaxode.solve: `ts` must be strictly increasing. (`ts` "
                          "is traced here, under jit, so its values cannot be "
                          "shown: print them with jax.debug.print(\"{}\", ts) "
                          "before the call, or close over NumPy times instead of "
                          "passing them in: those are checked, with their values, "
                          "before compiling.)")
    return y0, ts, ts_host


def run(config: Config, f: VectorField, y0: Y, ts: jax.Array, args: Args,
        ts_host: np.ndarray | None = None) -> Solution:
    """The solve `config` describes, of prepared `y0` and `ts`.

    With `config.throw` a failure raises: through a check in the compiled program
    when a program is being built around this call (a caller's `jax.jit`), else
    after the program has run, from its flags (`_errors.raise_unless`), so that an
    eagerly run solve (also under an eager `vmap` or `grad`) holds no host callback.
    """
    in_program = is_staged()
    sol, checks = run_checked(config, f, y0, ts, args, ts_host, in_program)
    if config.throw and not in_program:
        raise_unless(checks)
    return sol


def run_checked(config: Config, f: VectorField, y0: Y, ts: jax.Array, args: Args,
                ts_host: np.ndarray | None, in_program: bool
                ) -> tuple[Solution, list[tuple[jax.Array, str]]]:
    """`run` without raising after the call: the solution and its failure checks
    `[(ok, message)]` (see `_errors.raise_unless`). The compiled program holds the
    checks itself only when `config.throw` and `in_program`."""
    config.check(f, y0, ts, args)
    if ts.shape[0] == 1:
        if config.event is not None or config.dense:
            raise ValueError("`event` and `dense` need at least two times in `ts`.")
        ys = jtu.tree_map(lambda a: a[None], y0)
        return Solution(ts, ys, solve_stats(0, 0, 0, 0), jnp.array(True)), []
    throw = config.throw and in_program
    if config.fixed_step:
        return run_fixed(config, f, y0, ts, args, ts_host, throw)
    return _run_adaptive(config, f, y0, ts, args, throw)


def solve_with(config: Config, f: VectorField, y0: Y, ts: Any,
               args: Args = None) -> Solution:
    """`prepare`, then `run`: `solve` with its options given as a `Config`."""
    y0, ts, ts_host = prepare(y0, ts, args)
    return run(config, f, y0, ts, args, ts_host)


def _run_adaptive(config: Config, f, y0, ts, args, throw) -> tuple[Solution, list]:
    rtol, atol = config.rtol, config.atol
    dt0 = None if config.dt is None else jnp.asarray(config.dt, ts.dtype)
    warn_float32_stiff(config.solver, ts.dtype, rtol)
    # the event's Newton tolerances are static (an optimistix solver field), and
    # no finer than the dtype resolves (or Newton sees rounding as divergence)
    event_tol = None
    if config.event is not None:  # traced tolerances (under `ensemble`): 1e-10
        tol = min(float(rtol), float(atol)) if is_concrete((rtol, atol)) else 1e-10
        event_tol = (max(tol, 100 * float(jnp.finfo(ts.dtype).eps)),) * 2
    ys, ok, stats, times, interp, result, checks = solve_adaptive(
        f, config.solver, y0, ts, args, dt0, jnp.asarray(rtol, ts.dtype),
        jnp.asarray(atol, ts.dtype), config.adjoint, config.max_steps, throw,
        config.progress, config.event, event_tol, config.dense)
    return Solution(ts, ys, stats, ok, times[0], interp, result, times), checks
