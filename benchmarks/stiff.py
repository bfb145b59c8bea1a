"""Stiff problems: work against precision of jaxode's Rosenbrock solvers and their
peers, and a stiff ensemble against a Python loop of LSODA.

Problems (`jaxode.data.STIFF_PROBLEMS`): Robertson (t = 1e11), HIRES (t = 321.8122)
and OREGO (t = 360) against the reference solutions of the Test Set for IVP Solvers
(Mazzia et al.); Van der Pol with mu = 1000 (t = 2000) and POLLU (t = 60) against
SciPy Radau solutions at rtol 1e-13. float64 on every side; atol = rtol · (the
problem's scale, `atol_per_rtol`), rtol from 1e-4 to 1e-10.

Contenders, all in this process:
- jaxode `solve(f, y0, [0, t1], solver=...)` (rodas5p, rodas5, rosenbrock23),
  jitted over `y0`, `rtol` and `atol`, keeping the final state (the whole output of
  that call); compile time reported apart.
- diffrax `Kvaerno5` with a PI controller (pcoeff 0.3, icoeff 0.4, as diffrax's
  documentation suggests for stiff problems), written by hand as a user would.
- SciPy `solve_ivp` LSODA, BDF and Radau, and SUNDIALS CVODE (BDF) through
  scikit-sundae where it is installed, each with a NumPy right-hand side and its
  analytic Jacobian, as their users write them.
Error: the largest relative error over the components of the final state (those
above 1e-15: POLLU's O1D, 4e-18, is below any tolerance). Time: best of the rounds,
the contenders run alternately.

The summary rows give, for each LSODA run at rtol 1e-6 and 1e-8, the fastest Rodas5P
run whose error is no larger, and the ratio of times. The work-precision figure
(time against error, log-log, a panel per problem) goes to
`docs/benchmarks/stiff-work-precision.png`, or to `--plot FILE`.

The ensemble row: Robertson to t = 1e5 (10 save times kept, float64) for 10^4
members, each with its own rate constants (log-normal, 30 % spread), in one
`jaxode.ensemble(..., solver="rodas5p")` call, against a Python loop of LSODA over
a subset of the members (the loop's cost is linear in members); members per second.

    python benchmarks/stiff.py [--quick] [--plot FILE] [--controllers] [--float32]

`--controllers` instead prints Rodas5P's step counts at equal error under three
step-size controllers (the reason for `jaxode._adaptive.ROSENBROCK_PID`); `--float32`
which tolerances Rodas5P reaches in float32 on each problem (the reason for the
float32 warning and messages of `jaxode.solve`).
"""

import argparse
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.integrate  # noqa: E402

import jaxode as jo  # noqa: E402
from _timing import machine, measure  # noqa: E402
from jaxode._rosenbrock import Rodas5P  # noqa: E402
from jaxode._adaptive import ROSENBROCK_PID, STIFF_PID  # noqa: E402
from jaxode.data import STIFF_PROBLEMS  # noqa: E402

# ------------------------------------------------- NumPy right-hand sides and Jacobians


def rober_f(t, y, k=(0.04, 3e7, 1e4)):
    y1, y2, y3 = y
    return np.array([-k[0] * y1 + k[2] * y2 * y3,
                     k[0] * y1 - k[2] * y2 * y3 - k[1] * y2 ** 2, k[1] * y2 ** 2])


def rober_j(t, y, k=(0.04, 3e7, 1e4)):
    y1, y2, y3 = y
    return np.array([[-k[0], k[2] * y3, k[2] * y2],
                     [k[0], -k[2] * y3 - 2 * k[1] * y2, -k[2] * y2],
                     [0.0, 2 * k[1] * y2, 0.0]])


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


POLLU_K = np.array([0.35, 26.6, 1.23e4, 8.6e-4, 8.2e-4, 1.5e4, 1.3e-4, 2.4e4, 1.65e4,
                    9e3, 2.2e-2, 1.2e4, 1.88, 1.63e4, 4.8e6, 3.5e-4, 1.75e-2, 1e8,
                    4.44e11, 1.24e3, 2.1, 5.78, 4.74e-2, 1.78e3, 3.12])
# reactants of each reaction (0-based species) and the net stoichiometric matrix
POLLU_IN = [(0,), (1, 3), (4, 1), (6,), (6,), (6, 5), (8,), (8, 5), (10, 1), (10, 0),
            (12,), (9, 1), (13,), (0, 5), (2,), (3,), (3,), (15,), (15,), (16, 5),
            (18,), (18,), (0, 3), (18, 0), (19,)]
POLLU_S = np.zeros((20, 25))
for _j, (_used, _made) in enumerate([
        ((0,), (1, 2)), ((1, 3), (0,)), ((4, 1), (0, 5)), ((6,), (4, 4, 7)),
        ((6,), (7,)), ((6, 5), (4, 7)), ((8,), (4, 7, 9)), ((8, 5), (10,)),
        ((10, 1), (0, 9, 11)), ((10, 0), (12,)), ((12,), (0, 10)), ((9, 1), (0, 13)),
        ((13,), (4, 6)), ((0, 5), (14,)), ((2,), (3,)), ((3,), (15,)), ((3,), (2,)),
        ((15,), (5, 5)), ((15,), (2,)), ((16, 5), (4, 17)), ((18,), (1,)),
        ((18,), (0, 2)), ((0, 3), (18,)), ((18, 0), (19,)), ((19,), (0, 18))]):
    for _i in _used:
        POLLU_S[_i, _j] -= 1
    for _i in _made:
        POLLU_S[_i, _j] += 1


def pollu_f(t, y):
    r = POLLU_K * np.array([np.prod(y[list(s)]) for s in POLLU_IN])
    return POLLU_S @ r


def pollu_j(t, y):
    dr = np.zeros((25, 20))  # d rate_j / d y_i
    for j, s in enumerate(POLLU_IN):
        for i in s:
            dr[j, i] += POLLU_K[j] * np.prod(y[[m for m in s if m != i]])
    return POLLU_S @ dr


# the figure the README and the documentation show
FIGURE = (Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
          / "stiff-work-precision.png")

NUMPY = {"robertson": (rober_f, rober_j), "hires": (hires_f, hires_j),
         "orego": (orego_f, orego_j), "van_der_pol": (vdp_f, vdp_j),
         "pollu": (pollu_f, pollu_j)}

# ------------------------------------------------------------------------ contenders


def jaxode_run(problem, solver):
    """One compiled program per problem and solver: tolerances are traced."""
    ts = jnp.array([0.0, problem.t1])

    @jax.jit
    def run(y0, rtol, atol):
        return jo.solve(problem.f, y0, ts, solver=solver, rtol=rtol, atol=atol,
                        max_steps=1_000_000).ys[-1]

    y0 = jnp.asarray(problem.y0)
    return lambda rtol: (lambda: run(y0, rtol, rtol * problem.atol_per_rtol))


def diffrax_run(problem):
    """Kvaerno5 as a diffrax user writes it, with diffrax's suggested stiff PI."""
    @jax.jit
    def run(y0, rtol, atol):
        controller = diffrax.PIDController(rtol=rtol, atol=atol, pcoeff=0.3,
                                           icoeff=0.4)
        return diffrax.diffeqsolve(
            diffrax.ODETerm(problem.f), diffrax.Kvaerno5(), 0.0, problem.t1, None, y0,
            stepsize_controller=controller, max_steps=1_000_000).ys[-1]

    y0 = jnp.asarray(problem.y0)
    return lambda rtol: (lambda: run(y0, rtol, rtol * problem.atol_per_rtol))


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


def cvode_run(problem, key, rtol):
    """SUNDIALS CVODE (BDF, dense LU, analytic Jacobian) through scikit-sundae, or
    None where that package is not installed."""
    try:
        from sksundae.cvode import CVODE
    except ImportError:
        return None
    f, jac = NUMPY[key]

    def rhs(t, y, yp):
        yp[:] = f(t, y)

    def jacfn(t, y, yp, JJ):
        JJ[:, :] = jac(t, y)

    solver = CVODE(rhs, method="BDF", rtol=rtol, atol=rtol * problem.atol_per_rtol,
                   jacfn=jacfn, max_num_steps=1_000_000)
    tspan = np.array([0.0, problem.t1])
    y0 = np.asarray(problem.y0, float)

    def run():
        sol = solver.solve(tspan, y0)
        assert sol.success, sol.message
        return sol.y[-1]

    return run


def error(y, reference):
    ref = np.asarray(reference)
    keep = np.abs(ref) > 1e-15
    return float(np.max(np.abs(np.asarray(y) - ref)[keep] / np.abs(ref[keep])))


# ----------------------------------------------------------------- work-precision


def contenders(p, key, rtols, peer_rtols):
    """{(name, rtol): zero-argument callable}."""
    rodas5p, rodas5 = jaxode_run(p, "rodas5p"), jaxode_run(p, "rodas5")
    rb23, kvaerno = jaxode_run(p, "rosenbrock23"), diffrax_run(p)
    out = {}
    for rtol in rtols:
        out["jaxode rodas5p", rtol] = rodas5p(rtol)
    for rtol in peer_rtols:
        out["jaxode rodas5", rtol] = rodas5(rtol)
        if rtol >= 1e-6:  # order 2: ~1e5 steps below, not its regime
            out["jaxode rosenbrock23", rtol] = rb23(rtol)
        out["diffrax Kvaerno5", rtol] = kvaerno(rtol)
        cvode = cvode_run(p, key, rtol)
        if cvode is not None:
            out["sundials CVODE-BDF", rtol] = cvode
        for method in ("LSODA", "BDF", "Radau"):
            if method == "Radau" and rtol < 1e-9:
                continue  # seconds per solve, and never the fastest
            out[f"scipy {method}", rtol] = scipy_run(p, key, method, rtol)
    return out


def work_precision(key, rtols, peer_rtols, rounds):
    p = STIFF_PROBLEMS[key]
    runs = contenders(p, key, rtols, peer_rtols)
    labels = {f"{name} {rtol:.0e}": fn for (name, rtol), fn in runs.items()}
    times = measure(labels, rounds=rounds)
    results = {}
    for (name, rtol), fn in runs.items():
        t = times[f"{name} {rtol:.0e}"]
        results[name, rtol] = (t["best"], t["first"], error(fn(), p.reference))
    print(f"\n{p.name}, t1 = {p.t1:g}, atol = {p.atol_per_rtol:g} rtol")
    print(f"{'contender':<22}{'rtol':>7}{'best ms':>10}{'first s':>9}{'error':>10}")
    for (name, rtol), (best, first, err) in sorted(results.items()):
        print(f"{name:<22}{rtol:>7.0e}{1e3 * best:>10.2f}{first:>9.1f}{err:>10.1e}")
    return p, results


def summary_rows(p, results, rtols=(1e-6, 1e-8)):
    """Per LSODA run: the fastest Rodas5P run with an error no larger, the ratio of
    times, and the same against the best of the other peers."""
    rows = []
    ours = {k: v for k, v in results.items() if k[0] == "jaxode rodas5p"}
    for rtol in rtols:
        t_l, _, e_l = results["scipy LSODA", rtol]
        ok = {k: v for k, v in ours.items() if v[2] <= e_l}
        if not ok:
            rows.append(f"| stiff: {p.name}, f64, final state, at LSODA's error "
                        f"{e_l:.1e} (rtol {rtol:.0e}) | no rodas5p run as accurate | "
                        "- | - |")
            continue
        (_, r), (t_j, _, e_j) = min(ok.items(), key=lambda kv: kv[1][0])
        rows.append(
            f"| stiff: {p.name}, f64, final state, at LSODA's error {e_l:.1e} (rtol "
            f"{rtol:.0e}) | rodas5p rtol {r:.0e}: {1e3 * t_j:.2f} ms, error {e_j:.1e} "
            f"| LSODA {1e3 * t_l:.2f} ms | **{t_l / t_j:.2f}x** LSODA's speed |")
    return rows


def plot(problems, path):
    """One panel per problem: time against error, log-log, a line per solver."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    names = sorted({name for _, results in problems for name, _ in results})
    styles = {name: (f"C{i}", "o-" if name.startswith("jaxode") else "s--")
              for i, name in enumerate(names)}
    for ax, (p, results) in zip(axes.flat, problems):
        for name in names:
            pts = sorted((rtol, v) for (n, rtol), v in results.items() if n == name)
            if not pts:
                continue
            color, style = styles[name]
            ax.plot([v[2] for _, v in pts], [1e3 * v[0] for _, v in pts], style,
                    color=color, label=name, ms=3.5,
                    lw=2.4 if name == "jaxode rodas5p" else 1.1)
        ax.set(xscale="log", yscale="log", title=p.name,
               xlabel="relative error of the final state", ylabel="ms per solve")
        ax.invert_xaxis()
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes.flat[len(problems):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    (axes.flat[len(problems)] if len(problems) < axes.size else fig).legend(
        handles, labels, loc="center", fontsize=9)
    fig.suptitle("Stiff problems: time against error (float64, 2-core CPU; lower "
                 "and further right is better)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------ ensemble


def ensemble_row(members, loop_members, rounds):
    ts = jnp.asarray(np.geomspace(1e-3, 1e5, 9))
    ts = jnp.concatenate([jnp.zeros(1), ts])
    rng = np.random.default_rng(0)
    ks = np.array([0.04, 3e7, 1e4]) * np.exp(0.3 * rng.standard_normal((members, 3)))
    y0s = jnp.tile(jnp.array([1.0, 0.0, 0.0]), (members, 1))

    def rober(t, y, k):
        return jnp.stack([-k[0] * y[0] + k[2] * y[1] * y[2],
                          k[0] * y[0] - k[2] * y[1] * y[2] - k[1] * y[1] ** 2,
                          k[1] * y[1] ** 2])

    kj = jnp.asarray(ks)

    def ours():
        return jo.ensemble(rober, y0s, ts, kj, member_args=True, solver="rodas5p",
                           rtol=1e-6, atol=1e-10, max_steps=100_000).ys

    t_np = np.asarray(ts)

    def loop():
        out = []
        for k in ks[:loop_members]:
            sol = scipy.integrate.solve_ivp(
                rober_f, (0.0, t_np[-1]), np.array([1.0, 0.0, 0.0]), method="LSODA",
                t_eval=t_np, rtol=1e-6, atol=1e-10, jac=rober_j, args=(tuple(k),))
            out.append(sol.y.T)
        return np.stack(out)

    times = measure({"ensemble": ours, "loop": loop}, rounds=rounds)
    ys, ref = np.asarray(ours()), loop()
    agree = np.max(np.abs(ys[:loop_members] - ref) / (np.abs(ref) + 1e-10))
    rate_j = members / times["ensemble"]["best"]
    rate_l = loop_members / times["loop"]["best"]
    print(f"\nStiff ensemble: Robertson to t = 1e5 (10 save times), rtol 1e-6, atol "
          f"1e-10, {members} members with their own rate constants")
    print(f"jaxode.ensemble rodas5p: {times['ensemble']['best']:.2f} s "
          f"(compile {times['ensemble']['first'] - times['ensemble']['best']:.1f} s), "
          f"{rate_j:.0f} members/s")
    print(f"Python loop of LSODA ({loop_members} members): "
          f"{times['loop']['best']:.2f} s, {rate_l:.0f} members/s")
    print(f"largest difference from LSODA, relative to |y| + 1e-10: {agree:.1e}")
    return (f"| stiff ensemble: Robertson, {members} members with own rate constants, "
            f"f64, 10 save times kept, rtol 1e-6 | rodas5p `ensemble`: {rate_j:.0f} "
            f"members/s | Python loop of LSODA: {rate_l:.0f} members/s | "
            f"**{rate_j / rate_l:.1f}x** LSODA's throughput |")


# ---------------------------------------------------------------------- controllers


def controllers():
    """Rodas5P's steps (accepted + rejected) at equal error under three controllers."""
    choices = {"I (pcoeff 0, icoeff 1)": {"pcoeff": 0.0, "icoeff": 1.0},
               f"Kvaerno5's PI {STIFF_PID}": STIFF_PID,
               f"jaxode's PI {ROSENBROCK_PID}": ROSENBROCK_PID}
    rtols = [1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]
    print("Rodas5P: steps at equal error (interpolated in log-log between rtols "
          "1e-5 ... 1e-10)")
    print(f"{'problem':<14}{'controller':<40}{'err 1e-5':>9}{'1e-7':>8}{'1e-9':>8}")
    for key, p in STIFF_PROBLEMS.items():
        for label, coeffs in choices.items():
            @jax.jit
            def run(y0, rtol, atol, coeffs=coeffs):
                sol = diffrax.diffeqsolve(
                    diffrax.ODETerm(p.f), Rodas5P(), 0.0, p.t1, None, y0,
                    stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol,
                                                              **coeffs),
                    max_steps=200_000)
                return sol.ys[-1], sol.stats["num_steps"]

            pts = [run(jnp.asarray(p.y0), r, r * p.atol_per_rtol) for r in rtols]
            steps = np.array([int(s) for _, s in pts], float)
            errs = np.array([error(y, p.reference) for y, _ in pts])
            order = np.argsort(errs)
            at = [np.exp(np.interp(np.log(e), np.log(errs[order]),
                                   np.log(steps[order]))) for e in (1e-5, 1e-7, 1e-9)]
            print(f"{p.name[:13]:<14}{label:<40}" + "".join(f"{a:>8.0f} " for a in at))


def time_derivative():
    """What skipping `∂f/∂t` for an autonomous `f` saves: HIRES (8 states) with `f`
    as it is, and with `+ 0·t` (which reads `t`, so the JVP for `∂f/∂t` runs)."""
    p = STIFF_PROBLEMS["hires"]
    reads_t = lambda t, y, args: p.f(t, y, args) + 0.0 * t  # noqa: E731
    runs = {}
    for label, f in (("autonomous f", p.f), ("f reading t", reads_t)):
        problem = p._replace(f=f)
        runs[label] = jaxode_run(problem, "rodas5p")(1e-8)
    times = measure(runs, rounds=5)
    a, b = times["autonomous f"]["best"], times["f reading t"]["best"]
    print(f"\nHIRES, rodas5p rtol 1e-8: {1e3 * a:.2f} ms with the time derivative "
          f"skipped, {1e3 * b:.2f} ms with it computed ({b / a:.2f}x)")


def float32():
    """Rodas5P in float32 on every problem: where it succeeds, and its error. Run in
    a process of its own (64-bit mode is off there)."""
    import subprocess
    import sys

    code = (
        "import warnings; warnings.simplefilter('ignore')\n"
        "import jax.numpy as jnp, numpy as np, jaxode as jo\n"
        "from jaxode.data import STIFF_PROBLEMS\n"
        "for key, p in STIFF_PROBLEMS.items():\n"
        "    cells = []\n"
        "    for rtol in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8):\n"
        "        sol = jo.solve(p.f, jnp.asarray(p.y0, jnp.float32), jnp.array([0.0,"
        " p.t1], jnp.float32), solver='rodas5p', rtol=rtol, atol=rtol *"
        " p.atol_per_rtol, max_steps=20000, throw=False)\n"
        "        ref = np.array(p.reference)\n"
        "        m = np.abs(ref) > 1e-6 * np.abs(ref).max()\n"
        "        err = np.max(np.abs(np.asarray(sol.ys[-1], float) - ref)[m] /"
        " np.abs(ref[m]))\n"
        "        cells.append(f'{err:.1e}' if bool(sol.ok) else 'fails')\n"
        "    print(f'{p.name[:22]:<24}' + ''.join(f'{c:>10}' for c in cells))\n")
    print("Rodas5P in float32: relative error of the final state (components above "
          "1e-6 of the largest), atol = rtol · atol_per_rtol")
    print(f"{'problem':<24}" + "".join(f"{r:>10.0e}" for r in
                                       (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)))
    subprocess.run([sys.executable, "-c", code], check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="Robertson and HIRES at three tolerances, one round, a "
                        "small ensemble")
    parser.add_argument("--plot", type=Path, default=None,
                        help="write the work-precision figure (a panel per problem) "
                        f"to this PNG file (default without --quick: {FIGURE})")
    parser.add_argument("--controllers", action="store_true",
                        help="Rodas5P's step counts under three step-size controllers")
    parser.add_argument("--float32", action="store_true",
                        help="Rodas5P in float32: the tolerances each problem reaches")
    ns = parser.parse_args()
    if ns.controllers:
        return controllers()
    if ns.float32:
        return float32()
    if ns.quick:
        rtols, peer_rtols = [1e-5, 1e-6, 1e-8], [1e-6, 1e-8]
        keys, rounds, members, loop_members = ["robertson", "hires"], 1, 200, 20
    else:
        rtols = [1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]
        peer_rtols = [1e-4, 1e-6, 1e-8, 1e-10]
        keys, rounds, members, loop_members = list(STIFF_PROBLEMS), 3, 10_000, 200
    print(f"Stiff problems, float64; {machine()}; jax {jax.__version__}, "
          f"scipy {scipy.__version__}, diffrax {diffrax.__version__}")
    rows, problems = [], []
    for key in keys:
        p, results = work_precision(key, rtols, peer_rtols, rounds)
        rows += summary_rows(p, results)
        problems.append((p, results))
    figure = ns.plot or (None if ns.quick else FIGURE)
    if figure is not None:
        plot(problems, figure)
    if not ns.quick:
        time_derivative()
    rows.append(ensemble_row(members, loop_members, rounds))
    print("\n| benchmark | jaxode | peer | ratio |\n|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n(wall time {time.perf_counter() - t0:.0f} s)")
