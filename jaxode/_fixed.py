"""Fixed-step solves: the step grid, the loop, and the three adjoints.

A fixed-step solve of `dy/dt = f(t, y, args)` over the save times `ts` is a scan over
the intervals of `ts`, each made of equal steps of a jaxode stepper. Three ways to
differentiate it, each an object whose methods run the loop (`adjoint=` takes the
object or its name):

- `FixedDirect` (`"direct"`; `FixedForward`, `"forward"`, is the same scan):
  backpropagate through the scan; every step's intermediates are stored (memory grows
  with the number of steps; the fastest gradient).
- `FixedRecursive` (`"recursive"`, the default): checkpointed backprop. The forward
  pass keeps the carry at the start of blocks of about √n steps; the backward pass
  recomputes one block at a time. Memory grows like √n, for one extra forward pass.
  The gradient equals the direct one.
- `FixedBacksolve` (`"backsolve"`): the continuous adjoint of Chen et al. (2018).
  The backward pass integrates `y`, `a = dL/dy` and `dL/dargs` backwards in time with
  the same stepper and steps, restarting `y` from the saved state at every save time.
  Memory does not grow with the number of steps; the gradient matches the direct one
  to the order of the stepper.

Without differentiation all three run the same plain scan. Failure detection reads
the final state of the loop (see `_acc0` for why that sees every step, a NaN between
save times included), never the saved trajectory.
"""

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._solvers import AbstractStepper

__all__ = ["plan_grid", "step_list", "solve_even", "solve_steps", "FixedAdjoint",
           "FixedDirect", "FixedForward", "FixedRecursive", "FixedBacksolve", "FIXED_ADJOINTS"]


# ----------------------------------------------------------------------- grid


def _span_tolerance(ts: np.ndarray, dtype) -> np.ndarray:
    """Absolute rounding error of each span of `ts` held in `dtype`: a few ulps of the
    larger end point (and of the span itself)."""
    eps = float(np.finfo(dtype).eps)
    a, b = np.abs(ts[:-1]), np.abs(ts[1:])
    return 4 * eps * (np.maximum(a, b) + (ts[1:] - ts[:-1]))


def plan_grid(ts: np.ndarray, dt: float | None, dtype) -> tuple[np.ndarray, bool]:
    """Steps per interval of `ts` and whether all spans are equal (to rounding).

    A span within rounding of `k·dt` takes `k` steps, not `k + 1`; rounding is that of
    `dtype`, the dtype the times are held in (a float32 `linspace` has spans a few ulps
    off its spacing).
    """
    ts = np.asarray(ts, np.float64)
    spans = np.diff(ts)
    tol = _span_tolerance(ts, dtype)
    if dt is None:
        counts = np.ones(len(spans), np.int64)
    else:
        counts = np.maximum(1, np.ceil((spans - tol) / dt)).astype(np.int64)
    uniform = bool(np.all(np.abs(spans - spans.mean()) <= tol))
    return counts, uniform


def step_list(ts: np.ndarray, counts: np.ndarray):
    """Every step of a grid with `counts[i]` equal steps in interval `i` of `ts`:
    their start times, their sizes, and the index of the step that ends each
    interval."""
    sizes = np.diff(ts) / counts
    t_steps = np.concatenate([ts[i] + sizes[i] * np.arange(c)
                              for i, c in enumerate(counts)])
    return t_steps, np.repeat(sizes, counts), np.cumsum(counts) - 1


# ----------------------------------------------------------------- the pieces


def _finite(y) -> jax.Array:
    oks = [jnp.all(jnp.isfinite(leaf)) for leaf in jtu.tree_leaves(y)]
    return jnp.stack(oks).all() if oks else jnp.array(True)


def _acc0(solver):
    """The running finiteness flag, or None where the final state tells.

    The generic Runge–Kutta step returns `y + h·Σ b_i k_i`: once a state holds a NaN
    or an inf, every later state does too (NaN + x = NaN, inf + finite = inf,
    inf - inf = NaN). So the final state is finite exactly when every state was, and
    checking it costs nothing inside the loop (a flag in the carry was measured
    +8 % on a vmapped RK4, a running max of |y| +40 %). A stepper that overrides
    `step` (a projection, say) may hide a NaN again: it gets the flag.
    """
    generic = type(solver).step is AbstractStepper.step
    return None if generic else jnp.array(True)


def _track(acc, y):
    return None if acc is None else acc & _finite(y)


def _all_finite(acc, y_end) -> jax.Array:
    return _finite(y_end) if acc is None else acc


def _zeros_for_none(ct, like):
    """Cotangent `ct` with `None` (symbolic zero) leaves replaced by zeros of `like`."""
    def fill(c, x):
        if c is not None or x is None or not jnp.issubdtype(x.dtype, jnp.inexact):
            return c
        return jnp.zeros(jnp.shape(x), x.dtype)

    return jtu.tree_map(fill, ct, like, is_leaf=lambda c: c is None)


def _output_cotangent(grad_obj, ys):
    """The cotangent of the saved states from that of `(ys, y_end, acc)`: the final
    carry `y_end` is the last saved state."""
    ct_ys, ct_last = _zeros_for_none(grad_obj[0], ys), grad_obj[1]
    if ct_last is None:
        return ct_ys
    return jtu.tree_map(lambda c, last: c.at[-1].add(last), ct_ys, ct_last)


def _mask(grads, perturbed):
    return jtu.tree_map(lambda g, p: g if p else None, grads, perturbed,
                        is_leaf=lambda g: g is None)


def _add(a, b):
    return jtu.tree_map(lambda u, v: u + v, a, b)


def _inexact(tree):
    return eqx.filter(tree, eqx.is_inexact_array)


# ------------------------------------- √n rematerialised scan (FixedRecursive)


def _block_size(length: int) -> int:
    return max(1, math.isqrt(max(length - 1, 0)) + 1)


@eqx.filter_custom_vjp
def _remat_scan(vjp_arg, body, length):
    """`lax.scan(lambda c, x: body(c, x, env), carry, xs)` whose backward pass keeps
    the carry at the start of blocks of about √n steps and recomputes one block at a
    time."""
    carry, xs, env = vjp_arg
    return lax.scan(lambda c, x: body(c, x, env), carry, xs, length=length)


def _split(xs, length):
    b = _block_size(length)
    nb = length // b
    main = jtu.tree_map(lambda a: a[: nb * b].reshape((nb, b) + a.shape[1:]), xs)
    rest = jtu.tree_map(lambda a: a[nb * b:], xs)
    return main, rest, nb, b


@_remat_scan.def_fwd
def _remat_scan_fwd(perturbed, vjp_arg, body, length):
    carry, xs, env = vjp_arg
    b = _block_size(length)
    nb = -(-length // b)
    step = lambda c, x: body(c, x, env)  # noqa: E731
    y_shape = jax.eval_shape(step, carry, jtu.tree_map(lambda a: a[0], xs))[1]
    if not jtu.tree_leaves(y_shape):
        # no outputs per step: a scan over blocks, keeping the carry entering each
        main, rest, nfull, b = _split(xs, length)

        def block(c, xb):
            return lax.scan(step, c, xb, length=b)[0], c

        c_mid, starts = lax.scan(block, carry, main, length=nfull)
        c_end, ys = lax.scan(step, c_mid, rest, length=length - nfull * b)
        starts = jtu.tree_map(lambda a, m: jnp.concatenate([a, m[None]]), starts, c_mid)
        return (c_end, ys), jtu.tree_map(lambda a: a[:nb], starts)
    # outputs per step: the same plain scan as the primal (so the outputs keep their
    # batching under vmap), writing the carry into a small buffer at every block
    # start; one spare row takes the writes of the other steps, so there is no branch
    buf0 = jtu.tree_map(
        lambda c: jnp.zeros((nb + 1,) + jnp.shape(c), jnp.result_type(c)), carry)

    def write(state, x):
        c, buf, i = state
        row = jnp.where(i % b == 0, i // b, nb)
        buf = jtu.tree_map(lambda B, v: lax.dynamic_update_index_in_dim(B, v, row, 0),
                           buf, c)
        c, y = step(c, x)
        return (c, buf, i + 1), y

    (c_end, starts, _), ys = lax.scan(write, (carry, buf0, jnp.int32(0)), xs,
                                      length=length)
    return (c_end, ys), jtu.tree_map(lambda a: a[:nb], starts)


@_remat_scan.def_bwd
def _remat_scan_bwd(residuals, grad_obj, perturbed, vjp_arg, body, length):
    carry, xs, env = vjp_arg
    out_shape = eqx.filter_eval_shape(lambda: _remat_scan.fn(vjp_arg, body, length))
    ct_carry, ct_ys = _zeros_for_none(grad_obj, out_shape)
    main, rest, nb, b = _split(xs, length)
    ct_main, ct_rest, _, _ = _split(ct_ys, length)
    starts = jtu.tree_map(lambda a: a[:nb], residuals)
    c_mid = jtu.tree_map(lambda a: a[-1], residuals)  # == block nb when rest is empty

    def run(c, xseg, e, n):
        return lax.scan(lambda c, x: body(c, x, e), c, xseg, length=n)

    _, vjp_rest = eqx.filter_vjp(lambda c, x, e: run(c, x, e, length - nb * b),
                                 c_mid, rest, env)
    ct_c, ct_xr, ct_env = vjp_rest((ct_carry, ct_rest))

    def back(state, inp):
        ct_c, ct_env = state
        c_start, xb, ct_yb = inp
        _, vjp_block = eqx.filter_vjp(lambda c, x, e: run(c, x, e, b), c_start, xb, env)
        ct_c, ct_xb, ct_e = vjp_block((ct_c, ct_yb))
        return (ct_c, _add(ct_env, ct_e)), ct_xb

    (ct_c, ct_env), ct_xb = lax.scan(back, (ct_c, ct_env), (starts, main, ct_main),
                                     length=nb, reverse=True)
    ct_xs = jtu.tree_map(
        lambda u, v: jnp.concatenate([u.reshape((-1,) + u.shape[2:]), v]), ct_xb, ct_xr)
    return _mask((ct_c, ct_xs, ct_env), perturbed)


# ------------------------------------------------------ even grid: the forward


class _Even(eqx.Module):
    """Static description of an even-grid solve: `k` equal steps per interval."""

    solver: eqx.Module
    k: int = eqx.field(static=True)
    adjoint: "FixedAdjoint"
    tick: object = eqx.field(static=True)  # progress callback(i) or None
    n: int = eqx.field(static=True)

    def substep(self, carry, _, env):
        f, args, t0, h = env
        y, acc, j = carry
        y = self.solver.step(f, t0 + h * j.astype(t0.dtype), y, h, args)
        return (y, _track(acc, y), j + 1), None

    def interval(self, carry, x, env):
        t0, t1, *i = x  # the interval index travels only to drive a progress bar
        f, args, h_uniform = env
        h = (t1 - t0) / self.k if h_uniform is None else h_uniform
        if self.k == 1:
            y, acc = carry
            y = self.solver.step(f, t0, y, h, args)
            carry = (y, _track(acc, y))
        else:  # the step index rides in the carry: no per-step array of times
            (y, acc, _), _ = self.adjoint.scan(self.substep, (*carry, jnp.int32(0)),
                                               None, (f, args, t0, h), self.k)
            carry = (y, acc)
        if self.tick is not None:  # about a hundred updates, whatever the length
            every = max(1, self.n // 100)
            i = i[0].astype(jnp.int32)
            lax.cond((i % every == 0) | (i == self.n - 1),
                     lambda: jax.debug.callback(self.tick, i, ordered=True),
                     lambda: None)
        return carry, carry[0]

    def run(self, y0, ts, f, args, h):
        acc0 = _acc0(self.solver)
        xs = (ts[:-1], ts[1:])
        if self.tick is not None:  # float, so that it has a cotangent like the times
            xs += (jnp.arange(self.n, dtype=ts.dtype),)
        (y, acc), ys = self.adjoint.scan(self.interval, (y0, acc0), xs, (f, args, h))
        return ys, y, acc


@eqx.filter_custom_vjp
def _even_backsolve(vjp_arg, plan):
    y0, ts, f, args, h = vjp_arg
    return plan.run(y0, ts, f, args, h)


@_even_backsolve.def_fwd
def _even_backsolve_fwd(perturbed, vjp_arg, plan):
    y0, ts, f, args, h = vjp_arg
    out = plan.run(y0, ts, f, args, h)
    return out, out[0]


def _augmented(f, args):
    """The adjoint system: y' = f, a' = -a·∂f/∂y, g' = -a·∂f/∂(f, args)."""
    def aug(t, state, _):
        y, a, _g = state
        fy, vjp = eqx.filter_vjp(lambda y, fa: fa[0](t, y, fa[1]), y, (f, args))
        ay, g = vjp(a)
        neg = lambda tree: jtu.tree_map(jnp.negative, tree)  # noqa: E731
        return fy, neg(ay), neg(g)
    return aug


def backsolve_intervals(solver, f, args, y0, ts, ys, ct_ys, counts, h_uniform):
    """Integrate the adjoint system backwards over every interval of `ts`.

    `ys` (n, ...) are the saved states at `ts[1:]`, `ct_ys` their cotangents;
    `counts` the steps per interval (an int, or an int array for uneven grids).
    Returns the cotangents of `y0`, `ts` and `(f, args)`.
    """
    aug = _augmented(f, args)
    n = ts.shape[0] - 1
    starts = jtu.tree_map(lambda a, b: jnp.concatenate([a[None], b[:-1]]), y0, ys)
    g0 = jtu.tree_map(jnp.zeros_like, _inexact((f, args)))
    a0 = jtu.tree_map(jnp.zeros_like, y0)
    counts_arr = jnp.broadcast_to(jnp.asarray(counts, jnp.int32), (n,))

    def back(state, x):
        a, g = state
        t0, t1, y_end, y_start, ct, k = x
        a = _add(a, ct)
        h = (t1 - t0) / k.astype(t0.dtype) if h_uniform is None else h_uniform
        dt_end = _dot(ct, f(t1, y_end, args))  # dL/dt_{i+1} from the saved value

        def substep(j, s):
            return solver.step(aug, t1 - h * j.astype(t1.dtype), s, -h, None)

        _, a, g = lax.fori_loop(0, k, substep, (y_end, a, g))
        return (a, g), (dt_end, y_start)

    xs = (ts[:-1], ts[1:], ys, starts, ct_ys, counts_arr)
    (a, g), (dt_ends, _) = lax.scan(back, (a0, g0), xs, reverse=True)
    dt0 = -_dot(a, f(ts[0], y0, args))
    ct_ts = jnp.concatenate([dt0[None], dt_ends]).astype(ts.dtype)
    return a, ct_ts, g


def _dot(a, b):
    return sum(jnp.vdot(u, v) for u, v in zip(jtu.tree_leaves(a), jtu.tree_leaves(b)))


@_even_backsolve.def_bwd
def _even_backsolve_bwd(ys, grad_obj, perturbed, vjp_arg, plan):
    y0, ts, f, args, h = vjp_arg
    ct_ys = _output_cotangent(grad_obj, ys)
    a, ct_ts, g = backsolve_intervals(plan.solver, f, args, y0, ts, ys, ct_ys, plan.k, h)
    ct_h = None if h is None else jnp.zeros_like(h)
    return _mask((a, ct_ts, g[0], g[1], ct_h), perturbed)


def solve_even(f, solver, y0, ts, args, k, h, adjoint, tick=None):
    """`k` equal steps in each interval of `ts`; `h` the step when all intervals have
    the same span (loop-invariant), else None; `adjoint` a `FixedAdjoint`. Returns
    the states at `ts[1:]`, the final state (the same value as the last of them, from
    the carry, so a caller that keeps only it lets XLA drop the saved trajectory) and
    whether every state stayed finite."""
    plan = _Even(solver, k, adjoint, tick, ts.shape[0] - 1)
    ys, y_end, acc = adjoint.even(plan, y0, ts, f, args, h)
    return ys, y_end, _all_finite(acc, y_end)


# -------------------------------------------------------- uneven grid: steps


class _Steps(eqx.Module):
    solver: eqx.Module

    def step(self, carry, x, env):
        f, args = env
        t, h = x
        y, acc = carry
        y = self.solver.step(f, t, y, h, args)
        return (y, _track(acc, y)), y


@eqx.filter_custom_vjp
def _steps_backsolve(vjp_arg, solver, counts):
    y0, ts, f, args = vjp_arg
    return _steps_forward(solver, f, args, y0, ts, counts)


def _steps_forward(solver, f, args, y0, ts, counts):
    """Interval by interval, `counts[i]` equal steps each; nothing per step is kept."""
    def interval(carry, x):
        t0, t1, k = x
        h = (t1 - t0) / k.astype(t0.dtype)

        def sub(j, c):
            y, acc = c
            y = solver.step(f, t0 + h * j.astype(t0.dtype), y, h, args)
            return y, _track(acc, y)

        carry = lax.fori_loop(0, k, sub, carry)
        return carry, carry[0]

    acc0 = _acc0(solver)
    (y, acc), ys = lax.scan(interval, (y0, acc0),
                            (ts[:-1], ts[1:], jnp.asarray(counts, jnp.int32)))
    return ys, y, acc


@_steps_backsolve.def_fwd
def _steps_backsolve_fwd(perturbed, vjp_arg, solver, counts):
    y0, ts, f, args = vjp_arg
    out = _steps_forward(solver, f, args, y0, ts, counts)
    return out, out[0]


@_steps_backsolve.def_bwd
def _steps_backsolve_bwd(ys, grad_obj, perturbed, vjp_arg, solver, counts):
    y0, ts, f, args = vjp_arg
    ct_ys = _output_cotangent(grad_obj, ys)
    a, ct_ts, g = backsolve_intervals(solver, f, args, y0, ts, ys, ct_ys, counts, None)
    return _mask((a, ct_ts, g[0], g[1]), perturbed)


def solve_steps(f, solver, y0, ts, args, t_steps, h_steps, save_index, counts,
                adjoint):
    """An explicit list of steps (`t_steps`, `h_steps`), keeping the states after
    steps `save_index`: for intervals of `ts` that need different numbers of steps.
    Returns the states at `ts[1:]`, the final state and whether every state stayed
    finite."""
    ys, y_end, acc = adjoint.steps(solver, f, args, y0, ts, t_steps, h_steps,
                                   save_index, counts)
    return ys, y_end, _all_finite(acc, y_end)


# ------------------------------------------------------------------- adjoints


class FixedAdjoint(eqx.Module):
    """How a fixed-step solve is differentiated. The object runs the loops: `scan`
    (one scan of `body(carry, x, env)`), `even` (an even grid, `_Even`) and `steps`
    (an explicit list of steps). The base class backpropagates through plain
    scans."""

    name: ClassVar[str] = "direct"

    def scan(self, body, carry, xs, env, length=None):
        return lax.scan(lambda c, x: body(c, x, env), carry, xs, length=length)

    def even(self, plan, y0, ts, f, args, h):
        return plan.run(y0, ts, f, args, h)

    def steps(self, solver, f, args, y0, ts, t_steps, h_steps, save_index, counts):
        del ts, counts
        (y_end, acc), path = self.scan(_Steps(solver).step, (y0, _acc0(solver)),
                                       (t_steps, h_steps), (f, args))
        ys = jtu.tree_map(lambda p: p[jnp.asarray(save_index)], path)
        return ys, y_end, acc


class FixedDirect(FixedAdjoint):
    """Backpropagation through the scan, every step's intermediates stored: the
    fastest gradient, memory linear in the steps; forward mode (`jax.jvp`,
    `jax.jacfwd`) goes straight through."""


class FixedForward(FixedDirect):
    """`FixedDirect` asked for by the name `"forward"` (for `jax.jvp`,
    `jax.jacfwd`); the same plain scan."""

    name: ClassVar[str] = "forward"


class FixedRecursive(FixedAdjoint):
    """Checkpointed backpropagation: memory like √steps for one more forward pass;
    the gradient equals `FixedDirect`'s. Reverse mode only."""

    name: ClassVar[str] = "recursive"

    def scan(self, body, carry, xs, env, length=None):
        if length is None:
            length = jtu.tree_leaves(xs)[0].shape[0]
        if length > 3:
            return _remat_scan((carry, xs, env), body, length)
        return super().scan(body, carry, xs, env, length)


class FixedBacksolve(FixedAdjoint):
    """The continuous adjoint (Chen et al. 2018) integrated backwards with the same
    stepper and steps: memory independent of the steps, the gradient exact to the
    stepper's order. Reverse mode only."""

    name: ClassVar[str] = "backsolve"

    def even(self, plan, y0, ts, f, args, h):
        return _even_backsolve((y0, ts, f, args, h), plan)

    def steps(self, solver, f, args, y0, ts, t_steps, h_steps, save_index, counts):
        return _steps_backsolve((y0, ts, f, args), solver, tuple(counts))


FIXED_ADJOINTS: dict[str, type[FixedAdjoint]] = {
    "recursive": FixedRecursive,
    "backsolve": FixedBacksolve,
    "direct": FixedDirect,
    "forward": FixedForward,
}
