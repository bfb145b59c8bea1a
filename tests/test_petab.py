"""The PEtab benchmark problems: jaxode's simulation against the authors', its
likelihood against the `petab` library's, its gradient against finite differences,
and the fit of Boehm et al. (2014) against the collection's reference value."""

import functools

import jax
import numpy as np
import pandas as pd
import petab.v1 as petab
import pytest

import jaxode as jo
from jaxode.petab import PROBLEMS

jax.config.update("jax_enable_x64", True)

NAMES = sorted(p.name for p in PROBLEMS.iterdir() if p.is_dir())
BOEHM = "Boehm_JProteomeRes2014"
BOEHM_NLLH = 138.2220  # AMICI's value at the nominal parameters
# The collection's simulatedData tables of three problems disagree with AMICI's own
# simulation, so no simulator can match them: Zheng's is the measurement column
# copied; Fujita's gives -calculate_llh = -52.840225 where AMICI gives -53.083772;
# Perelson's rises from 1.86e6 where AMICI's (and jaxode's) falls (its nllh hides it:
# noise 1e5 on a log10 observable). For them, the nllh of AMICI at rtol = atol =
# 1e-12 is the reference (`python benchmarks/petab.py` prints AMICI's values).
AMICI_NLLH = {"Fujita_SciSignal2010": -53.083772, "Zheng_PNAS2012": -278.3335317,
              "Perelson_Science1996": 432.0385498}
MATCHING = [name for name in NAMES if name not in AMICI_NLLH]


@functools.cache
def _load(name):
    return jo.petab.load(PROBLEMS / name / f"{name}.yaml")


def _reference(name) -> pd.DataFrame:
    (path,) = (PROBLEMS / name).glob("simulatedData_*.tsv")
    return pd.read_csv(path, sep="\t")


@pytest.mark.parametrize("name", MATCHING)
def test_simulation_matches_the_collection(name):
    """Every row of the authors' simulation at the nominal parameters, to 1e-3
    relative, the denominator floored at 1e-3 of the observable's largest value."""
    prob = _load(name)
    ours, ref = prob.simulate(), _reference(name)
    assert len(ours) == len(ref)
    for column in ("observableId", "simulationConditionId"):
        assert list(ours[column]) == list(ref[column]), column
    np.testing.assert_allclose(ours["time"], ref["time"])
    got, want = ours["simulation"].to_numpy(), ref["simulation"].to_numpy()
    largest = ref.groupby("observableId")["simulation"].transform(
        lambda s: s.abs().max()).to_numpy()
    error = np.abs(got - want) / np.maximum(np.abs(want), 1e-3 * largest)
    worst = int(np.argmax(error))
    assert error[worst] <= 1e-3, (ref.iloc[worst].to_dict(), got[worst])


@pytest.mark.parametrize("name", NAMES)
def test_likelihood_matches_the_petab_library(name):
    prob = _load(name)
    problem = petab.Problem.from_yaml(PROBLEMS / name / f"{name}.yaml")
    llh = petab.calculate_llh(problem.measurement_df, prob.simulate(),
                              problem.observable_df, problem.parameter_df)
    np.testing.assert_allclose(prob.nllh(), -llh, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(AMICI_NLLH))
def test_likelihood_matches_amici_where_the_tables_do_not(name):
    assert abs(_load(name).nllh() - AMICI_NLLH[name]) <= 1e-4


@pytest.mark.parametrize("name", [BOEHM, "Fujita_SciSignal2010", "Zheng_PNAS2012"])
def test_gradient_against_central_differences(name):
    """Three coordinates of the gradient on the parameter scale (the largest, the
    smallest and a middle one), a little away from the nominal point (where the
    gradient nearly vanishes), against central differences."""
    prob = _load(name)
    theta = np.asarray(prob.theta_nominal, np.float64) + 0.05
    value, grad = prob.value_and_grad(theta)
    grad = np.asarray(grad)
    order = np.argsort(np.abs(grad))
    for i in {int(order[-1]), int(order[len(order) // 2]), int(order[0])}:
        h = 1e-4
        e = np.zeros_like(theta)
        e[i] = h
        fd = (float(prob.objective(theta + e)) - float(prob.objective(theta - e))) / (2 * h)
        assert abs(grad[i] - fd) <= 1e-3 * max(abs(fd), 1e-2 * np.abs(grad).max()), (
            prob.x_ids[i], grad[i], fd)
    assert np.isfinite(value)


def test_boehm_nominal_value_is_the_reference():
    assert abs(_load(BOEHM).nllh() - BOEHM_NLLH) <= 1e-3


def test_boehm_fit_from_near_the_published_estimates_reaches_the_reference():
    # local convergence within the bounds: starts 0.2 decades around the published
    # estimates (two of which lie on a bound), Levenberg–Marquardt in the box
    prob = _load(BOEHM)
    lo, hi = prob.theta_lower, prob.theta_upper
    noise = 0.2 * jax.random.normal(jax.random.key(1), (4, len(lo)))
    theta0 = np.clip(prob.theta_nominal + np.asarray(noise), lo, hi)
    res = prob.fit(theta0=theta0, max_steps=100, polish_steps=200)
    assert abs(res.nll - BOEHM_NLLH) <= 1e-3, np.asarray(res.starts_nll)
    x = np.asarray(res.x_starts)
    assert np.all(x >= lo) and np.all(x <= hi)  # the search never leaves the box
    assert res.nll == pytest.approx(prob.nllh(res.params), abs=1e-9)
    assert res.method == "levenberg_marquardt+bfgs" and len(res.starts_nll) == 4


def test_fit_refuses_starts_outside_the_bounds_or_of_the_wrong_shape():
    prob = _load(BOEHM)
    theta0 = np.array([prob.theta_nominal])
    theta0[0, 2] = 7.0
    with pytest.raises(ValueError, match=r"theta0\[0\]. has k_exp_homo = 7"):
        prob.fit(theta0=theta0)
    with pytest.raises(ValueError, match=r"shape \(9,\)"):
        prob.fit(theta0=prob.theta_nominal)


def test_forward_and_reverse_gradients_agree():
    fwd = _load(BOEHM)  # 9 parameters: "auto" picks forward mode
    rev = jo.petab.load(PROBLEMS / BOEHM / f"{BOEHM}.yaml", gradient="reverse")
    assert (fwd.gradient, rev.gradient) == ("forward", "reverse")
    theta = np.asarray(fwd.theta_nominal) + 0.05
    (v1, g1), (v2, g2) = fwd.value_and_grad(theta), rev.value_and_grad(theta)
    assert abs(float(v1) - float(v2)) <= 1e-9 * abs(float(v2))
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-5,
                               atol=1e-6 * float(np.abs(g2).max()))
    with pytest.raises(ValueError, match="`gradient` is 'backward'"):
        jo.petab.load(PROBLEMS / BOEHM / f"{BOEHM}.yaml", gradient="backward")
