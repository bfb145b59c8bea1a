"""`sample` and `FitResult.sample`: NUTS on the fit's problem.

A conjugate case with a closed-form posterior (the decay `y' = -k y` observed on log
scale, `log y(t) = log y0 − k t`, a linear model in `(log y0, k)` with known noise),
the lynx–hare case study against Stan's published posterior means, the chains
vmapped against a loop over them, the diagnostics against blackjax's, predictive
bands, and the errors for bad priors.
"""

import warnings

import equinox as eqx
import jax
import numpy as np
import pytest
import scipy.stats

import jaxode as jo
from jaxode.data import LYNX_HARE_POSTERIOR, lotka_volterra, lynx_hare
from jaxode._fit import _stats

TS = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0])
SIGMA = 0.2  # known noise of log y
# log y0 = 2.3, k = 0.15, noise of sd SIGMA
LOG_Y = 2.3 - 0.15 * TS + SIGMA * np.array([0.5, -1.1, 0.3, 0.9, -0.4, -0.6, 0.7])
# priors about as informative as the data, so that their form shows in the posterior
PRIOR = {"y0": jo.LogNormal(np.log(9.0), 0.15), "k": jo.TruncatedNormal(0.05, 0.05)}
FAST = {"solver": "rk4", "dt": 0.05, "fit_steps": 200, "progress": False}


def decay(t, y, p):
    return -p["k"] * y


def sample_decay(key, **kw):
    return jo.sample(decay, PRIOR, key=key, ts=TS, ys=np.exp(LOG_Y)[:, None],
                     y0=np.array([8.0]), fit_y0=True, noise="lognormal", sigma=SIGMA,
                     **{**FAST, **kw})


def closed_form():
    """The posterior of `(X, K) = (log y0, k)`: Gaussian before truncation (linear
    regression of `log y` on `(1, −t)` with normal priors), `K > 0` after it. `K`'s
    marginal is the truncated normal; `X` is normal given `K`, linear in it."""
    design = np.stack([np.ones_like(TS), -TS], axis=1)
    prior_mean = np.array([np.log(9.0), 0.05])
    prior_prec = np.diag([1.0 / 0.15 ** 2, 1.0 / 0.05 ** 2])
    prec = prior_prec + design.T @ design / SIGMA ** 2
    cov = np.linalg.inv(prec)
    mean = cov @ (prior_prec @ prior_mean + design.T @ LOG_Y / SIGMA ** 2)
    sd_k = np.sqrt(cov[1, 1])
    k = scipy.stats.truncnorm(-mean[1] / sd_k, np.inf, mean[1], sd_k)
    slope = cov[0, 1] / cov[1, 1]
    mean_x = mean[0] + slope * (k.mean() - mean[1])
    var_x = cov[0, 0] - slope * cov[0, 1] + slope ** 2 * k.var()
    return {"log_y0": (mean_x, np.sqrt(var_x)), "k": (k.mean(), k.std())}


def test_conjugate_posterior_mean_and_sd_within_3_mcse(dtype):
    post = sample_decay(jax.random.key(1), num_chains=4, num_warmup=300,
                        num_samples=500)
    truth = closed_form()
    draws = {"log_y0": np.log(post.samples["y0"][..., 0]), "k": post.samples["k"]}
    for name, (mean, sd) in truth.items():
        x = draws[name]
        ess = float(_stats.bulk_ess(x[..., None])[0])
        assert ess > 300, (name, ess)
        mcse_mean, mcse_sd = sd / np.sqrt(ess), sd / np.sqrt(2 * ess)
        assert abs(x.mean() - mean) < 3 * mcse_mean, (name, x.mean(), mean, mcse_mean)
        assert abs(x.std() - sd) < 3 * mcse_sd, (name, x.std(), sd, mcse_sd)
    assert post.samples["k"].shape == (4, 500) and post.samples["y0"].shape == (4, 500, 1)
    assert post.draws.dtype == np.float64 and post.num_divergent == 0


@pytest.mark.filterwarnings("ignore:jaxode.sample")  # a short warmup: divergences
def test_vmap_over_chains_equals_a_loop_over_chains():
    kw = dict(num_chains=4, num_warmup=30, num_samples=40, jitter=0.5)
    together = sample_decay(jax.random.key(5), **kw)
    one_by_one = together.fit.sample(PRIOR, key=jax.random.key(5),
                                     chain_method="sequential", progress=False, **kw)
    np.testing.assert_allclose(together.draws, one_by_one.draws, rtol=1e-9)
    np.testing.assert_allclose(together.warmup_draws, one_by_one.warmup_draws,
                               rtol=1e-9)
    np.testing.assert_allclose(together.step_size, one_by_one.step_size, rtol=1e-9)
    # the chains differ from one another (each has its own key and start)
    assert np.all(np.abs(np.diff(together.draws[:, -1, 0])) > 1e-6)


@pytest.fixture(scope="module")
def lynx_hare_posterior():
    """The case study: rates ~ normal(1, 0.5) (alpha, gamma) and normal(0.05, 0.05)
    (beta, delta) truncated at 0, sigma ~ lognormal(−1, 1), initial populations ~
    lognormal(log 10, 1), log-normal likelihood with the first observation, the
    case study's tolerances (rtol 1e-5, atol 1e-3). Fitted by least squares on log
    scale, then sampled from the fit: its sigma becomes a
    sampled number."""
    years, ys = lynx_hare()
    res = jo.fit(lotka_volterra, {"alpha": 0.5, "beta": 0.02, "gamma": 1.0,
                                  "delta": 0.02},
                 ts=years - years[0], ys=ys, y0=ys[0], fit_y0=True, noise="lognormal",
                 positive=True, steps=300, rtol=1e-5, atol=1e-3, progress=False)
    prior = {"alpha": jo.TruncatedNormal(1.0, 0.5), "gamma": jo.TruncatedNormal(1.0, 0.5),
             "beta": jo.TruncatedNormal(0.05, 0.05),
             "delta": jo.TruncatedNormal(0.05, 0.05), "sigma": jo.LogNormal(-1.0, 1.0),
             "y0": jo.LogNormal(np.log(10.0), 1.0)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divergence, no R-hat warning
        return res.sample(prior, key=jax.random.key(0), num_chains=4, num_warmup=150,
                          num_samples=300, progress=False)


def test_lynx_hare_means_within_5_percent_of_stan_and_r_hat_below_1_01(
        lynx_hare_posterior):
    rows = lynx_hare_posterior.summary()
    stan = {"alpha": "alpha", "beta": "beta", "gamma": "gamma", "delta": "delta",
            "y0[0]": "hare0", "y0[1]": "lynx0", "sigma[0]": "sigma",
            "sigma[1]": "sigma"}
    assert list(rows) == list(stan)
    for label, name in stan.items():
        mean = rows[label]["mean"]
        assert abs(mean / LYNX_HARE_POSTERIOR[name] - 1) < 0.05, (label, mean)
        assert rows[label]["r_hat"] < 1.01, (label, rows[label]["r_hat"])
        assert rows[label]["ess"] > 200
        assert rows[label]["q05"] < rows[label]["q50"] < rows[label]["q95"]
    assert lynx_hare_posterior.num_divergent == 0
    samples = lynx_hare_posterior.samples  # in the order of params0, then y0, sigma
    assert list(samples) == ["alpha", "beta", "gamma", "delta", "y0", "sigma"]
    assert samples["y0"].shape == samples["sigma"].shape == (4, 300, 2)


def test_predictive_bands(lynx_hare_posterior):
    post = lynx_hare_posterior
    ts = np.array([0.0, 5.0, 10.0, 20.0])
    curve = post.predict(ts, noise=False, draws=None)
    assert curve.median.shape == (4, 2)
    # at t0 the curve is the fitted initial state: its median over the draws
    hare0 = post.samples["y0"][..., 0].reshape(-1)
    np.testing.assert_allclose(curve.median[0, 0], np.median(hare0), rtol=1e-5)
    # new observations: log y = log curve + sigma·z, so the 90 % band of log y has
    # the half-width 1.645·sqrt(var(log curve) + E sigma²)
    new = post.predict(ts, key=jax.random.key(1), draws=None)
    sd_log_curve = np.log(curve.high / curve.low)[1:, 0] / (2 * 1.645)
    sigma = post.samples["sigma"][..., 0].reshape(-1)
    expected = 2 * 1.645 * np.sqrt(sd_log_curve ** 2 + np.mean(sigma ** 2))
    np.testing.assert_allclose(np.log(new.high / new.low)[1:, 0], expected, rtol=0.1)
    assert np.all(new.low < curve.low) and np.all(new.high > curve.high)


def test_diagnostics_are_blackjax_s_rank_normalised_split_r_hat_and_bulk_ess():
    import blackjax.diagnostics as bd

    rng = np.random.default_rng(0)
    iid = rng.normal(size=(4, 500, 2))
    ess = _stats.bulk_ess(iid)
    assert np.all(np.abs(ess / 2000 - 1) < 0.15)
    ar = np.zeros((4, 2000))
    noise = rng.normal(size=ar.shape)
    for t in range(1, ar.shape[1]):  # AR(1) with 0.5: ESS = n (1 − 0.5)/(1 + 0.5)
        ar[:, t] = 0.5 * ar[:, t - 1] + noise[:, t]
    assert abs(_stats.bulk_ess(ar[..., None])[0] / (8000 / 3) - 1) < 0.15
    shifted = iid + np.array([0.0, 0.0, 1.0, 1.0])[:, None, None]  # chains disagree
    assert np.all(_stats.r_hat(shifted) > 1.05) and np.all(_stats.r_hat(iid) < 1.01)
    if hasattr(bd, "rhat"):  # blackjax >= 1.3 has the composite routines too
        np.testing.assert_allclose(_stats.r_hat(shifted), bd.rhat(shifted), rtol=1e-5)
        np.testing.assert_allclose(ess, bd.ess_bulk(iid), rtol=1e-4)


def test_divergences_and_high_r_hat_warn(lynx_hare_posterior):
    from jaxode._fit._sampling import warn_diagnostics

    divergent = np.array(lynx_hare_posterior.divergent)
    divergent[:, 3] = True
    post = eqx.tree_at(lambda p: p.divergent, lynx_hare_posterior, divergent)
    with pytest.warns(RuntimeWarning, match=r"4 of 1200 transitions .* diverged"):
        warn_diagnostics(post)
    stuck = eqx.tree_at(lambda p: p.draws, lynx_hare_posterior,
                        lynx_hare_posterior.draws
                        + np.arange(4.0)[:, None, None] * 0.01)
    with pytest.warns(RuntimeWarning, match=r"R-hat above 1.01 \(alpha: "):
        warn_diagnostics(stuck)


def test_a_short_run_warns_of_r_hat():
    with pytest.warns(RuntimeWarning, match="R-hat above 1.01"):
        sample_decay(jax.random.key(2), num_chains=4, num_warmup=0, num_samples=8,
                     jitter=3.0)


GOOD = dict(key=jax.random.key(0), ts=TS, ys=np.exp(LOG_Y)[:, None],
            y0=np.array([8.0]), fit_y0=True, noise="lognormal", sigma=SIGMA, **FAST)


@pytest.mark.parametrize("prior, kw, match", [
    ({**PRIOR, "kk": jo.Normal(0.0, 1.0)}, {"params0": {"k": 0.1}},
     r"`prior` names 'kk', which is not estimated"),
    ({**PRIOR, "sigma": jo.HalfNormal(1.0)}, {},
     r"names 'sigma', which is not estimated \(the noise has no estimated sigma"),
    ({"k": jo.Normal(0.0, 1.0)}, {}, r"'y0\[0\]' has no prior"),
    ({"y0": jo.LogNormal(2.0, 1.0)}, {"params0": {"k": 0.1}}, r"'k' has no prior"),
    ({**PRIOR, "k": jo.Normal(0.0, -0.5)}, {},
     r"`prior\['k'\]`=Normal\(loc=0.0, scale=-0.5\): `scale`=-0.5 must be > 0"),
    ({**PRIOR, "k": jo.Uniform(1.0, 0.5)}, {},
     r"`prior\['k'\]`=Uniform\(low=1.0, high=0.5\): the lower end 1.0 must be below"),
    ({**PRIOR, "k": jo.HalfNormal(0.0)}, {}, r"`prior\['k'\]`.*`scale`=0.0 must be > 0"),
    ({**PRIOR, "k": jo.LogNormal(float("nan"), 1.0)}, {},
     r"`prior\['k'\]`.*`loc`=nan must be a finite number"),
    ({**PRIOR, "k": 0.3}, {}, r"`prior\['k'\]`=0.3 is not a prior distribution"),
    (PRIOR, {"params0": {"k": -0.1}},
     (r"`params0` 'k'=-0.1 lies outside the support \(0.0, inf\) of its prior "
      r"TruncatedNormal")),
    (PRIOR, {"y0": np.array([-2.0])},
     (r"`y0` 'y0\[0\]'=-2.0 lies outside the support \(0.0, inf\) of its prior "
      r"LogNormal")),
    ({**PRIOR, "k": jo.Uniform(0.0, 1.0)}, {"params0": {"k": 1.5}},
     r"'k'=1.5 lies outside the support \(0.0, 1.0\)"),
    ({**PRIOR, "k": jo.Uniform(0.0, 1.0)}, {"params0": {"k": 1.5},
                                            "bounds": {"k": (0.5, 2.0)}},
     (r"'k'=1.5 lies outside the support \(0.5, 1.0\) of its prior Uniform.* and "
      r"the bounds")),
    (PRIOR, {"fit_y0": False}, r"names 'y0', which is not estimated \(the initial"),
    (PRIOR, {"key": None}, r"`sample` needs a `key`"),
    (PRIOR, {"num_samples": 2}, r"`num_samples` must be an integer >= 4, got 2"),
    (PRIOR, {"target_accept": 1.0}, r"`target_accept` must be in \(0, 1\), got 1.0"),
    (PRIOR, {"chain_method": "parallel"}, r"`chain_method`='parallel' must be one of"),
    ([1.0], {}, r"`prior` must be a dict"),
])
def test_bad_input_names_the_parameter_and_the_value(prior, kw, match):
    with pytest.raises(ValueError, match=match):
        jo.sample(decay, prior, **{**GOOD, **kw})


def test_sample_from_a_loaded_fit_says_it_has_no_model(tmp_path):
    res = jo.fit(decay, {"k": 0.1}, ts=TS, ys=np.exp(LOG_Y)[:, None],
                 y0=np.array([8.0]), noise="lognormal", positive=True, steps=0,
                 polish=5, solver="rk4", dt=0.05, progress=False)
    res.save(tmp_path / "fit.eqx")
    with pytest.raises(RuntimeError, match="loaded from a file"):
        jo.FitResult.load(tmp_path / "fit.eqx").sample(
            {"k": jo.HalfNormal(1.0), "sigma": jo.HalfNormal(1.0)},
            key=jax.random.key(0))


def test_the_demo_writes_the_posterior_json_and_figures(lynx_hare_posterior, tmp_path):
    import json

    from jaxode.demos import lynx_hare as demo

    years, ys = lynx_hare()
    paths = demo.save_posterior(lynx_hare_posterior, tmp_path, years, ys)
    table = json.loads((tmp_path / "lynx_hare_posterior.json").read_text())
    assert list(table) == ["alpha", "beta", "gamma", "delta", "sigma[0]", "sigma[1]",
                           "z_init[0]", "z_init[1]"]
    rows = lynx_hare_posterior.summary()
    for stan, label, _ in demo.NAMES:
        assert table[stan] == {k: rows[label][k] for k in
                               ("mean", "sd", "q05", "q50", "q95", "r_hat", "ess")}
    assert table["z_init[0]"]["mean"] > table["z_init[1]"]["mean"]  # hare first
    assert sorted(p.name for p in paths[1:]) == [
        "lynx_hare_posterior_pairs.png", "lynx_hare_posterior_predictive.png",
        "lynx_hare_posterior_trace.png"]
    assert all(p.stat().st_size > 10_000 for p in paths[1:])
