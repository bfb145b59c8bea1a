"""`jaxode demo petab`: the JAK2/STAT5 model of Boehm et al. (2014, J. Proteome Res.)
read from its PEtab files (Benchmark-Models-PEtab collection), fitted from 20 starts,
with the published optimum as the reference."""

import time
from pathlib import Path

import jax
import numpy as np

from .. import plot
from . import Target, report

NAME = "Boehm_JProteomeRes2014"
# the negative log-likelihood at the published estimates (the collection's nominal
# values), as AMICI computes it
REFERENCE_NLLH = 138.2220


def _estimates_table(prob, res) -> None:
    print(f"{'parameter':<22}{'scale':>7}{'bounds':>16}{'published':>12}"
          f"{'estimate':>12}")
    for name in prob.x_ids:
        lo, hi = prob.lower[name], prob.upper[name]
        print(f"{name:<22}{prob.scales[name]:>7}{f'[{lo:.0e}, {hi:.0e}]':>16}"
              f"{prob.x_nominal[name]:>12.4g}{float(res.params[name]):>12.4g}")


def _data_and_fit(prob, res, path: Path, starts: int) -> None:
    table = prob.simulate(res.params)
    data = prob.problem.measurement_df
    names = sorted(data["observableId"].unique())
    t_obs = np.sort(data["time"].unique())
    sim = np.full((len(t_obs), len(names)), np.nan)
    obs = np.full((len(t_obs), len(names)), np.nan)
    for j, name in enumerate(names):
        rows = data["observableId"] == name
        k = np.searchsorted(t_obs, data.loc[rows, "time"])
        obs[k, j] = data.loc[rows, "measurement"]
        sim[k, j] = table.loc[rows, "simulation"]
    fig = plot.fit_curves(
        t_obs, sim, t_obs, obs, labels=names, xlabel="time (min)",
        ylabel="relative phosphorylation / abundance (%)",
        title=f"Boehm et al. 2014: data and the best of {starts} starts")
    fig.savefig(path, dpi=120)


def run(out: Path, quick: bool = False) -> dict:
    """Load the problem (SBML model and PEtab tables), check its negative
    log-likelihood at the published estimates against AMICI's 138.2220, fit it from
    20 starts drawn uniformly within the bounds on the log10 scale (Levenberg–
    Marquardt on the weighted residuals, then BFGS on the likelihood, exact
    derivatives by forward sensitivities, every start in one compiled program), print the estimates beside the published
    ones, and save the waterfall of the starts and the data against the fit.
    Targets: the likelihood at the published estimates to 1e-3; the best start at the
    published optimum to 1e-3 (with `--quick`, 4 starts: within 15 above it)."""
    from ..petab import PROBLEMS, load

    starts, steps, polish = (4, 50, 200) if quick else (20, 200, 200)
    prob = load(PROBLEMS / NAME / f"{NAME}.yaml")
    nominal = prob.nllh()
    print(f"Boehm et al. 2014 (JAK2/STAT5 dimerisation), from PEtab: "
          f"{len(prob.x_ids)} estimated parameters, "
          f"{len(prob.problem.measurement_df)} measurements")
    print(f"negative log-likelihood at the published estimates: {nominal:.4f} "
          f"(AMICI: {REFERENCE_NLLH})")
    start = time.perf_counter()
    res = prob.fit(multistart=starts, key=jax.random.key(0), max_steps=steps,
                   polish_steps=polish)
    seconds = time.perf_counter() - start
    nll = np.asarray(res.starts_nll)
    near = int(np.sum(nll - REFERENCE_NLLH < 0.01))
    print(f"fit: {starts} starts, Levenberg–Marquardt (at most {steps} steps) then "
          f"BFGS (at most {polish}), {seconds:.1f} s including compilation")
    print(f"best negative log-likelihood {res.nll:.4f}; {near} of {starts} starts "
          f"within 0.01 of {REFERENCE_NLLH}; {int(np.sum(~np.isfinite(nll)))} "
          "failed")
    print()
    _estimates_table(prob, res)
    out = Path(out)
    fig = plot.waterfall(res, title=f"Boehm et al. 2014: {starts} starts")
    waterfall = out / "petab_waterfall.png"
    fig.savefig(waterfall, dpi=120)
    fit_path = out / "petab_fit.png"
    _data_and_fit(prob, res, fit_path, starts)
    print(f"saved {waterfall} and {fit_path}")
    targets = [
        Target("nllh at the published estimates minus 138.2220",
               abs(nominal - REFERENCE_NLLH), "<=", 1e-3),
        Target("best start minus 138.2220", res.nll - REFERENCE_NLLH, "<=", 15.0)
        if quick else
        Target("|best start - 138.2220|", abs(res.nll - REFERENCE_NLLH), "<=", 1e-3)]
    return {"result": res, "seconds": seconds, "targets": report(targets)}
