"""Fixed-step Runge–Kutta steppers: tableaux, empirical order, the Euler RNN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import jaxode as jo
from jaxode.data import COMPETITION_PARAMS, competition

from conftest import rtol_for

STEPPERS = [(jo.Euler(), 1), (jo.Midpoint(), 2), (jo.Heun(), 2), (jo.RK4(), 4)]
A = np.array([[-0.3, 1.0, 0.0], [-1.0, -0.3, 0.5], [0.0, -0.5, -0.1]])


def linear(t, y, args):
    return args @ y


@pytest.mark.parametrize("stepper,order", STEPPERS, ids=lambda s: type(s).__name__)
def test_empirical_order_against_expm(stepper, order, dtype):
    y0 = np.array([1.0, 0.0, -1.0])
    T = 2.0
    exact = scipy.linalg.expm(A * T) @ y0
    # float32: coarser grids keep RK4's error above rounding (~1e-7)
    ns = [4, 8, 16, 32] if dtype == jnp.float32 else [16, 32, 64, 128]
    errs = []
    for n in ns:
        sol = jo.solve(linear, jnp.asarray(y0, dtype), jnp.linspace(0, T, n + 1),
                       jnp.asarray(A, dtype), solver=stepper)
        assert sol.ys.dtype == dtype
        errs.append(np.linalg.norm(np.asarray(sol.ys[-1], np.float64) - exact))
    slope = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert stepper.order == order
    assert abs(slope - order) < 0.3, (slope, errs)


def test_euler_rnn_equals_numpy_euler_loop(dtype):
    """The competition model's RNN: 1000 Euler steps of h = 0.1, against a float64
    NumPy loop (float32 drifts by rounding: 1000 steps of ~1e-7 each)."""
    tol = rtol_for(dtype, 1e-12, 2e-4)
    p = COMPETITION_PARAMS
    y = np.array([100.0, 150.0])
    want = [y]
    for _ in range(1000):
        x, z = y
        dy = np.array([p["r1"] * x * (1 - p["iN1"] * x) - p["a1"] * x * z,
                       p["r2"] * z * (1 - p["iN2"] * z) - p["a2"] * x * z])
        y = y + 0.1 * dy
        want.append(y)
    sol = jo.solve(competition, jnp.array([100.0, 150.0]), jnp.linspace(0, 100, 1001),
                   p, solver="euler")
    assert sol.ys.dtype == dtype
    np.testing.assert_allclose(sol.ys, np.array(want), rtol=tol, atol=tol)
    # and the same thing as a cell under jaxode.scan
    cell = jo.ODECell(competition, solver=jo.Euler(), dt=0.1, args=p)
    (t, y_last), ys = jo.scan(cell, (0.0, jnp.array([100.0, 150.0])), None, length=1000)
    assert ys.dtype == dtype
    np.testing.assert_allclose(ys, np.array(want[1:]), rtol=tol, atol=tol)
    assert abs(float(t) - 100.0) < rtol_for(dtype, 1e-9, 1e-3)


def test_odecell_passes_inputs_as_args():
    """A driven ODE: x_t enters the vector field as `args`, like an RNN input."""
    cell = jo.ODECell(lambda t, y, u: -y + u, solver=jo.RK4(), dt=0.05)
    us = jnp.sin(jnp.arange(40) * 0.05)
    (_, y), ys = jo.scan(cell, (0.0, jnp.array(0.0)), us)
    y_ref = 0.0
    for u in np.asarray(us):
        k1 = -y_ref + u
        k2 = -(y_ref + 0.025 * k1) + u
        k3 = -(y_ref + 0.025 * k2) + u
        k4 = -(y_ref + 0.05 * k3) + u
        y_ref = y_ref + 0.05 / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    assert abs(float(y) - y_ref) < 1e-13


def test_odecell_checks_its_inputs():
    """A stepper's name works as in `solve`; an adaptive solver, a `dt` that is not
    finite and positive, and a field of the wrong shape get clear errors (they were
    an AttributeError, silently accepted, and a broadcasting error)."""
    cell = jo.ODECell(lambda t, y, a: -y, solver="rk4", dt=0.1)
    assert isinstance(cell.solver, jo.RK4)
    _, ys = jo.scan(cell, (0.0, jnp.ones(2)), None, length=3)
    np.testing.assert_allclose(ys[-1], np.exp(-0.3), rtol=1e-6)
    with pytest.raises(ValueError, match=r"`solver`='tsit5' is not a fixed-step.*"
                                         r"jaxode.solve"):
        jo.ODECell(lambda t, y, a: -y, solver="tsit5")
    for dt in (0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"`dt` must be a finite number > 0"):
            jo.ODECell(lambda t, y, a: -y, dt=dt)
    wrong = jo.ODECell(lambda t, y, a: jnp.ones(3), solver="euler")
    with pytest.raises(ValueError, match=r"`f` returned .*\[3\] but y is .*\[2\]"):
        jo.scan(wrong, (0.0, jnp.ones(2)), None, length=2)


def test_step_works_on_pytrees():
    f = lambda t, y, args: {"p": y["q"], "q": -y["p"]}  # noqa: E731
    y = {"p": jnp.array(1.0), "q": jnp.array(0.0)}
    for _ in range(100):
        y = jo.RK4().step(f, 0.0, y, 0.01 * np.pi / 2)
    assert abs(float(y["p"])) < 1e-9 and abs(float(y["q"]) + 1.0) < 1e-9


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(c=(0.0, 0.5), a=((), (0.4,)), b=(0.0, 1.0), order=2), "sums to 0.4"),
        (dict(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.6), order=2), "sum to 1.1"),
        (dict(c=(0.1,), a=((),), b=(1.0,), order=1), "c\\[0\\] == 0"),
        (dict(c=(0.0, 1.0), a=((), ()), b=(0.5, 0.5), order=2), "row 1 of `a` must"),
        (dict(c=(0.0,), a=((),), b=(0.5, 0.5), order=1), "must be equal"),
    ],
)
def test_tableau_checks_itself(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jo.ButcherTableau(**kwargs)


def test_steppers_usable_inside_jit_and_grad():
    def final(k):
        sol = jo.solve(lambda t, y, k: -k * y, jnp.array(1.0), jnp.linspace(0, 1, 11), k,
                       solver=jo.RK4())
        return sol.ys[-1]

    g = jax.jit(jax.grad(final))(2.0)
    # d/dk of exp(-k) at k=2, up to RK4 error with h = 0.1
    assert abs(float(g) + np.exp(-2.0)) < 1e-5
