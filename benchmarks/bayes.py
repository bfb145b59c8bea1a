"""Benchmark: posterior sampling of the lynx–hare case study, effective samples per
second of the slowest parameter.

Same problem on both sides: Carpenter's (2018) Lotka–Volterra model of the Hudson's
Bay pelts with its priors (alpha, gamma ~ normal(1, 0.5), beta, delta ~
normal(0.05, 0.05), all truncated at 0, sigma ~ lognormal(−1, 1), initial state ~
lognormal(log 10, 1)), log-normal likelihood with the first observation, Tsit5
with the case study's tolerances (relative 1e-5, absolute 1e-3), float64, NUTS with
4 chains vmapped, the same numbers of warmup iterations and draws, the same ESS
routine (bulk ESS).

- jaxode: `jaxode.sample` (a maximum-likelihood fit for the start, then NUTS on the
  fit's problem, standardised by its covariance).
- numpyro: the model written by hand as a user would, with diffrax for the ODE
  (its default adjoint, `throw=False` so that a failed solve rejects the proposal
  instead of stopping the run), `NUTS` with its defaults (diagonal mass matrix,
  target acceptance 0.8), `MCMC(chain_method="vectorized")`, every chain started
  at jaxode's guess (`init_to_value`: the rates of `GUESS`, the 1900 counts, sigma
  0.3). With numpyro's default starts (uniform in (−2, 2) on the unconstrained
  scale) its chains stayed far from the posterior (beta and delta near 1 instead of
  0.03) in 630 s for 100 + 100 iterations, or failed at the start with a
  non-finite solve, so the benchmark gives it the guess that jaxode's fit starts
  from. A second peer row gives numpyro a dense mass matrix (`dense_mass=True`), the
  setting for correlated posteriors such as this one (the four rates).

Each side's time is of a second call (compilation reported apart, as the first call
minus the best; the calls differ in their seeds, so this is rough), the fit included
for jaxode; the sides run alternately in this one process, the fastest of
`--repeats` runs is kept, and the ESS is averaged over them.

    python benchmarks/bayes.py [--quick] [--warmup N] [--samples N] [--repeats R]
"""

import argparse
import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxode  # noqa: E402
from jaxode._fit._stats import bulk_ess  # noqa: E402  (the ESS of Posterior.summary)
from jaxode.data import LYNX_HARE_POSTERIOR, lotka_volterra, lynx_hare  # noqa: E402

RTOL, ATOL = 1e-5, 1e-3
GUESS = {"alpha": 0.5, "beta": 0.02, "gamma": 1.0, "delta": 0.02}
CHAINS = 4
YEARS, YS = lynx_hare()
TS = YEARS - YEARS[0]
NAMES = ("alpha", "beta", "gamma", "delta", "hare0", "lynx0", "sigma_hare",
         "sigma_lynx")
PRIOR = {"alpha": jaxode.TruncatedNormal(1.0, 0.5),
         "beta": jaxode.TruncatedNormal(0.05, 0.05),
         "gamma": jaxode.TruncatedNormal(1.0, 0.5),
         "delta": jaxode.TruncatedNormal(0.05, 0.05),
         "y0": jaxode.LogNormal(float(np.log(10.0)), 1.0),
         "sigma": jaxode.LogNormal(-1.0, 1.0)}


# ------------------------------------------------------------------ jaxode


def run_jaxode(warmup: int, samples: int, seed: int):
    """Seconds, draws `(chains, draws, 8)` in `NAMES` order, leapfrog steps of the
    draws, divergent transitions."""
    start = time.perf_counter()
    post = jaxode.sample(
        lotka_volterra, PRIOR, key=jax.random.key(seed),
        params0=GUESS, ts=TS,
        ys=YS, y0=YS[0], fit_y0=True, noise="lognormal", num_chains=CHAINS,
        num_warmup=warmup, num_samples=samples, rtol=RTOL, atol=ATOL, fit_steps=600,
        progress=False)
    seconds = time.perf_counter() - start
    labels = ("alpha", "beta", "gamma", "delta", "y0[0]", "y0[1]", "sigma[0]",
              "sigma[1]")
    draws = np.stack([post.draws_of(name) for name in labels], axis=-1)
    grads = int(post.steps.sum())  # the draws' (not the warmup's), as numpyro's
    return seconds, draws, grads, post.num_divergent


# ------------------------------------------------------------------ numpyro


def make_numpyro(warmup: int, samples: int, dense: bool = False):
    import diffrax
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS, init_to_value

    def field(t, z, theta):
        alpha, beta, gamma, delta = theta
        hare, lynx = z[0], z[1]
        return jnp.stack([(alpha - beta * lynx) * hare, (-gamma + delta * hare) * lynx])

    def model(ts, y):
        alpha = numpyro.sample("alpha", dist.TruncatedNormal(1.0, 0.5, low=0.0))
        beta = numpyro.sample("beta", dist.TruncatedNormal(0.05, 0.05, low=0.0))
        gamma = numpyro.sample("gamma", dist.TruncatedNormal(1.0, 0.5, low=0.0))
        delta = numpyro.sample("delta", dist.TruncatedNormal(0.05, 0.05, low=0.0))
        z_init = numpyro.sample("z_init", dist.LogNormal(jnp.log(10.0), 1.0).expand([2]))
        sigma = numpyro.sample("sigma", dist.LogNormal(-1.0, 1.0).expand([2]))
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), diffrax.Tsit5(), t0=ts[0], t1=ts[-1], dt0=None,
            y0=z_init, args=(alpha, beta, gamma, delta),
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
            max_steps=4096, throw=False)
        numpyro.sample("y", dist.LogNormal(jnp.log(sol.ys), sigma), obs=y)

    start = {**{k: jnp.asarray(v) for k, v in GUESS.items()},
             "z_init": jnp.asarray(YS[0]), "sigma": jnp.full(2, 0.3)}
    mcmc = MCMC(NUTS(model, init_strategy=init_to_value(values=start), dense_mass=dense),
                num_warmup=warmup, num_samples=samples,
                num_chains=CHAINS, chain_method="vectorized", progress_bar=False,
                jit_model_args=True)
    ts, y = jnp.asarray(TS), jnp.asarray(YS)

    def run(seed: int):
        start = time.perf_counter()
        mcmc.run(jax.random.key(seed), ts, y, extra_fields=("num_steps", "diverging"))
        s = mcmc.get_samples(group_by_chain=True)
        jax.block_until_ready(s)
        seconds = time.perf_counter() - start
        draws = np.concatenate(
            [np.asarray(s[k])[..., None] for k in ("alpha", "beta", "gamma", "delta")]
            + [np.asarray(s["z_init"]), np.asarray(s["sigma"])], axis=-1)
        extra = mcmc.get_extra_fields(group_by_chain=True)
        grads = int(np.sum(extra["num_steps"]))  # the draws' (not the warmup's)
        return seconds, draws, grads, int(np.sum(extra["diverging"]))

    return run


# ------------------------------------------------------------------ main


def summarise(name, outs, compile_s, samples):
    """The fastest run's seconds, the bulk ESS of the slowest parameter averaged over
    the runs (each with its own seed); prints a line and returns ESS/s."""
    seconds = min(o[0] for o in outs)
    ess = np.mean([np.asarray(bulk_ess(o[1])) for o in outs], axis=0)
    which = NAMES[int(np.argmin(ess))]
    draws = np.concatenate([o[1] for o in outs], axis=1)
    means = draws.reshape(-1, draws.shape[-1]).mean(axis=0)
    stan = [LYNX_HARE_POSTERIOR[k] for k in ("alpha", "beta", "gamma", "delta",
                                              "hare0", "lynx0", "sigma", "sigma")]
    worst = np.max(np.abs(means / np.array(stan) - 1))
    steps = np.mean([o[2] for o in outs]) / (CHAINS * samples)
    divergent = sum(o[3] for o in outs)
    print(f"{name:<20} {seconds:7.2f} s (compile {compile_s:5.1f} s), slowest bulk ESS "
          f"{ess.min():6.0f} ({which}) -> {ess.min() / seconds:7.1f} ESS/s; leapfrog "
          f"steps per draw {steps:5.1f}; {divergent} divergent in {len(outs)} runs; "
          f"means within {100 * worst:.1f} % of Stan's")
    return ess.min() / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs per side after the first (default 1)")
    cli = parser.parse_args()
    warmup, samples = (50, 50) if cli.quick else (cli.warmup, cli.samples)
    repeats = 1 if cli.quick else cli.repeats
    print(f"lynx-hare case study, float64, Tsit5 rtol={RTOL} atol={ATOL}, NUTS "
          f"{CHAINS} chains x ({warmup} warmup + {samples} draws), "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    runs = {"jaxode": lambda seed: run_jaxode(warmup, samples, seed),
            "numpyro": make_numpyro(warmup, samples),
            "numpyro, dense mass": make_numpyro(warmup, samples, dense=True)}
    first = {name: run(0)[0] for name, run in runs.items()}
    outs = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeats):  # alternate the sides, the order rotating
        for name in names[r % len(names):] + names[:r % len(names)]:
            outs[name].append(runs[name](r + 1))
    rates = {name: summarise(name, outs[name],
                             first[name] - min(o[0] for o in outs[name]), samples)
             for name in runs}
    print()
    print("| benchmark | jaxode | peer | ratio |")
    print("|---|---|---|---|")
    for peer, what in (("numpyro", "numpyro + diffrax"),
                       ("numpyro, dense mass", "numpyro + diffrax, dense mass matrix")):
        print(f"| NUTS on the lynx-hare case study, {CHAINS} chains x ({warmup} + "
              f"{samples}), float64: ESS/s of the slowest parameter (vs {what}) | "
              f"{rates['jaxode']:.1f} ESS/s | {rates[peer]:.1f} ESS/s | "
              f"{rates['jaxode'] / rates[peer]:.1f}x |")

if __name__ == "__main__":
    main()
