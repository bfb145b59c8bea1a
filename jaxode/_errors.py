"""Input validation, and the run-time failure checks of a solve.

Two layers, as in diffrax. Structure and configuration (ranks, shapes, dtypes, names)
raise `ValueError` at trace time with the argument and the bad value in the message.
Values are checked eagerly when they are concrete (plain arrays, not tracers), so the
compiled hot path carries no checks; values only known at run time go through
`eqx.error_if`.

A solve that fails at run time (`throw=True`) raises through `raise_unless` when it
was called eagerly: its compiled program returns the flags, and they are read after
it has run. Only a solve inside a program being built (a caller's `jax.jit`) puts the
check in the program, as an `eqx.error_if`. That check is a host callback, and on CPU
jaxlib runs every program that holds one synchronously, on the calling thread,
whether the callback fires or not. Measured on a vmapped RK4 solve of 10 000 members
x 1000 steps keeping every state: a callback that never fires made the program about
10 % slower, and so did turning JAX's asynchronous CPU dispatch off for the program
without it. Programs with a host callback are not written to JAX's persistent
compilation cache either.
"""

import inspect
from collections.abc import Iterable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np


def is_concrete(x: Any) -> bool:
    """True when every leaf of `x` has a value now (no tracer among the leaves)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jtu.tree_leaves(x))


def short(x: Any, limit: int = 80) -> str:
    """A one-line, length-capped rendering of a value for an error message."""
    if isinstance(x, (jax.Array, np.ndarray)) and is_concrete(x):
        text = np.array2string(np.asarray(x), threshold=8, precision=6, separator=", ")
    else:
        text = repr(x)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_field(name: str, field: Any, call: str) -> None:
    """A vector field must be callable with three positional arguments `(t, y, args)`,
    the convention of `solve`, `fit` and `ensemble` (and of diffrax's `ODETerm`)."""
    if not callable(field):
        raise ValueError(f"`{name}` must be callable as {call}, got {short(field)}.")
    try:
        signature = inspect.signature(field)
    except (TypeError, ValueError):  # builtins and C callables: nothing to read
        return
    try:
        signature.bind(None, None, None)
    except TypeError:
        raise ValueError(
            f"`{name}` must be callable as {call} (three arguments, as every vector "
            f"field of jaxode and diffrax), but its signature is {signature}. Add an "
            "`args` parameter: `def __call__(self, t, y, args)`.") from None


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = sorted(choices)
    if value not in choices:
        raise ValueError(
            f"`{name}`={value!r} is not one of the valid names: {', '.join(choices)}."
        )
    return value


def check_finite(name: str, tree: Any) -> None:
    """Raise if a concrete pytree holds NaN or inf (tracers are skipped)."""
    for path, leaf in jtu.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.core.Tracer) or leaf is None:
            continue
        arr = np.asarray(leaf)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            where = jtu.keystr(path) if path else ""
            raise ValueError(f"`{name}{where}` holds non-finite values: {short(arr)}.")


def check_times(name: str, ts: Any, *, strict: bool = True) -> None:
    """`ts` must be 1-D; when concrete, finite and (strictly) increasing."""
    if jnp.ndim(ts) != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {tuple(jnp.shape(ts))}.")
    if jnp.shape(ts)[0] == 0:
        raise ValueError(f"`{name}` is empty; it needs at least one time (the first "
                         "is the initial time).")
    if not is_concrete(ts):
        return
    arr = np.asarray(ts)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` holds non-finite values: {short(arr)}.")
    d = np.diff(arr)
    bad = d <= 0 if strict else d < 0
    if np.any(bad):
        i = int(np.argmax(bad))
        word = "strictly increasing" if strict else "non-decreasing"
        raise ValueError(
            f"`{name}` must be {word}; {name}[{i}]={arr[i]} and "
            f"{name}[{i + 1}]={arr[i + 1]}."
        )


def check_numeric(name: str, tree: Any) -> None:
    """Every leaf of `tree` must be a number or an array of numbers (not a string,
    not an object); the message names the argument, the leaf and its type."""
    for path, leaf in jtu.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.core.Tracer) or isinstance(leaf, bool):
            continue
        kind = np.asarray(leaf).dtype.kind if not isinstance(leaf, jax.Array) \
            else jnp.dtype(leaf.dtype).kind
        if kind not in "biufc" and not (isinstance(leaf, jax.Array)
                                       and jax.dtypes.issubdtype(
                                           leaf.dtype, jax.dtypes.prng_key)):
            where = jtu.keystr(path) if path else ""
            raise ValueError(
                f"`{name}{where}` must be a number or an array of numbers, got "
                f"{short(leaf)} ({type(leaf).__name__}).")


def check_positive(name: str, value: Any) -> None:
    if value is None or not is_concrete(value):
        return
    check_numeric(name, value)
    arr = np.asarray(value)
    if not np.all(arr > 0):
        raise ValueError(f"`{name}` must be > 0, got {short(value)}.")


def describe_tree(tree: Any) -> str:
    """`tree` as structure with `shape dtype` leaves, for mismatch messages."""
    class _Leaf(str):
        __repr__ = str.__str__

    return short(
        jtu.tree_map(lambda x: _Leaf(f"{jnp.dtype(x.dtype).name}{list(x.shape)}"), tree),
        limit=200,
    )


def check_same_structure(name: str, got: Any, expected: Any, what: str) -> None:
    """`got` and `expected` (shape-dtype pytrees) must agree leaf by leaf."""
    same = jtu.tree_structure(got) == jtu.tree_structure(expected) and all(
        a.shape == b.shape and a.dtype == b.dtype
        for a, b in zip(jtu.tree_leaves(got), jtu.tree_leaves(expected))
    )
    if not same:
        raise ValueError(
            f"`{name}` returned {describe_tree(got)} but {what} is "
            f"{describe_tree(expected)}; they must match in structure, shape and dtype."
        )


def output_shape(name: str, fn: Any, t, y0: Any, args: Any) -> Any:
    """The output shapes of the user's `fn(t, y0, args)`, or a `ValueError` that
    names `fn` when it fails to trace."""
    try:
        # filter_eval_shape: `args` may hold non-array leaves (an eqx.Module with
        # an activation function); the lambda: jax.eval_shape takes a callable with
        # a `trace` attribute (an eqx.Module field named `trace`) for a jitted one
        return eqx.filter_eval_shape(lambda t, y, a: fn(t, y, a), t, y0, args)
    except Exception as e:  # the user's function failed to trace: say where
        raise ValueError(
            f"`{name}` failed when called as {name}(t, y0, args): "
            f"{type(e).__name__}: {e}") from e


def check_vector_field(f: Any, y0: Any, ts: Any, args: Any) -> None:
    """`f(ts[0], y0, args)` must trace and return a pytree like `y0`."""
    out = output_shape("f", f, ts[0], y0, args)
    expected = jax.eval_shape(lambda y: y, y0)
    check_same_structure("f", out, expected, "y0")


def is_staged() -> bool:
    """True while JAX is building a program (inside `jax.jit`, a `lax` loop body or
    `jax.eval_shape`), where an operation on constants gives a tracer; False when
    values are computed as they are called (eagerly, and under an eager `jax.vmap`
    or `jax.grad`). The probe moves two scalars to the device, which is not what a
    caller's `jax.transfer_guard` is about, so it is allowed here."""
    with jax.transfer_guard("allow"):
        return isinstance(jax.lax.add(np.int32(0), np.int32(0)), jax.core.Tracer)


def raise_unless(checks: Iterable[tuple[Any, str]]) -> None:
    """The run-time checks of a compiled program that has already run: for each
    `(ok, message)` in order, raise `eqx.EquinoxRuntimeError(message)` unless `ok`
    holds for every element.

    Concrete flags are read on the host. Flags that exist but are wrapped in the
    tracers of an eager `jax.vmap` or `jax.grad`, or that span several processes
    (every process must raise, not only the one holding the failed member), are
    checked by `eqx.error_if`, which runs at once as a small program of its own.
    (Inside a program being built, call `eqx.error_if` on the values the caller
    keeps instead: a check whose result nothing uses is dropped from the program.)
    """
    for ok, message in checks:
        if is_concrete(ok) and (not isinstance(ok, jax.Array)
                                or ok.is_fully_addressable):
            if not np.all(np.asarray(ok)):
                raise eqx.EquinoxRuntimeError(message)
        else:
            eqx.error_if(ok, jnp.logical_not(ok), message)
