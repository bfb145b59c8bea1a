"""`jaxode demo cnf`: a continuous normalising flow learns a toy 2-D density.

Maximum likelihood on samples of a toy density (two moons by default): the flow maps a
standard normal at t = 0 to the data at t = 1 along a learned vector field; the exact
trace of the 2×2 Jacobian gives the log-density. Saves the data, the learned density
and samples of the flow side by side.
"""

import time
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import optax

from .. import plot, train
from . import Target, report
from ..data import toy2d
from ..nn import CNF


class TimeMLP(eqx.Module):
    """`f(t, z, args)`: an MLP on the concatenation `[z, t]`, tanh activations."""

    mlp: eqx.nn.MLP

    def __init__(self, dim: int, width: int, depth: int, *, key):
        self.mlp = eqx.nn.MLP(dim + 1, dim, width, depth, activation=jnp.tanh,
                              key=key)

    def __call__(self, t, z, args):
        return self.mlp(jnp.concatenate([z, jnp.reshape(t, (1,)).astype(z.dtype)]))


def run(out: Path, quick: bool = False, name: str = "moons") -> dict:
    """Train a CNF on `name` from `jaxode.data.toy2d`, print the log-likelihood, save
    data / density / samples."""
    key = jr.PRNGKey(0)
    mkey, dkey, tkey, skey = jr.split(key, 4)
    steps = 60 if quick else 1000
    batch = 256
    flow = CNF(TimeMLP(2, 64, 2, key=mkey), dim=2, t1=1.0, rtol=1e-4, atol=1e-4)
    optimizer = optax.adam(optax.cosine_decay_schedule(5e-3, steps, alpha=0.1))
    test = toy2d(name, 2000, dkey)

    def loss(flow, _, key):  # no data set: every step draws fresh points
        return -flow.log_prob(toy2d(name, batch, key)).mean()

    nll = eqx.filter_jit(lambda f, x: -f.log_prob(x).mean())
    print(f"CNF on {name!r}: MLP field 3->64->64->2 (tanh), exact trace, dopri5 "
          f"rtol=atol=1e-4, {steps} Adam steps of {batch} points")
    print(f"| {'step':>5} | {'train NLL':>9} | {'test NLL':>9} | {'s':>6} |")
    print(f"|{'-' * 7}|{'-' * 11}|{'-' * 11}|{'-' * 8}|")
    start = time.perf_counter()
    every = max(1, steps // 5)
    nlls = []  # test NLL at each printed row

    def show(step, flow, loss):
        if step == 1 or step % every == 0:
            nlls.append(float(nll(flow, test)))
            print(f"| {step:>5} | {loss:>9.3f} | {nlls[-1]:>9.3f} |"
                  f" {time.perf_counter() - start:>6.1f} |", flush=True)

    flow, history = train(flow, loss, None, optimizer=optimizer, steps=steps,
                          key=tkey, loss_key=True, callback=show, progress=False)

    lim, n = 3.0, 90
    grid = jnp.linspace(-lim, lim, n)
    xx, yy = jnp.meshgrid(grid, grid)
    density = jnp.exp(flow.log_prob(jnp.stack([xx.ravel(), yy.ravel()], -1)))
    density = density.reshape(xx.shape)
    cell = (grid[1] - grid[0]) ** 2
    samples = flow.sample(skey, 2000)
    mass = float(density.sum() * cell)
    print(f"probability mass of the learned density inside the plotted square: "
          f"{mass:.3f}")
    fig = plot.densities2d(
        [("data", test), ("learned density", (xx, yy, density)),
         ("samples of the flow", samples)],
        lim=lim, title=f"continuous normalising flow on {name!r} "
        f"(test NLL {float(nll(flow, test)):.3f})")
    path = Path(out) / "cnf.png"
    fig.savefig(path, dpi=120)
    print(f"saved {path}")
    targets = report([
        Target("test NLL after the first step - at the end (nats learned)",
               nlls[0] - nlls[-1], ">=", 0.15),
        Target("learned probability mass inside the plotted square", mass, ">=", 0.9),
    ])
    return {"flow": flow, "losses": history.loss, "targets": targets}
