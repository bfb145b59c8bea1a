"""`jaxode demo simulate`: the competition model solved as an RNN and adaptively."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import Euler, ensemble, plot, solve
from . import Target, report
from ..data import COMPETITION_PARAMS, COMPETITION_Y0, competition, competition_observations


def run(out: Path, quick: bool = False) -> dict:
    """Solve from [100, 150] with 1000 Euler steps of 0.1 (the model as an RNN) and
    with Tsit5; print both at the observation times; save the trajectories. Then solve
    an ensemble of initial states (one sharded program) and save the phase portrait.
    `quick` uses fewer ensemble members and a looser tolerance. Targets: the Euler RNN
    reproduces the observations (whole animals) to within 0.6, and every ensemble
    member ends within 2 of the coexistence equilibrium."""
    jax.config.update("jax_enable_x64", True)
    args = {k: jnp.asarray(v) for k, v in COMPETITION_PARAMS.items()}
    y0 = jnp.asarray(COMPETITION_Y0)
    steps = 1000
    ts = jnp.linspace(0.0, 0.1 * steps, steps + 1)
    rnn = solve(competition, y0, ts, args, solver=Euler())
    ada = solve(competition, y0, ts, args, solver="tsit5", rtol=1e-8, atol=1e-8)

    t_obs, y_obs = competition_observations()
    idx = np.rint(t_obs / 0.1).astype(int)
    print("Two-species competition, y0 = [100, 150]; "
          f"Euler RNN: {steps} steps of h = 0.1; Tsit5: rtol = atol = 1e-8 "
          f"({int(ada.stats['num_steps'])} steps, {int(ada.stats['nfe'])} f-evals)")
    print(f"{'t':>5} | {'Euler x':>9} {'Euler y':>9} | {'Tsit5 x':>9} {'Tsit5 y':>9}"
          f" | {'observed':>12}")
    worst = float(np.max(np.abs(np.asarray(rnn.ys)[idx] - y_obs)))
    for t, i, obs in zip(t_obs, idx, y_obs):
        e, a = np.asarray(rnn.ys[i]), np.asarray(ada.ys[i])
        print(f"{t:5.0f} | {e[0]:9.2f} {e[1]:9.2f} | {a[0]:9.2f} {a[1]:9.2f} | "
              f"{obs[0]:5.0f} {obs[1]:5.0f}")
    fig = plot.trajectories(
        [np.asarray(ts), np.asarray(ts)], [rnn.ys, ada.ys],
        labels=["x (Euler RNN, h=0.1)", "y (Euler RNN, h=0.1)", "x (Tsit5)", "y (Tsit5)"],
        observations=(t_obs, y_obs),
        title="Two-species competition: the Euler RNN and an adaptive solve",
        ylabel="population",
    )
    path = Path(out) / "simulate.png"
    fig.savefig(path, dpi=120)
    print(f"saved {path}")

    # Many initial states at once: one vmapped, device-sharded program.
    per_edge = 3 if quick else 6
    edge = np.linspace(0.05, 0.95, per_edge)
    starts = np.concatenate([
        np.stack([edge * 550, np.full(per_edge, 5.0)], -1),    # few y
        np.stack([np.full(per_edge, 5.0), edge * 400], -1),    # few x
        np.stack([edge * 550, np.full(per_edge, 395.0)], -1),  # crowded y
        np.stack([np.full(per_edge, 545.0), edge * 400], -1),  # crowded x
    ])
    tol = 1e-6 if quick else 1e-9
    ens = ensemble(competition, starts, jnp.linspace(0.0, 150.0, 301), args,
                   rtol=tol, atol=tol)
    eq = np.array([375.0, 250.0])  # r1(1 - x/N1) = a1 y and r2(1 - y/N2) = a2 x
    end = np.asarray(ens.ys[:, -1])
    dist = np.linalg.norm(end - eq, axis=-1)
    print(f"ensemble: {len(starts)} initial states on {len(jax.devices())} "
          f"device(s), Tsit5 rtol = atol = {tol:g}; median {int(np.median(ens.stats['num_steps']))} "
          f"steps per member")
    print(f"at t = 150 every member is within {dist.max():.2f} of the coexistence "
          f"equilibrium (x, y) = (375, 250)")
    fig = plot.phase_portrait(
        competition, args, xlim=(0, 550), ylim=(0, 400), trajectories=ens.ys,
        labels=("species x", "species y"),
        title="Competition model: trajectories from the edges meet at (375, 250)",
    )
    path = Path(out) / "simulate_phase.png"
    fig.savefig(path, dpi=120)
    print(f"saved {path}")
    targets = report([
        Target("Euler RNN vs the rounded observations, max |difference|", worst, "<=",
               0.6),
        Target("ensemble: largest distance from (375, 250) at t = 150",
               float(dist.max()), "<=", 2.0),
    ])
    return {"euler": rnn, "tsit5": ada, "ensemble": ens, "targets": targets}
