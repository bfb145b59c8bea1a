"""Input checking and data preparation for `fit`: parameters with their scales and
bounds, and the experiments as host-side arrays."""

import math
from typing import Any, NamedTuple

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from .._errors import check_times, short
from ._transform import Scale, Transform, unit_of


def check_params(params0):
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


def leaf_names(tree) -> list[str]:
    """One name per pytree leaf, in flattening order: a dict's key, else the path."""
    return [jtu.keystr(path).strip("[]'\"") or "params"
            for path, _ in jtu.tree_flatten_with_path(tree)[0]]


def element_labels(tree) -> list[str]:
    """One label per number, in flattening order: `k`, or `w[0]`, `w[1]` for arrays."""
    labels = []
    for name, leaf in zip(leaf_names(tree), jtu.tree_leaves(tree)):
        n = int(np.size(leaf))
        labels += [name] if np.ndim(leaf) == 0 else [f"{name}[{i}]" for i in range(n)]
    return labels


class ParamSpec(NamedTuple):
    """Per number of the flattened `params0`: its start, scale, bounds and label."""

    flat0: np.ndarray
    scales: tuple  # a `Scale` per number
    lo: np.ndarray  # bounds in natural units (-inf/inf when none)
    hi: np.ndarray
    labels: list

    @property
    def transform(self) -> Transform:
        """Linear parameters are optimised in units of |params0|."""
        return Transform.of(self.scales, unit_of(self.flat0))


def _per_leaf(option, params0, what, default, convert):
    """An option given once, as a dict by leaf name, or as a pytree like params0."""
    names = leaf_names(params0)
    if isinstance(option, dict) and isinstance(params0, dict):
        unknown = set(map(str, option)) - set(names)
        if unknown:
            raise ValueError(
                f"`{what}` names {sorted(unknown)}, which are not in `params0` "
                f"(its names: {names}).")
        return [convert(option.get(n, default), n) for n in names]
    if not isinstance(option, (dict, list, tuple)):
        return [convert(option, n) for n in names]
    try:
        values = jtu.tree_leaves(jtu.tree_map(lambda _, b: b, params0, option,
                                              is_leaf=lambda x: x is None))
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"`{what}` must be one value, a dict by parameter name, or a pytree shaped "
            f"like `params0`; got {short(option)} for params0 {short(params0)}.") from e
    return [convert(v, n) for v, n in zip(values, names)]


def param_spec(params0, positive, scale, bounds) -> ParamSpec:
    leaves = jtu.tree_leaves(params0)
    sizes = [int(np.size(x)) for x in leaves]
    flat0 = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in leaves])

    def as_bool(b, name):
        if not isinstance(b, (bool, np.bool_)):
            raise ValueError(f"`positive` for {name!r} must be True or False, got "
                             f"{short(b)}.")
        return bool(b)

    def as_scale(s, name):
        try:
            return Scale(s)
        except (ValueError, TypeError):
            raise ValueError(
                f"`scale` for {name!r} is {short(s)}; choose one of "
                f"{', '.join(repr(c.value) for c in Scale)}.") from None

    pos = _per_leaf(positive, params0, "positive", False, as_bool)
    kinds = [Scale.LOG if p else Scale.LIN for p in pos]
    if scale is not None:
        given = _per_leaf(scale, params0, "scale", None,
                          lambda s, n: None if s is None else as_scale(s, n))
        kinds = [k if g is None else g for k, g in zip(kinds, given)]
    lo, hi = [], []
    if bounds is not None and not isinstance(bounds, dict):
        raise ValueError(f"`bounds` must be a dict {{name: (low, high)}}, got "
                         f"{short(bounds)}.")
    names = leaf_names(params0)
    for name in (bounds or {}):
        if str(name) not in names:
            raise ValueError(f"`bounds` names {name!r}, which is not in `params0` "
                             f"(its names: {names}).")
    for name in names:
        b = (bounds or {}).get(name, (-math.inf, math.inf))
        try:
            low, high = (float(x) for x in b)
        except (TypeError, ValueError) as e:
            raise ValueError(f"`bounds[{name!r}]`={short(b)} must be a pair "
                             "(low, high) of numbers.") from e
        if not low < high:
            raise ValueError(f"`bounds[{name!r}]`=({low}, {high}): low must be < high.")
        lo.append(low)
        hi.append(high)
    scales = tuple(k for n, k in zip(sizes, kinds) for _ in range(n))
    lo = np.concatenate([np.full(n, v) for n, v in zip(sizes, lo)])
    hi = np.concatenate([np.full(n, v) for n, v in zip(sizes, hi)])
    labels = element_labels(params0)
    for i, label in enumerate(labels):
        on_log = scales[i] is not Scale.LIN
        if on_log and flat0[i] <= 0:
            which = "positive=True" if scales[i] is Scale.LOG and scale is None else \
                f"scale '{scales[i].value}'"
            raise ValueError(
                f"`params0['{label}']`={float(flat0[i])!r} with {which} is not > 0; a "
                "parameter fitted on log scale needs a positive start.")
        if on_log and -np.inf < lo[i] < 0:
            raise ValueError(f"`bounds['{label}']` low={lo[i]} < 0 for a parameter on "
                             "log scale, which is positive.")
        if not lo[i] <= flat0[i] <= hi[i]:
            raise ValueError(
                f"`params0['{label}']`={float(flat0[i])!r} lies outside its `bounds` "
                f"({lo[i]}, {hi[i]}).")
    return ParamSpec(flat0, scales, lo, hi, labels)


# ----------------------------------------------------------------- experiments


class Group(NamedTuple):
    """Trajectories that share their times: `ys`, `observed` are `(B, T, K)`,
    `y0` is `(B, D)`; `args` the experiment's known values (or None)."""

    ts: np.ndarray
    ys: np.ndarray
    observed: np.ndarray
    y0: np.ndarray
    t0: float
    args: Any
    where: str  # how to name this group in messages


def _group(ts, ys, y0, mask, t0, args, where, allow_batch):
    ts = np.asarray(ts, dtype=np.float64)
    check_times(f"{where}ts", ts)
    ys = np.asarray(ys, dtype=np.float64)
    y0 = np.asarray(y0, dtype=np.float64)
    if ys.ndim not in ((2, 3) if allow_batch else (2,)):
        raise ValueError(
            f"`{where}ys` must have shape (T, K)"
            + (" or (n_traj, T, K)" if allow_batch else "")
            + f"; got shape {ys.shape}.")
    single = ys.ndim == 2
    ys3 = ys[None] if single else ys
    if ys3.shape[1] != ts.shape[0]:
        raise ValueError(
            f"`{where}ys` has shape {ys.shape} but `{where}ts` has {ts.shape[0]} "
            "times; the time axis of `ys` must match `ts`.")
    want_ndim = 1 if single else 2
    if y0.ndim != want_ndim or (not single and y0.shape[0] != ys3.shape[0]):
        raise ValueError(
            f"`{where}y0` has shape {y0.shape} but `{where}ys` of shape {ys.shape} "
            f"needs `y0` of shape " + ("(D,)" if single else f"({ys3.shape[0]}, D)")
            + ".")
    if not np.all(np.isfinite(y0)):
        raise ValueError(f"`{where}y0` holds non-finite values: {short(y0)}.")
    observed = np.isfinite(ys3)
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != np.bool_:
            raise ValueError(f"`{where}mask` must be boolean, got dtype {m.dtype}.")
        if m.shape != ys.shape:
            raise ValueError(
                f"`{where}mask` has shape {m.shape} but `{where}ys` has shape "
                f"{ys.shape}; they must match.")
        observed = observed & m.reshape(ys3.shape)
    t0 = float(ts[0]) if t0 is None else float(t0)
    if ts[0] < t0:
        raise ValueError(
            f"observation times `{where}ts` start at {ts[0]}, before the start time "
            f"`t0`={t0} of the solve; every observation must satisfy ts >= t0.")
    return Group(ts=ts, ys=ys3, observed=observed, y0=y0.reshape(ys3.shape[0], -1),
                 t0=t0, args=args, where=where), single


_EXPERIMENT_KEYS = {"ts", "ys", "y0", "mask", "t0", "args"}


def prepare_groups(ts, ys, y0, mask, t0, experiments):
    """The data as a list of `Group`s and whether the user gave a single trajectory."""
    if experiments is None:
        if ts is None or ys is None or y0 is None:
            missing = [n for n, v in (("ts", ts), ("ys", ys), ("y0", y0)) if v is None]
            raise ValueError(f"`fit` needs {', '.join(map(repr, missing))} (or "
                             "`experiments`).")
        group, single = _group(ts, ys, y0, mask, t0, None, "", True)
        return [group], single
    if any(v is not None for v in (ts, ys, y0, mask)):
        raise ValueError("give either `experiments` or `ts`, `ys`, `y0` (and `mask`), "
                         "not both.")
    if not isinstance(experiments, (list, tuple)) or not experiments:
        raise ValueError(f"`experiments` must be a non-empty list of dicts with keys "
                         f"ts, ys, y0 (and mask, t0, args); got {short(experiments)}.")
    groups = []
    for i, e in enumerate(experiments):
        where = f"experiments[{i}]."
        if not isinstance(e, dict) or not {"ts", "ys", "y0"} <= set(e) or (
                set(e) - _EXPERIMENT_KEYS):
            raise ValueError(
                f"`experiments[{i}]` must be a dict with keys ts, ys, y0 (optional: "
                f"mask, t0, args); got {short(e) if not isinstance(e, dict) else sorted(e)}.")
        g, _ = _group(e["ts"], e["ys"], e["y0"], e.get("mask"), e.get("t0", t0),
                      e.get("args"), where, False)
        groups.append(g)
    d, k = groups[0].y0.shape[1], groups[0].ys.shape[2]
    for g in groups[1:]:
        if g.y0.shape[1] != d:
            raise ValueError(
                f"`{g.where}y0` has {g.y0.shape[1]} states but `experiments[0].y0` has "
                f"{d}; every experiment simulates the same model.")
        if g.ys.shape[2] != k:
            raise ValueError(
                f"`{g.where}ys` has {g.ys.shape[2]} observables but "
                f"`experiments[0].ys` has {k}; every experiment observes the same "
                "quantities (mark the missing ones NaN).")
    return groups, False
