"""Stiff solvers: Rosenbrock23's order and accuracy, the stiff step-size controller,
the reference problems, and the float32 warning."""

import warnings

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import jaxode as jo
from jaxode.data import STIFF_PROBLEMS

# eigenvalues -1000 and -0.5: stiff, with a slow mode that carries the error
A = np.array([[-1000.0, 1.0], [0.0, -0.5]])


def _fixed_step_error(f, y0, t1, n, reference):
    sol = diffrax.diffeqsolve(diffrax.ODETerm(f), jo.Rosenbrock23(), 0.0, t1, t1 / n,
                              jnp.asarray(y0), saveat=diffrax.SaveAt(t1=True))
    return float(jnp.linalg.norm(sol.ys[-1] - reference))


def test_rosenbrock23_is_second_order_on_a_stiff_linear_system():
    y0 = np.array([1.0, 1.0])
    exact = scipy.linalg.expm(A) @ y0
    ns = [20, 40, 80, 160]  # h = 0.05 ... 0.006, all far beyond explicit stability
    errs = [_fixed_step_error(lambda t, y, a: jnp.asarray(A) @ y, y0, 1.0, n, exact)
            for n in ns]
    slope = np.polyfit(np.log(1.0 / np.array(ns)), np.log(errs), 1)[0]
    assert abs(slope - 2) < 0.3, (slope, errs)


def test_rosenbrock23_is_second_order_on_a_forced_stiff_system():
    """The time derivative `T = ∂f/∂t` enters the stages; without it the order on
    a stiffly forced problem drops (measured 0.66 instead of 2)."""
    def f(t, y, a):
        return jnp.stack([-50 * (y[0] - jnp.cos(5 * t)), -y[1] * y[0] + t ** 2])

    y0 = jnp.array([1.0, 0.0])
    ref = jo.solve(f, y0, jnp.array([0.0, 2.0]), solver="dopri8", rtol=1e-13,
                   atol=1e-13, max_steps=100_000).ys[-1]
    ns = [20, 40, 80, 160]
    errs = [_fixed_step_error(f, y0, 2.0, n, ref) for n in ns]
    slope = np.polyfit(np.log(2.0 / np.array(ns)), np.log(errs), 1)[0]
    assert abs(slope - 2) < 0.3, (slope, errs)


@pytest.mark.parametrize("key, rtol, bound", [
    ("robertson", 1e-6, 1e-2), ("robertson", 1e-8, 1e-3), ("hires", 1e-6, 1e-4)])
def test_rosenbrock23_on_reference_problems(key, rtol, bound):
    """Against the Test Set's reference solutions; the error shrinks with rtol."""
    p = STIFF_PROBLEMS[key]
    sol = jo.solve(p.f, jnp.asarray(p.y0), jnp.array([0.0, p.t1]), solver="rosenbrock23",
                   rtol=rtol, atol=rtol * p.atol_per_rtol, max_steps=100_000)
    err = np.max(np.abs(np.asarray(sol.ys[-1]) - p.reference) / np.abs(p.reference))
    assert err < bound, err
    assert int(sol.stats["nfe"]) == 3 * int(sol.stats["num_steps"])


def test_kvaerno5_reaches_the_robertson_and_hires_references_with_few_rejections():
    """With the PI controller for implicit solvers: within 1e-6 relative of the
    reference at rtol 1e-10, and well under the 46 % of steps the default I
    controller rejects on Robertson."""
    for key in ("robertson", "hires"):
        p = STIFF_PROBLEMS[key]
        sol = jo.solve(p.f, jnp.asarray(p.y0), jnp.array([0.0, p.t1]),
                       solver="kvaerno5", rtol=1e-10, atol=1e-10 * p.atol_per_rtol,
                       max_steps=100_000)
        err = np.max(np.abs(np.asarray(sol.ys[-1]) - p.reference)
                     / np.abs(p.reference))
        assert err < 1e-6, (key, err)
        if key == "robertson":
            rejected = int(sol.stats["num_rejected"]) / int(sol.stats["num_steps"])
            assert rejected < 0.25, rejected


def test_rosenbrock23_works_under_vmap_grad_and_ensemble():
    def f(t, y, k):
        return jnp.stack([-k * (y[0] - jnp.cos(t)), -y[1] + y[0]])

    ts = jnp.linspace(0.0, 1.0, 5)
    y0s = jnp.array([[1.0, 0.0], [0.5, 0.2], [2.0, -1.0]])
    run = lambda y0, k: jo.solve(f, y0, ts, k, solver="rosenbrock23",  # noqa: E731
                                 rtol=1e-8, atol=1e-8).ys
    batched = jax.vmap(run, (0, None))(y0s, 1e3)
    looped = jnp.stack([run(y0, 1e3) for y0 in y0s])
    np.testing.assert_allclose(batched, looped, rtol=1e-10)
    ens = jo.ensemble(f, y0s, ts, 1e3, solver="rosenbrock23", rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(ens.ys, batched, rtol=1e-10)
    # gradient with respect to the stiffness, against central differences
    loss = jax.jit(lambda k: jnp.sum(run(y0s[1], k)[-1] ** 2))
    g = jax.grad(loss)(50.0)
    fd = (loss(50.0 + 1e-4) - loss(50.0 - 1e-4)) / 2e-4
    np.testing.assert_allclose(g, fd, rtol=1e-3)  # FD of an adaptive solve: ~1e-4


def test_float32_stiff_solve_with_a_tight_tolerance_warns():
    f = STIFF_PROBLEMS["robertson"].f
    with jax.enable_x64(False):
        y0, ts = jnp.array([1.0, 0.0, 0.0]), jnp.array([0.0, 1.0])
        with pytest.warns(RuntimeWarning, match=r"Rosenbrock23 in float32 with "
                                                r"rtol=1e-06.*float64"):
            jo.solve(f, y0, ts, solver="rosenbrock23", rtol=1e-6, atol=1e-10)
        with pytest.warns(RuntimeWarning, match="Kvaerno5 in float32"):
            jo.solve(f, y0, ts, solver="kvaerno5", rtol=1e-7, atol=1e-10, throw=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sol = jo.solve(f, y0, ts, solver="rosenbrock23", rtol=1e-4, atol=1e-8)
        assert sol.ys.dtype == jnp.float32 and bool(sol.ok)
