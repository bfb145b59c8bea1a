"""Simulate the two-species competition model three ways: as an Euler RNN
(1000 steps of 0.1), adaptively with Tsit5, and as a phase portrait.

    python examples/simulate.py [--out DIR] [--quick]
"""

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxode as jo
from jaxode import plot
from jaxode.data import COMPETITION_PARAMS, competition

jax.config.update("jax_enable_x64", True)

parser = argparse.ArgumentParser()
parser.add_argument("--out", type=Path, default=Path("."))
parser.add_argument("--quick", action="store_true", help="fewer steps")
cli = parser.parse_args()
cli.out.mkdir(parents=True, exist_ok=True)

args = {k: jnp.asarray(v) for k, v in COMPETITION_PARAMS.items()}
y0 = jnp.array([100.0, 150.0])
steps = 200 if cli.quick else 1000
ts = jnp.linspace(0.0, 0.1 * steps, steps + 1)

# An explicit Euler step y + h f(t, y) is an RNN cell with no weights: solve scans it.
rnn = jo.solve(competition, y0, ts, args, solver="euler")
ada = jo.solve(competition, y0, ts, args, solver="tsit5", rtol=1e-8, atol=1e-8)
gap = float(jnp.max(jnp.abs(rnn.ys - ada.ys)))
print(f"t = {float(ts[-1]):g}: Euler RNN {np.round(rnn.ys[-1], 2)}, "
      f"Tsit5 {np.round(ada.ys[-1], 2)} ({int(ada.stats['num_steps'])} steps); "
      f"largest gap over the run {gap:.2f}")

fig = plot.trajectories([ts, ts], [rnn.ys, ada.ys],
                        labels=["x (Euler)", "y (Euler)", "x (Tsit5)", "y (Tsit5)"],
                        ylabel="population")
fig.savefig(cli.out / "simulate_example.png", dpi=100)

fig = plot.phase_portrait(competition, args, xlim=(0, 550), ylim=(0, 400),
                          trajectories=ada.ys[None], labels=("x", "y"))
fig.savefig(cli.out / "simulate_example_phase.png", dpi=100)
print(f"saved {cli.out / 'simulate_example.png'} and "
      f"{cli.out / 'simulate_example_phase.png'}")
