"""Fit a continuous normalising flow to a toy 2-D density by maximum likelihood.

    python examples/cnf.py                 # 500 steps on eight Gaussians
    python examples/cnf.py --steps 3       # a smoke run
"""

import argparse

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import optax

import jaxode as jo
import jaxode.data

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=500)
parser.add_argument("--data", default="8gaussians", choices=jaxode.data.TOY2D)
ns = parser.parse_args()


class Field(eqx.Module):
    """dz/dt = MLP([z, t])."""

    mlp: eqx.nn.MLP

    def __call__(self, t, z, args):
        return self.mlp(jnp.concatenate([z, jnp.reshape(t, (1,))]))


key, data_key = jr.split(jr.PRNGKey(0))
field = Field(eqx.nn.MLP(3, 2, 64, 2, activation=jnp.tanh, key=key))
flow = jo.nn.CNF(field, dim=2, trace="exact", rtol=1e-4, atol=1e-4)
optimizer = optax.adam(3e-3)
opt_state = optimizer.init(eqx.filter(flow, eqx.is_inexact_array))


@eqx.filter_jit
def step(flow, opt_state, key):
    x = jaxode.data.toy2d(ns.data, 256, key)
    nll, grads = eqx.filter_value_and_grad(lambda f: -f.log_prob(x).mean())(flow)
    updates, opt_state = optimizer.update(grads, opt_state)
    return eqx.apply_updates(flow, updates), opt_state, nll


for i in range(ns.steps):
    data_key, sub = jr.split(data_key)
    flow, opt_state, nll = step(flow, opt_state, sub)
    if i % 100 == 0 or i == ns.steps - 1:
        print(f"step {i:4d}  negative log-likelihood {float(nll):.3f}")

samples = flow.sample(jr.PRNGKey(1), 1000)
print(f"sample mean {samples.mean(0)}, sample std {samples.std(0)}")
