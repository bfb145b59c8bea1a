"""`fit`: the front door. Checks the input, builds the problem, runs the compiled
loop and assembles the result."""

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax

from .._sharding import member_mesh, pad, padded_size, split
from .._errors import check_times, short
from .._engine import resolve_solver
from . import _shooting, _stats
from ._data import (check_params, param_spec, prepare_groups, to_u, u_bounds,
                    unit_of)
from ._likelihood import check_sigma, get_noise
from ._loop import MAX_BAD, default_optimizer, make_loop, run_loop
from ._problem import GroupData, Problem, resolve_args, unflatten
from ._result import FitResult, in_order_of, labels_for


class _Context(NamedTuple):
    """What a result needs after the fit: the problem, the transforms, the loop
    settings (for profiles) and a predictor."""

    prob: Any
    spec: Any
    n_y0: int
    y0_unit: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    loop: Any  # the compiled single-shooting loop, reused by profiles
    dtype: Any
    unflatten: Callable
    predictor: Callable


def _grid(g, fit_y0, observe):
    at_t0 = g.ts[0] == g.t0
    grid = g.ts if at_t0 else np.concatenate([[g.t0], g.ts])
    obs_index = np.arange(len(g.ts)) + (0 if at_t0 else 1)
    observed = g.observed.copy()
    if at_t0 and not fit_y0 and observe is None:
        observed[:, 0, :] = False  # the given y0: these residuals cannot change
    return grid, obs_index, observed


def _check_observe(observe, params0, groups):
    """The number of observables `h` returns, checked against `ys`."""
    g = groups[0]
    k = g.ys.shape[2]
    if observe is None:
        if k != g.y0.shape[1]:
            raise ValueError(
                f"`{g.where}ys` has {k} columns but `{g.where}y0` has {g.y0.shape[1]} "
                "states; without `observe` every state is observed. Pass "
                "observe=h(t, y, params) returning the observed quantities.")
        return
    if not callable(observe):
        raise ValueError(f"`observe`={short(observe)} must be a function "
                         "h(t, y, params) -> observables.")
    p = resolve_args(params0, g.args)
    try:
        out = jax.eval_shape(lambda t, y: jnp.asarray(observe(t, y, p)),
                             jnp.asarray(g.ts[0]), jnp.asarray(g.y0[0]))
    except Exception as e:
        raise ValueError(
            f"`observe` failed when called as h(t, y, params): {type(e).__name__}: "
            f"{e}") from e
    if out.shape != (k,):
        raise ValueError(
            f"`observe` returns shape {out.shape} for one time, but `{g.where}ys` has "
            f"{k} columns (shape {g.ys.shape[1:]}); h(t, y, params) must return "
            f"shape ({k},), one value per column of `ys`.")


def _build(f, params0, spec, groups, observe, noise, sigma, fit_y0, solver,
           solve_kwargs, adjoint, dtype):
    k = groups[0].ys.shape[2]
    mode, sigma_known = check_sigma(sigma, noise, k)
    gdata, data, observed = [], [], []
    for g in groups:
        grid, obs_index, obs = _grid(g, fit_y0, observe)
        noise.check(g.ys, obs, f"`{g.where}ys`")
        unit = unit_of(g.y0)
        gdata.append(GroupData(tuple(grid.tolist()), tuple(obs_index.tolist()),
                               jnp.asarray(g.ts, dtype), jnp.asarray(g.y0, dtype),
                               jnp.asarray(unit, dtype), _as_arrays(g.args, dtype)))
        data.append(np.where(obs, g.ys, 1.0).reshape(-1))
        observed.append(obs.reshape(-1))
    data, observed = np.concatenate(data), np.concatenate(observed)
    if not observed.any():
        raise ValueError(
            "every observation is missing (NaN or masked out), apart from any at t0, "
            "which equal the given `y0` when fit_y0=False; there is nothing to fit.")
    leaves = jtu.tree_leaves(params0)
    n_y0 = sum(g.y0.size for g in groups) if fit_y0 else 0
    n_noise = k if mode == "estimate" else 0
    prob = Problem(
        f, observe, solver, solve_kwargs, jnp.asarray(spec.kind),
        jnp.asarray(spec.unit, dtype), tuple(gdata), jnp.asarray(data, dtype),
        jnp.asarray(observed), jnp.asarray(np.tile(np.arange(k), data.size // k)),
        None if sigma_known is None else jnp.asarray(sigma_known, dtype), noise, mode,
        jtu.tree_structure(params0), tuple(jnp.shape(x) for x in leaves),
        jnp.result_type(*leaves, float), k, spec.flat0.size, n_y0, n_noise, fit_y0,
        adjoint)
    return prob, data, observed


def _as_arrays(args, dtype):
    """Numbers in an experiment's `args` as arrays, so that other values of a dose
    or a temperature reuse the compiled fit; strings (parameter names) stay."""
    return jtu.tree_map(lambda a: a if isinstance(a, str) else jnp.asarray(a, dtype),
                        args)


def _initial_v(prob, spec, groups, data, observed):
    v = [to_u(spec, spec.flat0)]
    if prob.fit_y0:
        v += [np.ravel(g.y0 / unit_of(g.y0)) for g in groups]
    if prob.n_noise:
        cols = np.tile(np.arange(prob.n_cols), data.size // prob.n_cols)
        if prob.noise.scale_name == "dispersion":
            s = np.full(prob.n_cols, math.log(10.0))
        elif prob.noise.name == "lognormal":
            s = np.full(prob.n_cols, math.log(0.3))
        else:  # a tenth of each observable's typical size
            s = np.array([math.log(0.1 * (np.sqrt(np.mean(data[observed & (cols == c)]
                                                          ** 2)) or 1.0))
                          if (observed & (cols == c)).any() else 0.0
                          for c in range(prob.n_cols)])
        v.append(s)
    return np.concatenate(v)


def _spread_starts(u0: np.ndarray, dtype, devices) -> jax.Array:
    """The starts as one array split over a 1-D mesh of `devices` (this process's),
    padded with copies of the last start to a multiple of the device count."""
    mesh = member_mesh(devices)
    foreign = [d for d in mesh.devices.flat if d.process_index != jax.process_index()]
    if foreign:
        raise ValueError(
            f"`devices` must belong to this process (jax.local_devices()); "
            f"{foreign[0]!r} belongs to process {foreign[0].process_index}. "
            "For several hosts, run one fit per process.")
    if mesh.size == 1 or u0.shape[0] == 1:
        device = mesh.devices.flat[0]
        if device == jax.devices()[0]:  # the default: leave placement to jit
            return jnp.asarray(u0, dtype)
        return jax.device_put(jnp.asarray(u0, dtype), device)
    return jax.device_put(jnp.asarray(pad(u0, padded_size(u0.shape[0], mesh)), dtype),
                          split(mesh))


def _check_start(state):
    if not np.isfinite(np.asarray(state.best_loss)).any():
        raise ValueError(
            "the loss at `params0` is not finite: the solve fails or `f` returns "
            "NaN/inf there. Check `params0`, `y0` and `f` (or pass `positive=True` to "
            "keep rates positive).")


def _check_options(steps, polish, multistart, key, optimizer, solve_kwargs):
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
    if optimizer is None:
        optimizer = default_optimizer(steps)
    elif not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            f"`optimizer`={short(optimizer)} is not an optax GradientTransformation.")
    return n_polish, optimizer


def fit(
    f: Callable,
    params0: Any,
    *,
    ts: Any = None,
    ys: Any = None,
    y0: Any = None,
    mask: Any = None,
    positive: Any = False,
    scale: Any = None,
    bounds: dict | None = None,
    fit_y0: bool = False,
    observe: Callable | None = None,
    noise: str = "normal",
    sigma: Any = None,
    experiments: list | None = None,
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
    """Fit the parameters of `dy/dt = f(t, y, params)` to observations by maximum
    likelihood (least squares by default).

    The ODE is solved with `jaxode.solve` from `y0` at `t0`; the observation model
    `h(t, y, params)` maps states to what was measured; the noise model gives the
    likelihood. The optimiser runs compiled on transformed parameters (each on its
    scale: relative units, log or log10), then damped Gauss–Newton steps (Levenberg–
    Marquardt for least squares, Fisher scoring otherwise) polish the estimate in the
    same compiled loop.

    **Arguments:**

    - `f`: vector field `f(t, y, params) -> dy/dt`.
    - `params0`: initial guess, any pytree of floating-point numbers or arrays (a dict
      of named floats is the common case).
    - `ts`, `ys`, `y0`: observation times (1-D, increasing, irregular is fine), the
      observations `(T, K)` for one trajectory or `(n_traj, T, K)` for several that
      share every parameter (NaN marks a missing value), and the initial state
      `(D,)` or `(n_traj, D)` at `t0` (the starting guess when `fit_y0=True`).
    - `mask`: optional boolean array shaped like `ys`; False entries do not count.
    - `experiments`: instead of `ts`/`ys`/`y0`, a list of dicts
      `dict(ts=..., ys=..., y0=..., args=..., mask=..., t0=...)`, one per experiment.
      Every experiment shares `params`; its `args` (known values such as a dose or a
      temperature, a dict) are merged into what `f` and `h` receive as `params`, and
      a string value in `args` names a parameter of `params0`, so that experiments can
      differ in an estimated parameter: `args={"k": "k_cold"}`.
    - `observe`: `h(t, y, params) -> (K,)` observables at one time (a total, a
      fraction, a measurement with a fitted scale). Default: every state.
    - `noise`: `"normal"` (default), `"lognormal"` (multiplicative error; positive
      data), `"laplace"`, `"poisson"` or `"negbinomial"` (counts; the negative
      binomial's dispersion is estimated, one per observable).
    - `sigma`: noise scale. `None`: least squares for normal/lognormal noise (sigma
      pooled from the residuals afterwards, Student-t intervals), estimated for
      Laplace noise; `"estimate"`: one sigma per observable fitted with the
      parameters, so the weighting between observables is learned; or known
      positive values, one per observable.
    - `positive`: True (or per parameter) is the short form of `scale="log"`.
    - `scale`: `"lin"`, `"log"` or `"log10"`, once or per parameter (a dict by
      name). Log-scale parameters stay positive, parameters spanning 1e-4 … 0.3 train
      at the same pace, and their Wald intervals are computed on the log scale.
    - `bounds`: `{name: (low, high)}`; the estimate stays inside (projected steps).
    - `fit_y0`: also estimate the initial state(s). When False and every state is
      observed, observations at `t0` are the given `y0` and do not count.
    - `solver`: any solver `jaxode.solve` accepts (`"tsit5"`, `jaxode.Euler()`, ...).
    - `optimizer`: any optax optimiser on the transformed parameters; default Adam
      with a warm-up cosine schedule peaking at 0.05.
    - `steps`: optimiser steps (the polish comes after them).
    - `shooting`: `k` for multiple shooting over `k` segments whose start states are
      optimised too, with a continuity penalty that grows during the run; for long
      horizons where one solve from `y0` goes astray (not with `experiments`).
    - `multistart`: `n` starts (the first is `params0`, the others spread around it by
      one unit in the transformed space), vmapped in one compiled run; the lowest
      final loss wins. Needs `key`.
    - `key`: a `jax.random` key for `multistart`.
    - `devices`: with `multistart`, the starts are split over these devices (a 1-D
      mesh, as in `ensemble` and `train`); default every device of this process
      (`jax.local_devices()`). Results do not depend
      on the number of devices.
    - `progress`: show a tqdm bar with the loss.
    - `polish`: Gauss–Newton steps after the optimiser (`True` = 100, `False` = 0,
      or a number).
    - `t0`: the time of `y0`; default `ts[0]`.
    - `**solve_kwargs`: passed to `jaxode.solve` (`dt`, `rtol`, `atol`, `max_steps`,
      `adjoint`). Without `adjoint`, derivatives are taken in forward mode (one
      tangent per estimated number); with one, in reverse mode through it.

    **Returns:** a `FitResult`.

    **Raises:** `ValueError` for bad input, naming the argument and the value:
    shapes that disagree (including what `observe` returns against `ys`), data the
    noise model cannot produce (non-positive under `"lognormal"`, non-integer or
    negative counts), `sigma <= 0`, bounds with low >= high or a start outside them,
    a start <= 0 on log scale, experiments of different state sizes, a non-finite
    loss at `params0`. A fit whose loss stays non-finite even after shrinking the step
    stops with a `RuntimeWarning` and returns the best finite parameters with
    `converged=False`.
    """
    order = params0  # a dict's key order, which flattening forgets
    params0 = check_params(params0)
    spec = param_spec(params0, positive, scale, bounds)
    groups, single = prepare_groups(ts, ys, y0, mask, t0, experiments)
    n_polish, optimizer = _check_options(steps, polish, multistart, key, optimizer,
                                         solve_kwargs)
    noise_model = get_noise(noise)
    _check_observe(observe, params0, groups)
    solver = resolve_solver(solver)
    user_adjoint = "adjoint" in solve_kwargs
    dtype = jnp.result_type(float)
    prob, data, observed = _build(
        f, params0, spec, groups, observe, noise_model, sigma, fit_y0, solver,
        solve_kwargs, None if user_adjoint else "forward", dtype)
    jac_mode = "bwd" if user_adjoint else "fwd"
    v0 = _initial_v(prob, spec, groups, data, observed)
    lo = np.full(v0.size, -np.inf)
    hi = np.full(v0.size, np.inf)
    lo[: prob.n_p], hi[: prob.n_p] = u_bounds(spec)
    lo[prob.n_p + prob.n_y0:], hi[prob.n_p + prob.n_y0:] = -25.0, 25.0  # log noise
    n = int(observed.sum())
    message = _warn_too_few(n, prob, fit_y0)

    n_starts = multistart or 1
    starts = np.broadcast_to(v0, (n_starts, v0.size)).copy()
    if n_starts > 1:
        starts[1:, : prob.n_p] += np.asarray(
            jax.random.normal(key, (n_starts - 1, prob.n_p)))
        starts = np.clip(starts, lo, hi)
    starts = _spread_starts(starts, dtype, devices)

    if shooting is not None:
        if len(groups) > 1 or experiments is not None:
            raise ValueError("`shooting` works on one set of trajectories; it cannot be "
                             "combined with `experiments`.")
        g = groups[0]
        grid, obs_index, obs = _grid(g, fit_y0, observe)
        seg, s0 = _shooting.setup(shooting, grid, obs_index, g.ys, obs, g.y0, solver,
                                  solve_kwargs.get("dt"), prob.dtype, observe is None)
        prob_shoot = dataclasses.replace(prob, shooting=seg)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max(1, steps + n_polish), desc="fit", leave=False)
    try:
        losses_shoot = None
        steps_single = steps
        if shooting is not None and steps:
            sv = jnp.broadcast_to(jnp.asarray(s0, dtype), (starts.shape[0], s0.size))
            loop = make_loop(prob_shoot, "shoot", optimizer, steps, 0, jac_mode,
                             np.concatenate([lo, np.full(s0.size, -np.inf)]),
                             np.concatenate([hi, np.full(s0.size, np.inf)]))
            state, losses_shoot = run_loop(loop, jnp.concatenate([starts, sv], axis=1),
                                           bar=bar)
            _check_start(state)
            starts = state.best_v[:, : v0.size]
            steps_single = 0
        loop = make_loop(prob, "single", optimizer, steps_single, n_polish, jac_mode,
                         lo, hi)
        state, losses = run_loop(loop, starts, bar=bar)
        _check_start(state)
    finally:
        if bar is not None:
            bar.close()
    if losses_shoot is not None:
        losses = np.concatenate([losses_shoot, losses], axis=1)
    state = jtu.tree_map(lambda a: np.asarray(a)[:n_starts], state)
    losses = losses[:n_starts]
    ctx = _Context(prob, spec, prob.n_y0,
                   np.concatenate([np.ravel(unit_of(g.y0))
                                   for g in groups]) if fit_y0 else np.zeros(0),
                   lo, hi, loop, dtype, None, None)
    return _assemble(state, losses, ctx, order, params0, groups, single, n, message,
                     steps, n_starts, data, observed)


def _warn_too_few(n, prob, fit_y0):
    m = prob.n_v
    if n > m:
        return ""
    what = f"{prob.n_p} parameters" + (
        f" and {prob.n_y0} initial values" if fit_y0 else "") + (
        f" and {prob.n_noise} noise parameters" if prob.n_noise else "")
    msg = (f"jaxode.fit: {n} observed values for {m} estimated numbers ({what}); with no "
           "more observations than unknowns the estimates are not determined by the "
           "data, so standard errors and intervals are infinite and `converged` is "
           "False. Add observations or fix some parameters.")
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return msg


def _assemble(state, losses, ctx, order, params0, groups, single, n, message, steps,
              n_starts, data, observed):
    prob, spec = ctx.prob, ctx.spec
    best_loss = np.asarray(state.best_loss)
    best = int(np.nanargmin(np.where(np.isfinite(best_loss), best_loss, np.nan)))
    if bool(np.asarray(state.stopped)[best]):
        message = (
            f"jaxode.fit: the loss was non-finite {MAX_BAD} times without the fit "
            "improving, although the step was halved each time; stopped early and "
            "returned the best finite parameters. Try a smaller learning rate, "
            "`positive=True`, `shooting=k`, or a better `params0`.")
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    pick = lambda a: np.asarray(a, np.float64)[best]  # noqa: E731
    v, grad, info = pick(state.best_v), pick(state.best_grad), pick(state.best_info)
    pred, jac, loss = pick(state.best_pred), pick(state.best_jac), float(best_loss[best])
    m = v.size
    dof = n - m
    mode = prob.mode
    weight, info = (np.asarray(x, np.float64) for x in _information(
        prob, *(jnp.asarray(x, prob.data.dtype) for x in (pred, jac, v))))
    converged = not message and _stats.converged(
        grad, info, jac, weight, np.abs(data), loss, mode, prob.dtype,
        pick(state.best_info))
    if prob.noise.name == "laplace" and not message:
        # the Laplace likelihood has kinks (a median-like optimum): no gradient test;
        # converged when the Gauss–Newton steps (reweighted least squares) came to rest
        converged = bool(np.asarray(state.done)[best])
    cov_v = _stats.covariance_v(mode, info, loss, n, dof)
    se_v = np.sqrt(np.clip(np.diag(cov_v), 0, None))

    # natural units: the derivative of each number with respect to its coordinate
    n_p = prob.n_p
    flat = _stats.natural(spec.kind, spec.unit, v[:n_p])
    dnat = np.concatenate([
        np.where(spec.kind == 1, flat, np.where(spec.kind == 2, flat * math.log(10),
                                                spec.unit)),
        ctx.y0_unit, np.exp(v[n_p + prob.n_y0:])])
    cov = cov_v * np.outer(dnat, dnat)
    se = se_v * np.abs(dnat)
    to_tree = functools.partial(unflatten, prob.treedef, prob.shapes, prob.dtype)
    params = in_order_of(order, to_tree(flat))
    stderr = in_order_of(order, to_tree(se[:n_p]))
    y0_hat, y0_se = _initial_states(v, se, prob, groups, single)

    sigma = dispersion = None
    k = prob.n_cols
    s_hat = np.exp(v[n_p + prob.n_y0:])
    if mode == "ls":
        sigma = np.full(k, math.sqrt(loss * n / dof) if dof > 0 else math.inf)
        nll = (0.5 * n * (math.log(2 * math.pi * loss) + 1.0) if loss > 0
               else -math.inf)  # an exact fit: the likelihood is unbounded
        if prob.noise.name == "lognormal":
            nll += float(np.sum(np.log(data[observed])))
        n_k = m + 1
    else:
        nll, n_k = loss, m
        if mode == "known":
            sigma = np.asarray(prob.sigma_known, np.float64)
        elif prob.noise.scale_name == "dispersion":
            dispersion = s_hat
        elif mode == "estimate":
            sigma = s_hat
    y0_labels = [f"y0[{i}]" for i in range(prob.n_y0)]
    noise_labels = [f"{'dispersion' if dispersion is not None else 'sigma'}[{c}]"
                    for c in range(prob.n_noise)]
    labels, row_order = labels_for(order, params0, y0_labels, noise_labels)
    ctx = ctx._replace(unflatten=to_tree,
                       predictor=_predictor(prob, groups, single))
    return FitResult(
        params=params, y0=y0_hat, sigma=sigma, dispersion=dispersion,
        losses=losses[best], loss=loss, nll=float(nll),
        aic=float(2 * nll + 2 * n_k), bic=float(2 * nll + n_k * math.log(n)),
        stderr=stderr, y0_stderr=y0_se, cov=cov, n_obs=n, n_params=m, dof=dof,
        converged=converged, message=message, opt_steps=steps,
        starts_losses=best_loss if n_starts > 1 else None, noise=prob.noise.name,
        mode=mode, _v=v, _se_v=se_v, _se_nat=se, _labels=labels,
        _row_order=row_order, _ctx=ctx)


@eqx.filter_jit
def _information(prob, mu, jac, v):
    """Fisher weights and the Fisher information at the estimate."""
    return prob.weight(mu, v), prob.information(mu, jac, v)


_unflatten = unflatten  # results saved by earlier versions refer to this name


def _initial_states(v, se, prob, groups, single):
    """The (fitted) initial states and their standard errors, shaped as given."""
    if prob.fit_y0:
        i, y0s, ses = prob.n_p, [], []
        for g in groups:
            unit = unit_of(g.y0)
            y0s.append(v[i: i + g.y0.size].reshape(g.y0.shape) * unit)
            ses.append(se[i: i + g.y0.size].reshape(g.y0.shape))
            i += g.y0.size
    else:
        y0s, ses = [g.y0 for g in groups], None
    if len(groups) > 1 or not (single or len(groups) == 1) or groups[0].where:
        return [y[0] for y in y0s], None if ses is None else [s[0] for s in ses]
    y0, s = y0s[0], None if ses is None else ses[0]
    return (y0[0], None if s is None else s[0]) if single else (y0, s)


def _predictor(prob, groups, single):
    def predict(params, y0, ts_new, experiment, observed):
        ts_new = np.asarray(ts_new, dtype=np.float64)
        check_times("ts", ts_new)
        if not 0 <= experiment < len(groups):
            raise ValueError(f"`experiment`={experiment!r} must be in "
                             f"0 … {len(groups) - 1}.")
        g, gd = groups[experiment], prob.groups[experiment]
        if ts_new[0] < g.t0:
            raise ValueError(f"`ts` starts at {ts_new[0]}, before the fit's start time "
                             f"t0={g.t0}.")
        y0b = jnp.asarray(y0[experiment] if isinstance(y0, list) else y0).reshape(
            g.y0.shape)
        prepend = ts_new[0] > g.t0
        grid = np.concatenate([[g.t0], ts_new]) if prepend else ts_new
        out = prob.solve_group(gd, params, y0b, grid, throw=True)
        out = out[:, 1:] if prepend else out
        if observed:
            out = prob.observe(gd, params, jnp.asarray(ts_new), out)
        return out[0] if (single or isinstance(y0, list)) else out
    return predict
