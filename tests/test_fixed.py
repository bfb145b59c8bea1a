"""Fixed-step solves: the step grid in float32 and float64, failure detection, the
three adjoints (values, gradients, memory), `substeps` under `jit`."""

import logging

import equinox as eqx
import jax
import jax.extend
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg

import jaxode as jo
from jaxode._fixed import plan_grid

DTYPES = [jnp.float32, jnp.float64]


def decay(t, y, k):
    return -k * y


# ---------------------------------------------------------------- the grid


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_interval", [1, 2, 3])
def test_linspace_grid_takes_exactly_k_steps_per_interval(dtype, per_interval):
    ts = jnp.linspace(0.0, 50.0, 1001, dtype=dtype)
    dt = 0.05 / per_interval
    sol = jo.solve(decay, jnp.ones(2, dtype), ts, jnp.asarray(0.1, dtype),
                   solver="rk4", dt=dt)
    assert int(sol.stats["num_steps"]) == 1000 * per_interval
    assert int(sol.stats["nfe"]) == 4 * 1000 * per_interval
    assert sol.ys.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_dt_as_the_float32_spacing_itself(dtype):
    ts = jnp.linspace(0.0, 50.0, 1001, dtype=dtype)
    dt = float(ts[1] - ts[0])  # a hair off 0.05 in float32
    sol = jo.solve(decay, jnp.ones(2, dtype), ts, 0.1, solver="rk4", dt=dt)
    assert int(sol.stats["num_steps"]) == 1000


def test_one_and_a_half_dt_takes_two_steps():
    counts, _ = plan_grid(np.array([0.0, 0.15, 0.25]), 0.1, np.float32)
    assert counts.tolist() == [2, 1]
    ts = jnp.array([0.0, 0.15], jnp.float32)
    sol = jo.solve(decay, jnp.ones(1, jnp.float32), ts, 1.0, solver="euler", dt=0.1)
    assert int(sol.stats["num_steps"]) == 2
    np.testing.assert_allclose(sol.ys[-1, 0], (1 - 0.075) ** 2, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_float32_linspace_is_uniform_so_the_step_is_loop_invariant(dtype):
    ts = np.asarray(jnp.linspace(0.0, 50.0, 1001, dtype=dtype), np.float64)
    counts, uniform = plan_grid(ts, None, dtype)
    assert uniform and counts.tolist() == [1] * 1000
    # a genuinely uneven grid is not mistaken for an even one
    _, uneven = plan_grid(np.array([0.0, 1.0, 2.5]), None, dtype)
    assert not uneven


def test_uniform_step_is_computed_before_the_loop():
    """With an even grid the scan over intervals does not divide the span by the
    step count in its body: the step is one scalar outside the loop."""
    ts = jnp.linspace(0.0, 1.0, 11, dtype=jnp.float32)
    uneven = jnp.asarray(np.cumsum([0.0] + [0.1 + 0.01 * (i % 2) for i in range(10)]),
                         jnp.float32)

    def first_scan(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                return eqn.params["jaxpr"].jaxpr
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                found = first_scan(sub)
                if found is not None:
                    return found
        return None

    def body_divides(ts):
        jaxpr = jax.make_jaxpr(lambda y: jo.solve(decay, y, ts, 1.0, solver="rk4").ys)(
            jnp.ones(2, jnp.float32))
        body = first_scan(jaxpr.jaxpr)
        return any(e.primitive.name == "div" for e in body.eqns)

    assert not body_divides(ts)
    assert body_divides(uneven)


def test_uneven_grid_matches_the_even_pieces():
    ts = jnp.array([0.0, 0.3, 2.0])
    sol = jo.solve(decay, jnp.ones(1), ts, 1.0, solver="rk4", dt=0.1)
    assert int(sol.stats["num_steps"]) == 3 + 17
    np.testing.assert_allclose(sol.ys[:, 0], np.exp(-np.asarray(ts)), rtol=5e-6)


# ------------------------------------------------------------ failures


def blows_up(t, y, args):
    """Finite until t = 0.62, NaN from there on: between the save times 0.6, 0.7."""
    return jnp.where(t > 0.62, jnp.nan, -y)


def test_nan_between_save_times_is_caught_when_only_the_final_state_is_kept():
    ts = jnp.array([0.0, 0.6, 0.7, 1.0])

    @jax.jit
    def final(y0):
        return jo.solve(blows_up, y0, ts, None, solver="rk4", dt=0.01).ys[-1]

    with pytest.raises(Exception, match="non-finite value"):
        jax.block_until_ready(final(jnp.ones(2)))
    sol = jo.solve(blows_up, jnp.ones(2), ts, None, solver="rk4", dt=0.01, throw=False)
    assert not bool(sol.ok)
    assert np.all(np.isfinite(sol.ys[:2])) and np.all(np.isnan(sol.ys[2:]))


def test_nan_is_caught_per_member_under_vmap():
    ts = jnp.linspace(0.0, 1.0, 11)

    def f(t, y, k):
        return jnp.where(k * t > 0.5, jnp.nan, -y)

    ok = jax.vmap(lambda k: jo.solve(f, jnp.ones(1), ts, k, solver="heun", dt=0.05,
                                     throw=False).ok)(jnp.array([0.1, 0.9, 0.2]))
    assert ok.tolist() == [True, False, True]


# ------------------------------------------------------------- adjoints


A = jnp.array([[-0.3, 1.0], [-1.0, -0.2]])


def loss(theta, adjoint, dt=0.01, solver="rk4"):
    f = lambda t, y, th: th["A"] @ y + th["b"] * jnp.sin(t)  # noqa: E731
    ts = np.linspace(0.0, 2.0, 5)  # concrete inside `jit`, as `dt` needs
    ys = jo.solve(f, theta["y0"], ts, theta, solver=solver, dt=dt, adjoint=adjoint).ys
    return jnp.sum(ys ** 2 * jnp.arange(1.0, 6.0)[:, None])


THETA = {"A": A, "b": jnp.array([0.5, -0.1]), "y0": jnp.array([1.0, 0.3])}


def finite_differences(fun, theta, h=1e-6):
    out = {}
    for name, value in theta.items():
        flat = np.asarray(value, np.float64).ravel()
        grads = np.empty_like(flat)
        for i in range(flat.size):
            e = np.zeros_like(flat)
            e[i] = h
            up = {**theta, name: jnp.asarray((flat + e).reshape(value.shape))}
            down = {**theta, name: jnp.asarray((flat - e).reshape(value.shape))}
            grads[i] = (fun(up) - fun(down)) / (2 * h)
        out[name] = grads.reshape(value.shape)
    return out


@pytest.fixture(scope="module")
def grads():
    return {a: jax.jit(jax.grad(loss), static_argnums=1)(THETA, a)
            for a in ["direct", "recursive", "backsolve"]}


def test_direct_and_recursive_match_finite_differences(grads):
    fd = finite_differences(lambda th: loss(th, "direct"), THETA)
    for adjoint in ["direct", "recursive"]:
        for name in THETA:
            np.testing.assert_allclose(grads[adjoint][name], fd[name], rtol=1e-6,
                                       atol=1e-7)
        # recursive recomputes the same steps: equal to rounding
        np.testing.assert_allclose(grads["recursive"][name], grads["direct"][name],
                                   rtol=1e-12)


def test_backsolve_matches_direct_to_the_order_of_the_stepper():
    """The continuous adjoint differs from the discrete gradient by O(dt^p)."""
    errors = []
    dts = [0.1, 0.05, 0.025]
    for dt in dts:
        g_d = jax.grad(loss)(THETA, "direct", dt)
        g_b = jax.grad(loss)(THETA, "backsolve", dt)
        errors.append(max(float(jnp.max(jnp.abs(g_b[k] - g_d[k]))) for k in THETA))
    slopes = np.diff(np.log(errors)) / np.diff(np.log(dts))
    assert np.all(slopes > 3.5), (errors, slopes)  # RK4: order 4
    assert errors[-1] < 1e-6


def test_backsolve_gradient_matches_finite_differences(grads):
    fd = finite_differences(lambda th: loss(th, "direct"), THETA)
    for name in THETA:
        np.testing.assert_allclose(grads["backsolve"][name], fd[name], rtol=1e-5,
                                   atol=1e-6)


def test_backsolve_and_recursive_gradients_for_ts():
    f = lambda t, y, a: -a * y + jnp.cos(t)  # noqa: E731

    def g(ts, adjoint):
        return jnp.sum(jo.solve(f, jnp.ones(1), ts, 0.7, solver="rk4", substeps=20,
                                adjoint=adjoint).ys ** 2)

    ts = jnp.array([0.1, 0.5, 1.2])
    fd = np.array([(g(ts.at[i].add(1e-6), "direct") - g(ts.at[i].add(-1e-6), "direct"))
                   / 2e-6 for i in range(3)])
    np.testing.assert_allclose(jax.grad(g)(ts, "recursive"), fd, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(g)(ts, "backsolve"), fd, rtol=1e-5)


@pytest.mark.parametrize("adjoint", ["direct", "recursive", "backsolve"])
def test_adjoints_under_vmap_match_a_loop(adjoint):
    y0s = jnp.array([[1.0, 0.0], [0.2, -0.4], [0.0, 2.0]])

    def one(y0, A):
        sol = jo.solve(lambda t, y, A: A @ y, y0, jnp.linspace(0.0, 1.0, 4), A,
                       solver="rk4", dt=0.05, adjoint=adjoint)
        return jnp.sum(sol.ys ** 2)

    batched = jax.grad(lambda A: jnp.sum(jax.vmap(one, (0, None))(y0s, A)))(A)
    looped = sum(jax.grad(one, argnums=1)(y0, A) for y0 in y0s)
    np.testing.assert_allclose(batched, looped, rtol=1e-10)


def test_forward_mode_through_fixed_steps():
    jac = jax.jacfwd(lambda y0: jo.solve(lambda t, y, A: A @ y, y0, jnp.array([0.0, 1.0]),
                                         A, solver="rk4", dt=0.01,
                                         adjoint="forward").ys[-1])(jnp.ones(2))
    np.testing.assert_allclose(jac, scipy.linalg.expm(np.asarray(A)), rtol=1e-8)


def _grad_temp_bytes(adjoint, steps, dtype=jnp.float32):
    W = (jr.normal(jr.PRNGKey(0), (32, 32)) / 6).astype(dtype)
    y0 = jr.normal(jr.PRNGKey(1), (32,)).astype(dtype)
    ts = jnp.array([0.0, 1.0], dtype)

    def loss(W):
        sol = jo.solve(lambda t, y, W: jnp.tanh(W @ y), y0, ts, W, solver="rk4",
                       dt=1.0 / steps, adjoint=adjoint)
        return jnp.sum(sol.ys[-1] ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(W).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_gradient_memory_growth_with_steps():
    growth = {a: _grad_temp_bytes(a, 4000) / _grad_temp_bytes(a, 250)
              for a in ["direct", "recursive", "backsolve"]}
    assert growth["direct"] > 12  # 16x the steps: stores every step
    assert growth["recursive"] < 6  # about sqrt(16) = 4
    assert growth["backsolve"] <= 1.2


# ------------------------------------------------------ substeps and jit


def test_substeps_under_jit_with_traced_ts():
    @jax.jit
    def run(y0, ts):
        return jo.solve(decay, y0, ts, 1.0, solver="rk4", substeps=10).ys

    ts = jnp.array([0.0, 0.5, 1.5])
    got = run(jnp.ones(1), ts)
    want = jo.solve(decay, jnp.ones(1), ts, 1.0, solver="rk4",
                    dt=None, substeps=10).ys
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(got[:, 0], np.exp(-np.asarray(ts)), rtol=1e-6)
    with pytest.raises(ValueError, match="substeps=k"):
        jax.jit(lambda ts: jo.solve(decay, jnp.ones(1), ts, 1.0, solver="rk4",
                                    dt=0.1).ys)(ts)


def test_substeps_bad_input():
    ts = jnp.array([0.0, 1.0])
    with pytest.raises(ValueError, match="`dt` or `substeps`, not both"):
        jo.solve(decay, jnp.ones(1), ts, 1.0, solver="rk4", dt=0.1, substeps=2)
    with pytest.raises(ValueError, match="`substeps` must be a positive integer, got 0"):
        jo.solve(decay, jnp.ones(1), ts, 1.0, solver="rk4", substeps=0)
    with pytest.raises(ValueError, match="`substeps`=4 is for fixed-step solvers"):
        jo.solve(decay, jnp.ones(1), ts, 1.0, solver="tsit5", substeps=4)


def test_new_ts_values_do_not_recompile_with_substeps():
    traces = []

    def f(t, y, k):
        traces.append(None)
        return -k * y

    for t1 in [1.0, 2.0, 3.0]:
        jo.solve(f, jnp.ones(1), jnp.linspace(0.0, t1, 5), 1.0, solver="rk4",
                 substeps=3)
    n = len(traces)
    jo.solve(f, jnp.ones(1), jnp.linspace(0.0, 4.0, 5), 1.0, solver="rk4", substeps=3)
    assert len(traces) == n


@pytest.mark.parametrize("dtype", DTYPES)
def test_rk4_order_in_both_dtypes(dtype):
    ts = jnp.array([0.0, 1.0], dtype)
    errs = []
    for n in [8, 16, 32]:
        y = jo.solve(lambda t, y, A: A @ y, jnp.ones(2, dtype), ts, A.astype(dtype),
                     solver="rk4", substeps=n).ys[-1]
        errs.append(np.max(np.abs(np.asarray(y, np.float64)
                                  - scipy.linalg.expm(np.asarray(A)) @ np.ones(2))))
    order = np.log2(errs[0] / errs[1])
    if dtype == jnp.float64:
        assert 3.8 < order < 4.3
    else:
        assert errs[-1] < 1e-5  # float32: the error floor is rounding


def _program_compiles(call):
    """How many times `call()` compiles the ensemble's program (JAX's compile log)."""
    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect()
    logging.getLogger("jax").addHandler(handler)
    try:
        with jax.log_compiles():
            out = call()
    finally:
        logging.getLogger("jax").removeHandler(handler)
    return sum(m.startswith("Compiling jit(_program)") for m in messages), out


def test_ensemble_new_ts_with_dt_does_not_recompile():
    y0s = jnp.ones((3, 1))
    f = lambda t, y, k: -k * y  # noqa: E731
    first, _ = _program_compiles(lambda: jo.ensemble(
        f, y0s, jnp.linspace(0.0, 1.0, 5), 1.0, solver="rk4", dt=0.05))
    assert first == 1
    for ts, dt in [(jnp.linspace(0.5, 1.5, 5), 0.05), (jnp.linspace(0.0, 2.0, 5), 0.1)]:
        again, sol = _program_compiles(lambda: jo.ensemble(f, y0s, ts, 1.0,
                                                           solver="rk4", dt=dt))
        assert again == 0  # same step count: 5 steps per interval
        np.testing.assert_allclose(sol.ys[0, :, 0], np.exp(-(ts - ts[0])), rtol=5e-6)


def test_neural_ode_fixed_step_backsolve_is_honoured():
    class Field(eqx.Module):
        W: jax.Array

        def __call__(self, t, y, args):
            return jnp.tanh(self.W @ y)

    field = Field(jnp.array([[0.1, -0.4], [0.3, 0.2]]))
    y0 = jnp.array([0.5, -1.0])
    grads = {}
    for adjoint in ["backsolve", "direct"]:
        model = jo.nn.NeuralODE(field, t1=1.0, solver="rk4", dt=0.01, adjoint=adjoint,
                                count_nfe=False)
        grads[adjoint] = eqx.filter_grad(lambda m: jnp.sum(m(y0) ** 2))(model)
    np.testing.assert_allclose(grads["backsolve"].vector_field.W,
                               grads["direct"].vector_field.W, rtol=1e-7)


class ClampedEuler(jo.Euler):
    """Euler from the state projected onto y >= 0: a stepper whose `step` turns a
    NaN state back into a finite one."""

    def step(self, f, t, y, dt, args=None):
        return super().step(f, t, jnp.where(y > 0, y, 0.0), dt, args)


def test_nan_hidden_by_a_projecting_stepper_is_still_caught():
    ts = jnp.array([0.0, 0.5, 1.0])
    f = lambda t, y, a: jnp.where((t > 0.2) & (t < 0.215), jnp.nan, -y)  # noqa: E731
    sol = jo.solve(f, jnp.ones(2), ts, None, solver=ClampedEuler(), dt=0.01,
                   throw=False)
    assert np.all(np.isfinite(sol.ys))  # the NaN vanished from every saved state
    assert not bool(sol.ok)
    with pytest.raises(Exception, match="non-finite value"):
        jax.block_until_ready(jo.solve(f, jnp.ones(2), ts, None, solver=ClampedEuler(),
                                       dt=0.01).ys[-1])
