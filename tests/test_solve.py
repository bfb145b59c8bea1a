"""`jaxode.solve`: accuracy against scipy, gradients, transformations, bad input."""

import functools

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
from jax.experimental import io_callback

import jaxode as jo
from jaxode.data import COMPETITION_PARAMS, competition

from conftest import rtol_for

P = {k: jnp.asarray(v) for k, v in COMPETITION_PARAMS.items()}
Y0 = jnp.array([100.0, 150.0])
T_OBS = jnp.array([0.0, 10.0, 15.0, 30.0, 36.0, 40.0, 42.0])


def lotka(t, y, args):
    a, b, c, d = args
    return jnp.stack([a * y[0] - b * y[0] * y[1], -c * y[1] + d * y[0] * y[1]])


LOTKA_ARGS = jnp.array([1.1, 0.4, 0.4, 0.1])


@functools.cache
def _lotka_reference() -> np.ndarray:
    """The Lotka–Volterra solution at t = 0, 1, ..., 15 from y0 = (10, 5) by SciPy's
    DOP853 at rtol = atol = 1e-12, its right-hand side in plain NumPy (float64)."""
    a, b, c, d = np.asarray(LOTKA_ARGS, np.float64)
    out = scipy.integrate.solve_ivp(
        lambda t, y: [a * y[0] - b * y[0] * y[1], -c * y[1] + d * y[0] * y[1]],
        (0.0, 15.0), [10.0, 5.0], method="DOP853", t_eval=np.linspace(0.0, 15.0, 16),
        rtol=1e-12, atol=1e-12)
    return out.y.T


@pytest.mark.parametrize("solver", ["tsit5", "dopri5", "dopri8", "bosh3", "kvaerno5",
                                    "rodas5p"])
@pytest.mark.filterwarnings("ignore:jaxode.solve. the stiff solver")  # float32, 1e-6
def test_adaptive_matches_scipy_dop853(solver, dtype):
    ts = jnp.linspace(0.0, 15.0, 16)
    y0 = jnp.array([10.0, 5.0])
    args = jnp.asarray(LOTKA_ARGS, dtype)
    tol = rtol_for(dtype, 1e-10, 1e-6)  # float32: tolerances above its rounding
    sol = jo.solve(lotka, y0, ts, args, solver=solver, rtol=tol, atol=tol,
                   max_steps=100_000)
    assert sol.ys.dtype == dtype
    ref = _lotka_reference()
    err = rtol_for(dtype, 1e-7, 2e-4)
    np.testing.assert_allclose(np.asarray(sol.ys, np.float64), ref, rtol=err, atol=err)
    assert bool(sol.ok)
    s = {k: int(v) for k, v in sol.stats.items()}
    assert s["num_steps"] == s["num_accepted"] + s["num_rejected"] > 0


def test_fixed_dt_splits_intervals_and_matches_euler_grid():
    """dt=0.1 on the competition model's observation times == 420 Euler steps of 0.1."""
    sol = jo.solve(competition, Y0, T_OBS, P, solver="euler", dt=0.1)
    dense = jo.solve(competition, Y0, jnp.linspace(0, 42, 421), P, solver="euler")
    np.testing.assert_allclose(sol.ys, dense.ys[np.array([0, 100, 150, 300, 360, 400,
                                                          420])], rtol=1e-11)
    assert int(sol.stats["num_steps"]) == 420 and int(sol.stats["nfe"]) == 420
    # uniform intervals take the nested path: same values
    ts = jnp.linspace(0, 42, 8)
    a = jo.solve(competition, Y0, ts, P, solver="rk4", dt=0.1)
    b = jo.solve(competition, Y0, jnp.linspace(0, 42, 421), P, solver="rk4")
    np.testing.assert_allclose(a.ys, b.ys[::60], rtol=1e-11)


@pytest.mark.parametrize("problem,solver,dt", [
    *(("van der pol", s, dt) for s, dt in [("tsit5", None), ("tsit5", 0.1),
                                           ("dopri5", 0.1), ("dopri8", None),
                                           ("bosh3", 0.01), ("tsit5", 2.0)]),
    ("forced decay", "tsit5", 2.0), ("forced decay", "dopri8", None)])
def test_nfe_is_the_number_of_calls(problem, solver, dt):
    """Counted, including the re-evaluations of f(t0, y0) after rejected first steps
    (a first step of 2.0 at rtol 1e-8 is always rejected) and on a problem with many
    rejections."""
    calls = [0]

    def count(y):
        calls[0] += 1
        return y

    def f(t, y, args):
        y = io_callback(count, jax.ShapeDtypeStruct(y.shape, y.dtype), y, ordered=True)
        if problem == "forced decay":
            return -y + jnp.sin(t)
        return jnp.stack([y[1], 5 * (1 - y[0] ** 2) * y[1] - y[0]])

    sol = jo.solve(f, jnp.array([1.0, 2.0]), jnp.linspace(0, 10, 5), solver=solver, dt=dt,
                   rtol=1e-8, atol=1e-8, max_steps=100_000)
    jax.effects_barrier()
    assert int(sol.stats["nfe"]) == calls[0]
    if problem == "van der pol":
        assert int(sol.stats["num_rejected"]) > 10
    if dt == 2.0:
        assert calls[0] > 1 + 6 * int(sol.stats["num_steps"])  # first steps re-evaluated


def test_fixed_step_stats():
    sol = jo.solve(competition, Y0, jnp.linspace(0, 10, 11), P, solver="rk4")
    assert {k: int(v) for k, v in sol.stats.items()} == {
        "num_steps": 10, "num_accepted": 10, "num_rejected": 0, "nfe": 40,
        "num_jacobians": 0, "num_lu": 0}


def test_pytree_state():
    def f(t, y, args):
        return {"x": y["v"], "v": -y["x"]}

    ts = jnp.linspace(0, np.pi, 5)
    sol = jo.solve(f, {"x": jnp.array(1.0), "v": jnp.array(0.0)}, ts, rtol=1e-10,
                   atol=1e-10)
    np.testing.assert_allclose(sol.ys["x"], np.cos(ts), atol=1e-8)
    np.testing.assert_allclose(sol.ys["v"], -np.sin(ts), atol=1e-8)


def test_integer_y0_is_promoted_not_truncated():
    sol = jo.solve(lambda t, y, a: -0.5 * y, jnp.array([3, 4]), jnp.array([0.0, 1.0]))
    assert jnp.issubdtype(sol.ys.dtype, jnp.floating)
    np.testing.assert_allclose(sol.ys[-1], np.array([3, 4]) * np.exp(-0.5), rtol=1e-5)


def test_single_time_returns_y0():
    sol = jo.solve(competition, Y0, jnp.array([0.0]), P)
    assert sol.ys.shape == (1, 2)
    np.testing.assert_array_equal(sol.ys[0], Y0)


# ------------------------------------------------------------------ gradients


def _loss(args, adjoint, solver="tsit5"):
    sol = jo.solve(lotka, jnp.array([10.0, 5.0]), jnp.linspace(0, 3, 4), args,
                   solver=solver, rtol=1e-10, atol=1e-10, adjoint=adjoint)
    return jnp.sum(sol.ys[1:] ** 2)


def _central_fd(fun, x, eps=1e-6):
    x = np.asarray(x, dtype=np.float64)
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = eps * max(1.0, abs(x[i]))
        g[i] = (float(fun(jnp.asarray(x + e))) - float(fun(jnp.asarray(x - e)))) / (
            2 * e[i])
    return g


def test_gradients_match_finite_differences_and_each_other():
    # one test, so the four compiled gradients are built once
    g = {a: jax.grad(_loss)(LOTKA_ARGS, a)
         for a in ["recursive", "backsolve", "direct"]}
    g["forward"] = jax.jacfwd(_loss)(LOTKA_ARGS, "forward")
    fd = _central_fd(lambda a: _loss(a, "recursive"), LOTKA_ARGS)
    for adjoint in ["recursive", "backsolve", "direct", "forward"]:
        np.testing.assert_allclose(g[adjoint], fd, rtol=2e-5, err_msg=adjoint)
    np.testing.assert_allclose(g["recursive"], g["direct"], rtol=1e-12)
    np.testing.assert_allclose(g["forward"], g["recursive"], rtol=1e-9)
    np.testing.assert_allclose(g["backsolve"], g["recursive"], rtol=1e-6)


def test_adjoint_instance_is_accepted():
    adj = diffrax.RecursiveCheckpointAdjoint(checkpoints=8)
    np.testing.assert_allclose(_loss(LOTKA_ARGS, adj), _loss(LOTKA_ARGS, "recursive"),
                               rtol=1e-13)


def test_fixed_step_gradient_matches_finite_differences():
    g = jax.grad(_loss)(LOTKA_ARGS, "recursive", "rk4")
    fd = _central_fd(lambda a: _loss(a, "recursive", "rk4"), LOTKA_ARGS)
    np.testing.assert_allclose(g, fd, rtol=1e-5)


# ------------------------------------------------------------ transformations


@pytest.mark.parametrize("solver", ["rk4", "tsit5"])
def test_vmap_matches_python_loop(solver, dtype):
    y0s = jnp.array([100.0, 150.0]) * (1 + 0.5 * jax.random.uniform(
        jax.random.PRNGKey(3), (6, 2)))
    ts = jnp.linspace(0, 30, 31)
    args = dict(COMPETITION_PARAMS)  # Python floats: float32 when x64 is off
    run = lambda y0: jo.solve(competition, y0, ts, args, solver=solver).ys  # noqa: E731
    batched = jax.vmap(run)(y0s)
    looped = jnp.stack([run(y0) for y0 in y0s])
    assert batched.dtype == dtype
    np.testing.assert_allclose(batched, looped, rtol=rtol_for(dtype, 1e-9, 1e-5))


def test_vmap_over_args_and_ok_per_element():
    ts = jnp.linspace(0.0, 10.0, 3)
    rates = jnp.array([0.1, 1.0, 2000.0])

    def run(k):
        sol = jo.solve(lambda t, y, k: -k * y, jnp.array(1.0), ts, k, max_steps=64,
                       throw=False)
        return sol.ok, sol.ys

    ok, ys = jax.vmap(run)(rates)
    # the stiff member exhausts 64 explicit steps; the others are fine
    assert ok.tolist() == [True, True, False]
    np.testing.assert_allclose(ys[0], np.exp(-0.1 * ts), rtol=1e-5)
    assert not np.all(np.isfinite(ys[2][-1]))


@pytest.mark.parametrize("solver", ["tsit5", "rk4"])
def test_no_retrace_on_new_values(solver):
    """A second call with new y0, ts, args and tolerances traces `f` no more."""
    traces = [0]

    def f(t, y, args):
        traces[0] += 1  # runs only while tracing
        return competition(t, y, args)

    ts = jnp.linspace(0, 10, 11)
    jo.solve(f, Y0, ts, P, solver=solver, rtol=1e-6, atol=1e-6)
    first = traces[0]
    jo.solve(f, Y0 * 1.1, ts * 1.5, {k: v * 1.01 for k, v in P.items()}, solver=solver,
             rtol=1e-8, atol=1e-9)
    assert first > 0 and traces[0] == first


def test_jit_of_solve_with_traced_ts():
    @jax.jit
    def final(y0, ts):
        return jo.solve(competition, y0, ts, P).ys[-1]

    a = final(Y0, jnp.linspace(0, 10, 3))
    b = jo.solve(competition, Y0, jnp.linspace(0, 10, 3), P).ys[-1]
    np.testing.assert_allclose(a, b, rtol=1e-12)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(ts=jnp.ones((2, 2))), r"`ts` must be 1-D, got shape \(2, 2\)"),
        (dict(ts=jnp.array([0.0, 2.0, 1.0])), r"strictly increasing; ts\[1\]=2.0"),
        (dict(ts=jnp.array([0.0, 1.0, 1.0])), r"strictly increasing"),
        (dict(ts=jnp.array([0.0, jnp.nan])), r"`ts` holds non-finite"),
        (dict(y0=jnp.array([1.0, jnp.nan])), r"`y0` holds non-finite"),
        (dict(args={**P, "r1": jnp.inf}), r"`args\['r1'\]` holds non-finite"),
        (dict(dt=-0.1, solver="euler"), r"`dt` must be > 0, got -0.1"),
        (dict(dt=0.0), r"`dt` must be > 0"),
        (dict(rtol=0.0), r"`rtol` must be > 0"),
        (dict(solver="rk45"), r"`solver`='rk45' is not one of .*bosh3.*tsit5"),
        (dict(solver=42), r"`solver`=42 is neither"),
        (dict(adjoint="adj"), r"`adjoint`='adj' is not one of .*backsolve"),
        (dict(max_steps=0), r"`max_steps` must be a positive integer"),
        (dict(solver=diffrax.Euler()), r"`dt` is required for the non-adaptive"),
        (dict(ts=jnp.array([])), r"`ts` is empty"),
        (dict(ts=[]), r"`ts` is empty"),
        (dict(rtol="1e-3"), r"`rtol` must be a number.*'1e-3' \(str\)"),
        (dict(atol=[1e-3, "x"]), r"`atol\[1\]` must be a number.*'x' \(str\)"),
        (dict(dt="0.1", solver="rk4"), r"`dt` must be a number.*'0.1' \(str\)"),
        (dict(y0="1.0"), r"`y0` must be a number.*'1.0' \(str\)"),
        (dict(y0={"a": jnp.ones(2), "b": "x"}), r"`y0\['b'\]` must be a number"),
        (dict(ts=["0", "1"]), r"`ts\[0\]` must be a number"),
    ],
)
def test_bad_input_names_argument_and_value(kwargs, match):
    call = dict(f=competition, y0=Y0, ts=T_OBS, args=P)
    call.update(kwargs)
    with pytest.raises(ValueError, match=match):
        jo.solve(call.pop("f"), call.pop("y0"), call.pop("ts"), call.pop("args"), **call)


def test_vector_field_of_wrong_shape_is_reported_with_both():
    with pytest.raises(ValueError, match=r"`f` returned float64\[3\].*y0 is float64\[2\]"):
        jo.solve(lambda t, y, a: jnp.ones(3), Y0, T_OBS)
    with pytest.raises(ValueError, match=r"`f` returned .*float32"):
        jo.solve(lambda t, y, a: y.astype(jnp.float32), Y0, T_OBS)
    with pytest.raises(ValueError, match=r"`f` returned \{'a'"):
        jo.solve(lambda t, y, a: {"a": y}, Y0, T_OBS)
    with pytest.raises(ValueError, match=r"`f` failed when called as f\(t, y0, args\)"):
        jo.solve(lambda t, y, a: a["missing"], Y0, T_OBS, {})


def test_traced_non_increasing_ts_raises_at_run_time():
    @jax.jit
    def run(ts):
        return jo.solve(competition, Y0, ts, P, solver="rk4").ys

    with pytest.raises(Exception, match="strictly increasing") as err:
        run(jnp.array([0.0, 2.0, 1.0]))
    # the values are not known when the message is made: it says how to see them
    assert "jax.debug.print" in str(err.value)


def test_lists_tolerances_and_mixed_dtypes():
    """`y0` as a list of numbers is one state; a per-component `atol` of the wrong
    length is named; float32 `y0` with float64 `ts` solves in float64 with fixed
    steps as with adaptive ones (it was a `lax.scan` carry-type error)."""
    f = lambda t, y, a: -y  # noqa: E731
    ts = jnp.linspace(0.0, 1.0, 3)
    np.testing.assert_allclose(jo.solve(f, [1.0, 2.0], ts).ys[-1],
                               np.exp(-1.0) * np.array([1.0, 2.0]), rtol=1e-6)
    with pytest.raises(ValueError, match=r"`atol` must be a number or one per "
                                         r"component of `y0` \(shape \(2,\)\), got "
                                         r"shape \(3,\)"):
        jo.solve(f, jnp.ones(2), ts, atol=[1e-6, 1e-6, 1e-6])
    per_component = jo.solve(f, jnp.ones(2), ts, atol=[1e-6, 1e-8])
    assert bool(per_component.ok)
    for solver, dt in (("rk4", 0.01), ("tsit5", None)):
        sol = jo.solve(f, jnp.ones(2, jnp.float32), ts, solver=solver, dt=dt)
        assert sol.ys.dtype == jnp.float64
        np.testing.assert_allclose(sol.ys[-1], np.exp(-1.0), rtol=1e-5)


def test_max_steps_exhausted():
    stiff = lambda t, y, a: -1e5 * (y - jnp.cos(t))  # noqa: E731
    ts = jnp.linspace(0.0, 1.0, 5)
    with pytest.raises(Exception, match=r"Raise `max_steps`.*solver=.rodas5p."):
        jo.solve(stiff, jnp.array([0.0]), ts, max_steps=50)
    sol = jo.solve(stiff, jnp.array([0.0]), ts, max_steps=50, throw=False)
    assert not bool(sol.ok)
    assert not np.all(np.isfinite(np.asarray(sol.ys[-1])))  # nothing that looks valid
    ok = jo.solve(stiff, jnp.array([0.0]), ts, solver="kvaerno5", max_steps=200)
    np.testing.assert_allclose(ok.ys[-1], np.cos(1.0), atol=1e-4)
    # a stiff solver out of steps is not told to try a stiff solver
    with pytest.raises(Exception, match=r"the stiff solver reached `max_steps`") as err:
        jo.solve(stiff, jnp.array([0.0]), ts, solver="stiff", max_steps=3)
    assert "try solver" not in str(err.value)


def test_nan_mid_solve_is_an_error():
    blowup = lambda t, y, a: jnp.where(t > 0.5, jnp.nan, 1.0) * y  # noqa: E731
    ts = jnp.linspace(0.0, 1.0, 11)
    with pytest.raises(Exception, match="non-finite value"):
        jo.solve(blowup, jnp.array([1.0]), ts, solver="rk4")
    sol = jo.solve(blowup, jnp.array([1.0]), ts, solver="rk4", throw=False)
    assert not bool(sol.ok) and np.isnan(np.asarray(sol.ys[-1])).all()
    # an adaptive solver rejects every NaN step until it runs out of steps: the
    # message says what happened, not "raise max_steps" (the step-size controller
    # notices, so one explicit solver stands for all)
    with pytest.raises(Exception, match="non-finite value.*ran out of `max_steps`"):
        jo.solve(blowup, jnp.array([1.0]), ts, solver="dopri5", max_steps=200)
    with pytest.raises(Exception, match="non-finite value.*ran out of `max_steps`"):
        jo.solve(lambda t, y, a: jnp.log(-y), jnp.array([1.0]), ts, max_steps=200)
    # under vmap, one member's NaN is that member's failure only
    sol = jax.vmap(lambda s: jo.solve(lambda t, y, a: jnp.log(a) * y, jnp.array([1.0]),
                                      ts, s, max_steps=200, throw=False))(
        jnp.array([2.0, -1.0]))
    assert sol.ok.tolist() == [True, False]


def test_result_says_why_a_solve_ended():
    import diffrax

    R = diffrax.RESULTS
    ts = jnp.linspace(0.0, 1.0, 5)
    decay = lambda t, y, a: -y  # noqa: E731
    assert jo.solve(decay, jnp.ones(1), ts).result == R.successful
    short_run = jo.solve(decay, jnp.ones(1), ts, max_steps=2, throw=False)
    assert short_run.result == R.max_steps_reached and not short_run.ok
    blow_up = lambda t, y, a: y ** 2 * 1e3  # noqa: E731
    nan = jo.solve(blow_up, jnp.ones(1), ts, solver="rk4", dt=0.1, throw=False)
    assert nan.result == R.nonfinite and not nan.ok
    assert "Nonfinite" in R[nan.result]
    ens = jo.ensemble(lambda t, y, a: a * y ** 2, jnp.ones((3, 1)), ts,
                          jnp.array([0.1, 1e3, 0.2]), member_args=True, solver="rk4",
                          dt=0.1, throw=False)
    assert list(ens.ok) == [True, False, True]
    assert list(ens.result == R.successful) == [True, False, True]
