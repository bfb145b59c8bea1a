"""Benchmark: `fit`'s Gauss–Newton polish against optimistix, from the same start.

`fit` ends with damped Gauss–Newton steps inside its compiled, vmapped loop:
Levenberg–Marquardt for least squares, Fisher scoring for the other likelihoods.
The peers are the library routines a user would reach for: `optimistix.least_squares`
with `optimistix.LevenbergMarquardt` (least squares) and `optimistix.minimise` with
`optimistix.BFGS` (likelihoods), each jit-compiled once, on the same objective in the
same log-parameter coordinates, from the point `fit`'s optimiser reaches after a few
hundred Adam steps. Problems (float64, dopri5/tsit5 at rtol = atol = 1e-8):

1. the two-species competition model, seven observations (least squares);
2. the 1978 influenza outbreak, SIR with negative-binomial noise (dispersion fitted);
3. the Hudson's Bay lynx–hare series, log-normal noise, sigma per species and the
   initial state fitted.

Times are the second call (compilation reported apart), minimum over repeats, the
sides timed alternately; each row gives the final objective of both sides.

    python benchmarks/fit_polish.py [--quick] [--repeats R]
"""

import argparse
import math
import os

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optimistix as optx  # noqa: E402
from jax.scipy.special import gammaln  # noqa: E402

import jaxode  # noqa: E402
from jaxode import data  # noqa: E402
from _timing import measure  # noqa: E402

TOL = 1e-8


def problems():
    """(name, kind, fit kwargs, params0, objective(x) in log coordinates, x from
    a FitResult)."""
    out = []
    ts, ys = data.competition_observations()
    guess = {"r1": 0.1, "r2": 0.1, "a1": 1e-3, "a2": 1e-3, "iN1": 1e-3, "iN2": 1e-3}
    kw = dict(ts=ts, ys=ys, y0=ys[0], positive=True, solver="dopri5", rtol=TOL,
              atol=TOL)

    def comp_res(x):
        p = dict(zip(guess, jnp.exp(x)))
        pred = jaxode.solve(data.competition, jnp.asarray(ys[0]), ts, p,
                            solver="dopri5", rtol=TOL, atol=TOL, throw=False,
                            adjoint="forward").ys  # LM takes forward-mode Jacobians
        return (pred[1:] - ys[1:]).ravel()

    out.append(("competition model, least squares", "ls", data.competition, kw, guess,
                comp_res, lambda r: np.log([r.params[k] for k in guess])))

    days, bed = data.influenza_1978()
    y0 = np.array([762.0, 1.0, 0.0])

    def sir_n(t, y, p):
        return data.sir(t, y, {**p, "N": 763.0})

    flu_kw = dict(ts=days, ys=bed[:, None], y0=y0, t0=0.0, positive=True,
                  observe=lambda t, y, p: y[1:2], noise="negbinomial", rtol=TOL,
                  atol=TOL)

    def flu_nll(x):
        p = {"beta": jnp.exp(x[0]), "gamma": jnp.exp(x[1])}
        mu = jaxode.solve(sir_n, jnp.asarray(y0), np.concatenate([[0.0], days]), p,
                          rtol=TOL, atol=TOL, throw=False).ys[1:, 1]
        mu, phi = jnp.maximum(mu, 1e-10), jnp.exp(x[2])
        return -jnp.sum(gammaln(bed + phi) - gammaln(phi) - gammaln(bed + 1)
                        + phi * jnp.log(phi / (phi + mu)) + bed * jnp.log(mu / (phi + mu)))

    out.append(("influenza, SIR, negative binomial", "nll", sir_n, flu_kw,
                {"beta": 1.0, "gamma": 0.3}, flu_nll,
                lambda r: np.log([r.params["beta"], r.params["gamma"],
                                  r.dispersion[0]])))

    years, lh = data.lynx_hare()
    lh_kw = dict(ts=years - 1900, ys=lh, y0=lh[0], fit_y0=True, noise="lognormal",
                 sigma="estimate", positive=True, rtol=TOL, atol=TOL)
    names = ("alpha", "beta", "gamma", "delta")

    def lh_nll(x):
        p = dict(zip(names, jnp.exp(x[:4])))
        pred = jaxode.solve(data.lotka_volterra, x[4:6], years - 1900, p, rtol=TOL,
                            atol=TOL, throw=False).ys
        s = x[6:8]
        z = (jnp.log(lh) - jnp.log(jnp.maximum(pred, 1e-10))) * jnp.exp(-s)
        return jnp.sum(0.5 * z * z + s + jnp.log(lh) + 0.5 * math.log(2 * math.pi))

    out.append(("lynx-hare, log-normal, sigma and y0 fitted", "nll",
                data.lotka_volterra, lh_kw,
                {"alpha": 0.5, "beta": 0.02, "gamma": 1.0, "delta": 0.02}, lh_nll,
                lambda r: np.concatenate([np.log([r.params[k] for k in names]), r.y0,
                                          np.log(r.sigma)])))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run")
    parser.add_argument("--repeats", type=int, default=5)
    cli = parser.parse_args()
    repeats = 1 if cli.quick else cli.repeats
    starts = (50,) if cli.quick else (300, 50)
    print(f"float64, rtol=atol={TOL}, {os.cpu_count()} threads; starts after "
          f"{' and '.join(map(str, starts))} Adam steps; load average "
          f"{os.getloadavg()[0]:.1f}")
    rows = []
    for (name, kind, f, kw, guess, objective, coords), adam in (
            (p, a) for p in problems() for a in starts):
        near = jaxode.fit(f, guess, steps=adam, polish=False, progress=False, **kw)
        start = {k: float(v) for k, v in near.params.items()}
        x0 = jnp.asarray(coords(near))
        if kind == "ls":
            solver = optx.LevenbergMarquardt(rtol=1e-10, atol=1e-10)
            peer = jax.jit(lambda x: optx.least_squares(
                lambda x, _: objective(x), solver, x, max_steps=400,
                throw=False).value)
            value = lambda x: float(jnp.mean(objective(x) ** 2))  # noqa: E731
            peer_name = "optimistix LevenbergMarquardt"
        else:
            solver = optx.BFGS(rtol=1e-10, atol=1e-10)
            peer = jax.jit(lambda x: optx.minimise(
                lambda x, _: objective(x), solver, x, max_steps=400,
                throw=False).value)
            value = lambda x: float(objective(x))  # noqa: E731
            peer_name = "optimistix BFGS"
        fit_kw = {**kw}
        if "y0" in fit_kw and kw.get("fit_y0"):
            fit_kw["y0"] = np.asarray(near.y0)

        def ours():
            return jaxode.fit(f, start, steps=0, polish=100, progress=False, **fit_kw)

        times = measure({"jaxode": ours, "peer": lambda: peer(x0)}, rounds=repeats)
        ours_loss = ours().loss
        peer_loss = value(peer(x0))
        best = min(ours_loss, peer_loss)
        print(f"{name}: jaxode polish {1e3 * times['jaxode']['best']:.1f} ms "
              f"(first call {times['jaxode']['first']:.1f} s), objective {ours_loss:.10g}; "
              f"{peer_name} {1e3 * times['peer']['best']:.1f} ms (first call "
              f"{times['peer']['first']:.1f} s), objective {peer_loss:.10g}")
        rows.append((f"{name}, from {adam} Adam steps", peer_name, times, ours_loss,
                     peer_loss, best))
    print()
    print("| benchmark | jaxode | peer | ratio |")
    print("|---|---|---|---|")
    for name, peer_name, times, ours_loss, peer_loss, best in rows:
        j, p = times["jaxode"]["best"], times["peer"]["best"]
        print(f"| fit polish, {name}, f64 (vs {peer_name}, same start) | "
              f"{1e3 * j:.1f} ms, objective {ours_loss:.8g} | {1e3 * p:.1f} ms, "
              f"objective {peer_loss:.8g} | "
              + (f"{p / j:.2f}x |" if ours_loss <= peer_loss * (1 + 1e-6)
                 else "jaxode stops at a higher objective |"))


if __name__ == "__main__":
    main()
