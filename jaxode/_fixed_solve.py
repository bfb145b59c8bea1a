"""Fixed-step solves as compiled programs: the step plan of `ts` and `dt` (or
`substeps`), the even-grid and step-list programs of `_fixed`, the progress bar, and
the programs that keep every step for dense output and events."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._dense import (
    HermiteInterpolation,
    Segment,
    after_event,
    event_segments,
    locate_event,
    step_grid,
)
from ._errors import check_vector_field, is_concrete
from ._fixed import plan_grid, solve_even, solve_steps, step_list
from ._solution import Solution, solve_stats

__all__ = ["fixed_plan", "solve_fixed", "solve_fixed_grid", "run_fixed"]

_NONFINITE_HINT = (
    "jaxode.solve: a non-finite value (NaN or inf) appeared during the fixed-step "
    "solve. Reduce `dt`, use a higher-order or adaptive solver, or check `f`, `y0` "
    "and `args`."
)



def _result_of(ok):
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
def solve_fixed(f, solver, y0, ts, args, substeps, uniform, adjoint, throw,
                progress):
    """Fixed-step solve: `substeps` equal steps inside every interval of `ts`.

    With `uniform` (all spans of `ts` equal), the step is one traced scalar computed
    before the loop, so new values of `ts` do not recompile; a loop-invariant step lets
    XLA fuse a whole step into one kernel (reading it from the scanned times instead
    was measured 1.6x slower on a vmapped RK4).
    """
    check_vector_field(f, y0, ts, args)  # runs while tracing: cached calls skip it
    n = ts.shape[0] - 1
    h = (ts[-1] - ts[0]) / (n * substeps) if uniform else None
    tick = _Progress.tick if progress else None
    ys, y_end, ok = solve_even(f, solver, y0, ts, args, substeps, h, adjoint, tick)
    steps = n * substeps
    return _with_check(y0, ys, y_end, ok, throw), ok, solve_stats(steps, steps, 0,
                                                      steps * solver.stages)


@eqx.filter_jit
def solve_fixed_grid(f, solver, y0, ts, t_steps, h_steps, save_index, counts, args,
                     throw, adjoint):
    """Fixed-step solve over an explicit grid of steps, keeping the states after the
    steps `save_index` (when the intervals of `ts` need different numbers of steps)."""
    check_vector_field(f, y0, t_steps, args)
    ys, y_end, ok = solve_steps(f, solver, y0, ts, args, t_steps, h_steps,
                                save_index, counts, adjoint)
    steps = t_steps.shape[0]
    return _with_check(y0, ys, y_end, ok, throw), ok, solve_stats(steps, steps, 0,
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


def fixed_plan(ts, ts_host, dt, substeps):
    """`(counts, uniform)`: steps per interval (an int when all intervals take the
    same number) and whether all spans of `ts` are equal to rounding. (`configure`
    has checked `dt` and `substeps` themselves.)"""
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


def run_fixed(config, f, y0, ts, args, ts_host, throw) -> tuple[Solution, list]:
    """A fixed-step solve as `config` (see `_engine.Config`) describes it, with the
    run-time check in its program when `throw` (which overrides `config.throw`).

    **Returns:** the `Solution` and its failure check, `[(sol.ok, message)]`, for a
    caller that checks after the program has run (`_errors.raise_unless`).
    """
    sol = _run_fixed(config, f, y0, ts, args, ts_host, throw)
    return sol, [(sol.ok, _NONFINITE_HINT)]


def _run_fixed(config, f, y0, ts, args, ts_host, throw) -> Solution:
    counts, uniform = (config.plan if config.plan is not None else
                       fixed_plan(ts, ts_host, config.dt, config.substeps))
    if config.event is not None or config.dense:
        return _keep_every_step(config, f, y0, ts, args, ts_host, counts, throw)
    solver, adjoint = config.solver, config.adjoint
    if not isinstance(counts, int):  # intervals that need different step counts
        t_steps, h_steps, save_index = step_list(ts_host, counts)
        ys, ok, stats = solve_fixed_grid(
            f, solver, y0, ts, jnp.asarray(t_steps, ts.dtype),
            jnp.asarray(h_steps, ts.dtype), tuple(int(i) for i in save_index),
            tuple(int(c) for c in counts), args, throw, adjoint)
    elif not config.progress:
        ys, ok, stats = solve_fixed(f, solver, y0, ts, args, counts, uniform, adjoint,
                                    throw, False)
    else:
        _Progress.open(ts.shape[0] - 1)
        try:
            ys, ok, stats = solve_fixed(f, solver, y0, ts, args, counts, uniform,
                                        adjoint, throw, True)
            jax.block_until_ready((ys, ok, stats))
            jax.effects_barrier()
        finally:
            _Progress.close()
    return Solution(ts, ys, stats, ok, result=_result_of(ok))


# ------------------------------------------------- every step kept: dense, events


def _keep_every_step(config, f, y0, ts, args, ts_host, counts, throw) -> Solution:
    """A fixed-step solve that keeps every step (for `dense` or an `event`): the
    steps are the grid of an ordinary solve with one step per interval."""
    grid, index = step_grid(ts, ts_host, counts)
    if config.event is not None and not config.event.terminal:
        return _events_program(config, throw, f, y0, grid, jnp.asarray(index), ts,
                               args)
    return _dense_program(config, throw, f, y0, grid, jnp.asarray(index), ts, args)


@eqx.filter_jit
def _dense_program(config, throw, f, y0, grid, index, ts, args) -> Solution:
    states, ok, stats = solve_fixed(f, config.solver, y0, grid, args, 1, False,
                                    config.adjoint, throw, False)
    fs = jax.vmap(lambda t, y: f(t, y, args))(grid, states)
    interp = HermiteInterpolation(grid, states, fs)
    ys = jtu.tree_map(lambda y: y[index], states)
    t_event = jnp.array(jnp.inf, ts.dtype)
    if config.event is not None:
        t_event, _ = locate_event(config.event, f, interp, args)
        ys = after_event(ys, ts, t_event)
    t_event = t_event.astype(ts.dtype)
    return Solution(ts, ys, stats, ok, t_event, interp if config.dense else None,
                    _result_of(ok), t_event[None])


def _segment(config, f, ts, grid, index, args, t_start, y_start) -> Segment:
    """One continuation of a fixed-step solve with events: the steps of `grid`
    after `t_start` (the first one cut short there; the earlier ones of length zero,
    which change nothing), ended by the event if it happens."""
    grid = jnp.maximum(grid, t_start)
    states, _, ok = solve_even(f, config.solver, y_start, grid, args, 1, None,
                               config.adjoint)
    ys = jtu.tree_map(lambda a, b: jnp.concatenate([a[None], b]), y_start, states)
    interp = HermiteInterpolation(grid, ys, jax.vmap(lambda t, y: f(t, y, args))(
        grid, ys))
    t_event, happened = locate_event(config.event, f, interp, args)
    y_event = jtu.tree_map(lambda a, b: jnp.where(happened, a, b[-1]), interp.evaluate(
        jnp.where(happened, t_event, grid[-1])), ys)
    steps = jnp.sum(jnp.diff(grid) > 0)
    stats = solve_stats(steps, steps, 0, steps * config.solver.stages)
    return Segment(jtu.tree_map(lambda y: y[index], ys), happened,
                   t_event.astype(ts.dtype), y_event, stats, _result_of(ok),
                   jnp.logical_not(ok), None)


@eqx.filter_jit
def _events_program(config, throw, f, y0, grid, index, ts, args) -> Solution:
    check_vector_field(f, y0, ts, args)

    def run(t_start, y_start):
        return _segment(config, f, ts, grid, index, args, t_start, y_start)

    ys, times, stats, result, _ = event_segments(run, config.event, y0, ts, args)
    ok = result == diffrax.RESULTS.successful
    if throw:
        ys = eqx.error_if(ys, jnp.logical_not(ok), _NONFINITE_HINT)
    return Solution(ts, ys, stats, ok, times[0], None, result, times)
