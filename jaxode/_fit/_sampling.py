"""From a `FitResult` to a `Posterior`: the priors matched to the estimated numbers,
the support of each, the target density on the fit's problem, jittered starts
around the estimate, the chains, and the warnings their diagnostics call for."""

import dataclasses
import functools
import math
import os
import sys
import warnings
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from .._errors import short
from ._noise import EstimatedScale
from ._nuts import Settings, blackjax_module, run_chains
from ._posterior import Posterior
from ._prior import Prior
from ._target import REAL, Target, kinds_of, raw_slope, to_raw
from ._transform import Scale, Transform

R_HAT_BOUND = 1.01
CHAIN_METHODS = ("vectorized", "sequential")


class Layout(NamedTuple):
    """The estimated numbers of a fit, in the order of `v`: the problem (with a
    likelihood), labels, display order, estimate and covariance in natural units
    (NaN where unknown), and the bounds the fit kept them in."""

    prob: object
    labels: list
    row_order: list
    estimate: np.ndarray
    cov: np.ndarray
    low: np.ndarray
    high: np.ndarray


def layout_of(result) -> Layout:
    """The fit's numbers; a least-squares fit (sigma pooled afterwards) gets one
    estimated sigma per observable, started at the pooled value."""
    prob = result._fitted_model().prob
    transform = result._transform
    with np.errstate(over="ignore"):
        estimate = result._to_natural(result._v)
        low, high = transform.from_u(result._lo), transform.from_u(result._hi)
    n_v = prob.n_p + prob.n_y0
    low[n_v:], high[n_v:] = 0.0, math.inf  # noise parameters: positive
    labels, rows = list(result._labels), list(result._row_order)
    cov = np.asarray(result.cov, np.float64)
    if prob.noise.mode == "ls":
        k = prob.n_cols
        noise = EstimatedScale(prob.noise.dist, k)
        extra = Transform.of([Scale.LOG] * k, np.ones(k))
        transform = jtu.tree_map(
            lambda a, b: jnp.concatenate([jnp.asarray(a), jnp.asarray(b, a.dtype)]),
            prob.transform, extra)
        prob = dataclasses.replace(prob, noise=noise, transform=transform)
        estimate = np.concatenate([estimate, result.sigma])
        cov = np.pad(cov, (0, k), constant_values=np.nan)
        low, high = np.concatenate([low, np.zeros(k)]), np.concatenate(
            [high, np.full(k, np.inf)])
        rows += list(range(len(labels), len(labels) + k))
        labels += [f"{noise.dist.scale_name}[{c}]" for c in range(k)]
    return Layout(prob=prob, labels=labels, row_order=rows, estimate=estimate,
                  cov=cov, low=low, high=high)


def _base(label: str) -> str:
    return label.split("[")[0]


def resolve_priors(prior, labels, *, scale_name: str = "sigma") -> list:
    """The prior of every label: `prior[label]`, else `prior[name]` for the
    elements `name[i]` of an array (or of `y0`, `sigma`).

    **Raises:** `ValueError` for a name that is not estimated, a value that is not a
    `Prior`, an improper prior, and a label without a prior."""
    if not isinstance(prior, dict) or not prior:
        raise ValueError(f"`prior` must be a dict {{name: distribution}} with a prior "
                         f"for every estimated number; got {short(prior)}.")
    bases = {_base(lab) for lab in labels}
    for name, dist in prior.items():
        if name not in labels and name not in bases:
            raise ValueError(f"`prior` names {name!r}, which is not estimated"
                             + _unknown_hint(name, scale_name)
                             + f"; the estimated numbers are {labels}.")
        if not isinstance(dist, Prior):
            raise ValueError(
                f"`prior[{name!r}]`={short(dist)} is not a prior distribution; use "
                "jaxode.Normal, TruncatedNormal, LogNormal, HalfNormal or Uniform.")
        dist.check(f"prior[{name!r}]")
    out = []
    for label in labels:
        dist = prior.get(label, prior.get(_base(label)))
        if dist is None:
            raise ValueError(f"the estimated number {label!r} has no prior; add "
                             f"prior[{_base(label)!r}] (or prior[{label!r}]).")
        out.append(dist)
    return out


def _unknown_hint(name: str, scale_name: str) -> str:
    if _base(name) == "y0":
        return " (the initial state is given, not estimated: pass fit_y0=True)"
    if _base(name) in ("sigma", "dispersion"):
        return (f" (the noise has no estimated {_base(name)}: it is known or the "
                f"noise model has none; estimated: {scale_name!r})")
    return ""


def supports(priors, labels, low, high):
    """The support of each number: its prior's, cut by the fit's bounds."""
    lo, hi = [], []
    for dist, label, f_lo, f_hi in zip(priors, labels, low, high):
        p_lo, p_hi = dist.support()
        a, b = max(p_lo, f_lo), min(p_hi, f_hi)
        if not a < b:
            raise ValueError(
                f"the prior of {label!r}, {dist!r} with support ({p_lo}, {p_hi}), and "
                f"the fit's bounds ({f_lo}, {f_hi}) have no point in common.")
        lo.append(a)
        hi.append(b)
    return np.array(lo, np.float64), np.array(hi, np.float64)


def check_inside(values, low, high, labels, priors, what: str) -> None:
    """`ValueError` for a value outside the open support of its number."""
    for x, a, b, label, dist in zip(values, low, high, labels, priors):
        if not a < x < b:
            raise ValueError(
                f"{what} {label!r}={float(x)!r} lies outside the support ({a}, {b}) "
                f"of its prior {dist!r}" + ("" if dist.support() == (a, b) else
                                            " and the bounds") + ".")


def start_point(layout: Layout, low, high, priors) -> np.ndarray:
    """The fit's estimate, moved just inside the support where it sits on a bound
    (a bounded fit can end there)."""
    x = layout.estimate.copy()
    width = np.where(np.isfinite(high - low), high - low,
                     np.maximum(np.abs(np.where(np.isfinite(low), low, high)), 1.0))
    inside = np.clip(x, low + 1e-3 * width, high - 1e-3 * width)
    on_bound = ((x == low) | (x == high)) & np.isfinite(x)
    x = np.where(on_bound, inside, x)
    check_inside(x, low, high, layout.labels, priors, "the fit's estimate of")
    return x


def make_target(layout: Layout, priors, low, high, x0) -> Target:
    """The posterior density around `x0`, standardised by the fit's covariance."""
    kind = kinds_of(low, high)
    center = to_raw(x0, low, high, kind)
    dtype = layout.prob.dtype
    groups = {}
    for i, dist in enumerate(priors):
        groups.setdefault(id(dist), (dist, []))[1].append(i)
    as_array = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    chol = preconditioner(layout.cov, raw_slope(x0, low, high, kind), kind, x0)
    return Target(prob=layout.prob, low=as_array(low), high=as_array(high),
                  kind=jnp.asarray(kind), center=as_array(center), chol=as_array(chol),
                  priors=tuple((jtu.tree_map(as_array, d), tuple(idx))
                               for d, idx in groups.values()))


def preconditioner(cov, slope, kind, x0) -> np.ndarray:
    """The Cholesky factor of the fit's covariance mapped to the sampler's `r`
    coordinates. A number without a finite standard error gets a tenth of its size
    (a tenth for a mapped one) and no correlation; a mapped number's standard
    deviation is capped at 1 (e-fold), keeping the starts sane where the data say
    little. Falls back to the diagonal when the matrix is not positive definite."""
    with np.errstate(invalid="ignore", over="ignore"):
        cov_r = cov * np.outer(slope, slope)
    sd = np.sqrt(np.abs(np.diag(cov_r)))
    known = np.isfinite(sd) & (sd > 0)
    if not np.all(np.isfinite(cov_r[np.ix_(known, known)])):
        known[:] = False
    fallback = np.where(kind == REAL, 0.1 * np.where(x0 != 0, np.abs(x0), 1.0), 0.1)
    cov_r = np.where(np.outer(known, known), cov_r, 0.0)
    sd = np.where(known, sd, fallback)
    np.fill_diagonal(cov_r, sd ** 2)
    shrink = np.where((kind != REAL) & (sd > 1.0), 1.0 / sd, 1.0)
    cov_r = cov_r * np.outer(shrink, shrink)
    try:
        return np.linalg.cholesky(cov_r)
    except np.linalg.LinAlgError:
        return np.diag(np.sqrt(np.diag(cov_r)))


def _run(target, theta0, keys, *, num_warmup, num_samples, settings, chain_method,
         progress):
    """The chains, together or one after another, under a progress bar."""
    bar = None
    total = theta0.shape[0] * (num_warmup + num_samples)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="sample", leave=False)
    go = functools.partial(run_chains, target, num_warmup=num_warmup,
                           num_samples=num_samples, settings=settings, bar=bar)
    try:
        if chain_method == "vectorized":
            chains, draws = go(theta0, keys)
        else:
            runs = [go(theta0[i: i + 1], keys[i: i + 1])
                    for i in range(theta0.shape[0])]
            chains, draws = jtu.tree_map(lambda *a: np.concatenate(a), *runs)
    finally:
        if bar is not None:
            bar.close()
    return chains, draws


def check_options(*, key, num_chains, num_warmup, num_samples, jitter, target_accept,
                  max_tree_depth, chain_method) -> None:
    if key is None:
        raise ValueError("`sample` needs a `key`, e.g. jax.random.key(0).")
    for name, value, least in (("num_chains", num_chains, 1),
                               ("num_warmup", num_warmup, 0),
                               ("num_samples", num_samples, 4),
                               ("max_tree_depth", max_tree_depth, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"`{name}` must be an integer >= {least}, got {value!r}.")
    if not (isinstance(jitter, (int, float)) and math.isfinite(jitter)
            and jitter >= 0):
        raise ValueError(f"`jitter` must be a finite number >= 0, got {jitter!r}.")
    if not (isinstance(target_accept, (int, float)) and 0 < target_accept < 1):
        raise ValueError(f"`target_accept` must be in (0, 1), got {target_accept!r}.")
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"`chain_method`={chain_method!r} must be one of "
                         f"{', '.join(map(repr, CHAIN_METHODS))}.")


def sample_fit(result, prior, *, key, num_chains: int = 4, num_warmup: int = 1000,
               num_samples: int = 1000, jitter: float = 1.0,
               target_accept: float = 0.8, max_tree_depth: int = 10,
               chain_method: str = "vectorized", progress: bool = True) -> Posterior:
    """`FitResult.sample`: see its docstring."""
    check_options(key=key, num_chains=num_chains, num_warmup=num_warmup,
                  num_samples=num_samples, jitter=jitter, target_accept=target_accept,
                  max_tree_depth=max_tree_depth, chain_method=chain_method)
    blackjax_module()  # a clear message before any work when it is missing
    layout = layout_of(result)
    priors = resolve_priors(prior, layout.labels,
                            scale_name=layout.prob.noise.dist.scale_name)
    low, high = supports(priors, layout.labels, layout.low, layout.high)
    target = make_target(layout, priors, low, high, start_point(layout, low, high,
                                                                 priors))
    start_key, chain_key = jax.random.split(key)
    theta0 = jitter * jax.random.normal(start_key, (num_chains, target.size),
                                        target.center.dtype)
    keys = jax.random.split(chain_key, num_chains)
    settings = Settings(target_accept=float(target_accept),
                        max_tree_depth=max_tree_depth)
    chains, draws = _run(target, theta0, keys, num_warmup=num_warmup,
                         num_samples=num_samples, settings=settings,
                         chain_method=chain_method, progress=progress)
    host = lambda a: np.asarray(a)  # noqa: E731
    kept = jtu.tree_map(lambda a: a[:, num_warmup:], draws)
    post = Posterior(
        draws=np.asarray(kept.natural, np.float64), labels=tuple(layout.labels),
        divergent=kept.divergent, accept=kept.accept, steps=kept.steps,
        warmup_draws=np.asarray(draws.natural[:, :num_warmup], np.float64),
        warmup_steps=draws.steps[:, :num_warmup].sum(axis=1),
        step_size=host(chains.step_size), inverse_mass=host(chains.inverse_mass),
        fit=result, _row_order=tuple(layout.row_order), _prob=layout.prob,
        _model=result._fitted_model())
    warn_diagnostics(post)
    return post


def warn_diagnostics(post: Posterior) -> None:
    """A `RuntimeWarning` for divergent transitions and for R-hat above 1.01."""
    n_div = post.num_divergent
    if n_div:
        per_chain = ", ".join(str(int(c)) for c in np.sum(post.divergent, axis=1))
        warnings.warn(
            f"jaxode.sample: {n_div} of {post.divergent.size} transitions after the "
            f"warmup diverged (per chain: {per_chain}); the draws may be biased near "
            "where they happened. Raise `target_accept` (e.g. 0.95), give tighter "
            "priors, or reparametrise the model.", RuntimeWarning,
            stacklevel=_caller_level())
    rows = post.summary()
    high = {k: r["r_hat"] for k, r in rows.items() if not r["r_hat"] <= R_HAT_BOUND}
    if high:
        listed = ", ".join(f"{k}: {v:.4g}" for k, v in high.items())
        warnings.warn(
            f"jaxode.sample: R-hat above {R_HAT_BOUND} ({listed}): the chains do not "
            "agree, so the draws do not yet represent the posterior. Run longer "
            "(`num_warmup`, `num_samples`), or look for several modes (trace plots, "
            "`jaxode.plot.posterior`).", RuntimeWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """The `stacklevel` of the first frame outside jaxode (and equinox, which calls
    the methods of a module), for a warning raised here: `sample` and
    `FitResult.sample` reach this at different depths."""
    inside = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep
                   for m in (sys.modules["jaxode"], eqx))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            inside):
        frame, level = frame.f_back, level + 1
    return level
