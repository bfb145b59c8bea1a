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


def loss(flow, _, key):  # no data set: every step draws 256 fresh points
    return -flow.log_prob(jaxode.data.toy2d(ns.data, 256, key)).mean()


def show(step, flow, nll):
    if (step - 1) % 100 == 0 or step == ns.steps:
        print(f"step {step - 1:4d}  negative log-likelihood {nll:.3f}")


flow, history = jo.train(flow, loss, None, optimizer=optax.adam(3e-3),
                         steps=ns.steps, key=data_key, loss_key=True, callback=show,
                         progress=False)
samples = flow.sample(jr.PRNGKey(1), 1000)
print(f"sample mean {samples.mean(0)}, sample std {samples.std(0)}")
