"""Recurrent cells: Elman RNN and GRU, and the base every cell shares (the LSTM, with
its sequence layer, is in `_lstm.py`).

Every cell is a step function `cell(carry, x) -> (carry, y)`, so it runs under
`jaxode.scan` unchanged, and under `jax.lax.scan` as `lambda c, x: cell(c, x)`
(`lax.scan` hashes its step function, and a module holding arrays has no hash). Each
cell splits its step in two:

- `cell.project(x)`: the input half, `x @ W_ih.T + b`, all gates in one matmul. It has
  no recurrence, so `RNN` applies it to every step of a sequence at once (one large
  matmul before the scan instead of one small matmul per step).
- `cell.recur(carry, px)`: the recurrent half, `px + h @ W_hh.T` for all gates in one
  fused matmul, then the gate nonlinearities.

`cell(carry, x)` is `cell.recur(carry, cell.project(x))`. Inputs may carry leading
batch axes: `x` has shape `(..., input_size)` and the carry `(..., hidden_size)`.
"""

import functools
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._errors import check_choice
from .._scan import scan

__all__ = ["RNNCell", "GRUCell", "ACTIVATIONS"]

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "identity": lambda a: a,
}
"""Activations an `RNNCell` accepts, by name."""


def _check_size(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    return int(value)


@functools.partial(jax.jit, static_argnums=(1, 3))
def _uniform(key, shape, bound, dtype):
    """`U(-bound, bound)`; jitted, so a new shape costs one compile, not one per op."""
    return jax.random.uniform(key, shape, dtype=dtype, minval=-bound, maxval=bound)


def _check_input(cell, x) -> None:
    if jnp.shape(x)[-1:] != (cell.input_size,):
        raise ValueError(
            f"`x` must have shape (..., {cell.input_size}) for a {type(cell).__name__} "
            f"with input_size={cell.input_size}, got shape {tuple(jnp.shape(x))}."
        )


class _Cell(eqx.Module):
    """Shared pieces: weights stacked over gates, the input projection, zero carry."""

    weight_ih: eqx.AbstractVar[Array]
    weight_hh: eqx.AbstractVar[Array]
    bias: eqx.AbstractVar[Array | None]
    input_size: eqx.AbstractVar[int]
    hidden_size: eqx.AbstractVar[int]

    def project(self, x: Float[Array, "... input"]) -> Float[Array, "... gates"]:
        """The input half of the step, `x @ W_ih.T + b`, for all gates at once."""
        _check_input(self, x)
        px = x @ self.weight_ih.T
        return px if self.bias is None else px + self.bias

    def init_carry(self, batch_shape: tuple[int, ...] = ()):
        """The zero initial carry, with optional leading batch axes."""
        return jnp.zeros((*batch_shape, self.hidden_size), self.weight_hh.dtype)

    def __call__(self, carry, x):
        """One step: `cell(carry, x) -> (carry, y)`."""
        return self.recur(carry, self.project(x))

    def sequence(self, carry, px, *, reverse: bool = False, unroll: int = 1):
        """`recur` over a whole sequence of projected inputs `px` (time first).

        **Returns:** `(carry, ys)`, as `jaxode.scan` does.
        """
        return scan(lambda c, p: self.recur(c, p), carry, px, reverse=reverse,
                    unroll=unroll)

    @property
    def output_size(self) -> int:
        return self.hidden_size


class RNNCell(_Cell):
    """Elman cell.

    `h_t = act(W_ih x_t + W_hh h_{t-1} + b)`, output `y_t = h_t`, carry `h_t`.

    **Arguments:**

    - `input_size`, `hidden_size`: feature sizes of `x_t` and `h_t`.
    - `activation`: `"tanh"` (default), `"sigmoid"`, `"relu"` or `"identity"`.
    - `use_bias`: include `b` (default True).
    - `dtype`: parameter dtype (default: JAX's default float).
    - `key`: PRNG key. Weights are drawn from `U(-1/√H, 1/√H)`.

    **Raises:** `ValueError` for a size below 1 or an unknown activation.
    """

    weight_ih: Float[Array, "hidden input"]
    weight_hh: Float[Array, "hidden hidden"]
    bias: Float[Array, " hidden"] | None
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)

    def __init__(self, input_size: int, hidden_size: int, *, activation: str = "tanh",
                 use_bias: bool = True, dtype=None, key: PRNGKeyArray):
        self.input_size = _check_size("input_size", input_size)
        self.hidden_size = H = _check_size("hidden_size", hidden_size)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        dtype = dtype or jnp.zeros(()).dtype
        k1, k2, k3 = jax.random.split(key, 3)
        bound = 1 / math.sqrt(H)
        self.weight_ih = _uniform(k1, (H, input_size), bound, dtype)
        self.weight_hh = _uniform(k2, (H, H), bound, dtype)
        self.bias = _uniform(k3, (H,), bound, dtype) if use_bias else None

    def recur(self, h, px):
        h = ACTIVATIONS[self.activation](px + h @ self.weight_hh.T)
        return h, h


class GRUCell(_Cell):
    """Gated recurrent unit. Carry and output `h_t`.

    Blocks `r, z, n` of the rows of `W_ih`, `W_hh` and `b` (PyTorch's order):

    - reset gate `r_t = σ(W_ir x_t + b_r + W_hr h_{t-1})`;
    - update gate `z_t = σ(W_iz x_t + b_z + W_hz h_{t-1})`;
    - candidate `n_t = tanh(W_in x_t + b_n + r_t ⊙ (W_hn h_{t-1} + b_hn))`;
    - `h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}`.

    `b_hn` is a separate bias because it sits inside the reset product.

    **Arguments:** as for `LSTMCell`, without `forget_bias`.
    """

    weight_ih: Float[Array, "3*hidden input"]
    weight_hh: Float[Array, "3*hidden hidden"]
    bias: Float[Array, " 3*hidden"] | None
    bias_hn: Float[Array, " hidden"] | None
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)

    def __init__(self, input_size: int, hidden_size: int, *, use_bias: bool = True,
                 dtype=None, key: PRNGKeyArray):
        self.input_size = _check_size("input_size", input_size)
        self.hidden_size = H = _check_size("hidden_size", hidden_size)
        dtype = dtype or jnp.zeros(()).dtype
        k1, k2, k3, k4 = jax.random.split(key, 4)
        bound = 1 / math.sqrt(H)
        self.weight_ih = _uniform(k1, (3 * H, input_size), bound, dtype)
        self.weight_hh = _uniform(k2, (3 * H, H), bound, dtype)
        self.bias = _uniform(k3, (3 * H,), bound, dtype) if use_bias else None
        self.bias_hn = _uniform(k4, (H,), bound, dtype) if use_bias else None

    def recur(self, h, px):
        hh = h @ self.weight_hh.T
        H = self.hidden_size
        r = jax.nn.sigmoid(px[..., :H] + hh[..., :H])
        z = jax.nn.sigmoid(px[..., H:2 * H] + hh[..., H:2 * H])
        hn = hh[..., 2 * H:] if self.bias_hn is None else hh[..., 2 * H:] + self.bias_hn
        n = jnp.tanh(px[..., 2 * H:] + r * hn)
        h = (1 - z) * n + z * h
        return h, h

