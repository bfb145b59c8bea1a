"""Events (`Event`: direction, boolean conditions, terminal or with a reset), and
dense output and event location for fixed-step solves.

The condition is a real signal (a boolean one as ±1); where a solve or a
continuation starts, it takes the sign it has just after, so a zero there is no
crossing. A fixed-step solve with `dense=True` or an `event` keeps the state at every step of its
grid. Between two steps the solution is the cubic Hermite interpolant of the two
states and their derivatives `f(t, y)`, accurate to O(h^4), the order of `RK4`. An
event is a sign change of `cond(t, y, args)` between two steps; its time is the root of
`cond` on that step's interpolant, found by optimistix's Newton solver, whose implicit
derivative gives `d t_event / d(y0, args)` by the implicit function theorem.
"""

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optimistix as optx

from ._errors import short
from ._fixed import step_list
from ._solution import solve_stats

__all__ = ["Event", "as_event", "is_boolean", "signal", "start_sign", "crossed",
           "HermiteInterpolation", "step_grid", "locate_event", "after_event",
           "Segment", "event_segments"]


class Event(eqx.Module):
    """An event: a time where `cond(t, y, args)` crosses zero (a real `cond`) or
    becomes True (a boolean one).

    **Arguments:**

    - `cond`: `cond(t, y, args) -> scalar`, real or boolean. A real one is located
      by Newton's method on the solver's interpolant, a boolean one by bisection on
      it; both to the solver's tolerance. A real condition that is zero where the
      solve (or, after an event, its continuation) starts does not fire there.
    - `direction`: `0` (default) for crossings either way, `-1` for falling ones
      (from positive to negative: a ball reaching the ground), `+1` for rising
      ones. A boolean condition fires when it becomes True.
    - `terminal`: True (default): the solve stops at the first event, and the states
      saved after it are `inf`. False: the solve goes on after each event.
    - `reset`: with `terminal=False`, `reset(t, y, args) -> y` gives the state the
      solve continues from (a bounce: the velocity reversed and damped); `None`
      continues from the state as it is. After a reset, a condition at its root
      counts as starting on the side the flow takes it to.
    - `max_events`: with `terminal=False`, the most events recorded (default 16):
      the solve stops at the last of them, and the states saved after it are `inf`.

    `sol.t_event` is the first event's time, `sol.event_times` all of them (padded
    with `inf` to `max_events`), `sol.event_count` their number. Event times are
    differentiable (implicit function theorem) for real conditions.
    """

    cond: Callable[..., Any]
    direction: int = eqx.field(static=True)
    terminal: bool = eqx.field(static=True)
    reset: Callable[..., Any] | None
    max_events: int = eqx.field(static=True)

    def __init__(self, cond, *, direction=0, terminal=True, reset=None,
                 max_events=None):
        if not callable(cond):
            raise ValueError(f"`cond` must be a function cond(t, y, args), got "
                             f"{short(cond)}.")
        if direction not in (-1, 0, 1) or isinstance(direction, bool):
            raise ValueError(f"`direction` must be -1, 0 or 1, got {direction!r}.")
        if not isinstance(terminal, bool):
            raise ValueError(f"`terminal` must be True or False, got {terminal!r}.")
        if reset is not None and not callable(reset):
            raise ValueError(f"`reset` must be a function reset(t, y, args) -> y, got "
                             f"{short(reset)}.")
        if terminal and (reset is not None or max_events not in (None, 1)):
            raise ValueError(
                "`reset` and `max_events` are for events that do not end the solve: "
                "pass terminal=False with them.")
        if max_events is None:
            max_events = 1 if terminal else 16
        if isinstance(max_events, bool) or not isinstance(max_events, int) or (
                max_events < 1):
            raise ValueError(
                f"`max_events` must be a positive integer, got {max_events!r}.")
        self.cond = cond
        self.direction = direction
        self.terminal = terminal
        self.reset = reset
        self.max_events = max_events


def as_event(event) -> Event | None:
    """`None`, an `Event`, or a plain `cond` as the terminal, two-way event."""
    if event is None or isinstance(event, Event):
        return event
    if not callable(event):
        raise ValueError(f"`event` must be a function cond(t, y, args) or a "
                         f"jaxode.Event, got {short(event)}.")
    return Event(event)


def is_boolean(event: Event, t, y, args) -> bool:
    """Whether the event's condition returns a boolean (from its shape, at trace
    time)."""
    out = eqx.filter_eval_shape(lambda t, y, a: event.cond(t, y, a), t, y, args)
    return out.dtype == jnp.bool_


def signal(event: Event, t, y, args):
    """The event's condition as a real number: a boolean one as ±1 (True: +1)."""
    c = event.cond(t, y, args)
    if jnp.result_type(c) == jnp.bool_:
        return jnp.where(c, 1.0, -1.0).astype(jnp.result_type(t))
    return c


def start_sign(event: Event, f, t, y, args, tol):
    """The sign the condition has just after `t`: its own where it is clearly away
    from zero, else the sign of its rate of change along the flow (so that a
    condition zero at the start, or at its root after an event, does not fire
    there). `tol` is the event time's tolerance."""
    c = signal(event, t, y, args)
    if is_boolean(event, t, y, args):
        return jnp.sign(c)
    _, rate = jax.jvp(lambda t_, y_: event.cond(t_, y_, args), (t, y),
                      (jnp.ones_like(t), f(t, y, args)))
    near = jnp.abs(c) <= 10 * jnp.abs(rate) * (tol + 10 * jnp.finfo(
        jnp.result_type(t)).eps * jnp.maximum(1.0, jnp.abs(t)))
    s = jnp.where(near & (rate != 0), jnp.sign(rate), jnp.sign(c))
    return jax.lax.stop_gradient(jnp.where(s == 0, 1.0, s)).astype(
        jnp.result_type(c))


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
        # a zero-length interval (a continuation's grid starts with them) is a point
        s = jnp.where(h > 0, (t - ts[i]) / jnp.where(h > 0, h, 1), 0)
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


def crossed(direction: int, before, after):
    """Whether the signal's sign change from `before` to `after` is an event."""
    if direction > 0:
        return (before < 0) & (after >= 0)
    if direction < 0:
        return (before > 0) & (after <= 0)
    return jnp.sign(before) != jnp.sign(after)


def locate_event(event: Event, f, interp: HermiteInterpolation, args):
    """The first time where the event's condition crosses zero (in its direction)
    along the grid of `interp`, refined to a root on the step's interpolant (Newton;
    bisection for a boolean condition); `inf` when it never does. A condition zero
    at the first time takes the sign of its rate there (so do the grid's repeats
    of that time, where a continuation starts). Returns `(t_event, happened)`."""
    ts = interp.ts
    tol = 100 * float(jnp.finfo(ts.dtype).eps)  # Newton converges quadratically
    g = jax.vmap(lambda t, y: signal(event, t, y, args))(ts, interp.ys)
    y_first = jtu.tree_map(lambda y: y[0], interp.ys)
    s0 = start_sign(event, f, ts[0], y_first, args, tol)
    g = jnp.where(ts <= ts[0], s0 * jnp.maximum(jnp.abs(g), jnp.finfo(g.dtype).tiny),
                  g)
    boolean = is_boolean(event, ts[0], y_first, args)
    change = crossed(1 if boolean else event.direction, g[:-1], g[1:])
    happened = jnp.any(change)
    i = jnp.argmax(change)  # the first step with a sign change
    lo, hi = ts[i], ts[i + 1]
    if boolean:
        return jnp.where(happened, _bisect(event, interp, args, lo, hi), jnp.inf), \
            happened
    # secant guess inside the step, then Newton on the interpolant
    denom = g[i + 1] - g[i]
    frac = jnp.where(denom != 0, -g[i] / jnp.where(denom != 0, denom, 1), 0.5)
    guess = lo + jnp.clip(frac, 0, 1) * (hi - lo)

    def fn(t, _):
        return event.cond(t, interp.evaluate(t), args)

    # throw=False: where rounding keeps |cond| above `tol`, the iterate after
    # max_steps is the root to rounding all the same
    root = optx.root_find(fn, optx.Newton(rtol=tol, atol=tol), guess, throw=False,
                          max_steps=64).value
    root = jnp.clip(root, lo, hi)
    return jnp.where(happened, root, jnp.inf), happened


def _bisect(event, interp, args, lo, hi):
    """The first time in `[lo, hi]` where a boolean condition is True on the
    interpolant (False at `lo`, True at `hi`), by bisection to rounding; not
    differentiable (its derivative is zero)."""
    def halve(_, bounds):
        a, b = bounds
        mid = a + (b - a) / 2
        up = event.cond(mid, interp.evaluate(mid), args)
        return jnp.where(up, a, mid), jnp.where(up, mid, b)

    n = int(np.ceil(-np.log2(float(jnp.finfo(jnp.result_type(lo)).eps)))) + 8
    _, b = jax.lax.fori_loop(0, n, halve, jax.lax.stop_gradient((lo, hi)))
    return b


def after_event(ys, ts, t_event):
    """`ys` with the states saved after `t_event` replaced by `inf` (as diffrax does
    for a terminated solve)."""
    late = ts > t_event
    return jtu.tree_map(
        lambda y: jnp.where(late.reshape((-1,) + (1,) * (y.ndim - 1)), jnp.inf, y), ys)


# ------------------------------------------------ continuations (terminal=False)


class Segment(eqx.Module):
    """One solve (adaptive or fixed-step) from `t_start` to `ts[-1]`, ended by the
    event if one happens: the states at `ts` (those before `t_start` meaningless), whether and
    when the event happened, the state there, and the solve's statistics."""

    ys: Any
    happened: jax.Array
    t_event: jax.Array
    y_event: Any
    stats: dict
    result: Any
    nonfinite: jax.Array
    interpolation: Any


def event_segments(run, event, y0, ts, args):
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

    init = (ts[0], y0, inf_ys, solve_stats(0, 0, 0, 0), diffrax.RESULTS.successful,
            jnp.array(False), jnp.array(False))
    (_, _, ys, stats, result, nonfinite, _), times = jax.lax.scan(
        one, init, jnp.arange(event.max_events))
    return ys, times.astype(ts.dtype), stats, result, nonfinite
