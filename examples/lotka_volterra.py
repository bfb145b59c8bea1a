"""Recover the six parameters of a two-species competition model from seven
observations, with 95 % confidence intervals.

    python examples/lotka_volterra.py [--steps 2000] [--out lotka_volterra.png]
"""

import argparse

import jax
import numpy as np

import jaxode
from jaxode.data import COMPETITION_PARAMS, competition, competition_observations

jax.config.update("jax_enable_x64", True)

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=2000)
parser.add_argument("--out", default="lotka_volterra.png")
cli = parser.parse_args()

# dx/dt = r1 x (1 - iN1 x) - a1 x y,  dy/dt = r2 y (1 - iN2 y) - a2 x y
ts, ys = competition_observations()  # t = 0, 10, 15, 30, 36, 40, 42; shape (7, 2)
guess = {"r1": 0.1, "r2": 0.1, "a1": 1e-3, "a2": 1e-3, "iN1": 1e-3, "iN2": 1e-3}

res = jaxode.fit(
    competition, guess, ts=ts, ys=ys, y0=ys[0],
    positive=True,                     # log space: 1e-4 and 0.3 train at one pace
    solver=jaxode.Euler(), dt=0.1,     # the RNN that made the data; or "tsit5"
    steps=cli.steps,
)
print(res)  # estimate ± standard error per parameter

for name, (lo, hi) in res.confint(0.95).items():
    print(f"{name:>4}: true {COMPETITION_PARAMS[name]:.4g}, "
          f"95 % interval [{float(lo):.4g}, {float(hi):.4g}]")

from jaxode import plot  # noqa: E402  (matplotlib only for the figure)

t = np.linspace(0, 60, 301)
plot.fit_curves(t, res.predict(t), ts, ys, labels=["x", "y"]).savefig(cli.out)
print(f"saved {cli.out}")
