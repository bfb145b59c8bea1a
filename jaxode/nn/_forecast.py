"""`Forecaster` (a window of a series -> its next value) and `forecast` (many steps)."""

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._rnn import RNN

__all__ = ["Forecaster", "forecast"]


class Forecaster(eqx.Module):
    """Predict the next value of a series from its last `window` values.

    The window runs through a recurrent model from the zero carry, and a linear head
    maps the last output to the next value: `ŷ_{t+1} = W h_t + b`.

    **Arguments:**

    - `cell`: any cell (`RNNCell`, `LSTMCell`, `GRUCell`) or an `RNN`; its
      `input_size` is the number of features of the series.
    - `window`: the number of past values the model reads.
    - `key`: PRNG key for the head.

    **Call:** `model(xs)` with `xs` of shape `(window, features)` or `(window, batch,
    features)` returns the prediction, shape `(features,)` or `(batch, features)`.
    """

    rnn: RNN
    weight: Float[Array, "features hidden"]
    bias: Float[Array, " features"]
    window: int = eqx.field(static=True)

    def __init__(self, cell, *, window: int, key: PRNGKeyArray):
        if isinstance(window, bool) or int(window) != window or window < 1:
            raise ValueError(f"`window` must be an integer >= 1, got {window!r}.")
        self.rnn = cell if isinstance(cell, RNN) else RNN(cell)
        self.window = int(window)
        features, hidden = self.rnn.input_size, self.rnn.output_size
        dtype = self.rnn.cells[0].weight_hh.dtype
        bound = 1 / hidden**0.5
        k1, k2 = jax.random.split(key)
        self.weight = jax.random.uniform(k1, (features, hidden), dtype, -bound, bound)
        self.bias = jax.random.uniform(k2, (features,), dtype, -bound, bound)

    @property
    def features(self) -> int:
        return self.rnn.input_size

    def __call__(self, xs):
        if jnp.ndim(xs) not in (2, 3) or jnp.shape(xs)[0] != self.window:
            raise ValueError(
                f"`xs` must have shape ({self.window}, {self.features}) or "
                f"({self.window}, batch, {self.features}) (window, [batch,] features), "
                f"got shape {tuple(jnp.shape(xs))}.")
        ys, _ = self.rnn(xs)
        return ys[-1] @ self.weight.T + self.bias


@eqx.filter_jit
def _forecast(model, history, horizon):
    window = model.window

    def step(buf, _):
        y = model(buf)
        return jnp.concatenate([buf[1:], y[None].astype(buf.dtype)]), y

    _, ys = lax.scan(step, history[-window:], length=horizon)
    return ys


def forecast(model, history, horizon: int):
    """Autoregressive multi-step prediction: each prediction becomes the next input.

    Step `j` feeds the model the last `model.window` values, where the most recent
    `j` of them are the model's own earlier predictions. All `horizon` steps run in
    one compiled `lax.scan`.

    **Arguments:**

    - `model`: a `Forecaster`, or any callable module with an integer `window`
      attribute mapping `(window, [batch,] features)` to `([batch,] features)`.
    - `history`: the known series, shape `(n, [batch,] features)` with
      `n >= model.window`; only its last `window` values are used.
    - `horizon`: number of future steps, an integer >= 1.

    **Returns:** predictions of shape `(horizon, [batch,] features)`.

    **Raises:** `ValueError` for `horizon < 1` or a history that is too short or of
    the wrong rank.
    """
    if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1:
        raise ValueError(f"`horizon` must be an integer >= 1, got {horizon!r}.")
    window = getattr(model, "window", None)
    if not isinstance(window, int):
        raise ValueError(
            f"`model` needs an integer `window` attribute (like a Forecaster), got "
            f"{type(model).__name__}.")
    history = jnp.asarray(history)
    if history.ndim not in (2, 3) or history.shape[0] < window:
        raise ValueError(
            f"`history` must have shape (n, [batch,] features) with n >= window="
            f"{window}, got shape {history.shape}.")
    return _forecast(model, history, int(horizon))
