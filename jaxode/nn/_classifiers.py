"""The image classifiers of the ODE-Net comparison (Chen et al. 2018, section 3):
`ResNet` (6 residual blocks), `RKNet` (one block integrated by fixed-step Runge–Kutta),
`ODENet` (one block integrated adaptively, a `NeuralODE`) and `MLP` (one hidden layer).

The three convolutional models share the paper's shape: a down-sampling stem, the
residual part, then normalisation, ReLU, global average pooling and a linear head.

Layout and speed: images are channels-last `(batch, height, width, channels)` and every
3×3 convolution is written as im2col (nine shifted views concatenated on the channel
axis) followed by one matrix product. On the CPU backend a `lax.conv` inside a loop —
and an adaptive solve is a loop — runs an order of magnitude slower than the same
convolution outside it (jax issue 12868); the matmul form does not have that problem.

All models act on a whole batch: an ODE-Net solves one ODE for the batch (the state is
the batch of feature maps), so its step sizes and NFE are per batch, as in the paper.
"""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._engine import Config, configure, solve_with
from ._neural_ode import NeuralODE

__all__ = ["Conv3x3", "GroupNorm", "ODENet", "ResNet", "RKNet", "MLP", "count_params"]


def count_params(model: Any) -> int:
    """The number of trainable scalars: every inexact array leaf of `model`."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    return int(sum(leaf.size for leaf in leaves))


def _as_images(x: Array) -> Array:
    """`(batch, H, W)` or `(batch, H, W, C)` -> channels-last floating images."""
    x = jnp.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(
            f"images must have shape (batch, height, width) or (batch, height, width, "
            f"channels), got shape {tuple(x.shape)}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _im2col(x: Float[Array, "b h w c"]) -> Float[Array, "b h w 9c"]:
    """The 3×3 neighbourhood of every pixel (zero padding) on the channel axis."""
    h, w = x.shape[1], x.shape[2]
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    views = [p[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)]
    return jnp.concatenate(views, axis=-1)


class Conv3x3(eqx.Module):
    """3×3 convolution, zero padding, channels-last, as im2col plus one matmul.

    `weight` has shape `(9 * in_channels, out_channels)` (row `(3i + j) * in + c` is
    tap `(i, j)` of input channel `c`), `bias` shape `(out_channels,)`. `stride=2`
    keeps every other row and column (the down-sampling convolution).
    """

    weight: Array
    bias: Array
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    stride: int = eqx.field(static=True)

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1,
                 key: PRNGKeyArray):
        if stride not in (1, 2):
            raise ValueError(f"`stride` must be 1 or 2, got {stride!r}.")
        fan_in = 9 * in_channels
        bound = 1.0 / math.sqrt(fan_in)
        wkey, bkey = jr.split(key)
        self.weight = jr.uniform(wkey, (fan_in, out_channels), minval=-bound,
                                 maxval=bound)
        self.bias = jr.uniform(bkey, (out_channels,), minval=-bound, maxval=bound)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b h2 w2 o"]:
        if x.shape[-1] != self.in_channels:
            raise ValueError(
                f"Conv3x3 expects {self.in_channels} input channels, got input of "
                f"shape {tuple(x.shape)}.")
        cols = _im2col(x)
        if self.stride == 2:
            cols = cols[:, ::2, ::2, :]
        return cols @ self.weight.astype(x.dtype) + self.bias.astype(x.dtype)


class GroupNorm(eqx.Module):
    """Group normalisation over `(height, width, channels in a group)`, channels-last,
    with a learned per-channel scale and shift."""

    scale: Array
    shift: Array
    groups: int = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    def __init__(self, channels: int, groups: int | None = None, eps: float = 1e-5):
        groups = min(32, channels) if groups is None else groups
        if channels % groups:
            raise ValueError(
                f"`groups`={groups} must divide the number of channels {channels}.")
        self.scale = jnp.ones((channels,))
        self.shift = jnp.zeros((channels,))
        self.groups = groups
        self.eps = eps

    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b h w c"]:
        b, h, w, c = x.shape
        g = x.reshape(b, h, w, self.groups, c // self.groups)
        mean = g.mean(axis=(1, 2, 4), keepdims=True)
        var = jnp.square(g - mean).mean(axis=(1, 2, 4), keepdims=True)
        g = (g - mean) * jax.lax.rsqrt(var + self.eps)
        return g.reshape(b, h, w, c) * self.scale + self.shift


class _Block(eqx.Module):
    """norm → ReLU → conv → norm → ReLU → conv: the residual function `f(x)` of one
    ResNet block, or with `time=True` the ODE vector field `f(t, x)`: the time enters
    each convolution as one extra constant channel, and a last norm keeps the speed
    of the flow of order one (as in the paper's code)."""

    norm1: GroupNorm
    conv1: Conv3x3
    norm2: GroupNorm
    conv2: Conv3x3
    norm3: GroupNorm | None
    time: bool = eqx.field(static=True)

    def __init__(self, channels: int, *, time: bool, key: PRNGKeyArray):
        k1, k2 = jr.split(key)
        extra = 1 if time else 0
        self.norm1 = GroupNorm(channels)
        self.conv1 = Conv3x3(channels + extra, channels, key=k1)
        self.norm2 = GroupNorm(channels)
        self.conv2 = Conv3x3(channels + extra, channels, key=k2)
        self.norm3 = GroupNorm(channels) if time else None
        self.time = time

    def _with_time(self, t, x):
        if not self.time:
            return x
        plane = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:-1] + (1,))
        return jnp.concatenate([x, plane], axis=-1)

    def __call__(self, t, x, args=None):
        x = self.conv1(self._with_time(t, jax.nn.relu(self.norm1(x))))
        x = self.conv2(self._with_time(t, jax.nn.relu(self.norm2(x))))
        return x if self.norm3 is None else self.norm3(x)


class _Stem(eqx.Module):
    """3×3 conv to `channels`, then norm → ReLU → 3×3 conv with stride 2 (halves the
    image side)."""

    conv1: Conv3x3
    norm: GroupNorm
    conv2: Conv3x3

    def __init__(self, in_channels: int, channels: int, *, key: PRNGKeyArray):
        k1, k2 = jr.split(key)
        self.conv1 = Conv3x3(in_channels, channels, key=k1)
        self.norm = GroupNorm(channels)
        self.conv2 = Conv3x3(channels, channels, stride=2, key=k2)

    def __call__(self, x):
        return self.conv2(jax.nn.relu(self.norm(self.conv1(x))))


class _Head(eqx.Module):
    """norm → ReLU → global average pooling → linear to the class logits."""

    norm: GroupNorm
    linear: eqx.nn.Linear

    def __init__(self, channels: int, classes: int, *, key: PRNGKeyArray):
        self.norm = GroupNorm(channels)
        self.linear = eqx.nn.Linear(channels, classes, key=key)

    def __call__(self, x):
        pooled = jax.nn.relu(self.norm(x)).mean(axis=(1, 2))
        return pooled @ self.linear.weight.T + self.linear.bias


def _check_sizes(channels: int, classes: int, in_channels: int) -> None:
    for name, v in (("channels", channels), ("classes", classes),
                    ("in_channels", in_channels)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {v!r}.")


class ResNet(eqx.Module):
    """Stem, `blocks` residual blocks `x <- x + f_k(x)`, head.

    A ResNet is the explicit Euler method with step 1 on `dx/dt = f(t, x)` whose
    field changes at every integer time: six blocks, six Euler steps, six sets of
    weights.

    **Arguments:** `channels` (feature maps, default 32), `blocks` (default 6),
    `classes` (default 10), `in_channels` (default 1), `key`.

    **Call:** `model(images)` with images `(batch, H, W)` or `(batch, H, W, C)`
    returns logits `(batch, classes)`.
    """

    stem: _Stem
    blocks: tuple[_Block, ...]
    head: _Head

    def __init__(self, channels: int = 32, *, blocks: int = 6, classes: int = 10,
                 in_channels: int = 1, key: PRNGKeyArray):
        _check_sizes(channels, classes, in_channels)
        if not isinstance(blocks, int) or blocks < 1:
            raise ValueError(f"`blocks` must be a positive integer, got {blocks!r}.")
        keys = jr.split(key, blocks + 2)
        self.stem = _Stem(in_channels, channels, key=keys[0])
        self.blocks = tuple(_Block(channels, time=False, key=k) for k in keys[1:-1])
        self.head = _Head(channels, classes, key=keys[-1])

    def __call__(self, images: Array) -> Array:
        x = self.stem(_as_images(images))
        for block in self.blocks:
            x = x + block(None, x)
        return self.head(x)


class ODENet(eqx.Module):
    """Stem, ONE time-dependent block integrated adaptively over `[0, t1]` (a
    `NeuralODE`), head. The depth is the number of function evaluations the solver
    chooses; the weights are those of a single block.

    **Arguments:** `channels` (default 32), `classes` (10), `in_channels` (1),
    `t1` (1.0), `solver` (`"dopri5"`), `rtol`, `atol` (1e-3), `adjoint`
    (`"backsolve"`), `max_steps`, `count_nfe` (False; see `NeuralODE`), `key`.

    **Call:** `model(images, *, rtol=None, atol=None)` -> logits `(batch, classes)`;
    the tolerances may be overridden per call without recompiling.
    With `count_nfe=True`, `model.ode.counter` holds the forward/backward evaluation
    counts.
    """

    stem: _Stem
    ode: NeuralODE
    head: _Head

    def __init__(self, channels: int = 32, *, classes: int = 10, in_channels: int = 1,
                 t1: float = 1.0, solver: Any = "dopri5", rtol: float = 1e-3,
                 atol: float = 1e-3, adjoint: Any = "backsolve", max_steps: int = 256,
                 count_nfe: Any = False, key: PRNGKeyArray):
        _check_sizes(channels, classes, in_channels)
        k1, k2, k3 = jr.split(key, 3)
        self.stem = _Stem(in_channels, channels, key=k1)
        self.ode = NeuralODE(_Block(channels, time=True, key=k2), t1=t1, solver=solver,
                             rtol=rtol, atol=atol, adjoint=adjoint,
                             max_steps=max_steps, count_nfe=count_nfe)
        self.head = _Head(channels, classes, key=k3)

    def __call__(self, images: Array, *, rtol=None, atol=None) -> Array:
        x = self.stem(_as_images(images))
        return self.head(self.ode(x, rtol=rtol, atol=atol))


class RKNet(eqx.Module):
    """Stem, ONE time-dependent block integrated over `[0, t1]` by a fixed-step
    Runge–Kutta method (`steps` steps of `solver`, default RK4), backpropagating
    through the steps, head. Same parameters as the `ODENet`; memory grows with the
    number of steps.

    **Call:** `model(images)` -> logits `(batch, classes)`.
    """

    stem: _Stem
    block: _Block
    head: _Head
    t1: float = eqx.field(static=True)
    steps: int = eqx.field(static=True)
    config: Config = eqx.field(static=True)

    def __init__(self, channels: int = 32, *, classes: int = 10, in_channels: int = 1,
                 t1: float = 1.0, steps: int = 2, solver: Any = "rk4",
                 key: PRNGKeyArray):
        _check_sizes(channels, classes, in_channels)
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"`steps` must be a positive integer, got {steps!r}.")
        if not float(t1) > 0:
            raise ValueError(f"`t1` must be > 0, got {t1!r}.")
        k1, k2, k3 = jr.split(key, 3)
        self.stem = _Stem(in_channels, channels, key=k1)
        self.block = _Block(channels, time=True, key=k2)
        self.head = _Head(channels, classes, key=k3)
        self.t1 = float(t1)
        self.steps = steps
        self.config = configure(solver=solver)

    def __call__(self, images: Array) -> Array:
        x = self.stem(_as_images(images))
        ts = jnp.linspace(0.0, self.t1, self.steps + 1)
        ys = solve_with(self.config, _apply_block, x, ts, self.block).ys
        return self.head(ys[-1])


def _apply_block(t, x, block):
    return block(t, x)


class MLP(eqx.Module):
    """Flattened image → `hidden` ReLU units → logits: the paper's 1-layer MLP
    baseline (hidden = 300).

    **Call:** `model(images)` with images `(batch, ...)` -> logits `(batch, classes)`.
    """

    hidden: eqx.nn.Linear
    out: eqx.nn.Linear

    def __init__(self, in_features: int = 64, hidden: int = 300, classes: int = 10, *,
                 key: PRNGKeyArray):
        _check_sizes(hidden, classes, in_features)
        k1, k2 = jr.split(key)
        self.hidden = eqx.nn.Linear(in_features, hidden, key=k1)
        self.out = eqx.nn.Linear(hidden, classes, key=k2)

    def __call__(self, images: Array) -> Array:
        x = jnp.asarray(images)
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.hidden.in_features:
            raise ValueError(
                f"MLP expects {self.hidden.in_features} features per image, got "
                f"images of shape {tuple(jnp.shape(images))}.")
        h = jax.nn.relu(x @ self.hidden.weight.T + self.hidden.bias)
        return h @ self.out.weight.T + self.out.bias
