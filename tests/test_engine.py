"""The solve engine: one validator behind every entry point, adjoints as objects."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode as jo
from jaxode._engine import Config, configure
from jaxode._fixed import (
    FixedAdjoint,
    FixedBacksolve,
    FixedDirect,
    FixedForward,
    FixedRecursive,
)
from jaxode.nn import CNF, NeuralODE

from conftest import LinearField as Linear

A = jnp.array([[-0.1, 2.0], [-2.0, -0.1]])
TS = np.linspace(0.0, 1.0, 5)


def _decay(t, y, args):
    return -args * y


def _entry_points():
    """Each public entry point that takes solve options, as a function of them."""
    return {
        "solve": lambda **kw: jo.solve(_decay, jnp.ones(2), TS, 1.0, **kw),
        "ensemble": lambda **kw: jo.ensemble(_decay, jnp.ones((3, 2)), TS, 1.0, **kw),
        "NeuralODE": lambda **kw: NeuralODE(Linear(A), **kw),
        "CNF": lambda **kw: CNF(Linear(A), dim=2, **kw),
        "fit": lambda **kw: jo.fit(lambda t, y, p: -p["k"] * y, {"k": 1.0},
                                   ts=TS[1:], ys=np.exp(-TS[1:, None]) * np.ones(2),
                                   y0=np.ones(2), steps=1, progress=False, **kw),
    }


BAD = [
    (dict(solver="nope"), "`solver`='nope' is not one of the valid names"),
    (dict(solver=3), "`solver`=3 is neither a solver name"),
    (dict(adjoint="nope"), "`adjoint`='nope' is not one of the valid names"),
    (dict(adjoint=object()), "is neither an adjoint name"),
    (dict(solver="rk4", adjoint=diffrax.ImplicitAdjoint()),
     "is not supported by fixed-step solvers"),
    (dict(max_steps=0), "`max_steps` must be a positive integer, got 0"),
    (dict(rtol=-1.0), "`rtol` must be > 0, got -1.0"),
    (dict(atol="1e-6"), "`atol` must be a number"),
]


@pytest.mark.parametrize("entry", ["solve", "ensemble", "NeuralODE", "CNF", "fit"])
@pytest.mark.parametrize("options,message", BAD)
def test_every_entry_point_checks_options_the_same_way(entry, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        _entry_points()[entry](**options)


def test_configure_resolves_names_to_objects_once():
    adaptive = configure(solver="dopri5", adjoint="backsolve")
    assert isinstance(adaptive.solver, diffrax.Dopri5)
    assert isinstance(adaptive.adjoint, diffrax.BacksolveAdjoint)
    for name, cls in [("recursive", FixedRecursive), ("backsolve", FixedBacksolve),
                      ("direct", FixedDirect), ("forward", FixedForward)]:
        fixed = configure(solver="rk4", adjoint=name)
        assert isinstance(fixed.solver, jo.RK4) and type(fixed.adjoint) is cls
    # a diffrax adjoint means the same for a fixed-step solver
    for adjoint, cls in [(diffrax.RecursiveCheckpointAdjoint(), FixedRecursive),
                         (diffrax.BacksolveAdjoint(), FixedBacksolve),
                         (diffrax.DirectAdjoint(), FixedDirect),
                         (diffrax.ForwardMode(), FixedForward)]:
        assert type(configure(solver="rk4", adjoint=adjoint).adjoint) is cls
    # the models hold the configuration they were checked with
    model = NeuralODE(Linear(A), solver="rk4", adjoint="backsolve")
    assert isinstance(model.config, Config) and model.fixed_step
    assert isinstance(model.config.adjoint, FixedBacksolve)
    assert isinstance(CNF(Linear(A), dim=2).config.solver, diffrax.Dopri5)
    # and read them back as before, resolved
    model = NeuralODE(Linear(A), rtol=1e-4, atol=1e-5, dt=0.1, max_steps=99)
    assert (model.rtol, model.atol, model.dt, model.max_steps) == (1e-4, 1e-5, 0.1, 99)
    assert isinstance(model.solver, diffrax.Dopri5)
    assert isinstance(model.adjoint, diffrax.BacksolveAdjoint)
    flow = CNF(Linear(A), dim=2, solver="tsit5", rtol=1e-6, max_steps=7)
    assert isinstance(flow.solver, diffrax.Tsit5) and flow.rtol == 1e-6
    assert flow.max_steps == 7


def test_configure_rejects_option_combinations():
    with pytest.raises(ValueError, match="pass `dt` or `substeps`, not both"):
        configure(solver="rk4", dt=0.1, substeps=2)
    with pytest.raises(ValueError, match="`substeps`=2 is for fixed-step solvers"):
        configure(solver="tsit5", substeps=2)
    with pytest.raises(ValueError, match="`dense` must be True or False"):
        configure(dense="yes")
    with pytest.raises(ValueError, match="does not support `dense=True`"):
        configure(solver="rk4", adjoint="backsolve", dense=True)
    with pytest.raises(ValueError, match="`dt` is required"):
        configure(solver=diffrax.Euler())


@pytest.mark.parametrize("name,obj", [("recursive", FixedRecursive()),
                                      ("backsolve", FixedBacksolve()),
                                      ("direct", FixedDirect())])
def test_fixed_adjoint_object_equals_its_name(name, obj):
    """The name is an alias of the object: the same solution and gradient."""
    ts = np.linspace(0.0, 2.0, 9)

    def loss(k, adjoint):
        ys = jo.solve(_decay, jnp.array([1.0, 2.0]), ts, k, solver="rk4", dt=0.05,
                      adjoint=adjoint).ys
        return jnp.sum(ys ** 2)

    by_name = jax.value_and_grad(loss)(0.7, name)
    by_object = jax.value_and_grad(loss)(0.7, obj)
    np.testing.assert_allclose(by_object, by_name, rtol=1e-12)
    # and the gradient is right: d/dk of sum_i sum_j y0_j^2 exp(-2 k t_i)
    exact = -np.sum(5.0 * 2 * ts * np.exp(-2 * 0.7 * ts))
    np.testing.assert_allclose(by_name[1], exact, rtol=1e-5)


def test_fixed_adjoints_run_their_own_loops():
    """The objects differ in their loops, not in a string compared elsewhere: the
    recursive one keeps block starts (√n scan), the backsolve one a custom VJP."""
    def jaxpr(adjoint):
        def loss(y0):
            return jnp.sum(jo.solve(_decay, y0, np.linspace(0, 1, 3), 1.0,
                                    solver="rk4", substeps=64, adjoint=adjoint).ys)
        return str(jax.make_jaxpr(loss)(jnp.ones(2)))

    direct, recursive, backsolve = (jaxpr(a) for a in
                                    (FixedDirect(), FixedRecursive(), FixedBacksolve()))
    assert "custom_vjp" not in direct
    assert "custom_vjp" in recursive and "custom_vjp" in backsolve
    assert recursive != backsolve
    assert issubclass(FixedRecursive, FixedAdjoint)


def test_forward_mode_through_a_fixed_step_neural_ode():
    """`adjoint="forward"` keeps its meaning for fixed steps: `jax.jacfwd` works
    through a counting model (no custom VJP in the way)."""
    model = NeuralODE(Linear(A), solver="rk4", dt=0.01, adjoint="forward",
                      count_nfe=True)
    jac = jax.jacfwd(lambda y0: model(y0))(jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(jac, jax.scipy.linalg.expm(A), rtol=1e-6)


def test_per_call_tolerances_are_checked():
    model = NeuralODE(Linear(A))
    with pytest.raises(ValueError, match="`rtol` must be > 0, got -1"):
        model.solve(jnp.ones(2), rtol=-1.0)
    np.testing.assert_allclose(model.solve(jnp.ones(2), rtol=1e-8, atol=1e-8).ys[-1],
                               jax.scipy.linalg.expm(A) @ jnp.ones(2), rtol=1e-6)


def test_fit_runs_shooting_with_the_adjoint_it_is_given():
    """`fit` passes its `adjoint` to every solve, the shooting segments' included,
    and refuses the one combination that cannot follow its steps."""
    ts = np.linspace(0.5, 4.0, 8)
    ys = 2.0 * np.exp(-0.6 * ts)[:, None]

    def run(**kw):
        return jo.fit(_decay, 1.0, ts=ts, ys=ys, y0=np.array([2.0]), t0=0.0,
                      solver="rk4", dt=0.05, shooting=2, steps=200, progress=False,
                      **kw)

    default, recursive = run(), run(adjoint="recursive")
    assert abs(float(default.params) - 0.6) < 1e-3
    np.testing.assert_allclose(recursive.params, default.params, rtol=1e-6)
    with pytest.raises(ValueError, match="`shooting` with a fixed-step solver"):
        run(adjoint="backsolve")


# ------------------------------------------- throw: after the program, or in it


def _blows_up(t, y, args):
    """Finite until t = 0.55, NaN from there on."""
    return jnp.where(t > 0.55, jnp.nan, -args * y)


_FAILING = {
    "rk4": dict(solver="rk4", dt=0.1),
    "tsit5": dict(max_steps=50),
}
_MESSAGE = {"rk4": "non-finite value.*fixed-step",
            "tsit5": "non-finite value.*max_steps"}
_TS = jnp.linspace(0.0, 1.0, 11)


def _ys(y0, kw, throw=True):
    return jo.solve(_blows_up, y0, _TS, 1.0, throw=throw, **kw).ys


_Y0, _Y0S = jnp.ones(2), jnp.ones((3, 2))
_FORMS = {
    "eager": lambda kw: _ys(_Y0, kw),
    "jit": lambda kw: jax.jit(lambda y: _ys(y, kw))(_Y0),
    "vmap": lambda kw: jax.vmap(lambda y: _ys(y, kw))(_Y0S),
    "grad": lambda kw: jax.grad(lambda y: jnp.sum(_ys(y, kw)))(_Y0),
    "jit(vmap)": lambda kw: jax.jit(jax.vmap(lambda y: _ys(y, kw)))(_Y0S),
    "jit(value_and_grad)": lambda kw: jax.jit(jax.value_and_grad(
        lambda y: jnp.sum(_ys(y, kw))))(_Y0),
    "final state under jit": lambda kw: jax.jit(lambda y: _ys(y, kw)[-1])(_Y0),
    "ensemble": lambda kw: jo.ensemble(_blows_up, _Y0S, _TS, 1.0, **kw).ys,
    "ensemble under jit": lambda kw: jax.jit(
        lambda y: jo.ensemble(_blows_up, y, _TS, 1.0, **kw).ys)(_Y0S),
}


@pytest.mark.parametrize("form", list(_FORMS))
@pytest.mark.parametrize("solver", sorted(_FAILING))
def test_a_failing_solve_raises_eagerly_and_under_jit_vmap_and_grad(solver, form):
    with pytest.raises(Exception, match=_MESSAGE[solver]):
        jax.block_until_ready(_FORMS[form](_FAILING[solver]))


@pytest.mark.parametrize("solver", sorted(_FAILING))
def test_with_throw_false_a_failing_solve_says_so(solver):
    kw = _FAILING[solver]
    assert not bool(jo.solve(_blows_up, _Y0, _TS, 1.0, throw=False, **kw).ok)
    last = jax.jit(lambda y: _ys(y, kw, False))(_Y0)[-1]
    assert not np.isfinite(np.asarray(last)).any()


def test_throw_checks_inside_the_program_only_when_one_is_being_built(monkeypatch):
    """The run-time check of `throw=True` (an `eqx.error_if`, a host callback) goes
    into the compiled program only inside a caller's `jit`. Called eagerly (also
    under an eager `grad`, and through `ensemble`), the solve's programs hold none
    of jaxode's checks, and the flags are read after the program has run. Counted
    as the calls to `eqx.error_if` while the programs are traced; each case solves a
    vector field of its own, so no program comes from the cache."""
    calls = []
    error_if = eqx.error_if

    def counting(*args, **kwargs):
        calls.append(1)
        return error_if(*args, **kwargs)

    monkeypatch.setattr(eqx, "error_if", counting)

    def count(run, kw):
        def f(t, y, args):  # a new function each time: a new program
            return -args * y

        calls.clear()
        jax.block_until_ready(run(f, kw))
        return len(calls)

    def solve(f, kw, y0=None, ts=_TS):
        return jo.solve(f, jnp.ones(2) if y0 is None else y0, ts, 1.0, **kw).ys

    event = jo.Event(lambda t, y, a: y[0] - 0.5, terminal=False)
    eager = {
        "solve": lambda f, kw: solve(f, kw),
        "grad": lambda f, kw: jax.grad(lambda y: jnp.sum(solve(f, kw, y)))(jnp.ones(2)),
        "ensemble": lambda f, kw: jo.ensemble(f, jnp.ones((3, 2)), _TS, 1.0, **kw).ys,
        "uneven steps": lambda f, kw: solve(f, kw, ts=jnp.array([0.0, 0.1, 0.5, 1.0])),
        "dense": lambda f, kw: solve(f, kw | dict(dense=True)),
        "terminal event": lambda f, kw: solve(f, kw | dict(event=event.cond)),
        "events": lambda f, kw: solve(f, kw | dict(event=event)),
    }

    def jitted(f, kw):
        return jax.jit(lambda y: solve(f, kw, y))(jnp.ones(2))

    for kw in (dict(solver="rk4", dt=0.1), {}):
        for name, run in eager.items():
            assert count(run, kw) == 0, (kw, name)
        assert count(jitted, kw) >= 1
        assert count(jitted, kw | dict(throw=False)) == 0
