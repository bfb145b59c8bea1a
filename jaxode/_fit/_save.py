"""The file format of a saved `FitResult`.

A magic line, the length of the header (8 bytes, little-endian), a JSON header, then
the arrays as written by `equinox.tree_serialise_leaves`. The header holds the format
version, every saved value (numbers, strings), and for every array field its pytree
structure with each leaf's shape and dtype, from which the arrays are read back.
Results that earlier versions saved with `pickle` are read by `_read_pickle`.
"""

import json
import os
import pickle
import struct

import equinox as eqx
import numpy as np

from .._checkpoint import write_atomically

_MAGIC = b"JAXODE-FITRESULT\n"
_VERSION = 1


def plain(x):
    """`x` as JSON can hold it: arrays as (nested) lists, NumPy numbers as Python."""
    if isinstance(x, (np.ndarray, np.generic)):
        return x.tolist()
    if isinstance(x, (list, tuple)):
        return [plain(a) for a in x]
    return x


def _describe(tree, where):
    """The pytree structure of `tree` in JSON, each leaf by its shape and dtype."""
    if tree is None:
        return None
    if isinstance(tree, dict):
        for key in tree:
            if not isinstance(key, str):
                raise ValueError(f"`save` stores dicts with string keys; `{where}` has "
                                 f"the key {key!r}.")
        return {"dict": [[k, _describe(v, f"{where}[{k!r}]")] for k, v in tree.items()]}
    if isinstance(tree, (list, tuple)) and type(tree) in (list, tuple):
        kind = type(tree).__name__
        return {kind: [_describe(v, f"{where}[{i}]") for i, v in enumerate(tree)]}
    if isinstance(tree, (np.ndarray, np.generic)) or eqx.is_array(tree):
        a = np.asarray(tree)
        return {"shape": list(a.shape), "dtype": str(a.dtype)}
    raise ValueError(
        f"`save` stores dicts (string keys), lists, tuples and arrays; `{where}` is a "
        f"{type(tree).__name__}.")


def _skeleton(desc):
    """A tree of zeros with the structure, shapes and dtypes `desc` describes."""
    if desc is None:
        return None
    if "dict" in desc:
        return {k: _skeleton(v) for k, v in desc["dict"]}
    for kind in (list, tuple):
        if kind.__name__ in desc:
            return kind(_skeleton(v) for v in desc[kind.__name__])
    return np.zeros(desc["shape"], np.dtype(desc["dtype"]))


def _in_described_order(desc, tree):
    """`tree` with every dict's keys in the order `desc` gives (pytree flattening
    sorts them)."""
    if desc is None or "shape" in desc:
        return tree
    if "dict" in desc:
        return {k: _in_described_order(v, tree[k]) for k, v in desc["dict"]}
    kind = list if "list" in desc else tuple
    return kind(_in_described_order(d, t) for d, t in zip(desc[kind.__name__], tree))


def write(path, arrays: dict, values: dict) -> None:
    """Write the array fields `arrays` (pytrees of arrays) and the JSON `values`."""
    header = json.dumps({
        "format": "jaxode.FitResult", "version": _VERSION,
        "arrays": {name: _describe(tree, name) for name, tree in arrays.items()},
        "values": {name: plain(v) for name, v in values.items()},
    }).encode()
    arrays = {name: _host(tree) for name, tree in arrays.items()}

    def write_to(fh):
        fh.write(_MAGIC)
        fh.write(struct.pack("<Q", len(header)))
        fh.write(header)
        eqx.tree_serialise_leaves(fh, arrays)

    write_atomically(os.path.abspath(os.fspath(path)), write_to)


def _host(tree):
    return None if tree is None else _map_leaves(np.asarray, tree)


def _map_leaves(fn, tree):
    if isinstance(tree, dict):
        return {k: _map_leaves(fn, v) for k, v in tree.items()}
    if type(tree) in (list, tuple):
        return type(tree)(_map_leaves(fn, v) for v in tree)
    return None if tree is None else fn(tree)


def read(path) -> dict:
    """Every saved field of the result at `path`, by name."""
    with open(path, "rb") as fh:
        start = fh.read(len(_MAGIC))
        if start[:1] == b"\x80":  # a pickle: a result saved by an earlier version
            fh.seek(0)
            return _read_pickle(fh, path)
        if start != _MAGIC:
            raise ValueError(f"{os.fspath(path)!r} is not a saved FitResult (it does "
                             f"not start with {_MAGIC!r}).")
        try:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
            if header.get("version", 0) > _VERSION:
                raise ValueError(
                    f"{os.fspath(path)!r} was saved in format version "
                    f"{header['version']}, newer than this jaxode reads ({_VERSION}); "
                    "update jaxode.")
            desc = header["arrays"]
            like = {name: _skeleton(d) for name, d in desc.items()}
            arrays = eqx.tree_deserialise_leaves(fh, like)
        except (struct.error, json.JSONDecodeError, KeyError, EOFError,
                RuntimeError) as e:
            raise ValueError(f"{os.fspath(path)!r} is a damaged FitResult file "
                             f"({type(e).__name__}: {e}).") from e
    fields = {name: _in_described_order(desc[name], arrays[name]) for name in desc}
    return {**fields, **header["values"]}


# -- results saved by earlier versions (a pickle of the result's attributes)

class _Attributes:
    """Stands in for an earlier version's `FitResult`: collects its attributes."""


class _Record(tuple):
    """Stands in for an earlier version's named tuples (`_Context`, `ParamSpec`)."""

    def __new__(cls, *fields):
        return tuple.__new__(cls, fields)


def _old_function(*args, **kwargs):
    raise RuntimeError("a function of an earlier version of jaxode")


# the names such a pickle refers to, and the fields of its named tuples
_EARLIER = {("jaxode._fit._result", "FitResult"): _Attributes,
            ("jaxode._fit._front", "_Context"): _Record,
            ("jaxode._fit._data", "ParamSpec"): _Record,
            ("jaxode._fit._problem", "unflatten"): _old_function,
            ("jaxode._fit._front", "_unflatten"): _old_function}
_CONTEXT = ("prob", "spec", "n_y0", "y0_unit", "lo", "hi", "loop", "dtype",
            "unflatten", "predictor")
_SPEC = ("flat0", "kind", "unit", "lo", "hi", "labels")
_SCALE_OF_KIND = ("lin", "log", "log10")


class _EarlierUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _EARLIER:
            return _EARLIER[module, name]
        if module.split(".")[0] in ("numpy", "jax", "jaxlib", "ml_dtypes") or (
                module, name) == ("functools", "partial"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected {module}.{name}")


def _read_pickle(fh, path) -> dict:
    """The fields of a result an earlier version pickled, in this version's terms."""
    try:
        old = _EarlierUnpickler(fh).load()
        d = dict(vars(old))
        ctx = dict(zip(_CONTEXT, d.pop("_ctx")))
        spec = dict(zip(_SPEC, ctx["spec"]))
        mode = d.pop("mode")
    except Exception as e:
        raise ValueError(
            f"{os.fspath(path)!r} is a pickle but not a FitResult that an earlier "
            f"jaxode saved ({type(e).__name__}: {e}); load it with the version that "
            "wrote it.") from e
    n_p, n_y0 = len(spec["kind"]), int(ctx["n_y0"])
    n_noise = len(d["_v"]) - n_p - n_y0
    d["scales"] = ([_SCALE_OF_KIND[int(k)] for k in spec["kind"]] + ["lin"] * n_y0
                   + ["log"] * n_noise)
    d["_unit"] = np.concatenate([np.asarray(spec["unit"], np.float64),
                                 np.asarray(ctx["y0_unit"], np.float64),
                                 np.ones(n_noise)])
    d["_lo"], d["_hi"] = np.asarray(ctx["lo"]), np.asarray(ctx["hi"])
    d["noise_sigma"] = {"known": d["sigma"], "estimate": "estimate"}.get(mode)
    return d
