"""Atomic checkpoints of a pytree of arrays (model, optimiser state, step, key).

File layout: a magic line, a JSON header (step, leaf paths, shapes, dtypes), then the
arrays as an `.npz` payload; a SHA-256 digest of header and payload detects truncated
or corrupted files. A save writes a temporary file in the same directory, flushes it
to disk and renames it over the old checkpoint (`os.replace`), so a crash mid-save
leaves the previous checkpoint intact.
"""

import hashlib
import io
import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.tree_util as jtu
import numpy as np

__all__ = ["save_checkpoint", "load_checkpoint"]

_MAGIC = b"JAXODE-CHECKPOINT v1\n"


def _leaves_with_names(tree: Any) -> tuple[list[str], list[Any]]:
    flat, _ = jtu.tree_flatten_with_path(tree)
    return [jtu.keystr(p) or "<root>" for p, _ in flat], [leaf for _, leaf in flat]


def _to_numpy(leaf) -> np.ndarray:
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(
            leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)


def save_checkpoint(path: str | os.PathLike, tree: Any, *, step: int,
                    extra: dict[str, np.ndarray] | None = None) -> None:
    """Write `tree` (a pytree of arrays) and `step` to `path`, atomically.

    **Arguments:**

    - `path`: the checkpoint file; its directory must exist.
    - `tree`: pytree of arrays (typed PRNG keys are stored as their key data).
    - `step`: the number of completed steps.
    - `extra`: named arrays stored alongside, not checked against a template on
      load (e.g. the loss history so far).
    """
    path = Path(path)
    names, leaves = _leaves_with_names(tree)
    arrays = {f"leaf{i}": _to_numpy(x) for i, x in enumerate(leaves)}
    extra = {k: np.asarray(v) for k, v in (extra or {}).items()}
    arrays.update({f"extra_{k}": v for k, v in extra.items()})
    header = json.dumps({
        "step": int(step),
        "names": names,
        "shapes": [list(a.shape) for a in (arrays[f"leaf{i}"] for i in range(len(leaves)))],
        "dtypes": [str(arrays[f"leaf{i}"].dtype) for i in range(len(leaves))],
        "extra": sorted(extra),
    }).encode()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    digest = hashlib.sha256(header + payload).digest()

    def write(f):
        f.write(_MAGIC)
        f.write(struct.pack("<QQ", len(header), len(payload)))
        f.write(digest)
        f.write(header)
        f.write(payload)

    write_atomically(path, write)


def write_atomically(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """`write(file)` into a temporary file beside `path`, flushed to disk, then
    renamed over `path` (`os.replace`): a crash leaves the old file or the new one,
    never half of one, and no temporary file behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _corrupt(path, why: str) -> ValueError:
    return ValueError(
        f"checkpoint {str(path)!r} is truncated or corrupt ({why}); it was left as it "
        "is. Delete it to start afresh, or point `checkpoint` at an intact file.")


def load_checkpoint(path: str | os.PathLike, like: Any
                    ) -> tuple[Any, int, dict[str, np.ndarray]]:
    """Read a checkpoint written by `save_checkpoint`.

    **Arguments:**

    - `path`: the checkpoint file.
    - `like`: a pytree with the structure, shapes and dtypes expected (e.g. the
      freshly initialised model and optimiser state).

    **Returns:** `(tree, step, extra)`: the stored arrays in the structure of `like`
    (as JAX arrays; typed PRNG keys restored as such), the stored step and the extra
    arrays.

    **Raises:** `ValueError` when the file is truncated or corrupt, or was written
    for a different structure or different shapes (the message names the first leaf
    that differs). The file is never modified.
    """
    raw = Path(path).read_bytes()
    n0 = len(_MAGIC)
    if raw[:n0] != _MAGIC:
        raise _corrupt(path, "it does not start with the jaxode checkpoint marker")
    if len(raw) < n0 + 16 + 32:
        raise _corrupt(path, f"only {len(raw)} bytes")
    n_header, n_payload = struct.unpack("<QQ", raw[n0:n0 + 16])
    digest = raw[n0 + 16:n0 + 48]
    body = raw[n0 + 48:]
    if len(body) != n_header + n_payload:
        raise _corrupt(path, f"expected {n_header + n_payload} bytes of content, found "
                       f"{len(body)}")
    if hashlib.sha256(body).digest() != digest:
        raise _corrupt(path, "checksum mismatch")
    header = json.loads(body[:n_header])
    with np.load(io.BytesIO(body[n_header:])) as npz:
        stored = {k: npz[k] for k in npz.files}

    names, leaves = _leaves_with_names(like)
    treedef = jtu.tree_structure(like)
    if header["names"] != names:
        raise ValueError(
            f"checkpoint {str(path)!r} was written for a different model or optimiser "
            f"state: it holds {len(header['names'])} arrays, this one has {len(names)} "
            f"(first stored names: {header['names'][:4]}, expected: {names[:4]}).")
    out = []
    for i, (name, leaf) in enumerate(zip(names, leaves, strict=True)):
        a = stored[f"leaf{i}"]
        typed = isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(
            leaf.dtype, jax.dtypes.prng_key)
        ref = jax.random.key_data(leaf) if typed else leaf
        shape, dtype = tuple(np.shape(ref)), np.dtype(getattr(ref, "dtype", a.dtype))
        if a.shape != shape or a.dtype != dtype:
            raise ValueError(
                f"checkpoint {str(path)!r} was written for a different model or optimiser "
                f"state: `{name}` is stored as {a.dtype}{list(a.shape)}, this one has "
                f"{dtype}{list(shape)}.")
        arr = jax.numpy.asarray(a)
        out.append(jax.random.wrap_key_data(arr, impl=jax.random.key_impl(leaf))
                   if typed else arr)
    extra = {k: stored[f"extra_{k}"] for k in header["extra"]}
    return jtu.tree_unflatten(treedef, out), int(header["step"]), extra
