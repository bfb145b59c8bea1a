"""`scan`: the one recurrence driver of jaxode.

Every model in the library, from an Euler step to an LSTM, is a pure step function
`step(carry, x) -> (carry, y)`; this module runs it over a sequence. It is
`jax.lax.scan` plus what recurrent models need on top: masking of padded steps,
truncated backprop through time and rematerialisation.
"""

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu

from ._types import Carry

__all__ = ["scan"]


def _leading_length(xs: Any) -> int | None:
    leaves = jtu.tree_leaves(xs)
    return None if not leaves else leaves[0].shape[0]


def _broadcast_to_leaf(m: jax.Array, leaf: jax.Array) -> jax.Array:
    """Broadcast a per-step mask (scalar or batch row vector) against a carry leaf."""
    if m.ndim == 0:
        return m
    return m.reshape(m.shape + (1,) * (leaf.ndim - m.ndim))


def _masked(step: Callable) -> Callable:
    """`step` that keeps the carry and outputs zeros where the mask is False."""

    def masked_step(carry, x_and_m):
        x, m = x_and_m
        new_carry, y = step(carry, x)
        carry = jtu.tree_map(
            lambda new, old: jnp.where(_broadcast_to_leaf(m, new), new, old),
            new_carry,
            carry,
        )
        y = jtu.tree_map(
            lambda a: jnp.where(_broadcast_to_leaf(m, a), a, jnp.zeros_like(a)), y
        )
        return carry, y

    return masked_step


def _check_mask(mask: Any, length: int, carry: Any) -> jax.Array:
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise ValueError(f"`mask` must be boolean, got dtype {mask.dtype}.")
    if mask.ndim not in (1, 2) or mask.shape[0] != length:
        raise ValueError(
            f"`mask` must have shape (time,) or (time, batch) with time={length}, "
            f"got shape {mask.shape}."
        )
    if mask.ndim == 2:
        for leaf in jtu.tree_leaves(carry):
            if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != mask.shape[1]:
                raise ValueError(
                    f"`mask` of shape {mask.shape} has {mask.shape[1]} batch rows, "
                    f"but a carry leaf has shape {jnp.shape(leaf)}; every carry leaf "
                    "needs that many rows on its leading axis."
                )
    return mask


def _slice(xs: Any, start: int, stop: int) -> Any:
    return jtu.tree_map(lambda a: a[start:stop], xs)


def _chunk(xs: Any, n: int, k: int) -> Any:
    return jtu.tree_map(lambda a: a.reshape((n, k) + a.shape[1:]), xs)


def _unchunk(ys: Any) -> Any:
    return jtu.tree_map(lambda a: a.reshape((-1,) + a.shape[2:]), ys)


def _concat(a: Any, b: Any) -> Any:
    return jtu.tree_map(lambda u, v: jnp.concatenate([u, v]), a, b)


def _truncated_scan(step, carry, xs, length, k, reverse, unroll):
    """Chunked truncated BPTT: gradient is stopped at every chunk boundary of k steps.

    The carry entering each chunk but the first is `stop_gradient`-ed, so the gradient
    of any output reaches back at most k steps; the forward values are untouched.
    """
    n, rem = divmod(length, k)

    def run_chunk(carry, xs_chunk, first):
        carry = jtu.tree_map(
            lambda c: jnp.where(first, c, lax.stop_gradient(c)), carry
        )
        return lax.scan(step, carry, xs_chunk, reverse=reverse, unroll=unroll)

    def outer(carry, chunk_and_index):
        xs_chunk, i = chunk_and_index
        return run_chunk(carry, xs_chunk, i == (n - 1 if reverse else 0))

    # In processing order the full chunks come first and the remainder last.
    if reverse:
        rest, body = _slice(xs, 0, rem), _slice(xs, rem, length)
    else:
        body, rest = _slice(xs, 0, n * k), _slice(xs, n * k, length)
    ys = None
    if n:
        carry, ys = lax.scan(
            outer, carry, (_chunk(body, n, k), jnp.arange(n)), reverse=reverse
        )
        ys = _unchunk(ys)
    if rem:
        carry, ys_rest = run_chunk(carry, rest, n == 0)
        if ys is None:
            ys = ys_rest
        else:
            ys = _concat(ys_rest, ys) if reverse else _concat(ys, ys_rest)
    return carry, ys


def _remat_flag(remat: bool | None, checkpoint: bool | None) -> bool:
    """`remat`, or the deprecated `checkpoint` spelling of it (with a warning)."""
    if checkpoint is None:
        return bool(remat)
    if remat is not None:
        raise ValueError(
            f"pass `remat` only: got both `remat`={remat!r} and its deprecated name "
            f"`checkpoint`={checkpoint!r}.")
    warnings.warn("`jaxode.scan(..., checkpoint=...)` is deprecated; use `remat=` "
                  "instead.", DeprecationWarning, stacklevel=3)
    return bool(checkpoint)


def scan(
    step: Callable[[Carry, Any], tuple[Carry, Any]],
    carry: Carry,
    xs: Any = None,
    *,
    length: int | None = None,
    reverse: bool = False,
    mask: Any = None,
    truncate: int | None = None,
    remat: bool | None = None,
    unroll: int | bool = 1,
    checkpoint: bool | None = None,
) -> tuple[Carry, Any]:
    """Run `step(carry, x) -> (carry, y)` over the leading axis of `xs`.

    This is `jax.lax.scan` with the extras recurrent models need; with none of them
    it *is* `lax.scan`, at the same speed.

    **Arguments:**

    - `step`: pure function `step(carry, x) -> (carry, y)`; `carry` keeps its
      structure, shapes and dtypes from step to step.
    - `carry`: the initial carry, any pytree.
    - `xs`: pytree of arrays with a common leading (time) axis, or `None` with
      `length`.
    - `length`: number of steps; needed when `xs` is `None`.
    - `reverse`: run from the last step to the first (outputs stay in input order).
    - `mask`: boolean, shape `(time,)` or `(time, batch)`. Where False the step is
      skipped: the carry passes through unchanged and `y` is zero. With a
      `(time, batch)` mask every carry leaf has `batch` rows on its leading axis.
    - `truncate`: integer k ≥ 1. Truncated backprop through time: the sequence runs in
      chunks of k steps and the gradient is stopped where one chunk hands its carry to
      the next, so no gradient travels back more than k steps. Forward values are
      unchanged.
    - `remat`: `True` rematerialises each step in the backward pass instead of
      storing its intermediates (less memory, same values and gradients); `None`
      (default) or `False` stores them.
    - `unroll`: passed to `lax.scan`.
    - `checkpoint`: the former name of `remat`; still accepted for one release, with
      a `DeprecationWarning`.

    **Returns:** `(carry, ys)`: the final carry and the stacked outputs, leading axis
    `time`.

    **Raises:** `ValueError` when the length is unknown or disagrees with `mask`, when
    `mask` is not boolean, when `truncate < 1`, or when both `remat` and the
    deprecated `checkpoint` are given.
    """
    remat = _remat_flag(remat, checkpoint)
    n = _leading_length(xs)
    if n is None and length is None:
        raise ValueError("`length` is required when `xs` is None or has no arrays.")
    if n is not None and length is not None and n != length:
        raise ValueError(f"`length`={length} but `xs` has leading axis {n}.")
    length = n if n is not None else length
    if truncate is not None and (int(truncate) != truncate or truncate < 1):
        raise ValueError(f"`truncate` must be an integer >= 1, got {truncate!r}.")

    user_step = step

    def step(carry, x):  # a plain closure: modules as steps need not be hashable
        return user_step(carry, x)

    if remat:
        step = jax.checkpoint(step)
    if mask is not None:
        mask = _check_mask(mask, length, carry)
        step = _masked(step)
        xs = (xs, mask)
    if truncate is None or truncate >= length:
        return lax.scan(step, carry, xs, length=length, reverse=reverse, unroll=unroll)
    if xs is None:
        xs = jnp.zeros((length, 0))
        inner = step
        step = lambda c, x: inner(c, None)  # noqa: E731
    return _truncated_scan(step, carry, xs, length, int(truncate), reverse, unroll)
