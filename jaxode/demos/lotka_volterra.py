"""`jaxode demo lotka-volterra`: recover the two-species competition model's six
parameters from seven observations with `jaxode.fit`."""

import time
from pathlib import Path

import jax
import numpy as np

from .. import Euler, fit, plot
from . import Target, report
from ..data import COMPETITION_PARAMS, competition, competition_observations

NAMES = ("r1", "r2", "a1", "a2", "iN1", "iN2")
GUESS = dict(zip(NAMES, (0.1, 0.1, 0.001, 0.001, 0.001, 0.001)))


def run(out: Path, quick: bool = False) -> dict:
    """Fit the Lotka–Volterra competition model to seven observations of both
    species, starting from a guess 3-10x off, with the discretisation that made the
    data (Euler steps of h = 0.1: an RNN without learned weights); print true vs
    recovered vs 95 % interval; save the fit and the loss curve. Targets: the fit
    converges and every true value lies inside its 95 % interval."""
    jax.config.update("jax_enable_x64", True)
    ts, ys = competition_observations()
    steps = 300 if quick else 2000
    start = time.perf_counter()
    res = fit(competition, GUESS, ts=ts, ys=ys, y0=ys[0], positive=True,
              solver=Euler(), dt=0.1, steps=steps)
    seconds = time.perf_counter() - start

    print("Two-species competition (Lotka–Volterra), seven observations at t = "
          + ", ".join(f"{t:g}" for t in ts))
    print(f"jaxode.fit: Euler h = 0.1 (the model as an RNN), {steps} Adam steps in log "
          f"space + Levenberg–Marquardt polish, {seconds:.1f} s including compilation")
    print(f"n = {res.n_obs} observed numbers, p = {res.n_params} parameters, "
          f"{res.dof} degrees of freedom; mean squared residual {res.loss:.4g}; "
          f"converged: {res.converged}")
    ci = res.confint(0.95)
    covered = 0
    print()
    print(f"{'param':<6}{'true':>10}{'guess':>12}{'recovered':>12}{'± stderr':>10}"
          f"{'error':>8}   {'95 % interval':<24}{'covers truth':>12}")
    for name in NAMES:
        true, est = COMPETITION_PARAMS[name], float(res.params[name])
        se = float(res.stderr[name])
        lo, hi = (float(x) for x in ci[name])
        interval = f"[{lo:.4g}, {hi:.4g}]"
        covered += lo <= true <= hi
        print(f"{name:<6}{true:>10.4g}{GUESS[name]:>12.4g}{est:>12.4g}{se:>10.2g}"
              f"{100 * (est - true) / true:>7.1f}%   {interval:<24}"
              f"{'yes' if lo <= true <= hi else 'NO':>12}")
    print("(the data were rounded to whole animals, which alone limits a1 to about "
          "4.5 %)")

    t_plot = np.linspace(0.0, 60.0, 601)
    y_plot = np.asarray(res.predict(t_plot))
    fig = plot.fit_curves(
        t_plot, y_plot, ts, ys, labels=["species x", "species y"],
        title="Competition model fitted to seven observations (jaxode.fit)",
        ylabel="population")
    path = Path(out) / "lotka_volterra.png"
    fig.savefig(path, dpi=120)
    fig = plot.fit_losses(res.losses, polish_start=res.opt_steps,
                          title="jaxode.fit: loss per iteration")
    loss_path = Path(out) / "lotka_volterra_loss.png"
    fig.savefig(loss_path, dpi=120)
    print(f"saved {path} and {loss_path}")
    targets = report([
        Target("fit converged (1 if so)", float(res.converged), ">=", 1),
        Target("true values inside their 95 % intervals", covered, ">=", len(NAMES)),
    ])
    return {"result": res, "seconds": seconds, "targets": targets}
