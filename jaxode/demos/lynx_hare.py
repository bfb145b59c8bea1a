"""`jaxode demo lynx-hare`: the Lotka–Volterra predator–prey model fitted to the
Hudson's Bay lynx and hare pelts of 1900–1920, with log-normal noise and the initial
state estimated, beside the posterior means of Carpenter's (2018) Stan case study."""

import time
from pathlib import Path

import numpy as np

from .. import fit, plot
from ..data import LYNX_HARE_POSTERIOR, lotka_volterra, lynx_hare
from . import Target, report

RATES = ("alpha", "beta", "gamma", "delta")
# a rough guess: growth and death rates of one per year or less, interaction rates
# of about one over a typical population (tens of thousands)
GUESS = {"alpha": 0.5, "beta": 0.02, "gamma": 1.0, "delta": 0.02}


def run(out: Path, quick: bool = False) -> dict:
    """Fit `d hare/dt = (alpha − beta·lynx)·hare`, `d lynx/dt = (−gamma +
    delta·hare)·lynx` to 21 years of pelts by maximum likelihood: log-normal noise
    with one sigma per species, the 1900 populations estimated. Print the estimates
    with Wald and profile-likelihood intervals beside the Stan posterior means; save
    the data with the fit and its 95 % prediction band, and the rates' profiles.
    Targets: the fit converges; every rate and initial population within 5 % of the
    posterior mean, sigma within 20 % (maximum likelihood estimates sigma below the
    posterior mean)."""
    years, ys = lynx_hare()
    ts = years - years[0]
    steps = 300 if quick else 600
    start = time.perf_counter()
    res = fit(lotka_volterra, GUESS, ts=ts, ys=ys, y0=ys[0], fit_y0=True,
              noise="lognormal", sigma="estimate", positive=True, steps=steps)
    profiles = [res.profile(name) for name in RATES]
    profile_ci = {p.name: p.interval for p in profiles}
    seconds = time.perf_counter() - start
    wald = res.confint(0.95)
    print("Hudson's Bay lynx and hare pelts 1900–1920 (thousands), Lotka–Volterra "
          "predator–prey model")
    print(f"jaxode.fit: log-normal noise, sigma per species estimated, initial "
          f"populations estimated; {res.n_obs} observations, {res.n_params} estimated "
          f"numbers; {seconds:.1f} s with profiles, including compilation; "
          f"converged: {res.converged}")
    print()
    print(f"{'':<8}{'estimate':>10}{'95 % Wald':>22}{'95 % profile':>22}"
          f"{'Stan mean':>11}{'diff':>8}")
    rows = [(n, float(res.params[n]), wald[n], profile_ci[n]) for n in RATES]
    rows += [(name, float(res.y0[i]), _interval(res.y0[i], res.y0_stderr[i]), None)
             for i, name in enumerate(("hare0", "lynx0"))]
    rows += [(f"sigma {s}", float(res.sigma[i]), None, None)
             for i, s in enumerate(("hare", "lynx"))]
    targets = [Target("fit converged (1 if so)", float(res.converged), ">=", 1)]
    for name, est, w, p in rows:
        ref = LYNX_HARE_POSTERIOR[name.split()[0]]
        diff = est / ref - 1
        print(f"{name:<8}{est:>10.4g}{_fmt(w):>22}{_fmt(p):>22}{ref:>11.4g}"
              f"{100 * diff:>7.1f}%")
        bound = 0.2 if name.startswith("sigma") else 0.05
        targets.append(Target(f"{name} relative difference from the Stan posterior "
                              "mean", abs(diff), "<=", bound))
    print(f"AIC {res.aic:.1f}, BIC {res.bic:.1f}")

    t_plot = np.linspace(0.0, ts[-1], 211)
    mid = np.asarray(res.predict(t_plot))
    spread = np.exp(1.959964 * np.asarray(res.sigma))  # log-normal: a factor band
    fig = plot.fit_curves(
        years[0] + t_plot, mid, years, ys, labels=["hares", "lynxes"],
        band=(mid / spread, mid * spread), xlabel="year",
        ylabel="pelts (thousands)",
        title="Lotka–Volterra fitted to the Hudson's Bay series (jaxode.fit)")
    path = Path(out) / "lynx_hare.png"
    fig.savefig(path, dpi=120)
    fig = plot.profiles(profiles,
                        title="Profile likelihoods of the four rates")
    prof_path = Path(out) / "lynx_hare_profiles.png"
    fig.savefig(prof_path, dpi=120)
    print(f"saved {path} and {prof_path}")
    return {"result": res, "seconds": seconds, "targets": report(targets)}


def _interval(est, se):
    return (float(est) - 1.959964 * float(se), float(est) + 1.959964 * float(se))


def _fmt(pair):
    return "" if pair is None else f"[{pair[0]:.3g}, {pair[1]:.3g}]"
