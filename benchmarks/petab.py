"""Benchmark: jaxode.petab against AMICI (SUNDIALS CVODES, through pyPESTO) on the
seven PEtab problems of the benchmark collection (`jaxode/petab/problems`).

Per problem, in one process, float64, the same tolerances on both sides (rtol = atol
= 1e-8 unless `TOLERANCES` says otherwise):

1. the objective (negative log-likelihood, plus the negative log-priors where the
   parameter table sets priors: Bachmann) at the nominal parameters, without and
   with its gradient: jaxode `prob.objective(theta)` / `prob.value_and_grad(theta)`
   against pyPESTO's `AmiciObjective` (`sensi_orders=(0,)` / `(0, 1)`), AMICI with
   forward and with adjoint sensitivities, the faster of the two in the row (the
   row says which). Best of the rounds, the sides timed alternately
   (`_timing.measure`); the first call (JAX compilation; AMICI's warm-up) and the
   AMICI model compile are reported apart.
2. a check that the two negative log-likelihoods at the nominal parameters agree
   (`prob.nllh(x)` against `-llh` of `amici...petab.v1.simulate_petab`), and that
   AMICI's is 138.2220 for Boehm_JProteomeRes2014.
3. for Boehm_JProteomeRes2014 (every problem with `--all-fits`): a 20-start fit,
   the same starts on both sides: uniform on the parameter scale within the bounds,
   drawn once as `jax.random.uniform(jax.random.key(seed), (20, n), lo, hi)` (the
   draw `prob.fit(multistart=20, key=jax.random.key(seed))` makes), handed to
   pyPESTO as its start points. AMICI: pyPESTO + fides with its defaults (forward
   sensitivities, the Fisher information then BFGS, within the bounds); jaxode's
   `fit` with its defaults (Levenberg–Marquardt then BFGS, within the bounds) runs
   twice, the first run compiles and the second is timed. Wall time, best
   objective, and how many starts end within 1e-3 of the best either side found.

AMICI compiles a C++ model per problem (cached under `benchmarks/.amici/`, git-
ignored; `--build` moves it): on a shared 2-core machine, 16-31 s for each of the six
small models (Boehm 22 s) and 41 s for Bachmann (113 parameters); later runs import
the compiled module in well under a second. AMICI's compile finds SWIG in the
interpreter's `bin` folder, which this script puts first on `PATH`. AMICI simulates
the conditions of a problem on `--threads` OpenMP threads (default: every core);
jaxode runs on XLA's CPU thread pool (every core).

Needs the extras `[petab]` and `[bench]` (`amici`, `pypesto`, `fides`).

    python benchmarks/petab.py [--quick] [--all-fits | --no-fits] [--repeats R] [PROBLEM ...]
"""

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

# AMICI's model compile calls `swig`, installed next to the interpreter
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from _timing import machine, measure  # noqa: E402

# this file's folder leaves the import path, or `import petab` would import this file
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != HERE]

from jaxode.petab import PROBLEMS  # noqa: E402

NAMES = ("Boehm_JProteomeRes2014", "Perelson_Science1996", "Elowitz_Nature2000",
         "Borghans_BiophysChem1997", "Zheng_PNAS2012", "Fujita_SciSignal2010",
         "Bachmann_MSB2011")
QUICK = "Boehm_JProteomeRes2014"
FITTED = ("Boehm_JProteomeRes2014",)
TOLERANCES: dict[str, tuple[float, float]] = {}  # name -> (rtol, atol), else DEFAULT
DEFAULT_TOL = (1e-8, 1e-8)
MAX_STEPS = 100_000
BOEHM_NLLH = 138.2220
BUILD = HERE / ".amici"


def yaml_path(name: str) -> Path:
    return PROBLEMS / name / f"{name}.yaml"


# ------------------------------------------------------------------ jaxode


def jaxode_problem(name: str, rtol: float, atol: float):
    """jaxode's side of one problem: `jaxode.petab.load`. Raises
    NotImplementedError while the module does not have it."""
    try:
        from jaxode.petab import load
    except ImportError as e:
        raise NotImplementedError(f"jaxode.petab.load: {e}") from e
    return load(yaml_path(name), rtol=rtol, atol=atol, max_steps=MAX_STEPS)


def jaxode_fit(prob, n_starts: int, seed: int):
    """A multistart fit; returns (wall time, every start's final objective, the
    starts it drew, parameter scale)."""
    start = time.perf_counter()
    res = prob.fit(multistart=n_starts, key=jax.random.key(seed))
    jax.block_until_ready(res.starts_nll)
    wall = time.perf_counter() - start
    return wall, np.asarray(res.starts_nll), np.asarray(res.theta0_starts)


# ------------------------------------------------------------------ AMICI


class Amici:
    """One PEtab problem in AMICI through pyPESTO: the compiled model (cached under
    `build`), its CVODES solver and pyPESTO's problem (objective plus priors)."""

    def __init__(self, name: str, rtol: float, atol: float, threads: int, build: Path):
        import petab.v1
        import pypesto.petab

        self.petab = petab.v1.Problem.from_yaml(yaml_path(name))
        importer = pypesto.petab.PetabImporter(
            self.petab, output_folder=str(build / name), model_name=name)
        creator = importer.create_objective_creator()
        cached = (build / name).is_dir() and any((build / name).iterdir())
        start = time.perf_counter()
        self.model = creator.create_model(verbose=False)
        self.import_s = time.perf_counter() - start
        self.import_kind = "import of the cached model" if cached else "model compile"
        self.solver = self.model.create_solver()
        self.solver.set_relative_tolerance(rtol)
        self.solver.set_absolute_tolerance(atol)
        self.solver.set_max_steps(MAX_STEPS)
        objective = creator.create_objective(model=self.model, solver=self.solver,
                                             n_threads=threads, verbose=False)
        self.problem = importer.create_problem(objective=objective)
        # pyPESTO's problem holds a copy of the objective, which holds a clone of
        # the solver: the sensitivity method is set on that one too
        inner = getattr(self.problem.objective, "_objectives", [self.problem.objective])
        self.solvers = [self.solver] + [o.amici_solver for o in inner
                                        if hasattr(o, "amici_solver")]
        free = list(self.problem.x_free_indices)
        self.x_ids = [self.problem.x_names[i] for i in free]
        self.nominal = np.asarray(self.petab.x_nominal_free_scaled, float)
        self.lower = np.asarray(self.problem.lb, float)
        self.upper = np.asarray(self.problem.ub, float)

    def sensitivities(self, method: str) -> None:
        import amici.sim.sundials as asd

        for solver in self.solvers:
            solver.set_sensitivity_method(
                {"forward": asd.SensitivityMethod.forward,
                 "adjoint": asd.SensitivityMethod.adjoint}[method])

    def objective(self, x):
        return self.problem.objective(x, sensi_orders=(0,))

    def value_and_grad(self, x, method: str):
        self.sensitivities(method)
        return self.problem.objective(x, sensi_orders=(0, 1))

    def nllh(self) -> float:
        """`-llh` of AMICI's PEtab simulation at the nominal parameters."""
        from amici.sim.sundials.petab.v1 import simulate_petab

        self.sensitivities("forward")
        out = simulate_petab(self.petab, amici_model=self.model, solver=self.solver)
        return -float(out["llh"])

    def fit(self, starts: np.ndarray):
        """pyPESTO + fides from `starts` (parameter scale, one row per start);
        returns (wall time, every start's final objective)."""
        import pypesto.optimize

        self.sensitivities("forward")
        full = [self.problem.get_full_vector(s, self.problem.x_fixed_vals)
                for s in starts]
        self.problem.set_x_guesses(np.asarray(full))
        start = time.perf_counter()
        result = pypesto.optimize.minimize(
            self.problem, optimizer=pypesto.optimize.FidesOptimizer(verbose=0),
            n_starts=len(starts), progress_bar=False)
        wall = time.perf_counter() - start
        return wall, np.array([r.fval for r in result.optimize_result.list])


# ------------------------------------------------------------------ rows


def draw_starts(lower, upper, n_starts: int, seed: int) -> np.ndarray:
    """The starts of `prob.fit(multistart=n_starts, key=jax.random.key(seed))`."""
    return np.asarray(jax.random.uniform(jax.random.key(seed), (n_starts, len(lower)),
                                         minval=lower, maxval=upper))


def fmt_ms(seconds: float) -> str:
    return f"{1e3 * seconds:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def ratio(jx, am) -> str:
    return "-" if jx is None or am is None else f"{am / jx:.2f}x"


def time_problem(name: str, am: Amici, prob, rounds: int):
    """The two timings (objective; objective and gradient), each a dict
    {contender: {"first", "best"}}, and the AMICI sensitivity method kept."""
    x = am.nominal
    contenders = {"AMICI": lambda: am.objective(x)}
    grads = {"AMICI forward": lambda: am.value_and_grad(x, "forward"),
             "AMICI adjoint": lambda: am.value_and_grad(x, "adjoint")}
    if prob is not None:
        theta = x[[am.x_ids.index(i) for i in prob.x_ids]]
        contenders = {"jaxode": lambda: prob.objective(theta), **contenders}
        grads = {"jaxode": lambda: prob.value_and_grad(theta), **grads}
    for key in ("AMICI forward", "AMICI adjoint"):  # drop a method AMICI refuses
        try:
            fval, grad = grads[key]()
            if not (np.isfinite(fval) and np.all(np.isfinite(grad))):
                raise RuntimeError(f"objective {fval}, gradient finite: "
                                   f"{np.all(np.isfinite(grad))}")
        except Exception as e:  # noqa: BLE001 - reported, and the other one is kept
            print(f"  {key}: {type(e).__name__}: {e}")
            del grads[key]
    f = measure(contenders, rounds=rounds)
    g = measure(grads, rounds=rounds)
    methods = [k for k in g if k.startswith("AMICI")]
    best = min(methods, key=lambda k: g[k]["best"]) if methods else None
    return f, g, best


def check_nllh(name: str, am: Amici, prob) -> tuple[float, float | None]:
    nllh_am = am.nllh()
    nllh_jx = None
    if prob is not None:
        x = dict(zip(am.x_ids, np.asarray(am.petab.x_nominal_free, float)))
        nllh_jx = float(prob.nllh({k: x[k] for k in prob.x_ids}))
    line = f"  nllh at the nominal parameters: AMICI {nllh_am:.6f}"
    if nllh_jx is not None:
        diff = abs(nllh_jx - nllh_am)
        agree = diff <= 1e-4 * max(1.0, abs(nllh_am))
        line += (f", jaxode {nllh_jx:.6f}, |difference| {diff:.1e} "
                 f"({'agree' if agree else 'DISAGREE'} to 1e-4 relative)")
    print(line)
    if name == "Boehm_JProteomeRes2014":
        ok = abs(nllh_am - BOEHM_NLLH) < 5e-5
        print(f"  Boehm: AMICI's nllh {nllh_am:.4f}, expected {BOEHM_NLLH:.4f}: "
              f"{'ok' if ok else 'MISMATCH'}")
    return nllh_am, nllh_jx


def fit_row(name: str, am: Amici, prob, n_starts: int, seed: int) -> str:
    starts = draw_starts(am.lower, am.upper, n_starts, seed)
    am_wall, am_nll = am.fit(starts)
    jx, why = None, "jaxode: not available"
    try:
        if prob is not None:
            first, _, _ = jaxode_fit(prob, n_starts, seed)
            wall, jx_nll, jx_starts = jaxode_fit(prob, n_starts, seed)
            order = [am.x_ids.index(i) for i in prob.x_ids]
            same = np.allclose(np.sort(jx_starts, axis=0),
                               np.sort(starts[:, order], axis=0))
            print(f"  jaxode fit: compile {first - wall:.1f} s, run {wall:.2f} s; "
                  f"starts {'the same as' if same else 'DIFFERENT FROM'} pyPESTO's")
            jx = (wall, jx_nll)
    except Exception as e:  # noqa: BLE001 - reported in the row
        print(f"  jaxode fit: failed: {type(e).__name__}: {str(e).splitlines()[0]}")
        why = f"jaxode: failed ({type(e).__name__})"
    best = min(np.min(am_nll), np.inf if jx is None else np.min(jx[1]))

    def cell(wall, nll):
        hits = int(np.sum(nll <= best + 1e-3))
        return f"{wall:.2f} s, best {np.min(nll):.4f}, {hits}/{len(nll)} starts at best"

    print(f"  AMICI fit: {cell(am_wall, am_nll)} (best of both sides {best:.4f})")
    return (f"| petab: {name}, {n_starts}-start fit, same starts, f64 (vs pyPESTO + "
            f"fides + AMICI) | {why if jx is None else cell(*jx)} "
            f"| {cell(am_wall, am_nll)} | {ratio(jx and jx[0], am_wall)} |")


def load_jaxode(name: str, am: Amici, rtol: float, atol: float):
    """(jaxode's problem or None, the text of its cells when None)."""
    try:
        start = time.perf_counter()
        prob = jaxode_problem(name, rtol, atol)
        theta = am.nominal[[am.x_ids.index(i) for i in prob.x_ids]]
        jax.block_until_ready(prob.value_and_grad(theta))
        print(f"  jaxode load and first objective + gradient (compiles): "
              f"{time.perf_counter() - start:.1f} s")
        return prob, None
    except NotImplementedError as e:
        print(f"  jaxode: not available ({e})")
        return None, "jaxode: not available"
    except Exception as e:  # noqa: BLE001 - one problem's failure ends no run
        print(f"  jaxode: failed: {type(e).__name__}: {e}")
        return None, f"jaxode: failed ({type(e).__name__})"


def run_problem(name: str, cli) -> list[str]:
    rtol, atol = TOLERANCES.get(name, DEFAULT_TOL)
    tol = f"rtol={rtol:g}, atol={atol:g}".replace("e-0", "e-")
    print(f"\n{name}: f64, {tol}", flush=True)
    try:
        am = Amici(name, rtol, atol, cli.threads, cli.build)
    except Exception as e:  # noqa: BLE001 - reported in the row
        print(f"  AMICI: failed to import: {type(e).__name__}: {e}")
        failed = f"AMICI: failed to import ({type(e).__name__})"
        return [f"| petab: {name} | - | {failed} | - |"]
    print(f"  AMICI {am.import_kind}: {am.import_s:.1f} s; {len(am.x_ids)} estimated "
          f"parameters, {len(am.petab.measurement_df)} measurements")
    prob, why = load_jaxode(name, am, rtol, atol)
    f, g, method = time_problem(name, am, prob, cli.repeats)
    nllh_am, nllh_jx = check_nllh(name, am, prob)
    for label, times in (("objective", f), ("objective + gradient", g)):
        print(f"  {label}: " + "; ".join(
            f"{k} {fmt_ms(t['best'])} (first call {fmt_ms(t['first'])})"
            for k, t in times.items()))

    def cells(times, peer, jx_note="", am_note=""):
        jx = times.get("jaxode", {}).get("best")
        am_t = times[peer]["best"] if peer else None
        return (f"{why if jx is None else fmt_ms(jx) + jx_note} | "
                f"{'failed' if am_t is None else fmt_ms(am_t) + am_note} | "
                f"{ratio(jx, am_t)} |")

    jx_note = "" if nllh_jx is None else f", nllh {nllh_jx:.4f}"
    sens = method.split()[-1] + " sensitivities" if method else "no sensitivities"
    rows = [(f"| petab: {name}, objective at the nominal parameters, f64, {tol} (vs "
             f"AMICI CVODES via pyPESTO) | "
             f"{cells(f, 'AMICI', jx_note, f', nllh {nllh_am:.4f}')}"),
            (f"| petab: {name}, objective + gradient at the nominal parameters, f64, "
             f"{tol} (vs AMICI, {sens}) | {cells(g, method)}")]
    if (name in FITTED or cli.all_fits) and not cli.no_fits:
        rows.append(fit_row(name, am, prob, cli.starts, cli.seed))
    return rows


def versions() -> str:
    import importlib.metadata as md

    return ", ".join(f"{p} {md.version(p)}" for p in ("jax", "amici", "pypesto", "fides",
                                                       "petab"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("problems", nargs="*", metavar="PROBLEM",
                        help=f"problems to run (default: all seven): {', '.join(NAMES)}")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: {QUICK}, 2 rounds, a 4-start fit")
    parser.add_argument("--all-fits", action="store_true",
                        help="fit every problem run, not only Boehm_JProteomeRes2014")
    parser.add_argument("--no-fits", action="store_true",
                        help="time the objective and gradient only, no fit")
    parser.add_argument("--repeats", type=int, default=10, help="timing rounds")
    parser.add_argument("--starts", type=int, default=20, help="starts of each fit")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starts")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="AMICI's OpenMP threads over conditions (default: all)")
    parser.add_argument("--build", type=Path, default=BUILD,
                        help="where the compiled AMICI models are kept "
                        "(default: benchmarks/.amici)")
    cli = parser.parse_args()
    unknown = [p for p in cli.problems if p not in NAMES]
    if unknown:
        parser.error(f"unknown problems {unknown}; choose from {', '.join(NAMES)}")
    names = list(cli.problems) or list(NAMES)
    if cli.quick:
        names, cli.repeats, cli.starts = [QUICK], 2, 4
    logging.getLogger("amici").setLevel(logging.WARNING)
    logging.getLogger("pypesto").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    print(f"PEtab problems, jaxode vs AMICI; {machine()}; {versions()}; AMICI "
          f"{cli.threads} OpenMP threads; load average {os.getloadavg()[0]:.1f}")
    rows = []
    for name in names:
        rows += run_problem(name, cli)
    print("\n| benchmark | jaxode | peer | ratio |\n|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n(wall time {time.perf_counter() - t0:.0f} s)")
