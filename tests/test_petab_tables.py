"""The PEtab tables on a hand-made model, `A -> B` at rate `k`: simulations against
the closed form, the negative log-likelihood against `petab.v1.calculate_llh`, the
gradient against central differences, a fit of noise-free data, the priors against
`petab.v1.priors.Prior`, and the errors bad tables raise."""

import math

import jax
import numpy as np
import pandas as pd
import petab.v1
import pytest
import sympy as sp
from petab.v1.priors import Prior

from jaxode.petab import PetabFit, PetabProblem, load
from jaxode.petab._symbolic import OdeModel

jax.config.update("jax_enable_x64", True)

T, A, B, K, A0, VOL = sp.symbols("t A B k A0 vol")
MODEL = OdeModel(t=T, states=(A, B), parameters=(K, A0, VOL), defaults=(0.3, 1.0, 1.0),
                 rhs=(-K * A, K * A), initial=(A0, sp.Integer(0)), assignments={})
TIMES = [0.0, 0.5, 1.0, 2.0, 4.0]
TRUE = {"k": 0.5, "scale": 2.0, "A_init": 3.0}


def _conditions():
    # c1: A(0) = 1 (a number); c2: A(0) = A_init (a parameter id), vol = 2, after
    # pre-equilibration in `pre` (A = 2 goes over to B: B = 2 at the steady state)
    return pd.DataFrame({"conditionId": ["c1", "c2", "pre"],
                         "A": [1.0, "A_init", 2.0], "vol": [1.0, 2.0, 1.0]}
                        ).set_index("conditionId")


def _observables(transform_b="log", noise_b="laplace"):
    return pd.DataFrame({
        "observableId": ["obsA", "obsB"],
        "observableFormula": ["observableParameter1_obsA * A + observableParameter2_obsA",
                              "B * vol"],
        "noiseFormula": ["noiseParameter1_obsA", "2 * noiseParameter1_obsB"],
        "observableTransformation": ["lin", transform_b],
        "noiseDistribution": ["normal", noise_b]}).set_index("observableId")


def _parameters(priors=True):
    df = pd.DataFrame({
        "parameterId": ["k", "scale", "A_init", "sd"],
        "parameterScale": ["log10", "lin", "log", "log10"],
        "lowerBound": [1e-2, 0.5, 0.5, 1e-3], "upperBound": [5.0, 5.0, 10.0, 10.0],
        "nominalValue": [0.5, 2.0, 3.0, 0.2], "estimate": [1, 1, 1, 0]})
    if priors:
        df["objectivePriorType"] = ["parameterScaleNormal", "laplace", "logNormal", ""]
        df["objectivePriorParameters"] = ["-0.5;1", "2;0.5", "1;0.5", ""]
    return df.set_index("parameterId")


def _measurements(values=None):
    rows = []
    for t in TIMES:
        rows.append(["obsA", "", "c1", 1.0 + t, t, "scale;0.1", "sd"])
        rows.append(["obsB", "", "c1", 0.5 + t, t + 0.5, "", 0.3])
        rows.append(["obsA", "pre", "c2", 1.0 + t, t + 0.25, "scale;0.1", "sd"])
        rows.append(["obsB", "pre", "c2", 0.5 + t, t + 0.25, "", "sd"])
    rows.append(["obsB", "", "c1", 1.2, math.inf, "", 0.3])
    df = pd.DataFrame(rows, columns=[
        "observableId", "preequilibrationConditionId", "simulationConditionId",
        "measurement", "time", "observableParameters", "noiseParameters"])
    if values is not None:
        df["measurement"] = values
    return df


def _problem(measurements=None, observables=None, parameters=None, conditions=None):
    return petab.v1.Problem(
        condition_df=_conditions() if conditions is None else conditions,
        measurement_df=_measurements() if measurements is None else measurements,
        observable_df=_observables() if observables is None else observables,
        parameter_df=_parameters() if parameters is None else parameters)


def _closed_form(df, k, scale, a_init):
    out = []
    for row in df.itertuples():
        t = row.time
        if row.simulationConditionId == "c1":
            a, b, vol = 1.0 * math.exp(-k * t), 1.0 - math.exp(-k * t), 1.0
        else:
            a, b, vol = (a_init * math.exp(-k * t),
                         2.0 + a_init * (1 - math.exp(-k * t)), 2.0)
        out.append(scale * a + 0.1 if row.observableId == "obsA" else b * vol)
    return np.array(out)


@pytest.fixture(scope="module")
def prob():
    return PetabProblem(_problem(), MODEL)


def test_simulate_equals_the_closed_form(prob):
    sim = prob.simulate()
    assert "measurement" not in sim.columns
    assert list(sim.columns) == [c if c != "measurement" else "simulation"
                                 for c in _measurements().columns]
    expected = _closed_form(_measurements(), 0.5, 2.0, 3.0)
    np.testing.assert_allclose(sim["simulation"], expected, rtol=1e-6, atol=1e-6)
    x = {"k": 0.8, "scale": 1.5, "A_init": 2.5}
    np.testing.assert_allclose(prob.simulate(x)["simulation"],
                               _closed_form(_measurements(), 0.8, 1.5, 2.5),
                               rtol=1e-6, atol=1e-6)


def test_nllh_equals_petab_calculate_llh(prob):
    sim = prob.simulate()
    expected = -petab.v1.calculate_llh(_measurements(), sim, _observables(),
                                       _parameters())
    assert abs(prob.nllh() - expected) <= 1e-6 * abs(expected)


def test_priors_equal_petab_priors(prob):
    # natural-scale types: petab's density of the natural value; parameterScale*
    # types: the density of the value on the parameter scale (petab's Prior on a
    # linear scale at theta), with no change-of-variables term
    theta = prob.theta_nominal + np.array([0.1, -0.2, 0.3])
    table = _parameters()
    expected = 0.0
    for i, name in enumerate(prob.x_ids):
        row = table.loc[name]
        kind = row["objectivePriorType"]
        pars = tuple(float(v) for v in row["objectivePriorParameters"].split(";"))
        scale = "lin" if kind.startswith("parameterScale") else row["parameterScale"]
        prior = Prior(kind, pars, transformation=scale, _bounds_truncate=False)
        expected += prior.neglogprior(theta[i], x_scaled=True)
    got = float(prob.objective(theta)) - prob.nllh(prob.params(theta))
    assert abs(got - expected) <= 1e-9 * max(1.0, abs(expected))


def test_gradient_equals_central_differences(prob):
    theta = prob.theta_nominal + np.array([0.05, 0.1, -0.1])
    value, grad = prob.value_and_grad(theta)
    assert abs(float(value) - float(prob.objective(theta))) <= 1e-10 * abs(float(value))
    h = 1e-5
    fd = np.array([(prob.objective(theta + h * e) - prob.objective(theta - h * e))
                   / (2 * h) for e in np.eye(len(theta))])
    np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-5)


def _pulse_problem(on, off_cell):
    # dY/dt = 1 while on <= t <= off (times from the condition table), else 0
    t, y, on_s, off_s = sp.symbols("time Y on off")
    u = sp.Piecewise((1.0, (t >= on_s) & (off_s >= t)), (0, True))
    model = OdeModel(t=t, states=(y,), parameters=(on_s, off_s), defaults=(0.0, 0.0),
                     rhs=(u,), initial=(sp.Integer(0),), assignments={})
    problem = petab.v1.Problem(
        condition_df=pd.DataFrame({"conditionId": ["c"], "on": [on],
                                   "off": [off_cell]}).set_index("conditionId"),
        measurement_df=pd.DataFrame({
            "observableId": ["y", "y"], "simulationConditionId": ["c", "c"],
            "measurement": [0.0, 0.0], "time": [0.0, 10.0]}),
        observable_df=pd.DataFrame({"observableId": ["y"], "observableFormula": ["Y"],
                                    "noiseFormula": ["1"]}).set_index("observableId"),
        parameter_df=pd.DataFrame({
            "parameterId": ["t_off"], "parameterScale": ["lin"], "lowerBound": [5.0],
            "upperBound": [9.0], "nominalValue": [5.5], "estimate": [1]}
        ).set_index("parameterId"))
    return PetabProblem(problem, model)


@pytest.mark.parametrize("on, off", [(5.0, 5.5), (3.0, 3.001), (0.0, 0.37)])
def test_pulse_between_save_points_is_not_stepped_over(on, off):
    # saved at 0 and 10 only: an unsplit adaptive solve steps over a pulse that
    # starts after its first step (Y(10) = 0 instead of off - on)
    sim = _pulse_problem(on, off).simulate()["simulation"].to_numpy()
    np.testing.assert_allclose(sim, [0.0, off - on], rtol=1e-5, atol=1e-7)


def test_gradient_through_the_pulse_end():
    # nllh = Y(10)^2 / 2 + const with Y(10) = t_off - 5: d nllh / d t_off = 0.5
    prob = _pulse_problem(5.0, "t_off")
    value, grad = prob.value_and_grad(prob.theta_nominal)
    assert abs(float(grad[0]) - 0.5) <= 1e-6
    assert abs(float(value) - (0.125 + math.log(2 * math.pi))) <= 1e-6


def test_fit_recovers_noise_free_parameters():
    # normal noise everywhere and no priors: Levenberg-Marquardt on the residuals
    obs = _observables("log10", "normal")
    truth = _closed_form(_measurements(), TRUE["k"], TRUE["scale"], TRUE["A_init"])
    prob = PetabProblem(_problem(_measurements(truth), obs, _parameters(False)), MODEL)
    theta = prob.theta_nominal + np.array([0.2, -0.5, 0.3])
    r = np.asarray(prob.residuals(theta))
    assert r.shape == (2 * len(truth),)
    # half the sum of squares is the negative log-likelihood up to a constant
    shift = [0.5 * np.sum(np.asarray(prob.residuals(th)) ** 2) - prob.objective(th)
             for th in (theta, prob.theta_nominal)]
    assert abs(shift[0] - shift[1]) < 1e-8
    res = prob.fit(multistart=4, key=jax.random.key(0))
    assert isinstance(res, PetabFit) and res.method == "levenberg_marquardt+bfgs"
    for name, value in TRUE.items():
        assert abs(res.params[name] - value) <= 1e-4 * value, (name, res.params)
    assert np.all(np.diff(np.asarray(res.starts_nll)) >= 0)
    assert res.nll == float(res.starts_nll[0])
    import matplotlib
    matplotlib.use("Agg")
    import jaxode.plot
    jaxode.plot.waterfall(res.starts_nll)


def test_preequilibration_without_steady_state_raises():
    # dA/dt = k A grows for ever: no steady state
    model = OdeModel(t=T, states=(A, B), parameters=(K, A0, VOL),
                     defaults=(0.3, 1.0, 1.0), rhs=(K * A * 0 + K, K * A),
                     initial=(A0, sp.Integer(0)), assignments={})
    prob = PetabProblem(_problem(), model, steady_state_time=1e3)
    with pytest.raises(RuntimeError, match="pre-equilibration of the conditions "
                                           r"\['pre'\] reached no steady state"):
        prob.simulate()


def test_missing_file_raises(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load(tmp_path / "nothing.yaml")
    (tmp_path / "p.yaml").write_text(
        "format_version: 1\nparameter_file: parameters.tsv\nproblems:\n"
        "- condition_files: [c.tsv]\n  measurement_files: [m.tsv]\n"
        "  observable_files: [o.tsv]\n  sbml_files: [model.xml]\n")
    _parameters().to_csv(tmp_path / "parameters.tsv", sep="\t")
    with pytest.raises(ValueError, match=r"the condition file 'c.tsv' does not exist"):
        load(tmp_path / "p.yaml")


def test_unknown_noise_distribution_raises():
    obs = _observables(noise_b="cauchy")
    with pytest.raises(ValueError, match="observable 'obsB', column "
                                         "'noiseDistribution': unknown value 'cauchy'"):
        PetabProblem(_problem(observables=obs), MODEL,
                     files={"observable": "observables.tsv"})


def test_measurement_of_undefined_observable_raises():
    df = _measurements()
    df.loc[3, "observableId"] = "obsC"
    with pytest.raises(ValueError, match="measurements.tsv, line 5: the observable "
                                         "'obsC' is not defined"):
        PetabProblem(_problem(df), MODEL, files={"measurement": "measurements.tsv"})


def test_non_positive_value_under_log_raises():
    df = _measurements()
    df.loc[1, "measurement"] = -0.5
    with pytest.raises(ValueError, match=r"line 3, column 'measurement': -0.5 is not "
                                         "positive, as the log transformation"):
        PetabProblem(_problem(df), MODEL)


def test_unknown_parameter_id_in_a_row_raises():
    df = _measurements()
    df.loc[0, "noiseParameters"] = "sigma_x"
    with pytest.raises(ValueError, match="line 2, column 'noiseParameters': 'sigma_x' "
                                         "is neither a number nor a parameter id"):
        PetabProblem(_problem(df), MODEL)
