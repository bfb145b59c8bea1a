"""The SBML reader: small models written here with libsbml against their right-hand
sides and closed-form solutions, the seven benchmark models, and the features it
refuses."""

import math

import jax
import jax.numpy as jnp
import libsbml
import numpy as np
import pytest

import jaxode
from jaxode.petab import PROBLEMS
from jaxode.petab._sbml import import_sbml, model_symbol, parameter_index, \
    state_index
from jaxode.petab._symbolic import compile_exprs

jax.config.update("jax_enable_x64", True)

K1, KL, R, A0, B0, V = 0.7, 0.3, 1.3, 3.0, 1.0, 2.0
C0 = 4.0 / V  # C is given as an amount, 4, and means a concentration


def _formula(element, text):
    assert element.setMath(libsbml.parseL3Formula(text)) == \
        libsbml.LIBSBML_OPERATION_SUCCESS, text


def _add(model, kind, sid, **values):
    element = getattr(model, f"create{kind}")()
    element.setId(sid)
    for key, value in values.items():
        getattr(element, f"set{key}")(value)
    return element


def _reaction(model, rid, reactants, products, law):
    reaction = _add(model, "Reaction", rid, Reversible=False)
    for species, n in reactants:
        _add(reaction, "Reactant", "", Species=species, Stoichiometry=n,
             Constant=True).unsetId()
    for species, n in products:
        _add(reaction, "Product", "", Species=species, Stoichiometry=n,
             Constant=True).unsetId()
    kinetic = reaction.createKineticLaw()
    _formula(kinetic, law)
    return kinetic


def _small_model():
    """`A -> B` (mass action; A a concentration in `cell`, of size 2, B an amount),
    `B -> 2 C` (a local rate constant), `-> C` at the rate `cell * u` with
    `u = 2 w`, `w = q` for `time <= 1` else 0 (assignment rules), `dq/dt = -r q`
    (a rate rule on a parameter), `A(0) = 2 a0` (an initial assignment)."""
    doc = libsbml.SBMLDocument(3, 2)
    model = doc.createModel()
    _add(model, "Compartment", "cell", Size=V, Constant=True, SpatialDimensions=3)
    for sid, amounts, value in (("A", False, None), ("B", True, B0), ("C", False, 4.0)):
        species = _add(model, "Species", sid, Compartment="cell", Constant=False,
                       BoundaryCondition=False, HasOnlySubstanceUnits=amounts)
        if value is not None:
            species.setInitialAmount(value)
    for sid, value, constant in (("k1", K1, True), ("a0", A0 / 2, True),
                                 ("r", R, True), ("q", 1.0, False),
                                 ("u", 0.0, False), ("w", 0.0, False)):
        _add(model, "Parameter", sid, Value=value, Constant=constant)
    _formula(_add(model, "InitialAssignment", "", Symbol="A"), "2 * a0")
    _formula(_add(model, "AssignmentRule", "", Variable="u"), "2 * w")
    _formula(_add(model, "AssignmentRule", "", Variable="w"),
             "piecewise(q, time <= 1, 0)")
    _formula(_add(model, "RateRule", "", Variable="q"), "-r * q")
    _reaction(model, "R1", [("A", 1)], [("B", 1)], "k1 * cell * A")
    kinetic = _reaction(model, "R2", [("B", 1)], [("C", 2)], "kl * B")
    _add(kinetic, "LocalParameter", "kl", Value=KL)
    _reaction(model, "R3", [], [("C", 1)], "cell * u")
    return doc


def _write(doc, tmp_path, name="model.xml"):
    path = tmp_path / name
    assert libsbml.writeSBMLToFile(doc, str(path))
    return path


def _hand_rhs(t, y, p):
    """The small model by hand: states (A, B, C, q), parameters
    (cell, k1, a0, r, R2_kl)."""
    a, b, c, q = y
    cell, k1, _, r, kl = p
    u = 2 * (q if t <= 1 else 0.0)
    return np.array([-k1 * a, k1 * cell * a - kl * b,
                     (2 * kl * b + cell * u) / cell, -r * q])


def _closed_form(t):
    """The small model's solution at time `t` (at the defaults)."""
    e1, el = math.exp(-K1 * t), math.exp(-KL * t)
    a = A0 * e1
    b = B0 * el + K1 * V * A0 * (e1 - el) / (KL - K1)
    int_b = (B0 * (1 - el) / KL
             + K1 * V * A0 / (KL - K1) * ((1 - e1) / K1 - (1 - el) / KL))
    s = min(t, 1.0)
    c = C0 + 2 * KL * int_b / V + 2 * (1 - math.exp(-R * s)) / R
    return np.array([a, b, c, math.exp(-R * t)])


def test_small_model_reads_as_written_by_hand(tmp_path):
    model = import_sbml(_write(_small_model(), tmp_path))
    assert [s.name for s in model.states] == ["A", "B", "C", "q"]
    assert [s.name for s in model.parameters] == ["cell", "k1", "a0", "r", "R2_kl"]
    assert model.defaults == (V, K1, A0 / 2, R, KL)
    assert {s.name for s in model.assignments} == {"u", "w"}
    assert state_index(model, "C") == 2 and parameter_index(model, "R2_kl") == 4
    assert model_symbol(model, "u") in model.assignments
    for bad in ("R1", "kl"):
        with pytest.raises(ValueError, match=bad):
            model_symbol(model, bad)
    with pytest.raises(ValueError, match="'cell' is not a state"):
        state_index(model, "cell")

    rhs = compile_exprs(model.rhs, [[model.t], model.states, model.parameters])
    initial = compile_exprs(model.initial, [model.parameters])
    p = np.array(model.defaults)
    np.testing.assert_allclose(initial(p), [A0, B0, C0, 1.0], rtol=1e-15)
    rng = np.random.default_rng(0)
    for t in (0.0, 0.5, 1.0, 1.5, 7.0):
        y, q = rng.uniform(0.1, 3.0, 4), rng.uniform(0.1, 3.0, 5)
        np.testing.assert_allclose(rhs(np.array([t]), y, q), _hand_rhs(t, y, q),
                                   rtol=1e-14)


def test_small_model_solves_to_its_closed_form(tmp_path):
    model = import_sbml(_write(_small_model(), tmp_path))
    rhs = compile_exprs(model.rhs, [[model.t], model.states, model.parameters])
    p = jnp.array(model.defaults)
    y0 = compile_exprs(model.initial, [model.parameters])(p)
    ts = jnp.array([0.0, 0.5, 1.0, 1.7, 3.0])
    sol = jaxode.solve(lambda t, y, args: rhs(jnp.reshape(t, (1,)), y, args),
                       y0, ts, p, solver="rodas5p", rtol=1e-11, atol=1e-12,
                       max_steps=20_000)
    expected = np.stack([_closed_form(float(t)) for t in ts])
    np.testing.assert_allclose(sol.ys, expected, rtol=1e-8, atol=1e-10)


# (states, parameters): every species is a state, and the parameters are the
# compartments and SBML parameters less the variables of assignment rules
BENCHMARKS = {
    "Bachmann_MSB2011": (25, 2 + 37),
    "Boehm_JProteomeRes2014": (8, 2 + 9 - 1),
    "Borghans_BiophysChem1997": (3, 3 + 20),
    "Elowitz_Nature2000": (8, 1 + 18),
    "Fujita_SciSignal2010": (9, 1 + 20 - 1),
    "Perelson_Science1996": (4, 1 + 5),
    "Zheng_PNAS2012": (15, 1 + 47 - 1),
}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_models_import_with_a_finite_vector_field(name):
    model = import_sbml(PROBLEMS / name / f"model_{name}.xml")
    assert (len(model.states), len(model.parameters)) == BENCHMARKS[name]
    assert len(model.defaults) == len(model.parameters)
    p = np.array(model.defaults)
    y0 = compile_exprs(model.initial, [model.parameters])(p)
    rhs = compile_exprs(model.rhs, [[model.t], model.states, model.parameters])
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(y0))
    for t in (0.0, 1.0, 100.0):
        assert np.all(np.isfinite(rhs(np.array([t]), y0, p))), t


def _with_event(model):
    event = _add(model, "Event", "E1", UseValuesFromTriggerTime=True)
    _formula(event.createTrigger(), "time > 1")
    event.getTrigger().setInitialValue(False)
    event.getTrigger().setPersistent(True)
    _formula(_add(event, "EventAssignment", "", Variable="k1"), "2")


def _with_algebraic_rule(model):
    rule = _add(model, "AlgebraicRule", "", IdAttribute="alg1")
    _formula(rule, "k1 - 2 * r")


def _with_delay(model):
    _formula(model.getReaction("R1").getKineticLaw(), "k1 * cell * delay(A, 1)")


def _with_growing_cell(model):
    model.getCompartment("cell").setConstant(False)
    _formula(_add(model, "RateRule", "", Variable="cell"), "0.1 * cell")


@pytest.mark.parametrize("change, feature, element", [
    (_with_event, "SBML events", "E1"),
    (_with_algebraic_rule, "SBML algebraic rules", "alg1"),
    (_with_delay, "SBML 'delay' functions", "reaction 'R1'"),
    (_with_growing_cell, "SBML non-constant compartment sizes", "cell"),
])
def test_unsupported_features_are_named(tmp_path, change, feature, element):
    doc = _small_model()
    change(doc.getModel())
    path = _write(doc, tmp_path, "unsupported.xml")
    with pytest.raises(ValueError) as info:
        import_sbml(path)
    message = str(info.value)
    assert feature in message and element in message and "unsupported.xml" in message


def test_constant_species_are_parameters_and_boundary_species_do_not_react(tmp_path):
    doc = _small_model()
    model = doc.getModel()
    for sid, constant in (("E", True), ("F", False)):
        _add(model, "Species", sid, Compartment="cell", Constant=constant,
             BoundaryCondition=True, HasOnlySubstanceUnits=False, InitialAmount=3.0)
    _formula(model.getReaction("R1").getKineticLaw(), "k1 * cell * A * E * F")
    _add(model.getReaction("R1"), "Reactant", "", Species="F", Stoichiometry=1,
         Constant=True).unsetId()
    ode = import_sbml(_write(doc, tmp_path))
    assert [s.name for s in ode.parameters][-1] == "E"
    assert ode.defaults[-1] == 3.0 / V
    assert [s.name for s in ode.states] == ["A", "B", "C", "F", "q"]
    p = np.array(ode.defaults)
    np.testing.assert_allclose(compile_exprs(ode.initial, [ode.parameters])(p),
                               [A0, B0, C0, 3.0 / V, 1.0], rtol=1e-15)
    y = np.array([1.0, 1.0, 1.0, 2.0, 1.0])
    dy = compile_exprs(ode.rhs, [[ode.t], ode.states, ode.parameters])(
        np.array([0.0]), y, p)
    np.testing.assert_allclose(np.asarray(dy)[[0, 3]], [-K1 * 1.5 * 2.0, 0.0], rtol=1e-15)
