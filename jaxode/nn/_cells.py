"""Recurrent cells: Elman RNN, LSTM and GRU.

Every cell is a step function `cell(carry, x) -> (carry, y)`, so it runs under
`jaxode.scan` or `jax.lax.scan` unchanged. Each cell splits its step in two:

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
import jax.lax as lax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._errors import check_choice
from .._scan import scan
from ._lstm import lstm_layer

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "ACTIVATIONS"]

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


class LSTMCell(_Cell):
    """Long short-term memory cell. Carry `(h, c)`, output `h_t`.

    With `z = W_ih x_t + W_hh h_{t-1} + b` split into four blocks `z_i, z_f, z_g, z_o`
    (rows of `W_ih`, `W_hh`, `b` in that order, as in PyTorch):

    - input gate `i_t = σ(z_i)`, forget gate `f_t = σ(z_f)`, output gate
      `o_t = σ(z_o)`, candidate `g_t = tanh(z_g)`;
    - cell state `c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t`;
    - hidden state `h_t = o_t ⊙ tanh(c_t)`.

    The cell state path `c_{t-1} → c_t` is a product with `f_t` only, so a forget gate
    near 1 lets the gradient travel far back.

    **Arguments:**

    - `input_size`, `hidden_size`: feature sizes of `x_t` and `h_t`.
    - `forget_bias`: added to the forget-gate bias at initialisation (default 1.0,
      so `f_t` starts near `σ(1) ≈ 0.73`).
    - `use_bias`, `dtype`, `key`: as for `RNNCell`.
    """

    weight_ih: Float[Array, "4*hidden input"]
    weight_hh: Float[Array, "4*hidden hidden"]
    bias: Float[Array, " 4*hidden"] | None
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)

    def __init__(self, input_size: int, hidden_size: int, *, forget_bias: float = 1.0,
                 use_bias: bool = True, dtype=None, key: PRNGKeyArray):
        self.input_size = _check_size("input_size", input_size)
        self.hidden_size = H = _check_size("hidden_size", hidden_size)
        dtype = dtype or jnp.zeros(()).dtype
        k1, k2, k3 = jax.random.split(key, 3)
        bound = 1 / math.sqrt(H)
        self.weight_ih = _uniform(k1, (4 * H, input_size), bound, dtype)
        self.weight_hh = _uniform(k2, (4 * H, H), bound, dtype)
        if use_bias:
            self.bias = _uniform(k3, (4 * H,), bound, dtype).at[H:2 * H].add(forget_bias)
        else:
            self.bias = None

    def init_carry(self, batch_shape: tuple[int, ...] = ()):
        """The zero initial carry `(h, c)`, with optional leading batch axes."""
        z = jnp.zeros((*batch_shape, self.hidden_size), self.weight_hh.dtype)
        return z, z

    def sequence(self, carry, px, *, reverse: bool = False, unroll: int = 1):
        """`recur` over a sequence, with the hand-written backward of `lstm_sequence`
        (same values and gradients as scanning `recur`, about twice as fast)."""
        if reverse:
            px = px[::-1]
        carry, ys = lstm_sequence(self.weight_hh, px, *carry, unroll)
        return carry, (ys[::-1] if reverse else ys)

    def run_inputs(self, carry, xs, *, reverse: bool = False):
        """The layer over raw inputs `xs` (`(time, input)` or `(time, batch, input)`)
        through `lstm_layer`: the same values and gradients as scanning `recur`, with
        a written-out backward pass and a `vmap` rule that batches the examples.

        **Returns:** `(carry, ys)`.
        """
        _check_input(self, xs)
        if reverse:
            xs = xs[::-1]
        ys, carry = lstm_layer(self.weight_ih, self.weight_hh, self.bias, xs, carry)
        return carry, (ys[::-1] if reverse else ys)

    def recur(self, carry, px):
        h, c = carry
        z = px + h @ self.weight_hh.T
        zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(zf) * c + jax.nn.sigmoid(zi) * jnp.tanh(zg)
        h = jax.nn.sigmoid(zo) * jnp.tanh(c)
        return (h, c), h


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


# --------------------------------------------------- LSTM sequence with a fused backward

def _lstm_forward(W, px, h0, c0, unroll):
    def step(carry, p):
        h, c = carry
        z = p + h @ W.T
        H = h.shape[-1]
        s = jax.nn.sigmoid(z)
        i, f, o = s[..., :H], s[..., H:2 * H], s[..., 3 * H:]
        g = jnp.tanh(z[..., 2 * H:3 * H])
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (h, c), (h, c, jnp.concatenate([i, f, g, o], -1))

    return lax.scan(step, (h0, c0), px, unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def lstm_sequence(W, px, h0, c0, unroll=1):
    """The LSTM recurrence over a whole sequence of input projections `px`.

    Same values as scanning `LSTMCell.recur`; the backward pass is written out: one
    reverse scan whose only matmul per step is `dz_t @ W_hh`, and afterwards one large
    matmul for `∂L/∂W_hh = Σ_t dz_tᵀ h_{t-1}` (instead of accumulating it step by
    step). `∂L/∂px_t` is `dz_t` itself.

    **Returns:** `((h_T, c_T), hs)`.
    """
    (h, c), (hs, _, _) = _lstm_forward(W, px, h0, c0, unroll)
    return (h, c), hs


def _lstm_sequence_fwd(W, px, h0, c0, unroll):
    (h, c), (hs, cs, acts) = _lstm_forward(W, px, h0, c0, unroll)
    return ((h, c), hs), (W, h0, c0, hs, cs, acts)


def _lstm_sequence_bwd(unroll, res, cotangents):
    W, h0, c0, hs, cs, acts = res
    (dh_T, dc_T), dhs = cotangents
    H = h0.shape[-1]
    c_prev = jnp.concatenate([c0[None], cs[:-1]])
    h_prev = jnp.concatenate([h0[None], hs[:-1]])

    def back(carry, inputs):
        dh, dc = carry
        dh_out, a, c, cp = inputs
        i, f, g, o = a[..., :H], a[..., H:2 * H], a[..., 2 * H:3 * H], a[..., 3 * H:]
        dh = dh + dh_out
        tc = jnp.tanh(c)
        dc = dc + dh * o * (1 - tc * tc)
        dz = jnp.concatenate([dc * g * i * (1 - i), dc * cp * f * (1 - f),
                              dc * i * (1 - g * g), dh * tc * o * (1 - o)], -1)
        return (dz @ W, dc * f), dz

    (dh0, dc0), dz = lax.scan(back, (dh_T, dc_T), (dhs, acts, cs, c_prev),
                              reverse=True, unroll=unroll)
    dW = dz.reshape(-1, 4 * H).T @ h_prev.reshape(-1, H)
    return dW, dz, dh0, dc0


lstm_sequence.defvjp(_lstm_sequence_fwd, _lstm_sequence_bwd)
