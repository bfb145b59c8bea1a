"""Property tests: the invariants that define the library, on random inputs.

- `scan` with an all-True mask is `scan` without one; `reverse=True` is the scan of
  the flipped inputs with its outputs flipped back.
- `solve` of `dy/dt = A y` is `expm(A t) y0` for random stable `A`, step counts and
  dtypes, to the accuracy the stepper's order promises.
- `vmap(solve)` is a Python loop of `solve`; `ensemble` is `vmap(solve)` for any
  member count.

Each example compiles, so the example counts are small; shapes are drawn from a few
values so that compiled programs are reused across examples.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxode as jo

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = st.sampled_from(["float32", "float64"])


def _elman(params, h, x):
    h = jnp.tanh(params["W"] @ h + params["U"] @ x)
    return h, params["V"] @ h


def _scan_problem(seed, length, dtype):
    rng = np.random.default_rng(seed)
    H, I = 3, 2
    params = {"W": rng.normal(size=(H, H)) / 2, "U": rng.normal(size=(H, I)),
              "V": rng.normal(size=(1, H))}
    params = {k: jnp.asarray(v, dtype) for k, v in params.items()}
    return params, jnp.zeros(H, dtype), jnp.asarray(rng.normal(size=(length, I)), dtype)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), length=st.sampled_from([1, 7, 16]),
       dtype=DTYPES)
def test_scan_all_true_mask_is_no_mask(seed, length, dtype):
    with jax.enable_x64(dtype == "float64"):
        params, h0, xs = _scan_problem(seed, length, dtype)
        step = lambda h, x: _elman(params, h, x)  # noqa: E731
        a = jo.scan(step, h0, xs, mask=jnp.ones(length, bool))
        b = jo.scan(step, h0, xs)
        for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            np.testing.assert_array_equal(u, v)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), length=st.sampled_from([1, 7, 16]),
       dtype=DTYPES)
def test_scan_reverse_is_the_flipped_scan(seed, length, dtype):
    with jax.enable_x64(dtype == "float64"):
        params, h0, xs = _scan_problem(seed, length, dtype)
        step = lambda h, x: _elman(params, h, x)  # noqa: E731
        h_rev, ys_rev = jo.scan(step, h0, xs, reverse=True)
        h_flip, ys_flip = jo.scan(step, h0, xs[::-1])
        tol = 1e-12 if dtype == "float64" else 1e-5
        np.testing.assert_allclose(h_rev, h_flip, rtol=tol, atol=tol)
        np.testing.assert_allclose(ys_rev, ys_flip[::-1], rtol=tol, atol=tol)


def _stable_matrix(seed, n):
    """A random matrix whose eigenvalues have real parts in [-1, -0.1]."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    T = np.triu(rng.normal(size=(n, n)) * 0.5, 1)
    np.fill_diagonal(T, -rng.uniform(0.1, 1.0, n))
    return Q @ T @ Q.T


def _rounding(dtype, n_steps, y0):
    """A few ulps of the state per step."""
    return 4 * np.finfo(dtype).eps * n_steps * np.linalg.norm(y0)


STEPPERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), solver=st.sampled_from(sorted(STEPPERS)),
       n_steps=st.sampled_from([50, 200]), dtype=DTYPES)
def test_linear_solve_matches_expm(seed, solver, n_steps, dtype):
    """The global error of an order-p stepper with step h on `A y` is at most about
    C·h^p; C is bounded here by the size of A's derivatives (`‖A‖^(p+1)`, times T
    and a margin), plus the dtype's rounding."""
    A = _stable_matrix(seed, 3)
    y0 = np.random.default_rng(seed + 1).normal(size=3)
    T = 2.0
    exact = scipy.linalg.expm(A * T) @ y0
    with jax.enable_x64(dtype == "float64"):
        sol = jo.solve(lambda t, y, A: A @ y, jnp.asarray(y0, dtype),
                       jnp.array([0.0, T], dtype), jnp.asarray(A, dtype),
                       solver=solver, substeps=n_steps)
        assert sol.ys.dtype == dtype
        got = np.asarray(sol.ys[-1], np.float64)
    p, h = STEPPERS[solver], T / n_steps
    norm = np.linalg.norm(A, 2)
    bound = T * norm ** (p + 1) * h ** p * np.linalg.norm(y0)
    assert np.linalg.norm(got - exact) <= bound + _rounding(dtype, n_steps, y0)


def _decay(t, y, k):
    return -k * y + jnp.sin(t)


@settings(max_examples=4, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), members=st.sampled_from([1, 3, 5]),
       solver=st.sampled_from(["rk4", "tsit5"]), dtype=DTYPES)
def test_vmap_solve_is_a_loop_and_ensemble_is_vmap(seed, members, solver, dtype):
    rng = np.random.default_rng(seed)
    with jax.enable_x64(dtype == "float64"):
        y0s = jnp.asarray(rng.uniform(-2, 2, size=(members, 2)), dtype)
        ks = jnp.asarray(rng.uniform(0.1, 2.0, size=(members,)), dtype)
        ts = jnp.linspace(0.0, 3.0, 7, dtype=dtype)

        def one(y0, k):
            return jo.solve(_decay, y0, ts, k, solver=solver, rtol=1e-6, atol=1e-6).ys

        batched = jax.vmap(one)(y0s, ks)
        looped = jnp.stack([one(y0, k) for y0, k in zip(y0s, ks)])
        ens = jo.ensemble(_decay, y0s, ts, ks, member_args=True, solver=solver,
                          rtol=1e-6, atol=1e-6).ys
        tol = 1e-10 if dtype == "float64" else 1e-5
        assert batched.dtype == ens.dtype == dtype
        np.testing.assert_allclose(batched, looped, rtol=tol, atol=tol)
        np.testing.assert_allclose(ens, batched, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_property_bound_is_tight_enough_to_fail(dtype):
    """The expm bound above would catch a stepper one order lower than claimed: RK4's
    bound with Euler's error fails."""
    A = _stable_matrix(0, 3)
    y0 = np.ones(3)
    with jax.enable_x64(dtype == "float64"):
        got = np.asarray(jo.solve(lambda t, y, A: A @ y, jnp.asarray(y0, dtype),
                                  jnp.array([0.0, 2.0], dtype), jnp.asarray(A, dtype),
                                  solver="euler", substeps=50).ys[-1], np.float64)
    err = np.linalg.norm(got - scipy.linalg.expm(2 * A) @ y0)
    norm, h = np.linalg.norm(A, 2), 2.0 / 50
    rk4_bound = (2.0 * norm ** 5 * h ** 4 * np.linalg.norm(y0)
                 + _rounding(dtype, 50, y0))
    assert err > 10 * rk4_bound
