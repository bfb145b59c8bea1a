"""Forecast a noisy sine with an LSTM: one step ahead and 80 steps autoregressively.

    python examples/sine.py [--steps 1000]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxode as jo
from jaxode.data import noisy_sine, sliding_windows

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=1000)
steps = parser.parse_args().steps

# 400 points of sin(x) + 0.2 U(0, 1); train on the first 320, windows of 10 -> next
x, y = noisy_sine(400, 36.0, 0.2, seed=0)
y = y[:, None].astype(np.float32)  # (time, features)
train_x, train_y = sliding_windows(y[:320], 10)  # (310, 10, 1), (310, 1)

k_cell, k_head, k_train = jax.random.split(jax.random.PRNGKey(0), 3)
model = jo.nn.Forecaster(jo.nn.LSTMCell(1, 12, key=k_cell), window=10, key=k_head)


def loss_fn(model, batch):
    xs, ys = batch  # the model reads time-major windows: (window, batch, features)
    return jnp.mean((model(jnp.swapaxes(xs, 0, 1)) - ys) ** 2)


model, history = jo.train(model, loss_fn, (train_x, train_y),
                          optimizer=optax.adam(optax.cosine_decay_schedule(1e-2, steps)),
                          steps=steps, key=k_train)

test_x, test_y = sliding_windows(y[310:], 10)  # true windows ending before 320..399
single = model(jnp.swapaxes(test_x, 0, 1))
rollout = jo.forecast(model, y[:320], horizon=80)  # one compiled scan over 80 steps
print(f"final training loss {history.loss[-1]:.5f}")
print(f"single-step RMSE    {float(jnp.sqrt(jnp.mean((single - test_y) ** 2))):.4f}")
print(f"80-step RMSE        {float(jnp.sqrt(jnp.mean((rollout - y[320:]) ** 2))):.4f}")
