"""`fit`: recover ODE parameters from sparse, noisy observations.

The forward pass is `jaxode.solve`; the backward pass is the parameter estimate. The
optimiser loop is compiled (`lax.scan` over chunks of optimiser steps, the progress bar
updated between chunks), runs on transformed parameters (log space for positive ones,
relative units otherwise) so that parameters of very different sizes move at the same
pace, and ends with Levenberg–Marquardt steps in the same compiled loop (every
iteration evaluates the residuals and their Jacobian once, so the optimiser, the polish
and the error estimates share one compiled solve). Uncertainty comes from the
Gauss–Newton approximation at the optimum with Student-t quantiles.
"""

import copy
import functools
import math
from collections import OrderedDict
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.flatten_util
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from ._ensemble import AXIS, _check_devices, member_mesh
from ._errors import check_times, short
from ._fixed import plan_grid, step_list
from ._solve import _resolve_solver, _solve_fixed_grid, solve
from ._solvers import AbstractStepper

__all__ = ["fit", "FitResult", "t_quantile"]

_MAX_BAD = 40  # non-finite steps without progress (each halving the step) before stopping
_CHUNKS = 25  # progress-bar updates per fit


# ------------------------------------------------------------------ t quantiles


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function `I_x(a, b)`."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_quantile(q: float, dof: float) -> float:
    """The `q` quantile of Student's t distribution with `dof` degrees of freedom.

    Bisection on the CDF `P(T > t) = I_{ν/(ν+t²)}(ν/2, 1/2) / 2`, in plain Python
    (no SciPy, no compilation); accurate to about 1e-12.
    """
    if not 0 < q < 1:
        raise ValueError(f"`q` must be in (0, 1), got {q!r}.")
    if not dof > 0:
        raise ValueError(f"`dof` must be > 0, got {dof!r}.")
    p = min(q, 1.0 - q)  # lower-tail probability, <= 0.5
    lo, hi = 0.0, 1.0
    while 0.5 * _betainc(dof / 2, 0.5, dof / (dof + hi * hi)) > p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * _betainc(dof / 2, 0.5, dof / (dof + mid * mid)) > p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    t = 0.5 * (lo + hi)
    return t if q > 0.5 else -t


# ------------------------------------------------------------------ the result


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else str(x)


class FitResult:
    """The result of `fit`.

    - `params`: the estimate, a pytree like `params0`.
    - `y0`: the initial state(s), estimated when `fit_y0=True`, else as given.
    - `losses`: mean squared residual over the observed entries, one per iteration:
      the optimiser steps (with `shooting`, the multiple-shooting loss including the
      continuity penalty), then the best loss so far during the polish. NumPy array.
    - `loss`: the final mean squared residual.
    - `stderr`: standard errors, a pytree like `params` (Gauss–Newton: `s² (JᵀJ)⁻¹`
      with `s² = RSS / (n − p)`); `y0_stderr` likewise for a fitted `y0`.
    - `cov`: the covariance matrix of all estimated numbers (parameters in
      `jax.tree_util` leaf order, then `y0` when fitted).
    - `n_obs`, `n_params`, `dof`: observed numbers, estimated numbers, `n − p`.
    - `opt_steps`: how many entries of `losses` are optimiser steps (the rest are
      the polish).
    - `starts_losses`: with `multistart`, the final loss of every start.
    - `converged`: True when the final polish (or, without it, the optimiser) met its
      tolerance with a finite loss.
    - `confint(level)`, `predict(ts)`: see the methods.
    """

    def __init__(self, *, params, y0, losses, loss, stderr, y0_stderr, cov, n_obs,
                 n_params, converged, message, predictor, opt_steps=0,
                 starts_losses=None):
        self.params = params
        self.y0 = y0
        self.losses = losses
        self.loss = loss
        self.stderr = stderr
        self.y0_stderr = y0_stderr
        self.cov = cov
        self.n_obs = n_obs
        self.n_params = n_params
        self.dof = n_obs - n_params
        self.converged = converged
        self.message = message
        self.opt_steps = opt_steps
        self.starts_losses = starts_losses
        self._predictor = predictor

    def confint(self, level: float = 0.95) -> dict | Any:
        """Two-sided `level` confidence intervals `estimate ± t·stderr` with the
        Student-t quantile on `n − p` degrees of freedom.

        **Returns:** a pytree like `params` whose leaves are `(low, high)` pairs:
        Python floats for scalar parameters, NumPy arrays otherwise. Infinite when
        `n ≤ p`.
        """
        if not 0 < level < 1:
            raise ValueError(f"`level` must be in (0, 1), got {level!r}.")
        tq = t_quantile(0.5 + level / 2, self.dof) if self.dof > 0 else math.inf
        interval = jtu.tree_map(
            lambda p, s: (_plain(np.asarray(p) - tq * np.asarray(s)),
                          _plain(np.asarray(p) + tq * np.asarray(s))),
            self.params, self.stderr,
        )
        return _in_order_of(self.params, interval)

    def predict(self, ts) -> jax.Array:
        """The fitted model at times `ts` (1-D, increasing, not before the start
        time): shape `(len(ts), D)`, or `(n_traj, len(ts), D)` for several
        trajectories."""
        return self._predictor(self.params, self.y0, ts)

    def __repr__(self) -> str:
        """A table in the order of `params0`: estimate, standard error and the 95 %
        interval of each parameter (and of a fitted `y0`)."""
        tq = t_quantile(0.975, self.dof) if self.dof > 0 else math.inf
        rows = []
        stderr = dict(_named_leaves(self.stderr))
        for name, p in _named_leaves(self.params):
            for i, (pi, si) in enumerate(zip(np.ravel(p), np.ravel(stderr[name]))):
                label = name if np.size(p) == 1 else f"{name}[{i}]"
                rows.append((label, float(pi), float(si)))
        if self.y0_stderr is not None:
            for i, (pi, si) in enumerate(zip(np.ravel(self.y0),
                                             np.ravel(self.y0_stderr))):
                rows.append((f"y0[{i}]", float(pi), float(si)))
        width = max([len(r[0]) for r in rows] + [9])
        lines = [f"FitResult(loss={_fmt(self.loss)}, n={self.n_obs}, p={self.n_params}, "
                 f"converged={self.converged})",
                 f"  {'parameter':<{width}}  {'estimate':>12}  {'± stderr':>11}  "
                 f"{'95 % interval':>24}"]
        for label, pi, si in rows:
            ci = f"[{_fmt(pi - tq * si)}, {_fmt(pi + tq * si)}]"
            lines.append(f"  {label:<{width}}  {pi:>12.5g}  {'± ' + _fmt(si):>11}  "
                         f"{ci:>24}")
        return "\n".join(lines)


def _in_order_of(params0, tree):
    """A dict `tree` with the keys in the order of `params0` (pytree flattening
    sorts them); other trees as they are."""
    if isinstance(params0, dict) and isinstance(tree, dict):
        return {k: tree[k] for k in params0}
    return tree


def _named_leaves(tree):
    """`(name, leaf)` pairs: a dict's own key order, else pytree order."""
    if isinstance(tree, dict):
        return [(str(k), v) for k, v in tree.items()]
    return [(jtu.keystr(path).strip("[]'\"") or "params", leaf)
            for path, leaf in jtu.tree_flatten_with_path(tree)[0]]


def _plain(x):
    """A Python float for a scalar, a NumPy array otherwise."""
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x


# ------------------------------------------------------------- input checking


def _check_params(params0):
    leaves, treedef = jtu.tree_flatten(params0)
    if not leaves:
        raise ValueError("`params0` has no leaves: there is nothing to fit.")
    out = []
    for path, leaf in jtu.tree_flatten_with_path(params0)[0]:
        where = jtu.keystr(path)
        if isinstance(leaf, (bool, int)) or not eqx.is_array_like(leaf):
            raise ValueError(
                f"`params0{where}`={short(leaf)} must be a floating-point number or "
                "array (write 1.0, not 1).")
        arr = jnp.asarray(leaf)
        if not jnp.issubdtype(arr.dtype, jnp.floating):
            raise ValueError(
                f"`params0{where}` has dtype {arr.dtype}; parameters must be floating "
                "point.")
        if not np.all(np.isfinite(np.asarray(arr))):
            raise ValueError(f"`params0{where}` is not finite: {short(arr)}.")
        out.append(arr)
    return jtu.tree_unflatten(treedef, out)


def _check_positive(positive, params0):
    if isinstance(positive, bool):
        return jtu.tree_map(lambda _: positive, params0)
    try:
        flags = jtu.tree_map(lambda _, b: bool(b), params0, positive)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"`positive` must be a bool or a pytree of bools shaped like `params0`; "
            f"got {short(positive)} for params0 {short(params0)}.") from e
    return flags


def _prepare_data(ts, ys, y0, mask, t0):
    ts = np.asarray(ts, dtype=np.float64)
    check_times("ts", ts)
    ys = np.asarray(ys, dtype=np.float64)
    y0 = np.asarray(y0, dtype=np.float64)
    if ys.ndim not in (2, 3):
        raise ValueError(
            f"`ys` must have shape (T, D) or (n_traj, T, D); got shape {ys.shape}.")
    single = ys.ndim == 2
    if single:
        ys = ys[None]
    if ys.shape[1] != ts.shape[0]:
        raise ValueError(
            f"`ys` has shape {ys.shape[1:] if single else ys.shape} but `ts` has "
            f"{ts.shape[0]} times; the time axis of `ys` must match `ts`.")
    want_y0 = ys.shape[2:] if single else (ys.shape[0], ys.shape[2])
    if y0.shape != tuple(want_y0):
        raise ValueError(
            f"`y0` has shape {y0.shape} but `ys` of shape "
            f"{ys.shape[1:] if single else ys.shape} needs `y0` of shape "
            f"{tuple(want_y0)}.")
    if not np.all(np.isfinite(y0)):
        raise ValueError(f"`y0` holds non-finite values: {short(y0)}.")
    y0 = y0.reshape(ys.shape[0], ys.shape[2])
    observed = np.isfinite(ys)
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != np.bool_:
            raise ValueError(f"`mask` must be boolean, got dtype {m.dtype}.")
        want = ys.shape[1:] if single else ys.shape
        if m.shape != tuple(want):
            raise ValueError(
                f"`mask` has shape {m.shape} but `ys` has shape {tuple(want)}; "
                "they must match.")
        observed = observed & m.reshape(ys.shape)
    if t0 is None:
        t0 = float(ts[0])
    t0 = float(t0)
    if ts[0] < t0:
        raise ValueError(
            f"observation times `ts` start at {ts[0]}, before the start time "
            f"`t0`={t0} of the solve; every observation must satisfy ts >= t0.")
    return ts, ys, y0, observed, t0, single


@functools.lru_cache(maxsize=8)
def _default_optimizer(steps: int) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=1e-3, peak_value=0.05, warmup_steps=max(1, steps // 20),
        decay_steps=max(2, steps), end_value=1e-4)
    return optax.adam(schedule)


# ----------------------------------------------------------------- the problem


class _Problem:
    """Everything the compiled functions close over: data, transforms, the model."""

    def __init__(self, f, params0, positive, y0, fit_y0, ts, ys, observed, t0, solver,
                 solve_kwargs, shooting):
        self.f = f
        self.treedef = jtu.tree_structure(params0)
        leaves = jtu.tree_leaves(params0)
        self.shapes = [jnp.shape(x) for x in leaves]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.dtype = jnp.result_type(*leaves, float)
        flat0 = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in leaves])
        pos = np.concatenate([np.full(n, bool(b)) for n, b in
                              zip(self.sizes, jtu.tree_leaves(positive))])
        if np.any(pos & (flat0 <= 0)):
            bad = [jtu.keystr(p) for (p, x), b in zip(
                jtu.tree_flatten_with_path(params0)[0], jtu.tree_leaves(positive))
                if b and np.any(np.asarray(x) <= 0)]
            raise ValueError(
                f"`positive=True` for params0{', params0'.join(bad)}, whose initial "
                "value is not > 0; a positive parameter is fitted in log space and "
                "needs a positive start.")
        self.pos = pos
        self.scale = np.where(pos, 1.0, np.where(flat0 != 0, np.abs(flat0), 1.0))
        self.n_p = flat0.size
        self.fit_y0 = fit_y0
        self.y0 = y0
        self.y0_scale = np.where(y0 != 0, np.abs(y0), 1.0)
        self.t0 = t0
        self.solver = solver
        self.solve_kwargs = solve_kwargs
        self.fixed = isinstance(solver, AbstractStepper)
        # observation grid: t0 followed by the observation times
        self.at_t0 = ts[0] == t0
        self.grid = ts if self.at_t0 else np.concatenate([[t0], ts])
        self.obs_index = np.arange(len(ts)) + (0 if self.at_t0 else 1)
        observed = observed.copy()
        if self.at_t0 and not fit_y0:
            observed[:, 0, :] = False  # the given y0: these residuals cannot change
        if not observed.any():
            raise ValueError(
                "every observation is missing (NaN or masked out)"
                + (" apart from those at t0, which equal the given `y0` when "
                   "fit_y0=False" if self.at_t0 and not fit_y0 else "")
                + "; there is nothing to fit.")
        self.observed = observed
        self.ys_filled = np.where(observed, ys, 0.0)
        self.n_obs = int(observed.sum())
        self.n_traj, _, self.dim = ys.shape
        self.u0 = self.to_u(flat0, y0)
        self.shooting = None
        self.s_scale = None
        if shooting is not None:
            self._setup_shooting(shooting, ts, ys, observed)

    # -- compiled functions take the arrays as arguments (no recompilation when only
    #    the data or the start change) and cache on everything else
    _DYNAMIC = ("pos", "scale", "y0", "y0_scale", "observed", "ys_filled", "s_scale",
                "n_obs")

    def dynamic(self) -> dict:
        return {k: jnp.asarray(getattr(self, k)) for k in self._DYNAMIC
                if getattr(self, k, None) is not None}

    def with_dynamic(self, dyn: dict) -> "_Problem":
        new = copy.copy(self)
        for k, v in dyn.items():
            setattr(new, k, v)
        return new

    def static_key(self) -> tuple:
        return (self.f, self.solver, self.treedef, tuple(self.shapes), self.fit_y0,
                self.t0, tuple(self.grid.tolist()), tuple(self.obs_index.tolist()),
                tuple(sorted(self.solve_kwargs.items())), self.shooting,
                tuple(getattr(self, "bounds", ())), self.n_traj, self.dim,
                str(self.solve_kwargs.get("dt")),
                str(self.dtype), self.observed.shape)

    # -- parameter transforms: u (optimiser space) <-> natural values
    def to_u(self, flat, y0):
        u = np.where(self.pos, np.log(np.where(self.pos, flat, 1.0)), flat / self.scale)
        if self.fit_y0:
            u = np.concatenate([u, np.ravel(y0 / self.y0_scale)])
        return u

    def flat_from_u(self, u):
        up = u[: self.n_p]
        flat = jnp.where(self.pos, jnp.exp(jnp.where(self.pos, up, 0.0)),
                         up * self.scale)
        if self.fit_y0:
            y0 = u[self.n_p: self.n_p + self.y0.size].reshape(self.y0.shape)
            y0 = y0 * self.y0_scale
        else:
            y0 = jnp.asarray(self.y0)
        return flat, y0

    def flat_from_u_host(self, u):
        """`flat_from_u` in NumPy, for results (no compilation)."""
        up = u[: self.n_p]
        flat = np.where(self.pos, np.exp(np.where(self.pos, up, 0.0)), up * self.scale)
        y0 = (u[self.n_p: self.n_p + self.y0.size].reshape(self.y0.shape)
              * self.y0_scale) if self.fit_y0 else np.asarray(self.y0)
        return flat, y0

    def unflatten_host(self, flat):
        out, i = [], 0
        for shape, n in zip(self.shapes, self.sizes):
            out.append(np.asarray(flat[i: i + n], self.dtype).reshape(shape))
            i += n
        return jtu.tree_unflatten(self.treedef, out)

    def unflatten(self, flat):
        out, i = [], 0
        for shape, n in zip(self.shapes, self.sizes):
            out.append(flat[i: i + n].reshape(shape).astype(self.dtype))
            i += n
        return jtu.tree_unflatten(self.treedef, out)

    # -- the model
    def _solve(self, params, y0, grid, adjoint, throw=False):
        kwargs = dict(self.solve_kwargs)
        if self.fixed:  # a plain scan: forward- and reverse-mode Jacobians alike
            kwargs.setdefault("adjoint", "direct")
        elif adjoint is not None:
            kwargs.setdefault("adjoint", adjoint)

        def one(y):
            return solve(self.f, y, grid, params, solver=self.solver, throw=throw,
                         **kwargs).ys

        return jax.vmap(one)(y0)  # (n_traj, len(grid), D)

    def predict_obs(self, flat, y0, adjoint):
        params = self.unflatten(flat)
        ys = self._solve(params, y0, self.grid, adjoint)
        return ys[:, self.obs_index, :]

    def obs_residuals(self, flat, y0, adjoint):
        pred = self.predict_obs(flat, y0, adjoint)
        r = jnp.where(self.observed, pred - self.ys_filled, 0.0)
        return r.reshape(-1)

    def residuals(self, u, adjoint):
        flat, y0 = self.flat_from_u(u)
        return self.obs_residuals(flat, y0, adjoint)

    # -- multiple shooting
    def _setup_shooting(self, k, ts, ys, observed):
        grid = self.grid
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"`shooting` must be a positive integer, got {k!r}.")
        if k >= len(grid):
            raise ValueError(
                f"`shooting`={k} needs at least {k + 1} distinct times (t0 and the "
                f"observation times), but there are {len(grid)}.")
        span = grid[-1] - grid[0]
        bounds = [0]
        for j in range(1, k):
            target = grid[0] + j * span / k
            i = int(np.argmin(np.abs(grid - target)))
            i = min(max(i, bounds[-1] + 1), len(grid) - 1 - (k - j))
            bounds.append(i)
        bounds.append(len(grid) - 1)
        self.bounds = bounds
        # initial segment states: observed values interpolated at the boundaries
        gy = np.full((self.n_traj, len(grid), self.dim), np.nan)
        gy[:, self.obs_index] = np.where(np.isfinite(ys), ys, np.nan)
        gobs = np.zeros(gy.shape, bool)
        gobs[:, self.obs_index] = np.isfinite(ys)
        s0 = np.empty((self.n_traj, k - 1, self.dim))
        for b in range(self.n_traj):
            for d in range(self.dim):
                ok = gobs[b, :, d]
                for j, i in enumerate(bounds[1:-1]):
                    s0[b, j, d] = (np.interp(grid[i], grid[ok], gy[b, ok, d])
                                   if ok.any() else self.y0[b, d])
        mag = np.nanmax(np.where(gobs, np.abs(gy), np.nan), axis=1, initial=0.0)
        mag = np.where(np.isfinite(mag) & (mag > 0), mag, 1.0)  # (n_traj, D)
        self.s_scale = np.broadcast_to(mag[:, None, :], s0.shape).copy()
        self.shooting = k
        self.su0 = (s0 / self.s_scale).reshape(-1)
        self._setup_segments()

    def _setup_segments(self):
        """Index tables so that all segments are solved at once under `vmap`.

        Segment `j` runs over grid points `bounds[j] … bounds[j+1]`. Adaptive
        solvers save at the segment's own times, padded to a common length with extra
        save times inside the last interval. Fixed-step solvers run the segment's
        own steps, padded with steps of size zero (which leave the state unchanged).
        `seg_of`, `slot_of` give, for every grid point after the first, the segment
        and the output slot that predict it; the last slot is each segment's end."""
        grid, bounds, k = self.grid, self.bounds, self.shooting
        lengths = [bounds[j + 1] - bounds[j] + 1 for j in range(k)]
        n_slots = max(lengths)
        seg_of, slot_of = [], []
        for j in range(k):
            m = lengths[j]
            for i in range(1, m):
                seg_of.append(j)
                slot_of.append(i if i < m - 1 else n_slots - 1)
        self.seg_of, self.slot_of = np.array(seg_of), np.array(slot_of)
        if not self.fixed:
            local = np.empty((k, n_slots))
            for j in range(k):
                pts = grid[bounds[j]: bounds[j + 1] + 1]
                extra = n_slots - len(pts)
                tail = np.linspace(pts[-2], pts[-1], extra + 2)[1:]
                local[j] = np.concatenate([pts[:-1], tail])
            self.seg_times = local
            return
        dt = self.solve_kwargs.get("dt")
        t_steps, h_steps, saves = [], [], []
        for j in range(k):
            pts = grid[bounds[j]: bounds[j + 1] + 1]
            counts, _ = plan_grid(pts, dt, self.dtype)  # the rule `solve` uses
            steps, sizes, save = step_list(pts, counts)
            t_steps.append(steps)
            h_steps.append(sizes)
            saves.append(np.concatenate(
                [save[:-1], np.full(n_slots - 1 - len(save), save[-1]), save[-1:]]))
        n_steps = max(len(t) for t in t_steps)
        self.seg_t = np.stack([np.concatenate([t, np.full(n_steps - len(t), t[-1])])
                               for t in t_steps])
        self.seg_h = np.stack([np.concatenate([h, np.zeros(n_steps - len(h))])
                               for h in h_steps])
        self.seg_save = np.stack(saves)

    def _solve_segments(self, params, starts):
        """All segments at once: `starts` (n_traj, k, D) -> (n_traj, k, slots, D)."""
        if self.fixed:
            def one(y, t_steps, h_steps, save):
                ys, _, _ = _solve_fixed_grid(self.f, self.solver, y, None, t_steps,
                                             h_steps, save, None, params, False)
                return ys

            seg = jax.vmap(one)
            return jax.vmap(lambda s: seg(s, self.seg_t, self.seg_h, self.seg_save))(
                starts)
        kwargs = dict(self.solve_kwargs)

        def one(y, ts):
            return solve(self.f, y, ts, params, solver=self.solver, throw=False,
                         **kwargs).ys

        seg = jax.vmap(one)
        return jax.vmap(lambda s: seg(s, jnp.asarray(self.seg_times)))(starts)

    def shooting_residuals(self, v, weight, adjoint):
        """Observation residuals of all segments, then the weighted continuity
        defects; `v` = the transformed parameters followed by the segment start
        states in relative units."""
        u, sv = v[: self.u0.size], v[self.u0.size:]
        flat, y0 = self.flat_from_u(u)
        params = self.unflatten(flat)
        s = sv.reshape(self.n_traj, self.shooting - 1, self.dim) * self.s_scale
        starts = jnp.concatenate([y0[:, None], s], axis=1)
        if adjoint is not None and not self.fixed:
            self = copy.copy(self)
            self.solve_kwargs = {**self.solve_kwargs, "adjoint": adjoint}
        out = self._solve_segments(params, starts)  # (n_traj, k, slots, D)
        path = jnp.concatenate(
            [y0[:, None], out[:, self.seg_of, self.slot_of]], axis=1)
        pred = path[:, self.obs_index]
        r = jnp.where(self.observed, pred - self.ys_filled, 0.0).reshape(-1)
        d = (out[:, :-1, -1] - s).reshape(-1)
        return jnp.concatenate([r, jnp.sqrt(weight) * d])


# ------------------------------------------------------------------ the loop


class _LoopState(eqx.Module):
    v: jax.Array  # the point evaluated next (transformed variables, flat)
    opt_state: Any
    good_v: jax.Array  # the last point with a finite loss, and its optimiser state
    good_opt_state: Any
    factor: jax.Array  # step multiplier: halved after a non-finite loss
    bad: jax.Array  # non-finite losses since the loss last improved
    stopped: jax.Array  # True once `bad` passed _MAX_BAD, or params0 was not finite
    best_v: jax.Array  # the lowest loss seen, with its residuals and Jacobian
    best_loss: jax.Array
    best_r: jax.Array
    best_jac: jax.Array
    lam: jax.Array  # Levenberg–Marquardt damping


_LOOPS: OrderedDict = OrderedDict()  # compiled loops, most recently used last


def _residual_function(prob, phase, adjoint, steps):
    if phase == "shoot":
        def residuals(v, i):
            w = 10.0 ** (3.0 * jnp.minimum(1.0, i / max(1, steps - 1)))
            return prob.shooting_residuals(v, w, adjoint)
    else:
        def residuals(v, i):
            return prob.residuals(v, adjoint)
    return residuals


def _get_loop(prob, phase, adjoint, optimizer, steps, total, chunk, jac_mode):
    """The compiled `(init, run)` pair for this problem's structure, from a cache."""
    key = (prob.static_key(), phase, adjoint, optimizer, steps, total, chunk, jac_mode)
    try:
        hash(key)
    except TypeError:  # an unhashable solve option: compile afresh
        return _make_loop(prob, phase, adjoint, optimizer, steps, total, chunk,
                          jac_mode)
    if key not in _LOOPS:
        _LOOPS[key] = _make_loop(prob, phase, adjoint, optimizer, steps, total, chunk,
                                 jac_mode)
        while len(_LOOPS) > 8:
            _LOOPS.popitem(last=False)
    _LOOPS.move_to_end(key)
    return _LOOPS[key]


def _make_loop(template, phase, adjoint, optimizer, steps, total, chunk, jac_mode):
    """A compiled chunk of `chunk` iterations: optimiser steps while `i < steps`,
    then Levenberg–Marquardt steps up to `total`. Every iteration evaluates the
    residuals and their Jacobian once; the optimiser uses the gradient `2Jᵀr/n`,
    the polish the Gauss–Newton system, and the best Jacobian feeds the error
    estimates."""
    jacobian = jax.jacfwd if jac_mode == "fwd" else jax.jacrev

    def evaluate(dyn, v, i):
        residuals = _residual_function(template.with_dynamic(dyn), phase, adjoint,
                                       steps)
        both = lambda v: (residuals(v, i),) * 2  # noqa: E731
        jac, r = jacobian(both, has_aux=True)(v)
        return r, jac

    def one_step(dyn, state: _LoopState, i):
        active = (i < total) & ~state.stopped
        r, jac = evaluate(dyn, state.v, i)
        n_obs = dyn["n_obs"]
        loss = jnp.sum(r * r) / n_obs
        finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(jac))
        r = jnp.where(finite, r, 0.0)
        jac = jnp.where(finite, jac, 0.0)
        better = finite & (loss < state.best_loss)
        sel = lambda c, a, b: jtu.tree_map(  # noqa: E731
            lambda x, y: jnp.where(c, x, y), a, b)
        best_v = sel(better, state.v, state.best_v)
        best_loss = jnp.where(better, loss, state.best_loss)
        best_r = sel(better, r, state.best_r)
        best_jac = sel(better, jac, state.best_jac)

        # optimiser step from a finite point; from a non-finite one, back to the
        # last finite point with half the step
        grad = 2.0 * jac.T @ r / n_obs
        updates, new_opt = optimizer.update(grad, state.opt_state, state.v)
        v_opt = sel(finite, state.v + state.factor * updates, state.good_v)
        opt_state = sel(finite, new_opt, state.good_opt_state)
        good_v = sel(finite, state.v, state.good_v)
        good_opt = sel(finite, state.opt_state, state.good_opt_state)
        factor = jnp.where(finite, jnp.minimum(1.0, state.factor * 1.25),
                           state.factor * 0.5)
        # non-finite losses since the loss last improved (returning to the last good
        # point does not count as progress)
        bad = jnp.where(better, 0, state.bad + jnp.where(finite, 0, 1))

        # Levenberg–Marquardt step from the best point
        in_lm = i >= steps
        lam = jnp.where(in_lm & (i > steps),
                        jnp.where(better, state.lam / 3, state.lam * 2), state.lam)
        lam = jnp.clip(lam, 1e-12, 1e12)
        a = best_jac.T @ best_jac
        d = jnp.diag(a)
        a = a + jnp.diag(lam * d + 1e-14 * (jnp.max(d) + 1.0))
        chol = jax.scipy.linalg.cho_factor(a)
        step = jax.scipy.linalg.cho_solve(chol, -(best_jac.T @ best_r))
        v_lm = best_v + jnp.where(jnp.all(jnp.isfinite(step)), step, 0.0)

        v = jnp.where(in_lm, v_lm, v_opt)
        stopped = state.stopped | ((bad > _MAX_BAD) & ~in_lm) | ((i == 0) & ~finite)
        new = _LoopState(v, opt_state, good_v, good_opt, factor, bad, stopped, best_v,
                         best_loss, best_r, best_jac, lam)
        new = jtu.tree_map(lambda x, y: jnp.where(active, x, y), new, state)
        shown = jnp.where(in_lm, best_loss, loss)
        return new, jnp.where(active, shown, jnp.nan)

    def init(dyn, v):
        r, jac = jax.eval_shape(evaluate, dyn, v, 0)
        opt_state = optimizer.init(v)
        zeros = lambda s: jnp.zeros(s.shape, s.dtype)  # noqa: E731
        return _LoopState(v, opt_state, v, opt_state, jnp.asarray(1.0, v.dtype),
                          jnp.asarray(0), jnp.asarray(False), v,
                          jnp.asarray(jnp.inf, v.dtype), zeros(r), zeros(jac),
                          jnp.asarray(1e-3, v.dtype))

    def run(dyn, state, start):
        return lax.scan(lambda s, i: one_step(dyn, s, i), state,
                        start + jnp.arange(chunk))

    init = eqx.filter_jit(jax.vmap(init, in_axes=(None, 0)))
    run = eqx.filter_jit(jax.vmap(run, in_axes=(None, 0, None)))
    return init, run


def _run_loop(prob, phase, adjoint, v0, optimizer, steps, n_polish, jac_mode, bar):
    """Run the compiled loop over starts `v0` (leading axis); returns the final
    state and the per-iteration losses, shape `(starts, iterations)`."""
    total = max(1, steps + n_polish)
    chunk = max(1, math.ceil(total / _CHUNKS))
    init, run = _get_loop(prob, phase, adjoint, optimizer, steps, total, chunk,
                          jac_mode)
    dyn = prob.dynamic()
    state = init(dyn, v0)
    pieces = []
    for start in range(0, total, chunk):
        state, losses = run(dyn, state, jnp.asarray(start))
        losses = np.asarray(losses)
        pieces.append(losses)
        if bar is not None:
            bar.update(min(chunk, total - start))
            best = np.asarray(state.best_loss)
            if np.isfinite(best).any():
                bar.set_postfix(loss=f"{np.nanmin(np.where(np.isfinite(best), best, np.nan)):.4g}")
        if bool(np.all(np.asarray(state.stopped))):
            break
    losses = np.concatenate(pieces, axis=1)[:, :total]
    return state, losses


def _converged(jac, r, data_norm, dtype):
    """First-order optimality, invariant to scaling: every column of the Jacobian
    is (nearly) orthogonal to the residual vector (or the residuals vanish).

    The cosine between a column and `r` cannot fall below the rounding of `r`: each
    residual is a difference of numbers of the size of the data, so it carries an
    error of about `eps · |data|`, and the cosine a floor of `eps · ‖data‖ / ‖r‖`
    (about 1.5e-4 in float32 on the competition model, 1e-13 in float64)."""
    g = np.abs(jac.T @ r)
    r_norm = np.linalg.norm(r)
    norms = np.linalg.norm(jac, axis=0) * r_norm
    floor = 8 * np.finfo(dtype).eps * data_norm / max(r_norm, np.finfo(float).tiny)
    return bool(np.all(g <= (1e-4 + floor) * norms + 1e-12)
                and np.all(np.isfinite(jac)))


# ------------------------------------------------------------------ front door


def fit(
    f: Callable,
    params0: Any,
    *,
    ts: Any,
    ys: Any,
    y0: Any,
    mask: Any = None,
    positive: Any = False,
    fit_y0: bool = False,
    solver: Any = "tsit5",
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 2000,
    shooting: int | None = None,
    multistart: int | None = None,
    key: jax.Array | None = None,
    devices: Any = None,
    progress: bool = True,
    polish: bool | int = True,
    t0: float | None = None,
    **solve_kwargs,
) -> FitResult:
    """Fit the parameters of `dy/dt = f(t, y, params)` to observations.

    Minimises the mean squared residual over the observed entries of `ys`, solving the
    ODE with `jaxode.solve` from `y0` at `t0`. The optimiser runs compiled, on
    transformed parameters (log for positive ones, relative to `|params0|` for the
    others), followed by a Levenberg–Marquardt polish in the same compiled loop.

    **Arguments:**

    - `f`: vector field `f(t, y, params) -> dy/dt`.
    - `params0`: initial guess, any pytree of floating-point numbers or arrays (a dict
      of named floats is the common case).
    - `ts`: 1-D strictly increasing observation times (irregular is fine; they need
      not lie on any solver grid).
    - `ys`: observations, shape `(T, D)` for one trajectory or `(n_traj, T, D)` for
      several that share the parameters. NaN marks a missing value.
    - `y0`: initial state at `t0`, shape `(D,)` or `(n_traj, D)`; the starting guess
      when `fit_y0=True`.
    - `mask`: optional boolean array shaped like `ys`; False entries do not count.
    - `positive`: True (or a pytree of bools like `params0`) fits those parameters in
      log space: they stay positive and parameters spanning 1e-4 … 0.3 train at the
      same pace. Their initial values must be > 0.
    - `fit_y0`: also estimate the initial state(s). When False, observations at `t0`
      are the given `y0` and do not count as data.
    - `solver`: any solver `jaxode.solve` accepts (`"tsit5"`, `jaxode.Euler()`, ...).
    - `optimizer`: any optax optimiser on the transformed parameters; default Adam
      with a warm-up cosine schedule peaking at 0.05.
    - `steps`: optimiser steps (the polish comes after them).
    - `shooting`: `k` for multiple shooting over `k` segments whose start states are
      optimised too, with a continuity penalty that grows during the run; for long
      horizons where one solve from `y0` goes astray. The polish and the error
      estimates then use the single-shooting residuals.
    - `multistart`: `n` starts (the first is `params0`, the others spread around it by
      one unit in the transformed space: a factor e for positive parameters, ±100 %
      otherwise), vmapped in one compiled run; the lowest final loss wins. Needs `key`.
    - `key`: a `jax.random` key for `multistart`.
    - `devices`: with `multistart`, the starts are split over these devices (a 1-D
      mesh, as in `ensemble`; a start count that does not divide is padded with
      copies of the last start, which are dropped). Default: this process's devices,
      `jax.local_devices()`. Results do not depend on the number of devices.
    - `progress`: show a tqdm bar with the loss.
    - `polish`: Levenberg–Marquardt steps after the optimiser (`True` = 100,
      `False` = 0, or a number).
    - `t0`: the time of `y0`; default `ts[0]`.
    - `**solve_kwargs`: passed to `jaxode.solve` (`dt`, `rtol`, `atol`, `max_steps`,
      `adjoint`). Without `adjoint`, derivatives are taken in forward mode (one
      tangent per estimated number); with one, in reverse mode through it.

    **Returns:** a `FitResult`.

    **Raises:** `ValueError` for bad input, naming the argument: observation times
    before `t0` or not increasing; `ys`/`y0`/`mask` shapes that disagree; all
    observations missing; `positive` with a non-positive initial value; parameters
    that are not floating point; a non-finite loss at `params0`. A fit whose loss
    stays non-finite even after shrinking the step stops with a `RuntimeWarning`
    and returns the best finite parameters with `converged=False`.
    """
    order = params0  # a dict's key order, which flattening forgets
    params0 = _check_params(params0)
    positive = _check_positive(positive, params0)
    ts_np, ys_np, y0_np, observed, t0, single = _prepare_data(ts, ys, y0, mask, t0)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"`steps` must be a non-negative integer, got {steps!r}.")
    n_polish = 100 if polish is True else 0 if polish is False else polish
    if not isinstance(n_polish, int) or n_polish < 0:
        raise ValueError(f"`polish` must be a bool or an integer >= 0, got {polish!r}.")
    for name in ("throw", "progress", "args"):
        if name in solve_kwargs:
            raise ValueError(f"`{name}` cannot be passed to `fit` as a solve option.")
    if multistart is not None:
        if not isinstance(multistart, int) or isinstance(multistart, bool) or (
                multistart < 1):
            raise ValueError(
                f"`multistart` must be a positive integer, got {multistart!r}.")
        if key is None:
            raise ValueError("`multistart` needs a `key`, e.g. jax.random.key(0).")
    solver = _resolve_solver(solver)
    if optimizer is None:
        optimizer = _default_optimizer(steps)
    elif not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            f"`optimizer`={short(optimizer)} is not an optax GradientTransformation.")

    prob = _Problem(f, params0, positive, y0_np, fit_y0, ts_np, ys_np, observed, t0,
                    solver, solve_kwargs, shooting)
    user_adjoint = "adjoint" in solve_kwargs
    adjoint = None if user_adjoint else "forward"
    jac_mode = "bwd" if user_adjoint else "fwd"
    n = prob.n_obs
    dtype = jnp.result_type(float)
    too_few = ""
    if n <= prob.u0.size:
        what = f"{prob.n_p} parameters" + (
            f" and {prob.u0.size - prob.n_p} initial values" if fit_y0 else "")
        too_few = (
            f"jaxode.fit: {n} observed values for {prob.u0.size} estimated numbers "
            f"({what}); with no more observations than unknowns the estimates are not "
            "determined by the data, so standard errors and intervals are infinite and "
            "`converged` is False. Add observations or fix some parameters.")
        warnings.warn(too_few, RuntimeWarning, stacklevel=2)

    n_starts = multistart or 1
    u0 = np.broadcast_to(prob.u0, (n_starts, prob.u0.size)).copy()
    if n_starts > 1:
        noise = np.asarray(jax.random.normal(key, (n_starts - 1, prob.n_p)))
        u0[1:, : prob.n_p] += noise
    u0 = _spread_starts(u0, dtype, devices)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max(1, steps + n_polish), desc="fit", leave=False)
    try:
        losses_shoot = None
        if prob.shooting and steps:
            su0 = jnp.broadcast_to(jnp.asarray(prob.su0, dtype),
                                   (u0.shape[0], prob.su0.size))
            state, losses_shoot = _run_loop(
                prob, "shoot", adjoint, jnp.concatenate([u0, su0], axis=1), optimizer,
                steps, 0, jac_mode, bar)
            _check_start(state)
            u0 = state.best_v[:, : prob.u0.size]
            steps_single = 0
        else:
            steps_single = steps
        state, losses = _run_loop(prob, "single", adjoint, u0, optimizer, steps_single,
                                  n_polish, jac_mode, bar)
        _check_start(state)
    finally:
        if bar is not None:
            bar.close()
    if losses_shoot is not None:
        losses = np.concatenate([losses_shoot, losses], axis=1)
    # drop the starts that only padded the device mesh
    state = jtu.tree_map(lambda a: np.asarray(a)[:n_starts], state)
    losses = losses[:n_starts]

    best_loss = np.asarray(state.best_loss)
    best = int(np.nanargmin(np.where(np.isfinite(best_loss), best_loss, np.nan)))
    message = too_few
    if bool(np.asarray(state.stopped)[best]):
        message = (
            f"jaxode.fit: the loss was non-finite {_MAX_BAD} times without the fit "
            "improving, although the step was halved each time; stopped early and "
            "returned the best finite parameters. Try a smaller learning rate, `positive=True`, "
            "`shooting=k`, or a better `params0`.")
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    u = np.asarray(state.best_v, dtype=np.float64)[best]
    jac_u = np.asarray(state.best_jac, dtype=np.float64)[best]
    r = np.asarray(state.best_r, dtype=np.float64)[best]
    flat, y0_hat = prob.flat_from_u_host(u)
    converged = not message and _converged(
        jac_u, r, float(np.linalg.norm(ys_np[observed])), prob.dtype)

    # Gauss–Newton covariance in natural units: J_nat = J_u · diag(du/dp)
    dpdu = np.where(prob.pos, flat, prob.scale)
    if fit_y0:
        dpdu = np.concatenate([dpdu, np.ravel(prob.y0_scale)])
    p = jac_u.shape[1]
    dof = n - p
    if dof > 0 and np.all(np.isfinite(jac_u)):
        inv = np.linalg.pinv(jac_u.T @ jac_u, hermitian=True)
        cov = (float(r @ r) / dof) * inv * np.outer(dpdu, dpdu)
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
    else:
        cov = np.full((p, p), np.inf)
        se = np.full(p, np.inf)
    params = _in_order_of(order, prob.unflatten_host(flat))
    stderr = _in_order_of(order, prob.unflatten_host(se[: flat.size]))
    y0_out = y0_hat[0] if single else y0_hat
    y0_se = None
    if fit_y0:
        y0_se = se[flat.size:].reshape(y0_hat.shape)
        y0_se = y0_se[0] if single else y0_se

    def predictor(params, y0, ts_new):
        ts_new = np.asarray(ts_new, dtype=np.float64)
        check_times("ts", ts_new)
        if ts_new[0] < prob.t0:
            raise ValueError(
                f"`ts` starts at {ts_new[0]}, before the fit's start time t0="
                f"{prob.t0}.")
        y0b = jnp.asarray(y0).reshape(prob.n_traj, prob.dim)
        prepend = ts_new[0] > prob.t0
        grid = np.concatenate([[prob.t0], ts_new]) if prepend else ts_new
        out = prob._solve(params, y0b, grid, None, throw=True)
        out = out[:, 1:] if prepend else out
        return out[0] if single else out

    return FitResult(
        params=params, y0=y0_out, losses=losses[best], loss=float(best_loss[best]),
        stderr=stderr, y0_stderr=y0_se, cov=cov, n_obs=n, n_params=p,
        converged=converged, message=message, predictor=predictor, opt_steps=steps,
        starts_losses=best_loss if n_starts > 1 else None,
    )


def _spread_starts(u0: np.ndarray, dtype, devices) -> jax.Array:
    """The starts as one array split over a 1-D mesh of `devices` (this process's),
    padded with copies of the last start to a multiple of the device count."""
    devices = jax.local_devices() if devices is None else _check_devices(devices)
    foreign = [d for d in devices if d.process_index != jax.process_index()]
    if foreign:
        raise ValueError(
            f"`devices` must belong to this process (jax.local_devices()); "
            f"{foreign[0]!r} belongs to process {foreign[0].process_index}. "
            "For several hosts, run one fit per process.")
    if len(devices) == 1 or u0.shape[0] == 1:
        return jax.device_put(jnp.asarray(u0, dtype), devices[0])
    padded = -(-u0.shape[0] // len(devices)) * len(devices)
    u0 = np.concatenate([u0, np.repeat(u0[-1:], padded - u0.shape[0], axis=0)])
    return jax.device_put(jnp.asarray(u0, dtype),
                          NamedSharding(member_mesh(devices), PartitionSpec(AXIS)))


def _check_start(state):
    if not np.isfinite(np.asarray(state.best_loss)).any():
        raise ValueError(
            "the loss at `params0` is not finite: the solve fails or `f` returns "
            "NaN/inf there. Check `params0`, `y0` and `f` (or pass `positive=True` to "
            "keep rates positive).")
