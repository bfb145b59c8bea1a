"""Adaptive Tsit5 over many initial conditions: jaxode vs raw diffrax vs scipy.

The two-species competition model on t in [0, 100], 101 save points, rtol = atol = 1e-6,
float64 on every side. jaxode and diffrax solve all members in one vmapped call;
scipy's `solve_ivp` (RK45, the same Dormand–Prince family) loops over members.
Reported per trajectory. Run: `python benchmarks/adaptive.py [--quick]`.
"""

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.integrate  # noqa: E402

import jaxode as jo  # noqa: E402
from _timing import machine, measure, report  # noqa: E402
from jaxode.data import COMPETITION_PARAMS, competition  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, two rounds")
    parser.add_argument("--members", type=int, default=1000)
    ns = parser.parse_args()
    members, scipy_members, rounds = (100, 5, 2) if ns.quick else (ns.members, 20, 30)
    rtol = atol = 1e-6

    rng = np.random.default_rng(0)
    y0s_np = rng.uniform(50, 300, size=(members, 2))
    y0s = jnp.asarray(y0s_np)
    args = {k: jnp.float64(v) for k, v in COMPETITION_PARAMS.items()}
    ts = jnp.linspace(0.0, 100.0, 101)

    @jax.jit
    def jaxode_run(y0s):
        run = lambda y0: jo.solve(competition, y0, ts, args, rtol=rtol, atol=atol).ys  # noqa: E731
        return jax.vmap(run)(y0s)

    @jax.jit
    def diffrax_run(y0s):
        def run(y0):
            return diffrax.diffeqsolve(
                diffrax.ODETerm(competition), diffrax.Tsit5(), t0=ts[0], t1=ts[-1],
                dt0=None, y0=y0, args=args, saveat=diffrax.SaveAt(ts=ts),
                stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                max_steps=4096).ys

        return jax.vmap(run)(y0s)

    p = COMPETITION_PARAMS

    def scipy_f(t, y):
        x, z = y
        return [p["r1"] * x * (1 - p["iN1"] * x) - p["a1"] * x * z,
                p["r2"] * z * (1 - p["iN2"] * z) - p["a2"] * x * z]

    t_eval = np.asarray(ts)

    def scipy_run():
        return np.stack([
            scipy.integrate.solve_ivp(scipy_f, (0.0, 100.0), y0, method="RK45",
                                      t_eval=t_eval, rtol=rtol, atol=atol).y.T
            for y0 in y0s_np[:scipy_members]])

    times = measure({
        "jaxode.solve(tsit5), vmap": lambda: jaxode_run(y0s),
        "diffrax Tsit5, vmap": lambda: diffrax_run(y0s),
        "scipy solve_ivp RK45, loop": scipy_run,
    }, rounds=rounds)
    for key, n in [("jaxode.solve(tsit5), vmap", members), ("diffrax Tsit5, vmap", members),
                   ("scipy solve_ivp RK45, loop", scipy_members)]:
        times[key]["best"] /= n  # per trajectory; the first call stays a total
    a, b, c = np.asarray(jaxode_run(y0s)), np.asarray(diffrax_run(y0s)), scipy_run()
    assert np.allclose(a, b, rtol=1e-10), "jaxode and diffrax disagree"
    assert np.allclose(a[:scipy_members], c, rtol=1e-3), "jaxode and scipy disagree"

    print(f"Adaptive Tsit5: {members} members (scipy: {scipy_members}), rtol = atol = "
          f"{rtol:g}, float64; {machine()}; jax {jax.__version__}")
    report("best per trajectory; first call = compile / warm-up of the whole batch",
           times, baseline="scipy solve_ivp RK45, loop")
    j = times["jaxode.solve(tsit5), vmap"]["best"]
    d = times["diffrax Tsit5, vmap"]["best"]
    s = times["scipy solve_ivp RK45, loop"]["best"]
    print(f"\n| adaptive: Tsit5, {members} ICs, rtol=atol=1e-6, f64 | "
          f"{1e6 * j:.1f} µs/traj | scipy {1e6 * s:.0f} µs/traj; raw diffrax "
          f"{1e6 * d:.1f} µs/traj ({j / d:.2f}x its time) | **{s / j:.0f}x** faster than "
          f"scipy |")


if __name__ == "__main__":
    main()
