"""`sample`: the front door of posterior sampling. It checks the priors against the
model description, fits it (`fit`, with scales and bounds from the priors' supports)
and samples from the fit (`FitResult.sample`), so that one problem serves both."""

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.tree_util as jtu
import numpy as np

from .._errors import short
from ._data import check_params, element_labels, leaf_names, param_spec, prepare_groups
from ._front import fit
from ._noise import get_distribution, resolve_noise
from ._nuts import blackjax_module
from ._posterior import Posterior
from ._prior import Prior
from ._sampling import check_inside, check_options, resolve_priors
from ._transform import Scale

_RESERVED = ("y0", "sigma", "dispersion")  # names that are not parameters of `f`


def sample(
    f: Callable,
    prior: dict,
    *,
    key: jax.Array,
    params0: Any = None,
    ts: Any = None,
    ys: Any = None,
    y0: Any = None,
    mask: Any = None,
    positive: Any = False,
    bounds: dict | None = None,
    fit_y0: bool = False,
    observe: Callable | None = None,
    noise: str = "normal",
    sigma: Any = None,
    experiments: list | None = None,
    solver: Any = "tsit5",
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    jitter: float = 1.0,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    chain_method: str = "vectorized",
    fit_steps: int = 1000,
    progress: bool = True,
    t0: float | None = None,
    **solve_kwargs,
) -> Posterior:
    """Draw from the posterior of the parameters of `dy/dt = f(t, y, params)` given
    observations, with the No-U-Turn sampler (blackjax's NUTS with Stan's window
    adaptation of the step size and a diagonal mass matrix).

    The model is described as for `fit` (the same vector field, observation and
    noise models, experiments and solve options) plus a prior on every estimated
    number. The model is first fitted by maximum likelihood; the chains start at that
    estimate, each moved by `jitter` standard errors at random, and run `vmap`ped in
    one compiled program. Every chain adapts its own step size and mass matrix
    during `num_warmup` iterations, then keeps `num_samples` draws. Needs the
    `bayes` extra (blackjax).

    Priors (one convention: `scale` is a standard deviation):
    `jaxode.Normal(loc, scale)`, `jaxode.TruncatedNormal(loc, scale, low=0.0,
    high=inf)`, `jaxode.LogNormal(loc, scale)` (`log x` is normal: Stan's
    `lognormal`), `jaxode.HalfNormal(scale)`, `jaxode.Uniform(low, high)`.

    **Arguments:**

    - `f`: vector field `f(t, y, params) -> dy/dt`.
    - `prior`: `{name: distribution}`, one for every estimated number: each
      parameter by name (a prior under an array parameter's name applies to each
      element; `"w[1]"` names one), with `fit_y0=True` the initial states (`"y0"`,
      or `"y0[i]"`), and an estimated noise scale (`"sigma"`, or `"sigma[k]"` per
      observable; `"dispersion"` for the negative binomial).
    - `key`: a `jax.random` key (the starts and the chains).
    - `params0`: the start of the fit, a pytree of floats; default the prior median
      of each name in `prior` (scalar parameters). With `params0`, its names are
      the parameters and a prior for another name is an error.
    - `ts`, `ys`, `y0`, `mask`, `experiments`, `t0`, `observe`, `noise`, `fit_y0`,
      `solver`, `**solve_kwargs`: as in `fit`.
    - `sigma`: known noise scales (one per observable), or `None`/`"estimate"`
      (default): one per observable, sampled with the rest (give its prior).
    - `positive`, `bounds`: as in `fit`; here they cut the priors' supports (a
      `Normal` prior with `positive=True` is a normal truncated at 0).
    - `num_chains`, `num_warmup`, `num_samples`: chains, warmup iterations and
      draws kept per chain (Stan's defaults: 4, 1000, 1000).
    - `jitter`: the spread of the starts around the estimate, in standard errors.
    - `target_accept`: the mean acceptance probability the warmup aims for (raise
      it, e.g. to 0.95, when transitions diverge).
    - `max_tree_depth`: at most `2**max_tree_depth` leapfrog steps per draw.
    - `chain_method`: `"vectorized"` (the chains `vmap`ped in one program) or
      `"sequential"` (one chain after another: less memory, the same draws).
    - `fit_steps`: optimiser steps of the fit that gives the start.
    - `progress`: progress bars for the fit and the sampler.

    **Returns:** a `Posterior`: `.samples`, `.summary()`, `.predict(ts)`,
    divergences and the fit it started from.

    **Raises:** `ValueError`, naming the parameter and the value, for a prior of a
    name that is not estimated, an estimated number without a prior, an improper
    prior (a scale <= 0, `low >= high`), a start (`params0`, a fitted `y0`) outside
    its prior's support; and for every bad input `fit` refuses. Divergent
    transitions and an R-hat above 1.01 give a `RuntimeWarning`.
    """
    check_options(key=key, num_chains=num_chains, num_warmup=num_warmup,
                  num_samples=num_samples, jitter=jitter, target_accept=target_accept,
                  max_tree_depth=max_tree_depth, chain_method=chain_method)
    blackjax_module()
    from_prior = params0 is None
    order = _params_from_prior(prior) if from_prior else params0  # its key order
    params0 = check_params(order)
    groups, _ = prepare_groups(ts, ys, y0, mask, t0, experiments)
    if sigma is None and get_distribution(noise).has_scale:
        sigma = "estimate"
    noise_model = resolve_noise(noise, sigma, groups[0].ys.shape[2])
    scale_name = noise_model.dist.scale_name
    y0_flat = np.concatenate([np.ravel(g.y0) for g in groups]) if fit_y0 else \
        np.zeros(0)
    labels = (element_labels(params0) + [f"y0[{i}]" for i in range(y0_flat.size)]
              + [f"{scale_name}[{c}]" for c in range(noise_model.n_noise)])
    priors = resolve_priors(prior, labels, scale_name=scale_name)
    spec = param_spec(params0, positive, None, bounds)
    n_p = spec.flat0.size
    on_log = np.array([s is not Scale.LIN for s in spec.scales])
    low, high = _cut(priors[:n_p], np.where(on_log, np.maximum(spec.lo, 0.0), spec.lo),
                     spec.hi)
    check_inside(spec.flat0, low, high, labels, priors, "`params0`")
    y0_priors = priors[n_p: n_p + y0_flat.size]
    y0_low, y0_high = _cut(y0_priors, -np.inf, np.inf)
    check_inside(y0_flat, y0_low, y0_high, labels[n_p:], y0_priors, "`y0`")
    scale, fit_bounds = _fit_constraints(params0, low, high)
    try:
        result = fit(f, order, ts=ts, ys=ys, y0=y0, mask=mask, scale=scale,
                     bounds=fit_bounds, fit_y0=fit_y0, observe=observe, noise=noise,
                     sigma=sigma, experiments=experiments,
                     solver=solver, steps=fit_steps, progress=progress, t0=t0,
                     **solve_kwargs)
    except KeyError as e:
        if not from_prior:
            raise
        raise ValueError(
            f"`f` reads params[{e.args[0]!r}], which has no prior; without `params0` "
            f"the parameters are the names in `prior` ({leaf_names(params0)}).") from e
    return result.sample(prior, key=key, num_chains=num_chains, num_warmup=num_warmup,
                         num_samples=num_samples, jitter=jitter,
                         target_accept=target_accept, max_tree_depth=max_tree_depth,
                         chain_method=chain_method, progress=progress)


def _params_from_prior(prior) -> dict:
    """The prior median of every parameter named in `prior`."""
    if not isinstance(prior, dict) or not prior:
        raise ValueError(f"`prior` must be a dict {{name: distribution}} with a prior "
                         f"for every estimated number; got {short(prior)}.")
    params = {}
    for name, dist in prior.items():
        if name.split("[")[0] in _RESERVED:
            continue
        if "[" in name:
            raise ValueError(f"`prior` names the element {name!r}; give `params0` to "
                             "say the shape of an array parameter.")
        if not isinstance(dist, Prior):
            raise ValueError(
                f"`prior[{name!r}]`={short(dist)} is not a prior distribution; use "
                "jaxode.Normal, TruncatedNormal, LogNormal, HalfNormal or Uniform.")
        dist.check(f"prior[{name!r}]")
        params[name] = float(dist.median())
    if not params:
        raise ValueError(f"`prior` names no parameter of `f` (only {list(prior)}).")
    return params


def _cut(priors, lo, hi):
    """Each prior's support cut by the bounds `lo`, `hi`."""
    lo = np.broadcast_to(np.asarray(lo, np.float64), (len(priors),))
    hi = np.broadcast_to(np.asarray(hi, np.float64), (len(priors),))
    sup = np.array([p.support() for p in priors], np.float64).reshape(-1, 2)
    return np.maximum(sup[:, 0], lo), np.minimum(sup[:, 1], hi)


def _fit_constraints(params0, low, high):
    """`fit`'s `scale` and `bounds` from the supports: log scale for a positive
    parameter, bounds for any other finite end."""
    names = leaf_names(params0)
    scales, bounds, i = [], {}, 0
    for name, leaf in zip(names, jtu.tree_leaves(params0)):
        n = int(np.size(leaf))
        lo, hi = float(np.max(low[i: i + n])), float(np.min(high[i: i + n]))
        i += n
        positive = lo == 0.0 and hi == math.inf
        scales.append("log" if positive else "lin")
        if not positive and (lo > -math.inf or hi < math.inf):
            bounds[name] = (lo, hi)
    treedef = jtu.tree_structure(params0)
    scale = dict(zip(names, scales)) if isinstance(params0, dict) else \
        jtu.tree_unflatten(treedef, scales)
    return scale, bounds or None
