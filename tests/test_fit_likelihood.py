"""`fit` beyond least squares: observation and noise models, estimated sigma,
scales and bounds, several experiments, profile likelihood, the likelihood figures.

Most tests use the decay `mu(t) = A exp(-k t)`, written as the ODE `y' = -k y`,
`y(0) = 1`, observed through `h = A y` (so `A` is a parameter of the observation
model only).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

import jaxode

TRUE = {"k": 0.7, "A": 50.0}
START = {"k": 0.9, "A": 40.0}
TS = np.linspace(0.25, 4.0, 16)


def decay(t, y, p):
    return -p["k"] * y


def amplitude(t, y, p):
    return p["A"] * y


def draw(noise, rng, ts=TS, amplitude=TRUE["A"]):
    mu = (amplitude * np.exp(-TRUE["k"] * ts))[:, None]
    if noise == "normal":
        return mu + 2.0 * rng.normal(size=mu.shape)
    if noise == "lognormal":
        return mu * np.exp(0.1 * rng.normal(size=mu.shape))
    if noise == "laplace":
        return mu + rng.laplace(scale=2.0, size=mu.shape)
    if noise == "poisson":
        return rng.poisson(mu).astype(float)
    if noise == "negbinomial":  # dispersion 20: variance mu + mu²/20
        return rng.negative_binomial(20, 20 / (20 + mu)).astype(float)
    raise AssertionError(noise)


def fit_decay(ys, noise, ts=TS, **kw):
    # RK4 steps of 0.05 (error ~1e-8, far below the noise) compile in a fraction of
    # the time of an adaptive solve; tests that pass tolerances get Tsit5
    steps = {} if "rtol" in kw else {"solver": "rk4", "dt": 0.05}
    kw = {"sigma": "estimate" if noise == "normal" else None, "positive": True,
          "steps": 0, "polish": 40, "progress": False, **steps, **kw}
    return jaxode.fit(decay, START, ts=ts, ys=ys, y0=np.array([1.0]), t0=0.0,
                      observe=amplitude, noise=noise, **kw)


# scale of each model's noise, and what fit reports for it
NOISE_TRUTH = {"normal": ("sigma", 2.0), "lognormal": ("sigma", 0.1),
               "laplace": ("sigma", 2.0), "poisson": (None, None),
               "negbinomial": (None, None)}


@pytest.mark.parametrize("noise", list(NOISE_TRUTH))
def test_each_noise_model_recovers_the_truth_with_calibrated_intervals(noise):
    rng = np.random.default_rng(1)
    covered, estimates, scales = 0, [], []
    seeds = 50
    # a median-like estimator needs more points before its asymptotics hold
    ts = np.linspace(0.1, 4.0, 40) if noise == "laplace" else TS
    for _ in range(seeds):
        res = fit_decay(draw(noise, rng, ts), noise, ts=ts)
        ci = res.confint(0.95)
        for name in TRUE:
            lo, hi = ci[name]
            covered += lo <= TRUE[name] <= hi
            assert lo > 0  # log-scale Wald intervals stay positive
        estimates.append([res.params["k"], res.params["A"]])
        what, _ = NOISE_TRUTH[noise]
        if what:
            scales.append(float(getattr(res, what)[0]))
    coverage = covered / (2 * seeds)
    assert 0.88 <= coverage <= 0.99, coverage
    mean = np.mean(estimates, axis=0)
    np.testing.assert_allclose(mean, [TRUE["k"], TRUE["A"]], rtol=0.05)
    what, truth = NOISE_TRUTH[noise]
    if what == "sigma":
        assert abs(np.median(scales) / truth - 1) < 0.2, np.median(scales)


def test_negbinomial_dispersion_is_recovered_from_large_counts():
    # with counts near 3 the data hardly tell overdispersion from Poisson noise (the
    # estimate runs to its bound); counts of hundreds pin it down
    rng = np.random.default_rng(2)
    phis = [float(fit_decay(draw("negbinomial", rng, amplitude=500.0),
                            "negbinomial").dispersion[0]) for _ in range(20)]
    assert abs(np.median(phis) / 20.0 - 1) < 0.3, np.median(phis)


def test_poisson_mle_and_fisher_error_are_the_closed_form():
    # a constant rate: the MLE is the sample mean, its standard error sqrt(mean / n)
    rng = np.random.default_rng(0)
    ts = np.arange(1.0, 11.0)
    ys = rng.poisson(30.0, size=(10, 1)).astype(float)
    res = jaxode.fit(lambda t, y, p: 0.0 * y, {"A": 20.0}, ts=ts, ys=ys,
                     y0=np.array([1.0]), t0=0.0, observe=amplitude, noise="poisson",
                     steps=0, polish=30, progress=False)
    mean = ys.mean()
    assert res.params["A"] == pytest.approx(mean, rel=1e-8)
    assert res.stderr["A"] == pytest.approx(math.sqrt(mean / 10), rel=1e-6)
    nll = -scipy.stats.poisson.logpmf(ys, mean).sum()
    assert res.nll == pytest.approx(nll, rel=1e-10)
    assert res.aic == pytest.approx(2 * nll + 2) and res.bic == pytest.approx(
        2 * nll + math.log(10))
    assert res.converged


def test_known_sigma_gives_the_normal_likelihood_and_z_intervals():
    rng = np.random.default_rng(2)
    ys = draw("normal", rng)
    res = fit_decay(ys, "normal", sigma=2.0)
    assert res.n_params == 2 and np.all(res.sigma == 2.0)
    mu = res.predict(TS, observed=True)
    nll = -scipy.stats.norm.logpdf(ys, mu, 2.0).sum()
    assert res.nll == pytest.approx(nll, rel=1e-9)
    lo, hi = res.confint(0.95, method="wald")["k"]
    k, se = res.params["k"], res.stderr["k"]
    # on the log scale: log k ± 1.96 se/k
    np.testing.assert_allclose([lo, hi], k * np.exp(np.array([-1, 1]) * 1.959964 * se / k),
                               rtol=1e-6)


def test_log_scale_intervals_stay_positive_and_asymmetric_with_four_points():
    rng = np.random.default_rng(3)
    ts = np.array([0.5, 1.5, 2.5, 3.5])
    ys = draw("normal", rng, ts) * 0.3  # small counts, large relative noise
    res = fit_decay(ys, "normal", ts=ts, sigma=None)
    lo, hi = res.confint(0.95)["k"]
    k = float(res.params["k"])
    assert 0 < lo < k < hi
    assert hi - k > 1.2 * (k - lo)  # mapped back from the log scale
    linear = fit_decay(ys, "normal", ts=ts, sigma=None, positive=False)
    lo_lin, hi_lin = linear.confint(0.95)["k"]
    assert hi_lin - linear.params["k"] == pytest.approx(
        linear.params["k"] - lo_lin, rel=1e-9)  # symmetric on the linear scale


def test_lognormal_least_squares_is_least_squares_of_logs():
    rng = np.random.default_rng(4)
    ys = draw("lognormal", rng)
    res = fit_decay(ys, "lognormal")

    def resid(x):
        return np.log(ys[:, 0]) - np.log(x[1] * np.exp(-x[0] * TS))

    ref = scipy.optimize.least_squares(resid, [0.9, 40.0], xtol=1e-14, ftol=1e-14)
    np.testing.assert_allclose([res.params["k"], res.params["A"]], ref.x, rtol=1e-5)
    assert res.sigma[0] == pytest.approx(
        np.sqrt(np.sum(ref.fun ** 2) / (len(TS) - 2)), rel=1e-5)


def test_observation_of_a_sum_recovers_both_rates():
    # A -> B -> (gone); only the total A + B is measured
    def chain(t, y, p):
        return jnp.stack([-p["k1"] * y[0], p["k1"] * y[0] - p["k2"] * y[1]])

    def total(t, y, p):
        return (y[0] + y[1])[None]

    true = {"k1": 1.3, "k2": 0.4}
    ts = np.linspace(0.2, 6.0, 15)
    truth = jaxode.solve(chain, np.array([10.0, 0.0]), np.concatenate([[0.0], ts]),
                         true, rtol=1e-10, atol=1e-10).ys[1:]
    ys = np.asarray(truth[:, :1] + truth[:, 1:])
    res = jaxode.fit(chain, {"k1": 2.0, "k2": 0.3}, ts=ts, ys=ys,
                     y0=np.array([10.0, 0.0]), t0=0.0, observe=total, positive=True,
                     steps=100, progress=False, solver="rk4", dt=0.02)
    np.testing.assert_allclose([res.params["k1"], res.params["k2"]], [1.3, 0.4],
                               rtol=1e-5)
    assert res.predict(ts, observed=True).shape == (15, 1)


def test_bounds_hold_the_estimate():
    rng = np.random.default_rng(5)
    ys = draw("normal", rng)
    res = fit_decay(ys, "normal", bounds={"k": (0.8, 2.0)})
    assert res.params["k"] == pytest.approx(0.8)  # the truth, 0.7, lies outside
    free = fit_decay(ys, "normal")
    assert abs(free.params["k"] - 0.7) < 0.05


def test_two_experiments_sharing_a_rate_beat_either_alone():
    rng = np.random.default_rng(6)
    ts_a = ts_b = np.linspace(0.5, 4.0, 6)  # one shape: the fits share a compile

    def dosed(t, y, p):
        return -p["k"] * y + p["dose"]

    def observe(t, y, p):
        return y[None] if np.ndim(y) == 0 else y

    def data(ts, y0, dose):
        exact = jaxode.solve(dosed, np.array([y0]), np.concatenate([[0.0], ts]),
                             {"k": 0.7, "dose": dose}, rtol=1e-10, atol=1e-10).ys[1:]
        return np.asarray(exact) + 0.2 * rng.normal(size=(len(ts), 1))

    exps = [dict(ts=ts_a, ys=data(ts_a, 5.0, 0.0), y0=np.array([5.0]),
                 args={"dose": 0.0}, t0=0.0),
            dict(ts=ts_b, ys=data(ts_b, 1.0, 2.0), y0=np.array([1.0]),
                 args={"dose": 2.0}, t0=0.0)]
    kw = dict(positive=True, steps=100, progress=False, sigma=0.2, solver="rk4",
              dt=0.05)  # fixed steps: a shorter compile
    both = jaxode.fit(dosed, {"k": 1.0}, experiments=exps, **kw)
    alone = [jaxode.fit(dosed, {"k": 1.0}, experiments=[e], **kw) for e in exps]
    assert abs(both.params["k"] - 0.7) < 0.05
    se = [float(a.stderr["k"]) for a in alone]
    assert both.stderr["k"] < 0.85 * min(se)
    # Fisher information adds up over independent experiments
    assert both.stderr["k"] == pytest.approx(1 / np.hypot(1 / se[0], 1 / se[1]),
                                             rel=0.05)
    assert both.n_obs == 12 and len(both.y0) == 2
    # an estimated parameter that differs between experiments: a string in `args`
    exps[1]["args"] = {"dose": 2.0, "k": "k_b"}
    sep = jaxode.fit(dosed, {"k": 1.0, "k_b": 1.0}, experiments=exps, **kw)
    assert abs(sep.params["k_b"] - 0.7) < 0.1 and abs(sep.params["k"] - 0.7) < 0.1
    assert sep.predict(ts_b, experiment=1).shape == (6, 1)


def test_profile_matches_a_brute_force_scipy_profile():
    rng = np.random.default_rng(7)
    ys = draw("normal", rng)[:, 0]
    res = fit_decay(ys[:, None], "normal", sigma=2.0, rtol=1e-10, atol=1e-10)
    values = np.linspace(0.6, 0.8, 21)
    prof = res.profile("k", values=values)

    def nll(k, a):
        return 0.5 * np.sum((ys - a * np.exp(-k * TS)) ** 2) / 4.0

    def profiled(k):  # best A for this k, by SciPy
        return scipy.optimize.minimize_scalar(lambda a: nll(k, a), bounds=(1, 200),
                                              method="bounded",
                                              options={"xatol": 1e-10}).fun

    best = profiled(float(res.params["k"]))
    brute = np.array([2 * (profiled(k) - best) for k in values])
    np.testing.assert_allclose(prof.values, values, rtol=1e-12)
    np.testing.assert_allclose(prof.deviance, brute, atol=1e-5, rtol=1e-5)
    lo = scipy.optimize.brentq(lambda k: 2 * (profiled(k) - best) - 3.841459, 0.5,
                               float(res.params["k"]))
    hi = scipy.optimize.brentq(lambda k: 2 * (profiled(k) - best) - 3.841459,
                               float(res.params["k"]), 1.0)
    np.testing.assert_allclose(prof.interval, (lo, hi), rtol=2e-3)
    fine = res.confint(0.95, method="profile")["k"]
    np.testing.assert_allclose(fine, (lo, hi), rtol=5e-3)


def test_a_rate_the_data_cannot_identify_has_a_flat_profile_and_an_open_interval():
    def product(t, y, p):  # only a·b is identifiable
        return -p["a"] * p["b"] * y

    rng = np.random.default_rng(8)
    ys = np.exp(-0.7 * TS)[:, None] + 0.01 * rng.normal(size=(16, 1))
    res = jaxode.fit(product, {"a": 2.0, "b": 0.5}, ts=TS, ys=ys, y0=np.ones(1),
                     t0=0.0, positive=True, steps=300, progress=False, solver="rk4",
                     dt=0.05)
    assert float(res.params["a"] * res.params["b"]) == pytest.approx(0.7, rel=0.02)
    wald = res.confint(0.95)["a"]
    assert np.all(np.isfinite(wald))  # Gauss–Newton gives a finite, wrong answer
    prof = res.profile("a")
    assert np.max(prof.deviance) < 1e-3  # flat
    assert prof.interval == (0.0, math.inf)
    from jaxode import plot

    fig = plot.profiles(res)  # one panel per parameter
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel() == "a"


BAD = [
    (dict(observe=lambda t, y, p: p["A"] * jnp.stack([y[0], y[0]])),
     r"`observe` returns shape \(2,\).*1 columns"),
    (dict(noise="lognormal", ys=np.zeros((16, 1))), "needs positive observations"),
    (dict(noise="poisson", ys=np.full((16, 1), 2.5)), "counts.*2.5"),
    (dict(noise="negbinomial", ys=np.full((16, 1), -1.0)), "counts.*-1.0"),
    (dict(noise="cauchy"), "`noise`='cauchy'"),
    (dict(sigma=-1.0), r"`sigma`=-1.0 must be finite and > 0"),
    (dict(sigma="guess"), "`sigma`='guess'"),
    (dict(noise="poisson", sigma=1.0, ys=np.ones((16, 1))), "`sigma`=1.0 has no meaning"),
    (dict(bounds={"k": (2.0, 1.0)}), r"`bounds\['k'\]`=\(2.0, 1.0\): low must be < high"),
    (dict(bounds={"k": (1.0, 2.0)}), r"`params0\['k'\]`=0.9 lies outside"),
    (dict(bounds={"q": (1.0, 2.0)}), r"`bounds` names 'q'"),
    (dict(scale={"k": "ln"}), r"`scale` for 'k' is 'ln'"),
]


@pytest.mark.parametrize("change, match", BAD)
def test_bad_input(change, match):
    kw = dict(ts=TS, ys=np.ones((16, 1)), y0=np.array([1.0]), t0=0.0,
              observe=amplitude, steps=0, polish=1, progress=False)
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        jaxode.fit(decay, START, **kw)


def test_bad_experiments_and_profile_name():
    e = dict(ts=TS, ys=np.ones((16, 1)), y0=np.array([1.0]), t0=0.0)
    with pytest.raises(ValueError, match=r"`experiments\[1\].y0` has 2 states"):
        jaxode.fit(decay, START, experiments=[e, {**e, "y0": np.ones(2),
                                                  "ys": np.ones((16, 2))}],
                   progress=False)
    with pytest.raises(ValueError, match="either `experiments` or `ts`"):
        jaxode.fit(decay, START, experiments=[e], ts=TS, progress=False)
    res = fit_decay(draw("normal", np.random.default_rng(0)), "normal")
    with pytest.raises(ValueError, match=r"`name`='kk' is not an estimated number"):
        res.profile("kk")


def test_a_saved_result_round_trips_its_estimates(tmp_path):
    res = fit_decay(draw("normal", np.random.default_rng(9)), "normal")
    path = tmp_path / "fit.pkl"
    res.save(path)
    back = jaxode.FitResult.load(path)
    for name in ("params", "stderr", "sigma", "cov", "losses", "nll", "aic",
                 "converged"):
        a, b = getattr(res, name), getattr(back, name)
        if isinstance(a, dict):
            assert list(a) == list(b) and all(np.all(a[k] == b[k]) for k in a)
        else:
            np.testing.assert_array_equal(a, b)
    assert back.confint(0.9) == res.confint(0.9) and repr(back) == repr(res)
    with pytest.raises(RuntimeError, match="loaded from a file"):
        back.predict(TS)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left over


def _fields_equal(a, b):
    """Every saved field of two results is equal: same structure, dtypes, values."""
    from jaxode._fit._result import _ARRAYS, _VALUES

    for name in _ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert jax.tree_util.tree_structure(x) == jax.tree_util.tree_structure(y), name
        if isinstance(x, dict):
            assert list(x) == list(y), name
        for u, v in zip(jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(y)):
            assert np.asarray(u).dtype == np.asarray(v).dtype, name
            np.testing.assert_array_equal(u, v, err_msg=name)
    for name in _VALUES:
        assert getattr(a, name) == getattr(b, name), name
    assert a._transform.scales() == b._transform.scales()
    np.testing.assert_array_equal(a._transform.unit, b._transform.unit)
    assert a.mode == b.mode
    assert b.confint(0.9) == a.confint(0.9) and repr(b) == repr(a)


@pytest.mark.parametrize("sigma", ["estimate", 2.0])
def test_a_saved_result_round_trips_every_field(tmp_path, dtype, sigma):
    ys = jnp.asarray(draw("normal", np.random.default_rng(9)))
    res = fit_decay(np.asarray(ys), "normal", sigma=sigma, fit_y0=True)
    assert res.params["k"].dtype == dtype
    path = tmp_path / "fit.jaxode"
    res.save(path)
    raw = path.read_bytes()
    assert not raw.startswith(b"\x80") and b"jaxode._fit" not in raw  # no pickle
    back = jaxode.FitResult.load(path)
    _fields_equal(res, back)
    with pytest.raises(RuntimeError, match="loaded from a file"):
        back.profile("k")
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="damaged"):
        jaxode.FitResult.load(path)


def test_a_result_pickled_by_the_previous_version_still_loads(tmp_path, monkeypatch):
    """The previous version pickled the result's attributes, with its context as
    named tuples of private modules; `load` reads such a file."""
    import functools
    import pickle
    from typing import Any, NamedTuple

    from jaxode._fit import _data, _front, _problem, _result

    res = fit_decay(draw("lognormal", np.random.default_rng(3)), "lognormal")

    class FitResult:  # what the previous version's pickle refers to
        pass

    class ParamSpec(NamedTuple):
        flat0: Any
        kind: Any
        unit: Any
        lo: Any
        hi: Any
        labels: Any

    class _Context(NamedTuple):
        prob: Any
        spec: Any
        n_y0: Any
        y0_unit: Any
        lo: Any
        hi: Any
        loop: Any
        dtype: Any
        unflatten: Any
        predictor: Any

    for module, cls in ((_result, FitResult), (_data, ParamSpec), (_front, _Context)):
        cls.__module__, cls.__qualname__ = module.__name__, cls.__name__
        monkeypatch.setattr(module, cls.__name__, cls, raising=False)
    old = FitResult()
    fields = {name: getattr(res, name) for name in (
        "params", "y0", "sigma", "dispersion", "losses", "loss", "nll", "aic", "bic",
        "stderr", "y0_stderr", "cov", "n_obs", "n_params", "dof", "converged",
        "message", "opt_steps", "starts_losses", "noise", "mode", "_v", "_se_v",
        "_se_nat")}
    n_p = len(res.params)
    kind = np.array([1 if s.value == "log" else 0 for s in res._transform.scales()[:n_p]])
    leaves = jax.tree_util.tree_leaves(res.params)
    spec = ParamSpec(res._v[:n_p], kind, res._transform.unit[:n_p], None, None, None)
    unflatten = functools.partial(_problem.unflatten,
                                  jax.tree_util.tree_structure(res.params),
                                  tuple(x.shape for x in leaves), leaves[0].dtype)
    vars(old).update(fields, _labels=list(res._labels),
                     _row_order=list(res._row_order),
                     _ctx=_Context(None, spec, 0, np.zeros(0), res._lo, res._hi, None,
                                   leaves[0].dtype, unflatten, None))
    path = tmp_path / "old.pkl"
    with open(path, "wb") as fh:
        pickle.dump(old, fh)
    monkeypatch.undo()

    back = jaxode.FitResult.load(path)
    _fields_equal(res, back)
    with pytest.raises(RuntimeError, match="loaded from a file"):
        back.predict(TS)
    back.save(tmp_path / "new.jaxode")  # converted: saved again in the new format
    _fields_equal(res, jaxode.FitResult.load(tmp_path / "new.jaxode"))

    with open(path, "wb") as fh:  # a pickle of something else: a clear error
        pickle.dump({"params": 1}, fh)
    with pytest.raises(ValueError, match="not a FitResult that an earlier jaxode"):
        jaxode.FitResult.load(path)
