"""`jaxode.fit`: recovered parameters, error estimates, shooting, multistart, bad input.

Fixed-step solvers keep compilation short; the adaptive (Tsit5) path is checked on the
competition model, where its error estimates are compared with the truth.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxode
from jaxode.data import COMPETITION_PARAMS, competition, competition_observations

COMPETITION_GUESS = {"r1": 0.1, "r2": 0.1, "a1": 0.001, "a2": 0.001, "iN1": 0.001,
              "iN2": 0.001}
NAMES = tuple(COMPETITION_PARAMS)


def decay(t, y, p):
    """Two-state linear system with a time-dependent forcing (not autonomous)."""
    return jnp.stack([-p["k1"] * y[0] + p["c"] * jnp.sin(t),
                      p["k1"] * y[0] - p["k2"] * y[1]])


DECAY = {"k1": 0.7, "k2": 0.25, "c": 0.4}
DECAY0 = {"k1": 0.3, "k2": 0.6, "c": 0.1}


def decay_data(y0, ts):
    sol = jaxode.solve(decay, jnp.asarray(y0), ts, DECAY, solver="rk4", dt=0.05)
    return np.asarray(sol.ys)


def rel_err(params, truth):
    return max(abs(float(params[k]) - v) / abs(v) for k, v in truth.items())


def oscillator(t, y, p):
    return jnp.stack([y[1], -p["w"] ** 2 * y[0]])


@pytest.fixture(scope="module")
def oscillator_data():
    ts = np.linspace(0.0, 20.0, 81)
    ys = np.asarray(jaxode.solve(oscillator, jnp.array([1.0, 0.0]), ts, {"w": 3.0},
                                 solver="rk4", dt=0.05).ys)
    ys = ys + 0.02 * np.random.default_rng(0).standard_normal(ys.shape)
    return ts, ys


# ------------------------------------------------------------- recovery


def test_noiseless_recovery_irregular_times():
    ts = np.array([0.0, 0.3, 1.1, 1.7, 2.9, 3.4, 5.0, 6.2, 8.8])  # off the dt grid
    ys = decay_data([1.0, 0.0], ts)
    res = jaxode.fit(decay, DECAY0, ts=ts, ys=ys, y0=ys[0], positive=True,
                     solver="rk4", dt=0.05, steps=300, progress=False)
    assert rel_err(res.params, DECAY) < 1e-3
    assert res.converged
    assert res.loss < 1e-12
    # 300 optimiser steps, then Gauss–Newton steps until they come to rest
    assert 300 < len(res.losses) <= 400 and res.opt_steps == 300
    pred = res.predict(ts)
    assert pred.shape == ys.shape
    np.testing.assert_allclose(pred, ys, atol=1e-5)


def test_several_trajectories():
    ts = np.linspace(0.0, 6.0, 7)
    y0s = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    ys = np.stack([decay_data(y, ts) for y in y0s])
    res = jaxode.fit(decay, DECAY0, ts=ts, ys=ys, y0=y0s, positive=True,
                     solver="rk4", dt=0.05, steps=300, progress=False)
    assert rel_err(res.params, DECAY) < 1e-3
    assert res.n_obs == 3 * 6 * 2  # the t0 rows are the given y0
    assert res.predict(ts).shape == (3, 7, 2)


def test_missing_values_and_mask():
    ts = np.linspace(0.0, 6.0, 13)
    ys = decay_data([1.0, 0.0], ts)
    holey = ys.copy()
    holey[2::3, 0] = np.nan  # NaN = missing
    mask = np.ones(ys.shape, bool)
    mask[1::4, 1] = False  # masked out
    holey[1::4, 1] = 1e6  # a masked value never reaches the loss
    res = jaxode.fit(decay, DECAY0, ts=ts, ys=holey, y0=ys[0], mask=mask,
                     positive=True, solver="rk4", dt=0.05, steps=300, progress=False)
    expected_n = int((np.isfinite(holey[1:]) & mask[1:]).sum())
    assert res.n_obs == expected_n < 24
    assert rel_err(res.params, DECAY) < 1e-3


def test_fit_y0():
    ts = np.linspace(0.0, 6.0, 13)
    y0_true = np.array([1.5, 0.5])
    ys = decay_data(y0_true, ts)
    res = jaxode.fit(decay, DECAY0, ts=ts, ys=ys, y0=np.array([1.0, 1.0]),
                     fit_y0=True, positive=True, solver="rk4", dt=0.05, steps=300,
                     progress=False)
    assert rel_err(res.params, DECAY) < 1e-3
    np.testing.assert_allclose(res.y0, y0_true, rtol=1e-4)
    assert res.n_params == 5 and res.n_obs == 26 and res.y0_stderr.shape == (2,)


def test_no_recompilation_when_data_change():
    calls = []

    def counted(t, y, p):
        calls.append(1)
        return decay(t, y, p)

    ts = np.linspace(0.0, 6.0, 7)
    ys = decay_data([1.0, 0.0], ts)
    kwargs = dict(positive=True, solver="rk4", dt=0.05, steps=50, progress=False)
    jaxode.fit(counted, DECAY0, ts=ts, ys=ys, y0=ys[0], **kwargs)
    traced = len(calls)
    assert traced > 0
    ys2 = decay_data([2.0, 1.0], ts) + 0.01
    res = jaxode.fit(counted, {"k1": 0.5, "k2": 0.5, "c": 0.3}, ts=ts, ys=ys2,
                     y0=ys2[0], **kwargs)
    assert len(calls) == traced  # values changed, nothing traced again
    assert np.isfinite(res.loss)


# ------------------------------------------ the competition model


def test_competition_tsit5_within_6_percent_and_99_percent_intervals():
    ts, ys = competition_observations()
    res = jaxode.fit(competition, COMPETITION_GUESS, ts=ts, ys=ys, y0=ys[0], positive=True,
                     steps=300, progress=False)
    assert res.n_obs == 12 and res.n_params == 6 and res.dof == 6
    assert res.converged
    ci99, ci95 = res.confint(0.99), res.confint(0.95)
    z = {}
    for name in NAMES:
        true, est = COMPETITION_PARAMS[name], float(res.params[name])
        assert abs(est - true) / true < 0.06, name
        lo, hi = ci99[name]
        assert lo <= true <= hi, name
        z[name] = (est - true) / float(res.stderr[name])
    # the data were made by Euler steps of 0.1 and rounded: with an accurate solver
    # a2 sits about 2.6 standard errors from the truth, outside its 95 % interval
    assert 2.3 < z["a2"] < 2.9
    lo, hi = ci95["a2"]
    assert not lo <= COMPETITION_PARAMS["a2"] <= hi
    assert abs(float(res.params["a1"]) - 1e-4) / 1e-4 > 0.03  # rounding limits a1
    assert "a2" in repr(res) and "±" in repr(res)


def test_competition_euler_rnn_every_truth_inside_95_percent(dtype):
    ts, ys = competition_observations()
    res = jaxode.fit(competition, COMPETITION_GUESS, ts=ts, ys=ys, y0=ys[0], positive=True,
                     solver=jaxode.Euler(), dt=0.1, steps=300, progress=False)
    # float32 too: the optimum is reached, and known to be reached, to its rounding
    assert res.converged and res.params["a1"].dtype == dtype
    ci = res.confint(0.95)
    for name in NAMES:
        lo, hi = ci[name]
        assert lo <= COMPETITION_PARAMS[name] <= hi, name
        assert abs(float(res.params[name]) / COMPETITION_PARAMS[name] - 1) < 0.06


def test_competition_literal_rnn_dt1_50_steps():
    # the original RNN formulation: Euler with dt = 1, trained on the same observations
    ts, ys = competition_observations()
    res = jaxode.fit(competition, COMPETITION_GUESS, ts=ts, ys=ys, y0=ys[0], positive=True,
                     solver=jaxode.Euler(), dt=1.0, steps=300, progress=False)
    assert res.converged
    assert res.loss < 1.0  # within about a whole animal of every observation
    for name in ("r1", "r2", "iN2"):
        assert abs(float(res.params[name]) / COMPETITION_PARAMS[name] - 1) < 0.1


# ------------------------------------------------ standard errors and t quantiles


def test_stderr_of_linear_model_is_ols():
    # dy/dt = a + b t: y = y0 + a t + b t^2 / 2 is linear in (a, b), and RK4 is
    # exact for it, so Gauss-Newton must reproduce ordinary least squares
    def line(t, y, p):
        return jnp.stack([p["a"] + p["b"] * t])

    rng = np.random.default_rng(3)
    ts = np.sort(rng.uniform(0.0, 4.0, 15))
    ts[0] = 0.0
    truth_y = 2.0 + 1.5 * ts - 0.4 * ts**2 / 2
    ys = (truth_y + 0.3 * rng.standard_normal(ts.shape))[:, None]
    ys[0] = 2.0
    res = jaxode.fit(line, {"a": 1.0, "b": 0.1}, ts=ts, ys=ys, y0=np.array([2.0]),
                     solver="rk4", steps=100, progress=False)
    x = np.stack([ts[1:], ts[1:] ** 2 / 2], axis=1)
    target = ys[1:, 0] - 2.0
    beta, rss, *_ = np.linalg.lstsq(x, target, rcond=None)
    dof = len(target) - 2
    cov = rss[0] / dof * np.linalg.inv(x.T @ x)
    np.testing.assert_allclose([res.params["a"], res.params["b"]], beta, rtol=1e-8)
    np.testing.assert_allclose([res.stderr["a"], res.stderr["b"]],
                               np.sqrt(np.diag(cov)), rtol=1e-6)
    stats = pytest.importorskip("scipy.stats")
    lo, hi = res.confint(0.9)["b"]
    half = stats.t.ppf(0.95, dof) * np.sqrt(cov[1, 1])
    np.testing.assert_allclose([lo, hi], [beta[1] - half, beta[1] + half], rtol=1e-6)
    with pytest.raises(ValueError, match="level"):
        res.confint(95)


# ------------------------------------------------ shooting, multistart, divergence


def test_multiple_shooting_where_single_shooting_fails(oscillator_data):
    ts, ys = oscillator_data
    kwargs = dict(ts=ts, ys=ys, y0=np.array([1.0, 0.0]), positive=True, solver="rk4",
                  dt=0.05, steps=300, progress=False)
    single = jaxode.fit(oscillator, {"w": 1.5}, **kwargs)
    assert abs(float(single.params["w"]) - 3.0) > 0.5  # stuck in a local minimum
    assert single.loss > 1.0
    shot = jaxode.fit(oscillator, {"w": 1.5}, shooting=10, **kwargs)
    assert abs(float(shot.params["w"]) - 3.0) < 1e-3
    assert shot.loss < 1e-3  # the noise level 0.02^2
    assert shot.converged


def test_multistart_finds_the_global_minimum(oscillator_data):
    ts, ys = oscillator_data
    res = jaxode.fit(oscillator, {"w": 1.5}, ts=ts, ys=ys, y0=np.array([1.0, 0.0]),
                     positive=True, solver="rk4", dt=0.05, steps=300,
                     multistart=8, key=jax.random.key(1), progress=False)
    assert abs(float(res.params["w"]) - 3.0) < 1e-3
    assert res.starts_losses.shape == (8,)
    assert res.loss == pytest.approx(res.starts_losses.min())
    assert (res.starts_losses > 1.0).sum() >= 4  # most starts end in local minima
    from jaxode import plot

    line = plot.waterfall(res).axes[0].lines[0]
    offsets = line.get_ydata()
    assert len(offsets) == 8 and np.all(np.diff(offsets) >= 0)  # sorted


def test_nonfinite_steps_are_undone():
    # a huge learning rate throws the rate into overflow; those steps are undone
    # and the fit still ends at finite, correct parameters
    ts = np.linspace(0.0, 6.0, 7)
    ys = decay_data([1.0, 0.0], ts)
    res = jaxode.fit(decay, DECAY0, ts=ts, ys=ys, y0=ys[0], positive=True,
                     solver="rk4", dt=0.05, steps=50, optimizer=optax.sgd(1e3),
                     progress=False)
    assert not np.all(np.isfinite(res.losses))  # some steps overflowed ...
    assert all(np.isfinite(float(v)) for v in res.params.values())
    assert rel_err(res.params, DECAY) < 1e-3  # ... were undone; the fit recovered


def test_converged_when_no_step_can_lower_the_loss_beyond_its_rounding():
    """`converged` accepts a point whose gradient fails the first-order test when the
    Newton step from it would lower the loss by less than 16 roundings of the loss
    (a float32 loss through an adaptive solve is smooth only to the solver's
    tolerance), and not otherwise."""
    from jaxode._fit._noise import resolve_noise
    from jaxode._fit._stats import converged

    likelihood = resolve_noise("poisson", None, 1)  # a likelihood, not least squares

    def check(grad, dtype):
        g = np.array([grad])
        info = np.array([[10.0]])  # first-order test: |g| <= 1e-3 sqrt(10) = 3.2e-3
        return converged(g, info, np.ones((1, 1)), np.zeros(1), np.zeros(1), 60.0,
                         likelihood, dtype, curvature=info)

    assert check(1e-3, np.float64) and check(1e-3, np.float32)  # first-order test
    # predicted decrease 0.5 * 0.01**2 / 10 = 5e-6: below 16 float32 roundings of
    # the loss (1.2e-4), far above 16 float64 roundings (2e-13)
    assert check(0.01, np.float32) and not check(0.01, np.float64)
    assert not check(0.1, np.float32)  # 5e-4: a step would still gain


def test_divergence_stops_with_a_message():
    def fragile(t, y, p):  # finite only at the starting rate
        return -p["k"] * y + jnp.where(p["k"] == 0.5, 0.0, jnp.nan)

    ts = np.linspace(0.0, 2.0, 5)
    ys = np.exp(-0.8 * ts)[:, None]
    with pytest.warns(RuntimeWarning, match="non-finite"):
        res = jaxode.fit(fragile, {"k": 0.5}, ts=ts, ys=ys, y0=np.array([1.0]),
                         solver="rk4", steps=200, progress=False)
    assert float(res.params["k"]) == 0.5 and not res.converged
    assert len(res.losses) < 200  # stopped early


def test_nonfinite_start_raises():
    def broken(t, y, p):
        return -p["k"] * y + jnp.nan

    with pytest.raises(ValueError, match="params0"):
        jaxode.fit(broken, {"k": 0.5}, ts=np.linspace(0, 1, 3), ys=np.ones((3, 1)),
                   y0=np.ones(1), solver="euler", steps=10, progress=False)


# ------------------------------------------------------------ bad input


GOOD = dict(ts=np.linspace(0.0, 1.0, 4), ys=np.ones((4, 2)), y0=np.ones(2),
            solver="euler", steps=5, progress=False)


def lin(t, y, p):
    return -p["k"] * y


@pytest.mark.parametrize("change, match", [
    (dict(ts=np.array([0.0, 0.5, 0.4, 1.0])), "`ts` must be strictly increasing"),
    (dict(t0=0.5), "before the start time `t0`"),
    (dict(ys=np.ones((4, 3))), "`ys` has 3 columns but `y0` has 2 states"),
    (dict(ys=np.ones((5, 2))), r"`ys` has shape \(5, 2\)"),
    (dict(mask=np.ones((4, 3), bool)), r"`mask` has shape \(4, 3\)"),
    (dict(mask=np.ones((4, 2))), "`mask` must be boolean"),
    (dict(ys=np.full((4, 2), np.nan)), "every observation is missing"),
    (dict(positive=True, params0={"k": -1.0}), "positive=True.*not > 0"),
    (dict(params0={"k": 1}), r"params0\['k'\].*floating-point"),
    (dict(params0={"k": jnp.array(1, dtype=jnp.int32)}), "floating point"),
    (dict(multistart=3), "`multistart` needs a `key`"),
    (dict(shooting=9), "`shooting`=9"),
    (dict(steps=-1), "`steps`"),
    (dict(multistart=2, key=jax.random.key(0), devices="cpu"),
     "`devices` must be a list of jax devices"),
    (dict(multistart=2, key=jax.random.key(0), devices=[]), "`devices` is empty"),
])
def test_bad_input(change, match):
    kwargs = {**GOOD, **change}
    params0 = kwargs.pop("params0", {"k": 1.0})
    with pytest.raises(ValueError, match=match):
        jaxode.fit(lin, params0, **kwargs)


# ------------------------------------------------------------ demo and example


def test_fewer_observations_than_unknowns_warns_with_the_counts():
    ts = np.array([0.0, 1.0])
    ys = np.array([[0.5, 0.3]])  # one observed time, two values
    with pytest.warns(RuntimeWarning, match=r"2 observed values for 3 estimated numbers "
                                            r"\(1 parameters and 2 initial values\)"):
        res = jaxode.fit(lin, {"k": 1.0}, ts=ts[1:], ys=ys, y0=np.ones(2), t0=0.0,
                         fit_y0=True, steps=5, progress=False)
    assert not res.converged and "no more observations than unknowns" in res.message
    assert np.isinf(res.stderr["k"])


def test_positive_parameters_train_at_the_same_relative_pace():
    """`positive=True` fits in log space: one Adam step moves 1e-3 and 0.1 by the same
    factor (Adam's first step is lr·sign(g) per coordinate, here exp(±0.05); the fit
    returns the best point seen, here the one after that step). A step in the
    parameters themselves would move them by amounts, not factors, and a step
    relative to the start by 1 ± 0.05, whose log is 2.5 % off."""
    ts, ys = competition_observations()
    res = jaxode.fit(competition, COMPETITION_GUESS, ts=ts, ys=ys, y0=ys[0], positive=True,
                     solver=jaxode.Euler(), dt=0.1, steps=2, polish=False,
                     optimizer=optax.adam(0.05), progress=False)
    moved = {k: abs(np.log(float(res.params[k]) / COMPETITION_GUESS[k])) for k in NAMES}
    np.testing.assert_allclose(list(moved.values()), 0.05, rtol=1e-3)


def test_rounding_to_whole_animals_alone_limits_a1_to_about_4_percent():
    """The observations are the Euler model's values rounded to whole animals. Fitting
    the unrounded values recovers every parameter (to 1e-6); the rounding alone moves
    a1 by 4.4 %, and its standard error (~7 %) says so."""
    ts, ys = competition_observations()
    exact = np.asarray(jaxode.solve(competition, jnp.asarray(ys[0]), ts,
                                    COMPETITION_PARAMS, solver="euler", dt=0.1).ys)
    assert np.max(np.abs(np.round(exact) - ys)) == 0  # the data are the rounded model
    kw = dict(y0=ys[0], positive=True, solver=jaxode.Euler(), dt=0.1, steps=300,
              progress=False)
    clean = jaxode.fit(competition, COMPETITION_GUESS, ts=ts, ys=exact, **kw)
    assert rel_err(clean.params, COMPETITION_PARAMS) < 1e-6
    rounded = jaxode.fit(competition, COMPETITION_GUESS, ts=ts, ys=ys, **kw)
    a1_err = abs(float(rounded.params["a1"]) / 1e-4 - 1)
    assert 0.035 < a1_err < 0.055
    assert 0.04 < float(rounded.stderr["a1"]) / 1e-4 < 0.1


def test_result_keeps_the_order_of_params0_and_gives_plain_floats():
    ts, ys = competition_observations()
    res = jaxode.fit(competition, COMPETITION_GUESS, ts=ts, ys=ys, y0=ys[0], positive=True,
                     solver=jaxode.Euler(), dt=0.1, steps=300, progress=False)
    assert list(res.params) == list(COMPETITION_GUESS) == list(res.stderr)
    ci = res.confint(0.95)
    assert list(ci) == list(COMPETITION_GUESS)
    lo, hi = ci["a1"]
    assert type(lo) is float and type(hi) is float and lo < 1e-4 < hi
    table = repr(res).splitlines()
    assert [line.split()[0] for line in table[2:]] == list(COMPETITION_GUESS)
    assert "95 % interval" in table[1] and f"[{lo:.4g}, {hi:.4g}]" in table[4]


def test_the_transform_maps_each_scale_both_ways_with_its_slope():
    from jaxode._fit._transform import Scale, Transform

    t = Transform.of([Scale.LIN, Scale.LOG, Scale.LOG10], [2.0, 1.0, 1.0])
    x = np.array([3.0, 0.5, 200.0])
    u = t.to_u(x)
    np.testing.assert_allclose(u, [1.5, np.log(0.5), np.log10(200.0)], rtol=1e-15)
    np.testing.assert_allclose(t.from_u(u), x, rtol=1e-15)
    np.testing.assert_allclose(t.from_u(jnp.asarray(u), jnp), x, rtol=1e-15)
    h = 1e-6
    slope = (t.from_u(u + h) - t.from_u(u - h)) / (2 * h)
    np.testing.assert_allclose(t.slope(x), slope, rtol=1e-8)
    assert t[1:].scales() == [Scale.LOG, Scale.LOG10]
    lo, hi = t.u_bounds(np.array([-1.0, 0.0, 1.0]), np.array([4.0, 1.0, 1e3]))
    np.testing.assert_allclose(lo, [-0.5, -np.inf, 0.0])
    np.testing.assert_allclose(hi, [2.0, 0.0, 3.0])
