"""Backprop through time by hand vs jax.grad, truncation, and gradient flow.

    python examples/bptt.py [--length 100]
"""

import argparse

import jax
import jax.numpy as jnp

import jaxode as jo

jax.config.update("jax_enable_x64", True)
parser = argparse.ArgumentParser()
parser.add_argument("--length", type=int, default=100)
T = parser.parse_args().length

# an Elman network: s_t = sigmoid(U x_t + W s_{t-1}), o_t = softmax(V s_t)
kU, kW, kV, kx, ky, kc = jax.random.split(jax.random.PRNGKey(0), 6)
H, I, O = 16, 8, 8
params = {"U": jax.random.normal(kU, (H, I)) / 4, "W": jax.random.normal(kW, (H, H)) / 4,
          "V": jax.random.normal(kV, (O, H)) / 4}
xs = jax.nn.one_hot(jax.random.randint(kx, (T,), 0, I), I)
ys = jax.nn.one_hot(jax.random.randint(ky, (T,), 0, O), O)

hand = jo.bptt.elman_grads(params, xs, ys)                       # no jax.grad inside
auto = jax.grad(jo.bptt.elman_loss)(params, xs, ys)
print("full BPTT, max |hand - autodiff|:",
      max(float(jnp.max(jnp.abs(hand[k] - auto[k]))) for k in hand))
truncated = jo.bptt.elman_grads(params, xs, ys, window=10)        # look back 10 steps
same = jo.bptt.elman_grads_autodiff(params, xs, ys, window=10)
print("window=10,  max |hand - autodiff|:",
      max(float(jnp.max(jnp.abs(truncated[k] - same[k]))) for k in hand))

# how the gradient of a loss on the last state decays going back in time
for name, cell in {
    "sigmoid RNN": jo.nn.RNNCell(I, H, activation="sigmoid", key=kc),
    "LSTM, forget bias 1": jo.nn.LSTMCell(I, H, forget_bias=1.0, key=kc),
}.items():
    print(f"{name:>20}:", jo.bptt.gradient_flow(cell, xs))
