"""`fit`: the front door. One function per job: check the input (`_check_inputs`),
build the problem (`_build`), spread the starts (`_starts`), run the optimiser and
its Gauss–Newton polish (`_optimise`), and assemble the result (`_assemble`)."""

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
from .._errors import short
from .._engine import Config, configure
from .._fixed import FixedBacksolve
from . import _shooting, _stats
from ._data import check_params, element_labels, param_spec, prepare_groups
from ._loop import MAX_BAD, default_optimizer, make_loop, run_loop
from ._noise import NoiseModel, Observations, resolve_noise
from ._problem import GroupData, Problem, resolve_args, unflatten
from ._result import FitResult, FittedModel, in_order_of
from ._transform import Scale, Transform, unit_of


class _Inputs(NamedTuple):
    """The checked input of `fit`."""

    params0: Any  # floating-point arrays, flattening order
    spec: Any  # a `_data.ParamSpec`
    groups: list  # `_data.Group`s
    single: bool  # one trajectory given as (T, K)
    noise: NoiseModel
    n_polish: int
    optimizer: optax.GradientTransformation


class _Built(NamedTuple):
    """The problem and the optimiser's view of it: the transform of `v` (host
    arrays), its start and bounds, and the flat data."""

    prob: Problem
    transform: Transform
    v0: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    data: np.ndarray
    observed: np.ndarray

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
    inputs = _check_inputs(
        params0, positive=positive, scale=scale, bounds=bounds, ts=ts, ys=ys, y0=y0,
        mask=mask, t0=t0, experiments=experiments, observe=observe, noise=noise,
        sigma=sigma, steps=steps, polish=polish, multistart=multistart, key=key,
        optimizer=optimizer, solve_kwargs=solve_kwargs)
    config = _solve_config(solver, solve_kwargs)
    dtype = jnp.result_type(float)
    built = _build(f, inputs, observe=observe, fit_y0=fit_y0, config=config,
                   dtype=dtype)
    jac_mode = "fwd" if config.forward_mode else "bwd"
    n = int(built.observed.sum())
    message = _warn_too_few(n, built.prob, fit_y0)
    starts = _starts(built, multistart=multistart, key=key, devices=devices,
                     dtype=dtype)
    segments = _segments(shooting, built.prob, inputs.groups,
                         experiments=experiments, fit_y0=fit_y0, observe=observe,
                         config=config)
    state, losses, loop = _optimise(
        built, starts, segments, optimizer=inputs.optimizer, steps=steps,
        n_polish=inputs.n_polish, jac_mode=jac_mode, progress=progress)
    n_starts = multistart or 1
    state = jtu.tree_map(lambda a: np.asarray(a)[:n_starts], state)
    model = FittedModel(prob=built.prob, loop=loop, groups=tuple(inputs.groups),
                        single=inputs.single, dtype=dtype)
    return _assemble(state, losses[:n_starts], built, inputs, model, order=order,
                     n=n, message=message, steps=steps)


def _check_inputs(params0, *, positive, scale, bounds, ts, ys, y0, mask, t0,
                  experiments, observe, noise, sigma, steps, polish, multistart, key,
                  optimizer, solve_kwargs) -> _Inputs:
    """Every check of `fit`'s input that needs no compiling."""
    params0 = check_params(params0)
    spec = param_spec(params0, positive, scale, bounds)
    groups, single = prepare_groups(ts, ys, y0, mask, t0, experiments)
    n_polish, optimizer = _check_options(steps, polish, multistart, key, optimizer,
                                         solve_kwargs)
    noise_model = resolve_noise(noise, sigma, groups[0].ys.shape[2])
    _check_observe(observe, params0, groups)
    return _Inputs(params0=params0, spec=spec, groups=groups, single=single,
                   noise=noise_model, n_polish=n_polish, optimizer=optimizer)


def _solve_config(solver, solve_kwargs) -> Config:
    """`fit`'s solve options, checked by the engine's one validator: derivatives in
    forward mode unless `adjoint` says otherwise, and a failed solve reported to the
    loop (which rejects the step) instead of raised."""
    return configure(solver=solver, throw=False,
                     **{"adjoint": "forward", **solve_kwargs})


def _build(f, inputs, *, observe, fit_y0, config, dtype) -> _Built:
    """The problem, the transform of `v`, its start and its bounds."""
    groups, spec, noise = inputs.groups, inputs.spec, inputs.noise
    k = groups[0].ys.shape[2]
    gdata, data, observed = [], [], []
    for g in groups:
        grid, obs_index, obs = _grid(g, fit_y0, observe)
        noise.dist.check(g.ys, obs, f"`{g.where}ys`")
        gdata.append(GroupData(grid=tuple(grid.tolist()),
                               obs_index=tuple(obs_index.tolist()),
                               t_obs=jnp.asarray(g.ts, dtype),
                               y0=jnp.asarray(g.y0, dtype),
                               args=_as_arrays(g.args, dtype)))
        data.append(np.where(obs, g.ys, 1.0).reshape(-1))
        observed.append(obs.reshape(-1))
    data, observed = np.concatenate(data), np.concatenate(observed)
    if not observed.any():
        raise ValueError(
            "every observation is missing (NaN or masked out), apart from any at t0, "
            "which equal the given `y0` when fit_y0=False; there is nothing to fit.")
    column = np.tile(np.arange(k), data.size // k)
    y0s = [np.ravel(g.y0) for g in groups] if fit_y0 else []
    y0_unit = np.concatenate([np.zeros(0)] + [unit_of(y) for y in y0s])
    n_p, n_y0 = spec.flat0.size, y0_unit.size
    transform = (spec.transform + Transform.of([Scale.LIN] * n_y0, y0_unit)
                 + Transform.of([Scale.LOG] * noise.n_noise, np.ones(noise.n_noise)))
    leaves = jtu.tree_leaves(inputs.params0)
    prob = Problem(
        f=f, h=observe, config=config,
        transform=_as_arrays(transform, dtype), groups=tuple(gdata),
        obs=Observations(data=jnp.asarray(data, dtype), observed=jnp.asarray(observed),
                         column=jnp.asarray(column)),
        noise=_as_arrays(noise, dtype), treedef=jtu.tree_structure(inputs.params0),
        shapes=tuple(jnp.shape(x) for x in leaves),
        dtype=jnp.result_type(*leaves, float), n_cols=k, n_p=n_p, n_y0=n_y0)
    v0 = np.concatenate([transform[: n_p + n_y0].to_u(np.concatenate([spec.flat0,
                                                                        *y0s])),
                         noise.initial_log_scale(data, observed, column)])
    lo, hi = np.full(v0.size, -np.inf), np.full(v0.size, np.inf)
    lo[:n_p], hi[:n_p] = transform[:n_p].u_bounds(spec.lo, spec.hi)
    lo[n_p + n_y0:], hi[n_p + n_y0:] = -25.0, 25.0  # log noise
    return _Built(prob=prob, transform=transform, v0=v0, lo=lo, hi=hi, data=data,
                  observed=observed)


def _as_arrays(tree, dtype):
    """Numbers in `tree` as JAX arrays (floating point in `dtype`), so that other
    values (a dose or a temperature in an experiment's `args`, a known sigma) reuse
    the compiled fit; strings (parameter names) stay."""
    def convert(a):
        if isinstance(a, str):
            return a
        a = jnp.asarray(a)
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
    return jtu.tree_map(convert, tree)


def _starts(built, *, multistart, key, devices, dtype) -> jax.Array:
    """The starting points: `v0`, and with `multistart` others spread around it by
    one unit in the optimiser coordinates of the parameters."""
    v0, n_p = built.v0, built.prob.n_p
    n_starts = multistart or 1
    starts = np.broadcast_to(v0, (n_starts, v0.size)).copy()
    if n_starts > 1:
        starts[1:, :n_p] += np.asarray(jax.random.normal(key, (n_starts - 1, n_p)))
        starts = np.clip(starts, built.lo, built.hi)
    return _spread_starts(starts, dtype, devices)


def _segments(shooting, prob, groups, *, experiments, fit_y0, observe, config):
    """For multiple shooting, the segment tables and the segment starts; else None."""
    if shooting is None:
        return None
    if isinstance(config.adjoint, FixedBacksolve):
        raise ValueError(
            "`shooting` with a fixed-step solver runs each segment as a list of "
            "steps, which the 'backsolve' adjoint does not follow; use "
            "adjoint='recursive', 'direct' or 'forward' (the default).")
    if len(groups) > 1 or experiments is not None:
        raise ValueError("`shooting` works on one set of trajectories; it cannot be "
                         "combined with `experiments`.")
    g = groups[0]
    grid, obs_index, obs = _grid(g, fit_y0, observe)
    return _shooting.setup(shooting, grid=grid, obs_index=obs_index, ys=g.ys,
                           observed=obs, y0=g.y0, solver=config.solver,
                           dt=config.dt,
                           dtype=prob.dtype, observe_is_identity=observe is None)


def _optimise(built, starts, segments, *, optimizer, steps, n_polish, jac_mode,
              progress):
    """Run the optimiser (first on the shooting problem, with `segments`) and the
    Gauss–Newton polish. Returns the final state of every start, the losses and
    the compiled single-shooting loop (which profiles reuse)."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max(1, steps + n_polish), desc="fit", leave=False)
    settings = dict(optimizer=optimizer, jac_mode=jac_mode)
    try:
        losses_shoot = None
        if segments is not None and steps:
            starts, losses_shoot = _shoot(built, starts, segments, steps=steps,
                                          bar=bar, **settings)
            steps = 0
        loop = make_loop(built.prob, phase="single", steps=steps, n_polish=n_polish,
                         lo=built.lo, hi=built.hi, **settings)
        state, losses = run_loop(loop, starts, bar=bar)
        _check_start(state)
    finally:
        if bar is not None:
            bar.close()
    if losses_shoot is not None:
        losses = np.concatenate([losses_shoot, losses], axis=1)
    return state, losses, loop


def _shoot(built, starts, segments, *, optimizer, steps, jac_mode, bar):
    """The optimiser steps on the multiple-shooting problem; returns the best
    points (without the segment states) as the next starts, and the losses."""
    seg, s0 = segments
    prob = dataclasses.replace(built.prob, shooting=seg)
    sv = jnp.broadcast_to(jnp.asarray(s0, starts.dtype), (starts.shape[0], s0.size))
    loop = make_loop(prob, phase="shoot", optimizer=optimizer, steps=steps, n_polish=0,
                     jac_mode=jac_mode,
                     lo=np.concatenate([built.lo, np.full(s0.size, -np.inf)]),
                     hi=np.concatenate([built.hi, np.full(s0.size, np.inf)]))
    state, losses = run_loop(loop, jnp.concatenate([starts, sv], axis=1), bar=bar)
    _check_start(state)
    return state.best_v[:, : built.v0.size], losses


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


def _warn_too_few(n, prob, fit_y0):
    m = prob.n_v
    if n > m:
        return ""
    what = f"{prob.n_p} parameters" + (
        f" and {prob.n_y0} initial values" if fit_y0 else "") + (
        f" and {prob.noise.n_noise} noise parameters" if prob.noise.n_noise else "")
    msg = (f"jaxode.fit: {n} observed values for {m} estimated numbers ({what}); with no "
           "more observations than unknowns the estimates are not determined by the "
           "data, so standard errors and intervals are infinite and `converged` is "
           "False. Add observations or fix some parameters.")
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return msg


def _assemble(state, losses, built, inputs, model, *, order, n, message, steps):
    """The `FitResult` of the best start."""
    prob, transform = built.prob, built.transform
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
    v, loss = pick(state.best_v), float(best_loss[best])
    m = v.size
    dof = n - m
    noise = prob.noise
    cov_v, converged = _uncertainty(state, best, built, loss, n, message)
    se_v = np.sqrt(np.clip(np.diag(cov_v), 0, None))

    # natural units: the derivative of each number with respect to its coordinate
    natural = transform.from_u(v)
    dnat = transform.slope(natural)
    cov = cov_v * np.outer(dnat, dnat)
    se = se_v * np.abs(dnat)
    n_p = prob.n_p
    to_tree = functools.partial(unflatten, prob.treedef, prob.shapes, prob.dtype)
    y0_hat, y0_se = _initial_states(natural, se, prob, inputs.groups, inputs.single)
    nll = noise.nll(loss, n, built.data[built.observed])
    n_k = m + noise.n_pooled
    scales = noise.scales(loss, n, dof, np.exp(v[n_p + prob.n_y0:]), prob.n_cols)
    labels, row_order = _labels(order, inputs.params0, prob, noise)
    return FitResult(
        params=in_order_of(order, to_tree(natural[:n_p])), y0=y0_hat, **scales,
        losses=losses[best], loss=loss, nll=float(nll),
        aic=float(2 * nll + 2 * n_k), bic=float(2 * nll + n_k * math.log(n)),
        stderr=in_order_of(order, to_tree(se[:n_p])), y0_stderr=y0_se, cov=cov,
        n_obs=n, n_params=m, dof=dof, converged=converged, message=message,
        opt_steps=steps, starts_losses=best_loss if best_loss.size > 1 else None,
        noise=noise.dist.name, _v=v, _se_v=se_v, _se_nat=se, _lo=built.lo,
        _hi=built.hi, _transform=transform, _labels=tuple(labels),
        _row_order=tuple(row_order), _noise_model=_host(inputs.noise), _model=model)


def _uncertainty(state, best, built, loss, n, message):
    """The covariance of `v` at the best start, and whether the fit converged."""
    prob, noise = built.prob, built.prob.noise
    pick = lambda a: np.asarray(a, np.float64)[best]  # noqa: E731
    v, grad, jac = pick(state.best_v), pick(state.best_grad), pick(state.best_jac)
    weight, info = (np.asarray(x, np.float64) for x in _information(
        prob, *(jnp.asarray(x, prob.obs.data.dtype)
                for x in (pick(state.best_pred), jac, v))))
    converged = not message and _stats.converged(
        grad, info, jac, weight, np.abs(built.data), loss, noise, prob.dtype,
        pick(state.best_info))
    if not noise.dist.smooth and not message:
        # a likelihood with kinks (a median-like optimum): no gradient test;
        # converged when the Gauss–Newton steps (reweighted least squares) came to rest
        converged = bool(np.asarray(state.done)[best])
    return _stats.covariance_v(noise, info, loss, n, n - v.size), converged


@eqx.filter_jit
def _information(prob, mu, jac, v):
    """Fisher weights and the Fisher information at the estimate."""
    return prob.weight(mu, v), prob.information(mu, jac, v)


def _host(tree):
    return jtu.tree_map(lambda a: np.asarray(a, np.float64), tree)


def _labels(order, params0, prob, noise):
    """Row labels of every estimated number, in `v` order, and the display order
    (parameters in the order of `params0`)."""
    labels = element_labels(params0)
    if isinstance(order, dict):
        first = {}
        for i, lab in enumerate(labels):
            first.setdefault(lab.split("[")[0], []).append(i)
        rows = [i for k in order for i in first[str(k)]]
    else:
        rows = list(range(len(labels)))
    n = len(labels)
    labels = (labels + [f"y0[{i}]" for i in range(prob.n_y0)]
              + [f"{noise.dist.scale_name}[{c}]" for c in range(noise.n_noise)])
    return labels, rows + list(range(n, len(labels)))


def _initial_states(natural, se, prob, groups, single):
    """The (fitted) initial states and their standard errors, shaped as given."""
    if prob.n_y0:
        i, y0s, ses = prob.n_p, [], []
        for g in groups:
            y0s.append(natural[i: i + g.y0.size].reshape(g.y0.shape))
            ses.append(se[i: i + g.y0.size].reshape(g.y0.shape))
            i += g.y0.size
    else:
        y0s, ses = [g.y0 for g in groups], None
    if len(groups) > 1 or not (single or len(groups) == 1) or groups[0].where:
        return [y[0] for y in y0s], None if ses is None else [s[0] for s in ses]
    y0, s = y0s[0], None if ses is None else ses[0]
    return (y0[0], None if s is None else s[0]) if single else (y0, s)
