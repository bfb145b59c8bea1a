"""Adaptive solves: `diffrax.diffeqsolve` with a PI step-size controller that also
counts what the statistics and the error messages need, events located on the
solver's interpolant, and events that do not end the solve as a `lax.scan` of
continuations (`event_segments`)."""

import warnings
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import optimistix as optx
from jax.flatten_util import ravel_pytree

from ._dense import Event, Segment, event_segments, is_boolean, signal, start_sign
from ._errors import check_vector_field, is_concrete
from ._rosenbrock import AbstractRosenbrock, Rosenbrock23
from ._solution import solve_stats

__all__ = ["solve_adaptive", "is_stiff", "warn_float32_stiff", "STIFF_PID",
           "ROSENBROCK_PID"]

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


def _segment(f, solver, ts, args, dt0, controller, adjoint, max_steps, progress,
             dense, event, event_tol, t_start, y_start, whole=True) -> Segment:
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
    counts = solve_stats(stats["num_steps"], stats["num_accepted_steps"],
                    stats["num_rejected_steps"], nfe, linear_algebra, linear_algebra)
    nonfinite = (_CountingPID.saw_nonfinite(sol.controller_state) if adaptive
                 else jnp.array(False))
    if event is None:
        inf = jnp.array(jnp.inf, ts.dtype)
        return Segment(sol.ys, jnp.array(False), inf, y_start, counts, sol.result,
                        nonfinite, sol.interpolation)
    happened = jnp.any(jnp.stack(jtu.tree_leaves(sol.event_mask)))
    t_event = jnp.where(happened, sol.ts[1][-1], jnp.inf).astype(ts.dtype)
    y_event = jtu.tree_map(lambda y: y[-1], sol.ys[1])
    return Segment(sol.ys[0], happened, t_event, y_event, counts, sol.result,
                    nonfinite, sol.interpolation)


@eqx.filter_jit
def solve_adaptive(f, solver, y0, ts, args, dt0, rtol, atol, adjoint, max_steps,
                    throw, progress, event=None, event_tol=None, dense=False):
    check_vector_field(f, y0, ts, args)
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
        ys, times, stats, result, nonfinite = event_segments(run, event, y0, ts, args)
    ok = ((result == diffrax.RESULTS.successful)
          | (result == diffrax.RESULTS.event_occurred))
    checks = _failure_checks(solver, jnp.result_type(ts), result, nonfinite, ok)
    if throw:  # in the program; else the caller reads `checks` after it has run
        for fine, message in checks:
            ys = eqx.error_if(ys, jnp.logical_not(fine), message)
    return ys, ok, stats, times, interpolation, result, checks


def _failure_checks(solver, dtype, result, nonfinite, ok) -> list:
    """`[(ok, message)]`: what must hold after an adaptive solve, the most specific
    message first (the first that fails is the one raised)."""
    out_of_steps = result == diffrax.RESULTS.max_steps_reached
    checks = []
    if is_stiff(solver) and dtype == jnp.float32:
        checks.append((jnp.logical_not(out_of_steps), _FLOAT32_STIFF_HINT))
    return checks + [
        (jnp.logical_not(out_of_steps & nonfinite), _NONFINITE_ADAPTIVE_HINT),
        (jnp.logical_not(out_of_steps & jnp.logical_not(nonfinite)),
         _MAX_STEPS_STIFF_HINT if is_stiff(solver) else _MAX_STEPS_HINT),
        (result != diffrax.RESULTS.singular, _SINGULAR_HINT),
        (ok, _FAILED_HINT),
    ]


def is_stiff(solver) -> bool:
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



def warn_float32_stiff(solver, dtype, rtol):
    """A stiff solve in float32 cannot reach a tolerance near its resolution: the
    linear systems of implicit steps lose digits to the condition number of
    `M/(h γ) - J`, so the step-size controller chases rounding noise. Measured with
    Rodas5P on `jaxode.data.STIFF_PROBLEMS` in float32: below rtol 1e-5 the error
    stops falling (HIRES: 1.8e-4 at rtol 1e-6, 1.7e-4 at 1e-7), and at rtol 1e-8
    HIRES and OREGO run out of steps (`python benchmarks/stiff.py --float32`)."""
    if (is_stiff(solver) and dtype == jnp.float32 and is_concrete(rtol)
            and float(rtol) < 1e-5):
        warnings.warn(
            f"jaxode.solve: the stiff solver {type(solver).__name__} in float32 with "
            f"rtol={float(rtol):g}: float32 resolves about 1e-7, and stiff linear "
            "algebra loses more, so tolerances below 1e-5 are not reached reliably "
            "(measured: below 1e-5 the error stops falling, at 1e-8 solves run out "
            "of steps). Enable float64 (jax.config.update('jax_enable_x64', True)) "
            "or use rtol >= 1e-5.",
            RuntimeWarning, stacklevel=6)  # warn, _run_adaptive, run, solve_with, solve
