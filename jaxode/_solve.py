"""`solve`: the one entry point for initial value problems.

A jaxode stepper (`Euler`, `Midpoint`, `Heun`, `RK4`) runs in the fixed-step loops
of `_fixed` (a `lax.scan` over the steps, with its own adjoints); an adaptive solver
(by name, or any diffrax solver, Rosenbrock methods included) runs through
`diffrax.diffeqsolve` with a PI step-size controller. Events that do not end the
solve run as a `lax.scan` of continuations. All return a `Solution`.
"""

import functools
import warnings
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optimistix as optx
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Int

from ._errors import (
    check_choice,
    check_finite,
    check_numeric,
    check_positive,
    check_same_structure,
    check_times,
    is_concrete,
    short,
)
from ._dense import (
    Event,
    HermiteInterpolation,
    after_event,
    as_event,
    is_boolean,
    locate_event,
    signal,
    start_sign,
    step_grid,
)
from ._fixed import plan_grid, solve_even, solve_steps, step_list
from ._rosenbrock import AbstractRosenbrock, Rodas5, Rodas5P, Rosenbrock23
from ._solvers import STEPPERS, AbstractStepper
from ._types import Args, VectorField, Y

__all__ = ["solve", "Solution", "SOLVERS", "ADJOINTS"]

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

# PI coefficients for implicit (stiff) solvers. Kvaerno5 on the Robertson problem to
# t = 1e11 (rtol 1e-6 / 1e-8, atol 1e-4·rtol): the default I controller rejects 46 %
# of its steps; pcoeff=0.4, icoeff=0.3 rejects 14-16 %, takes 40 % fewer steps and is
# 1.5x faster (`python benchmarks/stiff.py --controllers`). Rosenbrock23 rejects
# almost no steps with the I controller, which it keeps.
STIFF_PID = {"pcoeff": 0.4, "icoeff": 0.3}

# PI coefficients for the Rodas methods. Rodas5P's steps (accepted + rejected) at
# equal error, on Robertson, HIRES, OREGO and Van der Pol at errors 1e-5, 1e-7 and
# 1e-9: the Kvaerno5 PI above took 20 % fewer to 44 % more steps than the I
# controller (more in 10 of 12 cases); pcoeff=0.1, icoeff=0.9 took up to 11 %
# fewer in 9 of 12 and at most 2 % more in the others
# (`python benchmarks/stiff.py --controllers`).
ROSENBROCK_PID = {"pcoeff": 0.1, "icoeff": 0.9}

ADJOINTS: dict[str, Callable[[], diffrax.AbstractAdjoint]] = {
    "recursive": diffrax.RecursiveCheckpointAdjoint,
    "backsolve": diffrax.BacksolveAdjoint,
    "direct": diffrax.DirectAdjoint,
    "forward": diffrax.ForwardMode,
}

_MAX_STEPS_HINT = (
    "jaxode.solve: the solver reached `max_steps` before the end of `ts`. Raise "
    "`max_steps`, loosen `rtol`/`atol`, or, if the problem is stiff, try "
    "solver='rodas5p' (the stiff default, also solver='stiff')."
)
_MAX_STEPS_STIFF_HINT = (
    "jaxode.solve: the stiff solver reached `max_steps` before the end of `ts`. "
    "Raise `max_steps` or loosen `rtol`/`atol`; in float32, tolerances below about "
    "1e-5 are out of reach of stiff linear algebra: enable float64 "
    "(jax.config.update('jax_enable_x64', True))."
)
_FLOAT32_STIFF_HINT = (
    "jaxode.solve: the stiff solver ran in float32 and reached `max_steps` (or met "
    "a non-finite trial step) before the end of `ts`. That is likely float32 "
    "itself: it resolves about 1.2e-7, so a long run cannot resolve the short "
    "steps a fast transient needs (time t is known to t·1.2e-7; measured: Van der "
    "Pol with mu = 1000 stalls near t = 1600 at rtol 1e-4, every step rejected), "
    "and rounding in the stiff linear algebra can look like an error above a tight "
    "`rtol`/`atol`. Solve in float64 (jax.config.update('jax_enable_x64', True)), "
    "or loosen `rtol`/`atol`."
)
_NONFINITE_ADAPTIVE_HINT = (
    "jaxode.solve: a non-finite value (NaN or inf) appeared in the vector field or "
    "the state, and the adaptive solver then ran out of `max_steps` (it shrinks the "
    "step after every non-finite trial step). Check `f`, `y0` and `args` for values "
    "that blow up (log or sqrt of a negative number, division by zero, overflow)."
)
_FAILED_HINT = (
    "jaxode.solve: the solve failed (step size collapsed or the state became "
    "non-finite). Check `f`, `y0` and `args` for values that blow up; for stiff "
    "problems try solver='rodas5p' (the stiff default)."
)
_SINGULAR_HINT = (
    "jaxode.solve: the stiff solver's matrix W = M/(h·gamma) - J stayed singular "
    "as the step shrank to nothing: a DAE of index higher than 1 (its algebraic "
    "equations do not determine the algebraic variables), or a Jacobian that is "
    "not finite. Check `mass`, `f` and `jac`."
)
_NONFINITE_HINT = (
    "jaxode.solve: a non-finite value (NaN or inf) appeared during the fixed-step "
    "solve. Reduce `dt`, use a higher-order or adaptive solver, or check `f`, `y0` "
    "and `args`."
)


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
        return functools.partial(_evaluate, self)


def _evaluate(sol: Solution, t: Any) -> Y:
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


def _resolve_solver(solver: Any) -> Any:
    if isinstance(solver, str):
        return SOLVERS[check_choice("solver", solver.lower(), SOLVERS)]()
    if isinstance(solver, (AbstractStepper, diffrax.AbstractSolver)):
        return solver
    raise ValueError(
        f"`solver`={short(solver)} is neither a solver name "
        f"({', '.join(sorted(SOLVERS))}), a jaxode stepper nor a diffrax solver."
    )


def _resolve_adjoint(adjoint: Any) -> diffrax.AbstractAdjoint:
    if isinstance(adjoint, str):
        return ADJOINTS[check_choice("adjoint", adjoint.lower(), ADJOINTS)]()
    if isinstance(adjoint, diffrax.AbstractAdjoint):
        return adjoint
    raise ValueError(
        f"`adjoint`={short(adjoint)} is neither an adjoint name "
        f"({', '.join(sorted(ADJOINTS))}) nor a diffrax.AbstractAdjoint."
    )


def _as_float(x: Any) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    return x


def _stats(num_steps, num_accepted, num_rejected, nfe, num_jacobians=0,
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


# ----------------------------------------------------------------- fixed step


_FIXED_ADJOINT_OF = {
    diffrax.RecursiveCheckpointAdjoint: "recursive",
    diffrax.BacksolveAdjoint: "backsolve",
    diffrax.DirectAdjoint: "direct",
    diffrax.ForwardMode: "direct",  # a plain scan: jvp and jacfwd go straight through
}


def _fixed_adjoint(adjoint: Any) -> str:
    """The fixed-step meaning of an adjoint name or diffrax adjoint."""
    resolved = _resolve_adjoint(adjoint)
    for cls, name in _FIXED_ADJOINT_OF.items():
        if type(resolved) is cls:
            return name
    raise ValueError(
        f"`adjoint`={short(adjoint)} is not supported by fixed-step solvers; use "
        "'recursive', 'backsolve', 'direct' or 'forward'."
    )


def result_of(ok):
    """The diffrax result of a fixed-step solve: it fails only on non-finite values."""
    return diffrax.RESULTS.where(ok, diffrax.RESULTS.successful,
                                 diffrax.RESULTS.nonfinite)


def _with_check(y0, ys, y_end, ok, throw):
    """`y0`, then `ys[:-1]`, then the final state `y_end` (the last of `ys`, taken
    from the loop's carry: a caller that keeps only it lets XLA drop the saved
    trajectory). With `throw`, the final state carries the run-time check, so every
    caller that keeps any of the solution past `y0` keeps the check."""
    if throw:
        y_end = eqx.error_if(y_end, jnp.logical_not(ok), _NONFINITE_HINT)
    return jtu.tree_map(lambda a, b, c: jnp.concatenate([a[None], b[:-1], c[None]]),
                        y0, ys, y_end)


@eqx.filter_jit
def _solve_fixed(f, solver, y0, ts, args, substeps, uniform, adjoint, throw,
                 progress):
    """Fixed-step solve: `substeps` equal steps inside every interval of `ts`.

    With `uniform` (all spans of `ts` equal), the step is one traced scalar computed
    before the loop, so new values of `ts` do not recompile; a loop-invariant step lets
    XLA fuse a whole step into one kernel (reading it from the scanned times instead
    was measured 1.6x slower on a vmapped RK4).
    """
    _check_vector_field(f, y0, ts, args)  # runs while tracing: cached calls skip it
    n = ts.shape[0] - 1
    h = (ts[-1] - ts[0]) / (n * substeps) if uniform else None
    tick = _Progress.tick if progress else None
    ys, y_end, ok = solve_even(f, solver, y0, ts, args, substeps, h, adjoint, tick)
    steps = n * substeps
    return _with_check(y0, ys, y_end, ok, throw), ok, _stats(steps, steps, 0,
                                                      steps * solver.stages)


@eqx.filter_jit
def _solve_fixed_grid(f, solver, y0, ts, t_steps, h_steps, save_index, counts, args,
                      throw, adjoint="direct"):
    """Fixed-step solve over an explicit grid of steps, keeping the states after the
    steps `save_index` (when the intervals of `ts` need different numbers of steps)."""
    _check_vector_field(f, y0, t_steps, args)
    ys, y_end, ok = solve_steps(f, solver, y0, ts, args, t_steps, h_steps,
                                save_index, counts, adjoint)
    steps = t_steps.shape[0]
    return _with_check(y0, ys, y_end, ok, throw), ok, _stats(steps, steps, 0,
                                                      steps * solver.stages)


class _Progress:
    """The tqdm bar of the fixed-step solve running now. The compiled solve calls the
    stable function `tick`, so showing a bar does not recompile anything."""

    bar = None

    @classmethod
    def tick(cls, i):
        if cls.bar is not None:
            cls.bar.n = int(i) + 1
            cls.bar.refresh()

    @classmethod
    def open(cls, total: int):
        from tqdm.auto import tqdm

        cls.bar = tqdm(total=total, desc="jaxode.solve", unit="interval", leave=False)

    @classmethod
    def close(cls):
        if cls.bar is not None:
            cls.bar.close()
        cls.bar = None


# ------------------------------------------------------------------- adaptive


class _CountingPID(diffrax.AbstractAdaptiveStepSizeController):
    """A `diffrax.PIDController` that also records, in one int32 of controller state,
    two facts nothing else in the solve keeps:

    - the number of steps rejected before the first accepted one (bits 0-28): a
      first-same-as-last solver re-evaluates `f(t0, y0)` on each of them;
    - whether any step so far had a non-finite error estimate (bit 30): a solve that
      runs out of `max_steps` after NaN trial steps has usually met a vector field
      that returns NaN (the step shrinks towards the wall), and the error message
      says so.

    Bit 29 marks that a step has been accepted (the count stays fixed from then on).
    The controller state is updated on every step, accepted or not (unlike the
    solver state), which is what makes it the place to count. One int32 costs no
    measurable time; a bool beside a counter cost 14 % of a vmapped solve.
    """

    pid: diffrax.PIDController

    _ACCEPTED = 1 << 29
    _NONFINITE = 1 << 30

    @property
    def rtol(self):
        return self.pid.rtol

    @property
    def atol(self):
        return self.pid.atol

    @property
    def norm(self):
        return self.pid.norm

    def wrap(self, direction):
        return _CountingPID(self.pid.wrap(direction))

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, state = self.pid.init(terms, t0, t1, y0, dt0, args, func, error_order)
        return tnext, (state, jnp.array(0, jnp.int32))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order,
                        controller_state):
        state, bits = controller_state
        keep, tprev, tnext, made_jump, state, result = self.pid.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, state)
        accepted = (bits & self._ACCEPTED) != 0
        count = jnp.minimum((bits & (self._ACCEPTED - 1))
                            + jnp.where(accepted | keep, 0, 1), self._ACCEPTED - 1)
        finite = jnp.isfinite(sum(jnp.sum(e) for e in jtu.tree_leaves(y_error)))
        bits = (count | jnp.where(accepted | keep, self._ACCEPTED, 0)
                | (bits & self._NONFINITE)
                | jnp.where(finite, 0, self._NONFINITE)).astype(jnp.int32)
        return keep, tprev, tnext, made_jump, (state, bits), result

    @classmethod
    def early_rejections(cls, controller_state) -> jax.Array:
        return controller_state[1] & (cls._ACCEPTED - 1)

    @classmethod
    def saw_nonfinite(cls, controller_state) -> jax.Array:
        return (controller_state[1] & cls._NONFINITE) != 0


def _diffrax_nfe(solver: diffrax.AbstractSolver, stats: dict,
                 early_rejections: Any) -> Any:
    """Vector-field evaluations of an explicit diffrax Runge–Kutta solve.

    Every step, accepted or rejected, evaluates each stage once, less the first stage
    for first-same-as-last methods; those evaluate `f(t0, y0)` on every step until one
    is accepted, then reuse the last stage. The tests check this against a counter
    inside `f`. Rosenbrock methods make one per stage on every step (the first
    shared with the Jacobian's JVPs); implicit solvers report -1.
    """
    if isinstance(solver, Rosenbrock23):  # three per step, besides the Jacobian
        return 3 * stats["num_steps"]
    if isinstance(solver, AbstractRosenbrock):
        return solver.tableau.stages * stats["num_steps"]
    tableau = getattr(solver, "tableau", None)
    if not isinstance(solver, diffrax.AbstractERK) or tableau is None:
        return -1
    if not tableau.fsal:
        return tableau.num_stages * stats["num_steps"]
    return (tableau.num_stages - 1) * stats["num_steps"] + 1 + early_rejections


class _BooleanBisection(optx.Bisection):
    """Bisection for a boolean condition (as ±1): done when the bracket is within
    tolerance (the condition's value never gets small)."""

    def terminate(self, fn, y, args, options, state, tags):
        del fn, args, options, tags
        scale = self.atol + self.rtol * jnp.abs(y)
        return jnp.abs(state.lower - state.upper) < scale, optx.RESULTS.successful


def _diffrax_event(event: Event, boolean: bool, t_start, s0, rtol, atol):
    """The event as a diffrax event, its time refined on the solver's interpolant
    by Newton's method (optimistix: implicit derivatives of the event time), or by
    bisection for a boolean condition. At `t_start` the condition takes the sign
    `s0` it has just after, so a zero there is no crossing."""
    def cond_fn(t, y, args, **_):
        c = signal(event, t, y, args)
        return jnp.where(t <= t_start,
                         s0 * jnp.maximum(jnp.abs(c), jnp.finfo(c.dtype).tiny), c)

    direction = {0: None, 1: True, -1: False}[1 if boolean else event.direction]
    finder = (_BooleanBisection(rtol=rtol, atol=atol) if boolean
              else optx.Newton(rtol=rtol, atol=atol))
    return diffrax.Event(cond_fn, root_finder=finder, direction=direction)


class _Segment(eqx.Module):
    """One diffrax solve from `t_start` to `ts[-1]`, ended by the event if one
    happens: the states at `ts` (those before `t_start` meaningless), whether and
    when the event happened, the state there, and the solve's statistics."""

    ys: Any
    happened: jax.Array
    t_event: jax.Array
    y_event: Any
    stats: dict
    result: Any
    nonfinite: jax.Array
    interpolation: Any


def _segment(f, solver, ts, args, dt0, controller, adjoint, max_steps, progress,
             dense, event, event_tol, t_start, y_start, whole=True) -> _Segment:
    adaptive = isinstance(solver, diffrax.AbstractAdaptiveSolver)
    # a continuation (not `whole`) saves from its start on
    save = ts if whole else jnp.clip(ts, t_start, ts[-1])
    if event is None:  # (BacksolveAdjoint takes no SaveAt(subs=...))
        saveat = diffrax.SaveAt(ts=save, controller_state=adaptive, dense=dense)
        diffrax_event = None
    else:  # and the final time: the event's, when one happened
        saveat = diffrax.SaveAt(
            subs=[diffrax.SubSaveAt(ts=save), diffrax.SubSaveAt(t1=True)],
            controller_state=adaptive, dense=dense)
        boolean = is_boolean(event, t_start, y_start, args)
        s0 = start_sign(event, f, t_start, y_start, args, event_tol[0])
        diffrax_event = _diffrax_event(event, boolean, t_start, s0, *event_tol)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(f), solver, t0=t_start, t1=ts[-1], dt0=dt0, y0=y_start,
        args=args, saveat=saveat, stepsize_controller=controller, adjoint=adjoint,
        event=diffrax_event, max_steps=max_steps, throw=False,
        progress_meter=(diffrax.TqdmProgressMeter() if progress
                        else diffrax.NoProgressMeter()))
    stats = sol.stats
    nfe = _diffrax_nfe(solver, stats, _CountingPID.early_rejections(
        sol.controller_state) if adaptive else 0)
    linear_algebra = _jacobians(solver, stats["num_steps"])
    counts = _stats(stats["num_steps"], stats["num_accepted_steps"],
                    stats["num_rejected_steps"], nfe, linear_algebra, linear_algebra)
    nonfinite = (_CountingPID.saw_nonfinite(sol.controller_state) if adaptive
                 else jnp.array(False))
    if event is None:
        inf = jnp.array(jnp.inf, ts.dtype)
        return _Segment(sol.ys, jnp.array(False), inf, y_start, counts, sol.result,
                        nonfinite, sol.interpolation)
    happened = jnp.any(jnp.stack(jtu.tree_leaves(sol.event_mask)))
    t_event = jnp.where(happened, sol.ts[1][-1], jnp.inf).astype(ts.dtype)
    y_event = jtu.tree_map(lambda y: y[-1], sol.ys[1])
    return _Segment(sol.ys[0], happened, t_event, y_event, counts, sol.result,
                    nonfinite, sol.interpolation)


def _event_segments(run, event, y0, ts, args):
    """A solve with non-terminal events: up to `max_events` segments, each ended
    by an event whose (reset) state starts the next. Returns the states at `ts`,
    the event times (`inf`-padded), the statistics summed, the first failing
    result, and whether a non-finite value was seen."""
    inf_ys = jtu.tree_map(
        lambda y: jnp.full((ts.shape[0],) + jnp.shape(y), jnp.inf, y.dtype), y0)

    def one(carry, k):
        t_start, y_start, ys, stats, result, nonfinite, done = carry
        seg = run(t_start, y_start)
        t_end = jnp.where(seg.happened, seg.t_event, ts[-1])
        after_start = jnp.where(k == 0, ts >= t_start, ts > t_start)
        mine = after_start & (ts <= t_end) & jnp.logical_not(done)
        ys = jtu.tree_map(
            lambda acc, new: jnp.where(mine.reshape((-1,) + (1,) * (new.ndim - 1)),
                                       new, acc), ys, seg.ys)
        happened = seg.happened & jnp.logical_not(done)
        y_next = seg.y_event
        if event.reset is not None:
            y_next = event.reset(seg.t_event, seg.y_event, args)
        y_next = jtu.tree_map(lambda a, b: jnp.where(happened, a, b).astype(b.dtype),
                              y_next, seg.y_event)
        ok_result = (seg.result == diffrax.RESULTS.successful) | (
            seg.result == diffrax.RESULTS.event_occurred)
        result = diffrax.RESULTS.where(
            jnp.logical_not(done) & jnp.logical_not(ok_result)
            & (result == diffrax.RESULTS.successful), seg.result, result)
        stats = jtu.tree_map(  # -1: not reported by this solver
            lambda a, b: jnp.where((a < 0) | (b < 0), -1, a + b), stats, seg.stats)
        nonfinite = nonfinite | seg.nonfinite
        t_next = jnp.where(happened, seg.t_event, ts[-1])
        done = done | jnp.logical_not(happened) | jnp.logical_not(ok_result)
        time = jnp.where(happened, seg.t_event, jnp.inf)
        return (t_next, y_next, ys, stats, result, nonfinite, done), time

    init = (ts[0], y0, inf_ys, _stats(0, 0, 0, 0), diffrax.RESULTS.successful,
            jnp.array(False), jnp.array(False))
    (_, _, ys, stats, result, nonfinite, _), times = jax.lax.scan(
        one, init, jnp.arange(event.max_events))
    return ys, times.astype(ts.dtype), stats, result, nonfinite


@eqx.filter_jit
def _solve_adaptive(f, solver, y0, ts, args, dt0, rtol, atol, adjoint, max_steps,
                    throw, progress, event=None, event_tol=None, dense=False):
    _check_vector_field(f, y0, ts, args)
    if isinstance(solver, AbstractRosenbrock) and solver.mass is not None:
        y0 = _check_consistent(f, solver.mass, y0, ts[0], args, rtol, atol)
    if isinstance(solver, diffrax.AbstractAdaptiveSolver):
        controller = _CountingPID(diffrax.PIDController(
            rtol=rtol, atol=atol, **_controller_coefficients(solver)))
    else:
        controller = diffrax.ConstantStepSize()

    def run(t_start, y_start, whole=False):
        return _segment(f, solver, ts, args, dt0, controller, adjoint, max_steps,
                        progress, dense, event, event_tol, t_start, y_start, whole)

    interpolation = None
    if event is None or event.terminal:
        seg = run(ts[0], y0, whole=True)
        ys, stats, result, nonfinite = seg.ys, seg.stats, seg.result, seg.nonfinite
        times, interpolation = seg.t_event[None], seg.interpolation
    else:
        ys, times, stats, result, nonfinite = _event_segments(run, event, y0, ts, args)
    ok = ((result == diffrax.RESULTS.successful)
          | (result == diffrax.RESULTS.event_occurred))
    if throw:
        out_of_steps = result == diffrax.RESULTS.max_steps_reached
        if _is_stiff(solver) and jnp.result_type(ts) == jnp.float32:
            ys = eqx.error_if(ys, out_of_steps, _FLOAT32_STIFF_HINT)
        ys = eqx.error_if(ys, out_of_steps & nonfinite, _NONFINITE_ADAPTIVE_HINT)
        ys = eqx.error_if(ys, out_of_steps & jnp.logical_not(nonfinite),
                          _MAX_STEPS_STIFF_HINT if _is_stiff(solver) else
                          _MAX_STEPS_HINT)
        ys = eqx.error_if(ys, result == diffrax.RESULTS.singular, _SINGULAR_HINT)
        ys = eqx.error_if(ys, jnp.logical_not(ok), _FAILED_HINT)
    return ys, ok, stats, times, interpolation, result


def _is_stiff(solver) -> bool:
    return isinstance(solver, (diffrax.AbstractImplicitSolver, AbstractRosenbrock,
                               Rosenbrock23))


def _controller_coefficients(solver) -> dict[str, float]:
    """PI coefficients of the step-size controller: see `STIFF_PID` and
    `ROSENBROCK_PID`; explicit methods keep diffrax's I controller."""
    if isinstance(solver, AbstractRosenbrock):
        return ROSENBROCK_PID
    if isinstance(solver, diffrax.AbstractImplicitSolver):
        return STIFF_PID
    return {}


def _jacobians(solver, num_steps) -> Any:
    """Jacobians (and LU factorisations) of a solve: one per step, accepted or
    rejected, for Rosenbrock methods; 0 for explicit ones; -1 (not reported) for
    diffrax's implicit solvers."""
    if isinstance(solver, (AbstractRosenbrock, Rosenbrock23)):
        return num_steps
    return -1 if isinstance(solver, diffrax.AbstractImplicitSolver) else 0


def _check_consistent(f, mass, y0, t0, args, rtol, atol):
    """Run-time check that `y0` is a consistent start of `M y' = f`: `f(t0, y0)` must
    lie in the range of `M`, so its part along the left null space of `M` (the
    algebraic equations) must vanish, to `10·(atol + rtol·max|y0|)`."""
    flat, _ = ravel_pytree(y0)
    f0 = ravel_pytree(f(t0, y0, args))[0]
    M = jnp.asarray(mass, flat.dtype)
    u, sv, _ = jnp.linalg.svd(M)
    null = sv <= flat.size * jnp.finfo(flat.dtype).eps * jnp.max(sv)
    residual = jnp.max(jnp.where(null, jnp.abs(u.T @ f0), 0))
    bound = 10 * (atol + rtol * jnp.max(jnp.abs(flat)))
    return eqx.error_if(
        y0, residual > bound,
        "jaxode.solve: `y0` is not a consistent initial value of the DAE "
        "M y' = f(t, y, args): the algebraic equations (the part of f(t0, y0) in the "
        "null space of `mass`) are not satisfied to 10·(atol + rtol·max|y0|). "
        "Choose y0 so that they hold.")


# ------------------------------------------------------------------ front door


def _output_shape(name: str, fn: Callable, t, y0: Y, args: Args) -> Any:
    """The output shapes of the user's `fn(t, y0, args)`, or a `ValueError` that
    names `fn` when it fails to trace."""
    try:
        # filter_eval_shape: `args` may hold non-array leaves (an eqx.Module with
        # an activation function); the lambda: jax.eval_shape takes a callable with
        # a `trace` attribute (an eqx.Module field named `trace`) for a jitted one
        return eqx.filter_eval_shape(lambda t, y, a: fn(t, y, a), t, y0, args)
    except Exception as e:  # the user's function failed to trace: say where
        raise ValueError(
            f"`{name}` failed when called as {name}(t, y0, args): "
            f"{type(e).__name__}: {e}") from e


def _check_vector_field(f: VectorField, y0: Y, ts: jax.Array, args: Args) -> None:
    out = _output_shape("f", f, ts[0], y0, args)
    expected = jax.eval_shape(lambda y: y, y0)
    check_same_structure("f", out, expected, "y0")


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
      `inf`/`NaN`, never plausible numbers.
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
    solver = _with_jac_and_mass(_resolve_solver(solver), jac, mass, adjoint)
    # keep a host copy of concrete times: under `jit`, `jnp.asarray` turns even a
    # NumPy constant into a tracer, and a fixed-step grid needs the values
    check_numeric("ts", ts)
    ts_host = np.asarray(ts, dtype=np.float64) if is_concrete(ts) else None
    ts = _as_float(ts)
    if ts_host is not None:  # the values as the solve holds them (float32 rounding)
        ts_host = ts_host.astype(ts.dtype).astype(np.float64)
    check_times("ts", ts if ts_host is None else ts_host)
    if isinstance(y0, list) and all(isinstance(leaf, (int, float, np.number))
                                    for leaf in jtu.tree_leaves(y0)):
        y0 = np.asarray(y0)  # a list of numbers is one state vector
    check_numeric("y0", y0)
    # the state takes the wider of its own and the times' float types (as diffrax
    # does), for fixed and adaptive steps alike
    y0 = jtu.tree_map(_as_float, y0)
    y0 = jtu.tree_map(lambda y: y.astype(jnp.promote_types(y.dtype, ts.dtype)), y0)
    check_finite("y0", y0)
    _check_tolerance("rtol", rtol, y0)
    _check_tolerance("atol", atol, y0)
    _check_jac_and_mass(solver, y0, ts, args)
    check_finite("args", jtu.tree_map(
        lambda a: a if eqx.is_array_like(a) else None, args))
    check_positive("dt", dt)
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive integer, got {max_steps!r}.")
    event = as_event(event)
    _check_event_and_dense(event, dense, adjoint, y0, ts, args)
    if ts_host is None:
        ts = eqx.error_if(ts, jnp.any(jnp.diff(ts) <= 0),
                          "jaxode.solve: `ts` must be strictly increasing. (`ts` "
                          "is traced here, under jit, so its values cannot be "
                          "shown: print them with jax.debug.print(\"{}\", ts) "
                          "before the call, or close over NumPy times instead of "
                          "passing them in: those are checked, with their values, "
                          "before compiling.)")

    if ts.shape[0] == 1:
        if event is not None or dense:
            raise ValueError("`event` and `dense` need at least two times in `ts`.")
        ys = jtu.tree_map(lambda a: a[None], y0)
        return Solution(ts, ys, _stats(0, 0, 0, 0), jnp.array(True))

    if isinstance(solver, AbstractStepper):
        if event is not None or dense:
            return _fixed_dense(f, solver, y0, ts, args, dt, substeps, adjoint, throw,
                                ts_host, event, dense)
        ys, ok, stats = _fixed(f, solver, y0, ts, args, dt, substeps, adjoint, throw,
                                progress, ts_host)
    else:
        if substeps is not None:
            raise ValueError(
                f"`substeps`={substeps!r} is for fixed-step solvers; the adaptive "
                f"solver {type(solver).__name__} chooses its own steps.")
        adjoint = _resolve_adjoint(adjoint)
        dt0 = None if dt is None else jnp.asarray(dt, ts.dtype)
        if dt0 is None and not isinstance(solver, diffrax.AbstractAdaptiveSolver):
            raise ValueError(
                f"`dt` is required for the non-adaptive diffrax solver {solver!r}."
            )
        _warn_float32_stiff(solver, ts.dtype, rtol)
        # the event's Newton tolerances are static (an optimistix solver field), and
        # no finer than the dtype resolves (or Newton sees rounding as divergence)
        event_tol = None
        if event is not None:  # traced tolerances (under `ensemble`): 1e-10
            tol = min(float(rtol), float(atol)) if is_concrete((rtol, atol)) else 1e-10
            event_tol = (max(tol, 100 * float(jnp.finfo(ts.dtype).eps)),) * 2
        ys, ok, stats, times, interp, result = _solve_adaptive(
            f, solver, y0, ts, args, dt0, jnp.asarray(rtol, ts.dtype),
            jnp.asarray(atol, ts.dtype), adjoint, max_steps, throw, progress,
            event, event_tol, dense,
        )
        return Solution(ts, ys, stats, ok, times[0], interp, result, times)
    return Solution(ts, ys, stats, ok, result=result_of(ok))


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
    if mass is not None and (adjoint == "backsolve"
                             or isinstance(adjoint, diffrax.BacksolveAdjoint)):
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
        out = _output_shape("jac", solver.jac, ts[0], y0, args)
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


def _warn_float32_stiff(solver, dtype, rtol):
    """A stiff solve in float32 cannot reach a tolerance near its resolution: the
    linear systems of implicit steps lose digits to the condition number of
    `M/(h γ) - J`, so the step-size controller chases rounding noise. Measured with
    Rodas5P on `jaxode.data.STIFF_PROBLEMS` in float32: below rtol 1e-5 the error
    stops falling (HIRES: 1.8e-4 at rtol 1e-6, 1.7e-4 at 1e-7), and at rtol 1e-8
    HIRES and OREGO run out of steps (`python benchmarks/stiff.py --float32`)."""
    if (_is_stiff(solver) and dtype == jnp.float32 and is_concrete(rtol)
            and float(rtol) < 1e-5):
        warnings.warn(
            f"jaxode.solve: the stiff solver {type(solver).__name__} in float32 with "
            f"rtol={float(rtol):g}: float32 resolves about 1e-7, and stiff linear "
            "algebra loses more, so tolerances below 1e-5 are not reached reliably "
            "(measured: below 1e-5 the error stops falling, at 1e-8 solves run out "
            "of steps). Enable float64 (jax.config.update('jax_enable_x64', True)) "
            "or use rtol >= 1e-5.",
            RuntimeWarning, stacklevel=3)


def _check_event_and_dense(event, dense, adjoint, y0, ts, args):
    """Trace-time checks of `event` (an `Event`, whose condition returns a real or
    boolean scalar and whose reset returns a state like `y0`) and `dense` (a bool),
    and of their combination with the adjoint."""
    if not isinstance(dense, bool):
        raise ValueError(f"`dense` must be True or False, got {short(dense)}.")
    if event is not None and not event.terminal and dense:
        raise ValueError(
            "`dense=True` with an event that does not end the solve (terminal=False) "
            "is not supported: save the times you need in `ts`.")
    if (event is not None or dense) and (
            adjoint == "backsolve" or isinstance(adjoint, diffrax.BacksolveAdjoint)):
        raise ValueError(
            f"`adjoint`='backsolve' does not support "
            f"{'`event`' if event is not None else '`dense=True`'} (the backward "
            "solve has no interpolant to differentiate); use 'recursive' or "
            "'direct'.")
    if event is None:
        return
    if event.reset is not None:
        out = _output_shape("reset", event.reset, ts[0], y0, args)
        check_same_structure("reset", out, jax.eval_shape(lambda y: y, y0), "y0")
    out = _output_shape("event", event.cond, ts[0], y0, args)
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != () or not (
            jnp.issubdtype(out.dtype, jnp.floating) or out.dtype == jnp.bool_):
        got = (f"{out.dtype}{list(out.shape)}" if isinstance(out, jax.ShapeDtypeStruct)
               else short(out))
        raise ValueError(
            "`event` must return one real (or boolean) scalar, whose sign change "
            f"marks the event; it returned {got}.")


@eqx.filter_jit
def _fixed_dense_program(f, solver, y0, grid, index, ts, args, adjoint, throw, event,
                         dense):
    sol = solve(f, y0, grid, args, solver=solver, adjoint=adjoint, throw=throw)
    fs = jax.vmap(lambda t, y: f(t, y, args))(grid, sol.ys)
    interp = HermiteInterpolation(grid, sol.ys, fs)
    ys = jtu.tree_map(lambda y: y[index], sol.ys)
    t_event = jnp.array(jnp.inf, ts.dtype)
    if event is not None:
        t_event, _ = locate_event(event, f, interp, args)
        ys = after_event(ys, ts, t_event)
    t_event = t_event.astype(ts.dtype)
    return Solution(ts, ys, sol.stats, sol.ok, t_event, interp if dense else None,
                    sol.result, t_event[None])


def _fixed_segment(f, solver, ts, grid, index, args, adjoint, event, t_start,
                   y_start) -> _Segment:
    """One continuation of a fixed-step solve with events: the steps of `grid`
    after `t_start` (the first one cut short there; the earlier ones of length zero,
    which change nothing), ended by the event if it happens."""
    grid = jnp.maximum(grid, t_start)
    states, _, ok = solve_even(f, solver, y_start, grid, args, 1, None,
                               _fixed_adjoint(adjoint))
    ys = jtu.tree_map(lambda a, b: jnp.concatenate([a[None], b]), y_start, states)
    interp = HermiteInterpolation(grid, ys, jax.vmap(lambda t, y: f(t, y, args))(
        grid, ys))
    t_event, happened = locate_event(event, f, interp, args)
    y_event = jtu.tree_map(lambda a, b: jnp.where(happened, a, b[-1]), interp.evaluate(
        jnp.where(happened, t_event, grid[-1])), ys)
    steps = jnp.sum(jnp.diff(grid) > 0)
    return _Segment(jtu.tree_map(lambda y: y[index], ys), happened,
                    t_event.astype(ts.dtype), y_event,
                    _stats(steps, steps, 0, steps * solver.stages), result_of(ok),
                    jnp.logical_not(ok), None)


@eqx.filter_jit
def _fixed_events_program(f, solver, y0, grid, index, ts, args, adjoint, throw,
                          event):
    _check_vector_field(f, y0, ts, args)

    def run(t_start, y_start):
        return _fixed_segment(f, solver, ts, grid, index, args, adjoint, event,
                              t_start, y_start)

    ys, times, stats, result, _ = _event_segments(run, event, y0, ts, args)
    ok = result == diffrax.RESULTS.successful
    if throw:
        ys = eqx.error_if(ys, jnp.logical_not(ok), _NONFINITE_HINT)
    return Solution(ts, ys, stats, ok, times[0], None, result, times)


def _fixed_dense(f, solver, y0, ts, args, dt, substeps, adjoint, throw, ts_host,
                 event, dense):
    """A fixed-step solve that keeps every step (for `dense` or an `event`): the
    steps are the grid of an ordinary solve with one step per interval."""
    counts, _ = _fixed_plan(ts, ts_host, dt, substeps)
    grid, index = step_grid(ts, ts_host, counts)
    if event is not None and not event.terminal:
        return _fixed_events_program(f, solver, y0, grid, jnp.asarray(index), ts,
                                     args, adjoint, throw, event)
    return _fixed_dense_program(f, solver, y0, grid, jnp.asarray(index), ts, args,
                                adjoint, throw, event, dense)


def _fixed_plan(ts, ts_host, dt, substeps):
    """`(counts, uniform)`: steps per interval (an int when all intervals take the
    same number) and whether all spans of `ts` are equal to rounding."""
    if substeps is not None:
        if dt is not None:
            raise ValueError(
                f"pass `dt` or `substeps`, not both (got dt={dt!r}, "
                f"substeps={substeps!r}).")
        if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
            raise ValueError(
                f"`substeps` must be a positive integer, got {substeps!r}.")
    if dt is not None and (ts_host is None or not is_concrete(dt)):
        raise ValueError(
            "a fixed-step solve with `dt` needs concrete `ts` and `dt` (the number "
            "of steps sets array shapes). Under `jit` with `ts` as an argument, pass "
            "`substeps=k` instead (k equal steps in every interval of `ts`).")
    if ts_host is None:
        return (1 if substeps is None else substeps), False
    counts, uniform = plan_grid(ts_host, None if dt is None else float(dt), ts.dtype)
    if substeps is not None:
        return substeps, uniform
    if np.all(counts == counts[0]):
        return int(counts[0]), uniform
    return counts, uniform


def _fixed(f, solver, y0, ts, args, dt, substeps, adjoint, throw, progress, ts_host):
    adjoint = _fixed_adjoint(adjoint)
    counts, uniform = _fixed_plan(ts, ts_host, dt, substeps)
    if not isinstance(counts, int):  # intervals that need different step counts
        t_steps, h_steps, save_index = step_list(ts_host, counts)
        return _solve_fixed_grid(
            f, solver, y0, ts, jnp.asarray(t_steps, ts.dtype),
            jnp.asarray(h_steps, ts.dtype), tuple(int(i) for i in save_index),
            tuple(int(c) for c in counts), args, throw, adjoint)
    run = lambda show: _solve_fixed(  # noqa: E731
        f, solver, y0, ts, args, counts, uniform, adjoint, throw, show)
    if not progress:
        return run(False)
    _Progress.open(ts.shape[0] - 1)
    try:
        out = run(True)
        jax.block_until_ready(out)
        jax.effects_barrier()
    finally:
        _Progress.close()
    return out
