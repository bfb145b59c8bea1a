"""`jaxode demo flu`: the SIR epidemic model fitted to the 1978 influenza outbreak
at an English boarding school, with normal and with negative-binomial noise."""

import math
import time
from pathlib import Path

import numpy as np
import scipy.stats

from .. import fit, plot
from ..data import INFLUENZA_1978_N, influenza_1978, sir
from . import Target, report

N = float(INFLUENZA_1978_N)
Y0 = np.array([N - 1.0, 1.0, 0.0])  # one boy ill on day 0
GUESS = {"beta": 1.0, "gamma": 0.3}
REFERENCE = {  # published estimates: (beta, gamma, R0)
    "normal": ("Murray, least squares", 1.66, 0.44, 1.66 / 0.44 * (N - 1) / N),
    "negbinomial": ("Stan SIR workflow, posterior", 1.73, 0.54, 3.2),
}


def sir_n(t, y, p):
    return sir(t, y, {**p, "N": N})


def in_bed(t, y, p):
    return y[1:2]  # only the infected (bed-confined) count is observed


def run(out: Path, quick: bool = False) -> dict:
    """Fit SIR (763 boys, one ill on day 0) to 14 daily counts of boys in bed, where
    only the infected compartment is observed: once by least squares (normal noise),
    once with negative-binomial noise (dispersion estimated). Print beta, gamma and
    R0 = beta/gamma·S0/N with 95 % intervals beside Murray's least-squares fit and
    the Stan SIR workflow's posterior; save the data with both fits and the
    negative binomial's 95 % prediction band. Targets: both fits converge; beta
    within 3 %, gamma within 5 %, R0 within 10 % of the published values."""
    days, counts = influenza_1978()
    steps = 300 if quick else 800
    results, targets = {}, []
    start = time.perf_counter()
    for noise in ("normal", "negbinomial"):
        results[noise] = fit(sir_n, GUESS, ts=days, ys=counts[:, None], y0=Y0, t0=0.0,
                             observe=in_bed, noise=noise, positive=True, steps=steps)
    seconds = time.perf_counter() - start
    print("Influenza at an English boarding school, January 1978: 763 boys, boys in "
          "bed on days 1-14: " + ", ".join(f"{c:g}" for c in counts))
    print(f"jaxode.fit: SIR, only I observed; two noise models, {seconds:.1f} s "
          "including compilation")
    print()
    print(f"{'noise':<13}{'':<7}{'estimate':>10}{'95 % interval':>20}"
          f"{'published':>11}{'diff':>8}   source")
    for noise, res in results.items():
        source, *published = REFERENCE[noise]
        ci = res.confint(0.95)
        r0, r0_ci = _r0(res)
        rows = [("beta", float(res.params["beta"]), ci["beta"]),
                ("gamma", float(res.params["gamma"]), ci["gamma"]), ("R0", r0, r0_ci)]
        for (name, est, (lo, hi)), ref, bound in zip(rows, published,
                                                      (0.03, 0.05, 0.10)):
            diff = est / ref - 1
            print(f"{noise:<13}{name:<7}{est:>10.4g}{f'[{lo:.3g}, {hi:.3g}]':>20}"
                  f"{ref:>11.3g}{100 * diff:>7.1f}%   {source}")
            targets.append(Target(f"{noise} {name} relative difference from the "
                                  "published value", abs(diff), "<=", bound))
        extra = (f"dispersion {res.dispersion[0]:.3g}" if res.dispersion is not None
                 else f"sigma {res.sigma[0]:.3g}")
        print(f"{noise:<13}nll {res.nll:.2f}, AIC {res.aic:.1f}, {extra}, converged: "
              f"{res.converged}")
        targets.append(Target(f"{noise} fit converged (1 if so)",
                              float(res.converged), ">=", 1))

    t_plot = np.linspace(0.0, days[-1], 281)
    nb = results["negbinomial"]
    mu = np.asarray(nb.predict(t_plot, observed=True))
    phi = float(nb.dispersion[0])
    band = [scipy.stats.nbinom.ppf(q, phi, phi / (phi + mu)) for q in (0.025, 0.975)]
    fig = plot.fit_curves(
        t_plot, mu, days, counts, labels=["negative binomial"], band=band,
        xlabel="day", ylabel="boys in bed",
        title="SIR fitted to the 1978 boarding-school outbreak (jaxode.fit)")
    ax = fig.axes[0]
    ax.plot(t_plot, np.asarray(results["normal"].predict(t_plot, observed=True)),
            "--", color="black", lw=1.5, label="least squares (fitted)")
    ax.legend(frameon=False)
    path = Path(out) / "flu.png"
    fig.savefig(path, dpi=120)
    print(f"saved {path}")
    return {"results": results, "seconds": seconds, "targets": report(targets)}


def _r0(res):
    """R0 = beta/gamma · S0/N and its 95 % interval, by the delta method on the log
    scale (both rates were fitted on it)."""
    b, g = float(res.params["beta"]), float(res.params["gamma"])
    r0 = b / g * Y0[0] / N
    cov = res.cov[:2, :2] / np.outer([b, g], [b, g])  # of (log beta, log gamma)
    se = math.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0))
    return r0, (r0 * math.exp(-1.959964 * se), r0 * math.exp(1.959964 * se))
