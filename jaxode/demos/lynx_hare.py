"""`jaxode demo lynx-hare`: the Lotka–Volterra predator–prey model fitted to the
Hudson's Bay lynx and hare pelts of 1900–1920, with log-normal noise and the initial
state estimated, beside the posterior means of Carpenter's (2018) Stan case study.

With `--bayes`, the case study itself: its priors, NUTS with 4 chains
(`jaxode.sample`), the posterior summary beside Stan's posterior means, written to
`lynx_hare_posterior.json` with trace, pair and predictive figures."""

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from .. import LogNormal, TruncatedNormal, fit, plot, sample
from ..data import LYNX_HARE_POSTERIOR, lotka_volterra, lynx_hare
from . import Target, report

RATES = ("alpha", "beta", "gamma", "delta")
# a rough guess: growth and death rates of one per year or less, interaction rates
# of about one over a typical population (tens of thousands)
GUESS = {"alpha": 0.5, "beta": 0.02, "gamma": 1.0, "delta": 0.02}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This demo's own options (beside `--out` and `--quick`)."""
    parser.add_argument("--bayes", action="store_true",
                        help="the Stan case study: priors, NUTS with 4 chains "
                        "(jaxode.sample), the posterior beside Stan's means; writes "
                        "lynx_hare_posterior.json and the posterior figures")


def run(out: Path, quick: bool = False, bayes: bool = False) -> dict:
    """Fit `d hare/dt = (alpha − beta·lynx)·hare`, `d lynx/dt = (−gamma +
    delta·hare)·lynx` to 21 years of pelts by maximum likelihood: log-normal noise
    with one sigma per species, the 1900 populations estimated. Print the estimates
    with Wald and profile-likelihood intervals beside the Stan posterior means; save
    the data with the fit and its 95 % prediction band, and the rates' profiles.
    Targets: the fit converges; every rate and initial population within 5 % of the
    posterior mean, sigma within 20 % (maximum likelihood estimates sigma below the
    posterior mean). With `bayes`, `run_bayes` instead."""
    if bayes:
        return run_bayes(out, quick)
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


# ----- the Stan case study (`--bayes`)

# Carpenter (2018): theta[{1, 3}] ~ normal(1, 0.5), theta[{2, 4}] ~ normal(0.05,
# 0.05), all declared <lower=0>; sigma ~ lognormal(-1, 1); z_init ~ lognormal(log 10,
# 1); y_init and y ~ lognormal(log z, sigma), the first observation included
PRIOR = {
    "alpha": TruncatedNormal(1.0, 0.5), "beta": TruncatedNormal(0.05, 0.05),
    "gamma": TruncatedNormal(1.0, 0.5), "delta": TruncatedNormal(0.05, 0.05),
    "y0": LogNormal(float(np.log(10.0)), 1.0), "sigma": LogNormal(-1.0, 1.0),
}
# the case study's names (Stan's), jaxode's labels and the keys of the published means
NAMES = (("alpha", "alpha", "alpha"), ("beta", "beta", "beta"),
         ("gamma", "gamma", "gamma"), ("delta", "delta", "delta"),
         ("sigma[0]", "sigma[0]", "sigma"), ("sigma[1]", "sigma[1]", "sigma"),
         ("z_init[0]", "y0[0]", "hare0"), ("z_init[1]", "y0[1]", "lynx0"))
STATS = ("mean", "sd", "q05", "q50", "q95", "r_hat", "ess")


def run_bayes(out: Path, quick: bool = False) -> dict:
    """The case study's posterior by NUTS: 4 chains of 1000 warmup iterations and
    1000 draws (quick: 150 and 200), started at the maximum-likelihood fit, the case
    study's solver tolerances (relative 1e-5, absolute 1e-3). Prints the summary
    beside Stan's posterior means, writes `lynx_hare_posterior.json` (per number:
    mean, sd, 5/50/95 % quantiles, R-hat, bulk ESS; Stan's names) and the trace,
    pair and predictive figures. Targets: every posterior mean within 5 % of
    Stan's, R-hat below 1.01 (1.05 quick), no divergent transition."""
    years, ys = lynx_hare()
    ts = years - years[0]
    warmup, draws = (150, 200) if quick else (1000, 1000)
    start = time.perf_counter()
    post = sample(lotka_volterra, PRIOR, key=jax.random.key(0), params0=GUESS, ts=ts,
                  ys=ys, y0=ys[0], fit_y0=True, noise="lognormal", num_chains=4,
                  num_warmup=warmup, num_samples=draws, rtol=1e-5, atol=1e-3,
                  fit_steps=600)
    seconds = time.perf_counter() - start
    rows = post.summary()
    print("Hudson's Bay lynx and hare pelts 1900–1920 (thousands): the Lotka–Volterra "
          "case study of Carpenter (2018), its priors, log-normal noise")
    print(f"jaxode.sample: NUTS, 4 chains x ({warmup} warmup + {draws} draws), "
          f"started at the maximum-likelihood fit; {seconds:.1f} s with the fit and "
          f"compilation; {post.num_divergent} divergent transitions; leapfrog steps "
          f"per draw {post.steps.mean():.1f}")
    print()
    print(f"{'':<10}{'max. lik.':>10}{'mean':>10}{'sd':>9}{'5 %':>9}{'95 %':>9}"
          f"{'R-hat':>8}{'ESS':>7}{'Stan mean':>11}{'diff':>8}")
    estimate = dict(zip(post.fit._labels, post.fit._to_natural(post.fit._v)))
    bound = 1.05 if quick else 1.01
    targets = [Target("divergent transitions", post.num_divergent, "<=", 0)]
    for stan, label, key in NAMES:
        r = rows[label]
        ref = LYNX_HARE_POSTERIOR[key]
        diff = r["mean"] / ref - 1
        print(f"{stan:<10}{estimate[label]:>10.4g}{r['mean']:>10.4g}{r['sd']:>9.3g}"
              f"{r['q05']:>9.4g}{r['q95']:>9.4g}{r['r_hat']:>8.3f}{r['ess']:>7.0f}"
              f"{ref:>11.4g}{100 * diff:>7.1f}%")
        targets += [Target(f"{stan} posterior mean relative difference from Stan's",
                           abs(diff), "<=", 0.05),
                    Target(f"{stan} R-hat", r["r_hat"], "<", bound)]
    paths = save_posterior(post, out, years, ys)
    print(f"saved {', '.join(map(str, paths))}")
    return {"posterior": post, "seconds": seconds, "targets": report(targets)}


def save_posterior(post, out, years, ys) -> list:
    """Write `lynx_hare_posterior.json` (per number, by Stan's name: `mean`, `sd`,
    `q05`, `q50`, `q95`, `r_hat`, `ess`) and the trace, pair and predictive figures
    to `out`; returns their paths."""
    rows = post.summary()
    path = Path(out) / "lynx_hare_posterior.json"
    path.write_text(json.dumps({stan: {k: rows[label][k] for k in STATS}
                                for stan, label, _ in NAMES}, indent=2) + "\n")
    figures = {
        "lynx_hare_posterior_trace.png": plot.posterior(
            post, title="Trace and marginal posterior of every estimated number"),
        "lynx_hare_posterior_pairs.png": plot.posterior_pairs(
            post, list(RATES), title="Posterior of the four rates, pairwise"),
        "lynx_hare_posterior_predictive.png": plot.posterior_predictive(
            post, np.linspace(0.0, years[-1] - years[0], 161), years - years[0], ys,
            labels=["hares", "lynxes"], t_offset=float(years[0]), xlabel="year",
            ylabel="pelts (thousands)", key=jax.random.key(1),
            title="Posterior predictive: 90 % bands of the curve and of new pelts"),
    }
    paths = [path]
    for name, fig in figures.items():
        paths.append(Path(out) / name)
        # the traces are dense noise, which a PNG keeps pixel by pixel: fewer pixels
        fig.savefig(paths[-1], dpi=80 if "trace" in name else 110)
    return paths


def main(argv: list[str] | None = None) -> int:
    """`python -m jaxode.demos.lynx_hare [--bayes] [--quick] [--out DIR]`."""
    parser = argparse.ArgumentParser(prog="jaxode demo lynx-hare",
                                     description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out"),
                        help="directory for the figures (default: ./out)")
    parser.add_argument("--quick", action="store_true", help="a short run")
    add_arguments(parser)
    ns = parser.parse_args(argv)
    ns.out.mkdir(parents=True, exist_ok=True)
    results = run(ns.out, quick=ns.quick, bayes=ns.bayes)
    return 1 if any(not t.met for t in results["targets"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
