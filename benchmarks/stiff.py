"""Stiff problems: work against precision for jaxode's stiff solvers and SciPy's.

Robertson (t = 1e11), HIRES (t = 321.8122) and OREGO (t = 360) against the reference
solutions of the Test Set for IVP Solvers (Mazzia et al.), and Van der Pol with
mu = 1000 (t = 2000) against a SciPy Radau solution at rtol 1e-13. float64 on every
side; atol = rtol · (the problem's scale, `atol_per_rtol`). jaxode runs
`jaxode.solve(f, y0, [0, t1], solver=...)` jitted over `y0` and keeps the final state
(the whole output of that call); SciPy gets a plain NumPy right-hand side and its
analytic Jacobian, as its users write them. Error: the largest relative error over
the components of the final state. Time: best of the rounds, the contenders run
alternately; jaxode's compile time is reported apart.

    python benchmarks/stiff.py [--quick] [--controllers]

`--controllers` instead prints the step counts, rejection rates and errors of
Kvaerno5 on Robertson with diffrax's default I controller and with the PI
coefficients jaxode uses for implicit solvers (`jaxode._solve.STIFF_PID`).
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.integrate  # noqa: E402

import jaxode as jo  # noqa: E402
from _timing import machine, measure  # noqa: E402
from jaxode._solve import STIFF_PID  # noqa: E402
from jaxode.data import STIFF_PROBLEMS  # noqa: E402

# ------------------------------------------------- NumPy right-hand sides and Jacobians


def rober_f(t, y):
    y1, y2, y3 = y
    return np.array([-0.04 * y1 + 1e4 * y2 * y3,
                     0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 ** 2, 3e7 * y2 ** 2])


def rober_j(t, y):
    y1, y2, y3 = y
    return np.array([[-0.04, 1e4 * y3, 1e4 * y2],
                     [0.04, -1e4 * y3 - 6e7 * y2, -1e4 * y2],
                     [0.0, 6e7 * y2, 0.0]])


def hires_f(t, y):
    y1, y2, y3, y4, y5, y6, y7, y8 = y
    return np.array([
        -1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007, 1.71 * y1 - 8.75 * y2,
        -10.03 * y3 + 0.43 * y4 + 0.035 * y5, 8.32 * y2 + 1.71 * y3 - 1.12 * y4,
        -1.745 * y5 + 0.43 * y6 + 0.43 * y7,
        -280 * y6 * y8 + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
        280 * y6 * y8 - 1.81 * y7, -280 * y6 * y8 + 1.81 * y7])


def hires_j(t, y):
    y6, y8 = y[5], y[7]
    J = np.zeros((8, 8))
    J[0, :3] = [-1.71, 0.43, 8.32]
    J[1, :2] = [1.71, -8.75]
    J[2, 2:5] = [-10.03, 0.43, 0.035]
    J[3, 1:4] = [8.32, 1.71, -1.12]
    J[4, 4:7] = [-1.745, 0.43, 0.43]
    J[5, 3:8] = [0.69, 1.71, -0.43 - 280 * y8, 0.69, -280 * y6]
    J[6, 5:8] = [280 * y8, -1.81, 280 * y6]
    J[7, 5:8] = [-280 * y8, 1.81, -280 * y6]
    return J


def orego_f(t, y):
    y1, y2, y3 = y
    return np.array([77.27 * (y2 + y1 * (1 - 8.375e-6 * y1 - y2)),
                     (y3 - (1 + y1) * y2) / 77.27, 0.161 * (y1 - y3)])


def orego_j(t, y):
    y1, y2, y3 = y
    return np.array([[77.27 * (1 - 2 * 8.375e-6 * y1 - y2), 77.27 * (1 - y1), 0.0],
                     [-y2 / 77.27, -(1 + y1) / 77.27, 1 / 77.27],
                     [0.161, 0.0, -0.161]])


def vdp_f(t, y):
    return np.array([y[1], 1000.0 * (1 - y[0] ** 2) * y[1] - y[0]])


def vdp_j(t, y):
    return np.array([[0.0, 1.0],
                     [-2000.0 * y[0] * y[1] - 1.0, 1000.0 * (1 - y[0] ** 2)]])


NUMPY = {"robertson": (rober_f, rober_j), "hires": (hires_f, hires_j),
         "orego": (orego_f, orego_j), "van_der_pol": (vdp_f, vdp_j)}

# ------------------------------------------------------------------------ contenders


def jaxode_run(problem, solver, rtol):
    atol = rtol * problem.atol_per_rtol
    ts = jnp.array([0.0, problem.t1])

    @jax.jit
    def run(y0):
        return jo.solve(problem.f, y0, ts, solver=solver, rtol=rtol, atol=atol,
                        max_steps=1_000_000).ys[-1]

    y0 = jnp.asarray(problem.y0)
    return lambda: run(y0)


def scipy_run(problem, key, method, rtol):
    f, jac = NUMPY[key]
    atol = rtol * problem.atol_per_rtol
    y0 = np.asarray(problem.y0)

    def run():
        sol = scipy.integrate.solve_ivp(f, (0.0, problem.t1), y0, method=method,
                                        rtol=rtol, atol=atol, jac=jac)
        assert sol.success, sol.message
        return sol.y[:, -1]

    return run


def error(y, reference):
    ref = np.asarray(reference)
    return float(np.max(np.abs(np.asarray(y) - ref) / np.abs(ref)))


# ----------------------------------------------------------------------------- main


def controllers():
    """Kvaerno5 on Robertson: default I controller against jaxode's PI one."""
    p = STIFF_PROBLEMS["robertson"]
    print(f"Kvaerno5 on Robertson to t = 1e11, atol = 1e-4 rtol; {machine()}")
    print(f"{'controller':<26}{'rtol':>7}{'steps':>8}{'rejected':>10}{'error':>10}"
          f"{'ms':>8}")
    for label, coeffs in [("I (pcoeff 0, icoeff 1)", {}),
                          (f"PI {STIFF_PID}", STIFF_PID)]:
        for rtol in (1e-6, 1e-8):
            ctrl = diffrax.PIDController(rtol=rtol, atol=1e-4 * rtol, **coeffs)
            run = jax.jit(lambda y0: diffrax.diffeqsolve(
                diffrax.ODETerm(p.f), diffrax.Kvaerno5(), 0.0, p.t1, 1e-6, y0,
                stepsize_controller=ctrl, max_steps=100_000))
            sol = jax.block_until_ready(run(jnp.asarray(p.y0)))
            best = min(_time(lambda: run(jnp.asarray(p.y0))) for _ in range(3))
            n, rej = int(sol.stats["num_steps"]), int(sol.stats["num_rejected_steps"])
            err = error(sol.ys[-1], p.reference)
            print(f"{label:<26}{rtol:>7.0e}{n:>8}{rej:>6} ({rej / n:.0%})"
                  f"{err:>10.1e}{1e3 * best:>8.1f}")


def _time(fn):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="rtol 1e-6 only, one round, Robertson and HIRES")
    parser.add_argument("--controllers", action="store_true",
                        help="Kvaerno5's step-size controller on Robertson")
    ns = parser.parse_args()
    if ns.controllers:
        return controllers()
    rtols = [1e-6] if ns.quick else [1e-6, 1e-8, 1e-10]
    keys = ["robertson", "hires"] if ns.quick else list(STIFF_PROBLEMS)
    rounds = 1 if ns.quick else 3
    print(f"Stiff problems, float64; {machine()}; jax {jax.__version__}, "
          f"scipy {scipy.__version__}")
    rows = []
    for key in keys:
        p = STIFF_PROBLEMS[key]
        results = {}  # (contender, rtol) -> (best s, first s, error)
        for rtol in rtols:
            contenders = {
                "jaxode rosenbrock23": jaxode_run(p, "rosenbrock23", rtol),
                "jaxode kvaerno5": jaxode_run(p, "kvaerno5", rtol),
                **{f"scipy {m}": scipy_run(p, key, m, rtol)
                   for m in ("LSODA", "BDF", "Radau")},
            }
            if rtol < 1e-9:  # order 2 needs ~1e5 steps there: not its regime
                del contenders["jaxode rosenbrock23"]
            times = measure(contenders, rounds=rounds)
            for name, fn in contenders.items():
                results[name, rtol] = (times[name]["best"], times[name]["first"],
                                       error(fn(), p.reference))
        print(f"\n{p.name}, t1 = {p.t1:g}, atol = {p.atol_per_rtol:g} rtol")
        print(f"{'contender':<22}{'rtol':>7}{'best ms':>10}{'compile s':>11}"
              f"{'error':>10}")
        for (name, rtol), (best, first, err) in results.items():
            compile_s = f"{first - best:.1f}" if name.startswith("jaxode") else "-"
            print(f"{name:<22}{rtol:>7.0e}{1e3 * best:>10.2f}{compile_s:>11}"
                  f"{err:>10.1e}")
        rows += summary_rows(p, results, rtols)
    print("\n| benchmark | jaxode | peer | ratio |\n|---|---|---|---|")
    for row in rows:
        print(row)


def summary_rows(p, results, rtols):
    """Per LSODA run: the fastest jaxode run with an error no larger, the ratio of
    times, and the same against Radau."""
    rows = []
    jaxode = {k: v for k, v in results.items() if k[0].startswith("jaxode")}
    for rtol in rtols:
        t_l, _, e_l = results["scipy LSODA", rtol]
        t_r, _, e_r = results["scipy Radau", rtol]
        ok = {k: v for k, v in jaxode.items() if v[2] <= e_l}
        if not ok:
            rows.append(f"| stiff: {p.name}, LSODA rtol {rtol:.0e} (error {e_l:.1e}), "
                        "f64, final state | no jaxode run as accurate | - | - |")
            continue
        (name, r), (t_j, _, e_j) = min(ok.items(), key=lambda kv: kv[1][0])
        rows.append(
            f"| stiff: {p.name}, f64, final state, at LSODA's error {e_l:.1e} (rtol "
            f"{rtol:.0e}) | {name.split()[1]} rtol {r:.0e}: {1e3 * t_j:.2f} ms, error "
            f"{e_j:.1e} | LSODA {1e3 * t_l:.2f} ms; Radau {1e3 * t_r:.1f} ms (error "
            f"{e_r:.1e}) | **{t_l / t_j:.2f}x** LSODA's speed |")
    return rows


if __name__ == "__main__":
    main()
