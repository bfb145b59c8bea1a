"""The LSTM: `LSTMCell`, its one step, and the layer that runs it over a sequence.

One function, `_step`, holds the LSTM's equations. The cell's own step
(`cell(carry, x)`, `cell.recur`) and the loop of the sequence layer
(`LSTMCell.run_inputs`, which `RNN` runs when there is no mask) both call it, and the
layer's written-out backward pass through time is the derivative of that step. What
the layer does beyond scanning the cell, each measured on a training step (batch 32,
length 100, input 8, hidden 128, CPU):

- the four gate nonlinearities are one full-width `tanh`, using
  `σ(x) = ½·tanh(x/2) + ½` with the halving folded into the weights (a sigmoid and a
  tanh on column slices of the gate matrix fuse badly); the cell's step uses the same
  form, scaling its pre-activation instead;
- the loop multiplies `[h | x_t]` by the stacked `[W_hh; W_ih]` once per step;
- the forward loop keeps only the gate activations and the cell state;
- the backward loop forms only `dz_t` (the gradient of the pre-activations) and
  `dz_t @ W_hh`; every other per-step factor is computed for all steps at once
  before it;
- the weight, bias and input gradients are not in the written-out backward: the
  pre-activations are also written as plain matmuls `z = [h_{t-1} | 1] @ [W_hh | b]ᵀ
  + x @ W_ihᵀ` of the (constant) previous states, whose value nothing reads, and
  JAX differentiates those: one matmul contracting over time × batch.

The last point is what makes `jax.vmap` over `(time, input)` examples (the equinox
idiom) as fast as one `(time, batch, input)` call. JAX batches a custom VJP by
running its backward per example and summing the weight gradients afterwards: a
per-example product and a sum over examples (on this CPU backend, the sum of the 32
per-example `(137, 512)` gradients took 19 ms, the matmul that forms them 5 ms),
where the plain matmul batches into one product over time and examples together.
Under `vmap(grad(...))` (per-example gradients) the same matmul stays per example,
so no batching rule is needed.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray

from ._cells import _Cell, _check_input, _check_size, _uniform

__all__ = ["LSTMCell"]


def _gate_scales(H, dtype):
    """Per-column scale `s` of the pre-activation (½ for σ gates, 1 for g) and the
    offset: gate = tanh(s·z)·s' + offset, with s' = s and offset ½ for σ, 0 for g."""
    half = jnp.full((H,), 0.5, dtype)
    one = jnp.ones((H,), dtype)
    scale = jnp.concatenate([half, half, one, half])
    offset = jnp.concatenate([half, half, jnp.zeros((H,), dtype), half])
    return scale, offset


def _step(zs, c, scale, offset):
    """One LSTM step from the scaled pre-activation `zs = s·z` of the four gates and
    the cell state `c_{t-1}`.

    **Returns:** `(h_t, c_t, a_t)`, with `a_t` the gate activations `[i | f | g | o]`.
    """
    a = jnp.tanh(zs) * scale + offset
    # a split, not four slices: differentiated (the cell's step), its transpose is
    # one concatenate instead of four padded copies summed
    i, f, g, o = jnp.split(a, 4, axis=-1)
    c = f * c + i * g
    h = o * jnp.tanh(c)
    return h, c, a


def _forward(weight_ih, weight_hh, bias, xs, h0, c0):
    """Forward: xs (T, [B,] I), h0/c0 ([B,] H). Returns hs, cs, acts."""
    H = weight_hh.shape[1]
    scale, offset = _gate_scales(H, xs.dtype)
    w = jnp.concatenate([weight_hh, weight_ih], axis=1).T * scale  # (H + I, 4H)
    b = (jnp.zeros((4 * H,), xs.dtype) if bias is None else bias) * scale

    def step(carry, x):
        h, c = carry
        h, c, a = _step(jnp.concatenate([h, x], -1) @ w + b, c, scale, offset)
        return (h, c), (h, c, a)

    _, (hs, cs, acts) = lax.scan(step, (h0, c0), xs)
    return hs, cs, acts


@jax.custom_vjp
def _through_time(z, weight_hh, hs, cs, acts, h0, c0):
    """The states `hs`, `cs` that `_forward` computed (with gate activations `acts`),
    as a function of the pre-activations `z` (T, [B,] 4H) and of `(h0, c0)`; the value
    of `z` is not read. Its VJP is backpropagation through time: the cotangent of
    every `z_t`, and those of `h0` and `c0`. **Returns:** `(hs, (h_T, c_T))`."""
    del z, weight_hh, acts, h0, c0
    return hs, (hs[-1], cs[-1])


def _through_time_fwd(z, weight_hh, hs, cs, acts, h0, c0):
    del z
    return (hs, (hs[-1], cs[-1])), (weight_hh, cs, acts, h0, c0)


def _through_time_bwd(res, cotangents):
    weight_hh, cs, acts, h0, c0 = res
    dhs, (dh_T, dc_T) = cotangents
    H = h0.shape[-1]
    # every per-step factor, for all steps at once
    i, f, g, o = (acts[..., k * H:(k + 1) * H] for k in range(4))
    c_prev = jnp.concatenate([c0[None], cs[:-1]])
    tc = jnp.tanh(cs)
    dc_from_dh = o * (1 - tc * tc)
    factor = jnp.concatenate(
        [g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g), tc * o * (1 - o)], -1)

    def back(carry, inputs):
        dh_rec, dc = carry
        dh_out, k, fac, f_t = inputs
        dh = dh_out + dh_rec
        dc = dc + dh * k
        dz = jnp.concatenate([dc, dc, dc, dh], -1) * fac
        return (dz @ weight_hh, dc * f_t), dz

    (dh0, dc0), dz = lax.scan(back, (dh_T, dc_T), (dhs, dc_from_dh, factor, f),
                              reverse=True)
    return dz, None, None, None, None, dh0, dc0


_through_time.defvjp(_through_time_fwd, _through_time_bwd)


def _layer(weight_ih, weight_hh, bias, xs, h0, c0):
    """The LSTM over `xs` from `(h0, c0)`. **Returns:** `(hs, (h_T, c_T))`.

    The forward loop runs outside differentiation; `_through_time` carries the
    gradient back through the recurrence to the pre-activations `z`, and `z` is
    written here as ordinary matmuls of the inputs and the (constant) previous
    states by the weights. So JAX forms the weight, bias and input gradients
    itself, and under `jax.vmap` over examples the weight gradient is one matmul
    contracting over time and examples together (a per-example product, summed
    afterwards, is what a backward written inside the VJP would get). XLA drops the
    forward value of `z`, which nothing reads.
    """
    stop = lax.stop_gradient
    hs, cs, acts = stop(_forward(weight_ih, weight_hh, bias, xs, h0, c0))
    h_prev = jnp.concatenate([stop(h0)[None], hs[:-1]])
    w_h = weight_hh
    if bias is not None:  # the bias as a column of ones beside h: one matmul for both
        h_prev = jnp.concatenate(
            [h_prev, jnp.ones(h_prev.shape[:-1] + (1,), h_prev.dtype)], -1)
        w_h = jnp.concatenate([weight_hh, bias[:, None]], axis=1)
    z = h_prev @ w_h.T + xs @ weight_ih.T
    return _through_time(z, stop(weight_hh), hs, cs, acts, h0, c0)


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

    `cell(carry, x)` is one step; `cell.run_inputs(carry, xs)` is the same step over a
    whole sequence with a written-out backward pass, which `RNN` runs when there is no
    mask.

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

    def run_inputs(self, carry, xs, *, reverse: bool = False):
        """The cell over a whole sequence of raw inputs `xs`, shape `(time, input)` or
        `(time, batch, input)`, from `carry`: the values and gradients of scanning
        `cell(carry, x)`, with a written-out backward pass.

        **Arguments:**

        - `carry`: the initial `(h, c)`.
        - `xs`: the inputs, time first.
        - `reverse`: run from the last step to the first; `ys` stay in input order.

        **Returns:** `(carry, ys)`, as `jaxode.scan` does.

        **Raises:** `ValueError` when the last axis of `xs` is not `input_size`.
        """
        _check_input(self, xs)
        if reverse:
            xs = xs[::-1]
        ys, carry = _layer(self.weight_ih, self.weight_hh, self.bias, xs, *carry)
        return carry, (ys[::-1] if reverse else ys)

    def recur(self, carry, px):
        """The recurrent half of the step, from the input projection `px`."""
        h, c = carry
        scale, offset = _gate_scales(self.hidden_size, px.dtype)
        h, c, _ = _step((px + h @ self.weight_hh.T) * scale, c, scale, offset)
        return (h, c), h
