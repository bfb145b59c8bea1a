"""Events (terminal root-finding) and dense output, adaptive and fixed-step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import jaxode as jo

G = 9.81
HEIGHTS = np.linspace(1.0, 100.0, 100)
A = np.array([[-0.1, 2.0], [-2.0, -0.1]])


def fall(t, y, g):
    return jnp.stack([y[1], -g])


def ground(t, y, g):
    return y[0]


def linear(t, y, A):
    return A @ y


def _t_hit(h, g=G, solver="tsit5", **kw):
    ts = jnp.linspace(0.0, 5.0, 11)
    return jo.solve(fall, jnp.stack([h, jnp.zeros_like(h)]), ts, g, solver=solver,
                    event=ground, **kw).t_event


@pytest.mark.parametrize("solver, kw", [
    ("tsit5", dict(rtol=1e-10, atol=1e-10)),
    ("rk4", dict(dt=0.01)),
])
def test_ball_hits_the_ground_at_sqrt_2h_over_g(solver, kw):
    """100 heights in one vmapped solve (and one from 500 m, which takes 10 s and so
    does not land before t = 5: inf); the fall is a quadratic, which Runge–Kutta steps
    and their interpolants reproduce, so only the root finder's tolerance is left.
    The implicit function theorem gives d t_hit / d h = 1 / sqrt(2 g h) and
    d t_hit / d g = -sqrt(2 h) / (2 g^(3/2))."""
    heights = jnp.asarray(np.append(HEIGHTS, 500.0))
    t_hit = jax.vmap(lambda h: _t_hit(h, G, solver, **kw))(heights)
    np.testing.assert_allclose(t_hit[:-1], np.sqrt(2 * HEIGHTS / G), rtol=0, atol=1e-8)
    assert np.isinf(t_hit[-1])
    dh, dg = jax.grad(lambda h, g: _t_hit(h, g, solver, **kw), argnums=(0, 1))(20.0, G)
    np.testing.assert_allclose(dh, 1 / np.sqrt(2 * G * 20.0), rtol=1e-7)
    np.testing.assert_allclose(dg, -np.sqrt(2 * 20.0) / (2 * G ** 1.5), rtol=1e-7)


def test_states_after_the_event_are_inf_and_the_solve_is_ok():
    ts = jnp.linspace(0.0, 5.0, 11)
    for solver, kw in [("tsit5", {}), ("rk4", dict(dt=0.05))]:
        sol = jo.solve(fall, jnp.array([20.0, 0.0]), ts, G, solver=solver,
                       event=ground, **kw)
        after = np.asarray(ts) > np.sqrt(40 / G)
        assert bool(sol.ok)
        assert np.all(np.isinf(np.asarray(sol.ys)[after]))
        np.testing.assert_allclose(sol.ys[~after, 0], 20 - G / 2 * ts[~after] ** 2,
                                   rtol=1e-6)
    assert np.isinf(jo.solve(fall, jnp.array([1.0, 0.0]), jnp.array([0.0, 0.1]), G)
                    .t_event)  # no event asked for


@pytest.mark.parametrize("solver, order", [("euler", 1), ("heun", 2), ("rk4", 4)])
def test_fixed_step_event_within_the_order_of_the_stepper(solver, order):
    """An event on a nonlinear solution, y' = -y (1 + y) from 1, crossing 0.2: the
    located time converges at the stepper's order (the Hermite interpolant is
    O(h^4), so the steps' own error dominates)."""
    def f(t, y, _):
        return -y * (1 + y)

    # y(t) = 1 / (2 e^t - 1): y = 0.2 at t = log(3)
    exact = np.log(3.0)
    errs = []
    dts = [0.1, 0.05, 0.025]
    for dt in dts:
        t = jo.solve(f, jnp.array(1.0), jnp.array([0.0, 2.0]), None, solver=solver,
                     dt=dt, event=lambda t, y, _: y - 0.2).t_event
        errs.append(abs(float(t) - exact))
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.35, (slope, errs)


@pytest.mark.parametrize("solver, kw, tol", [
    ("tsit5", dict(rtol=1e-10, atol=1e-10), 1e-8),
    ("rk4", dict(dt=0.01), 1e-8),
])
def test_dense_output_against_the_exact_solution(solver, kw, tol):
    ts = jnp.array([0.0, 1.0, 2.0])
    y0 = jnp.array([1.0, -0.5])
    sol = jo.solve(linear, y0, ts, jnp.asarray(A), solver=solver, dense=True, **kw)
    tq = np.linspace(0.0, 2.0, 41) + 0.013 * np.sin(np.arange(41))  # between steps
    tq = np.clip(tq, 0.0, 2.0)
    exact = np.stack([scipy.linalg.expm(A * t) @ np.asarray(y0) for t in tq])
    np.testing.assert_allclose(sol.evaluate(jnp.asarray(tq)), exact, atol=tol)
    assert sol.evaluate(0.5).shape == (2,)
    assert sol.evaluate(jnp.ones((3, 4))).shape == (3, 4, 2)
    # under jit, vmap and grad
    at = jax.jit(lambda t: sol.evaluate(t))(0.77)
    np.testing.assert_allclose(at, scipy.linalg.expm(A * 0.77) @ np.asarray(y0),
                               atol=tol)

    def first(y0, t):
        return jo.solve(linear, y0, ts, jnp.asarray(A), solver=solver, dense=True,
                        **kw).evaluate(t)[0]

    g = jax.grad(first)(y0, 0.77)
    np.testing.assert_allclose(g, scipy.linalg.expm(A * 0.77)[0], atol=10 * tol)
    y0s = jnp.stack([y0, 2 * y0])
    batched = jax.vmap(first, (0, None))(y0s, 0.77)
    np.testing.assert_allclose(batched, [first(y, 0.77) for y in y0s], rtol=1e-10)


def test_dense_fixed_step_hermite_is_fourth_order():
    errs = []
    for dt in (0.2, 0.1, 0.05):
        sol = jo.solve(linear, jnp.array([1.0, 0.0]), jnp.array([0.0, 2.0]),
                       jnp.asarray(A), solver="rk4", dt=dt, dense=True)
        t = 0.5 * dt + 0.3 * dt * np.arange(1, 3)  # inside steps
        exact = np.stack([scipy.linalg.expm(A * s) @ [1.0, 0.0] for s in t])
        errs.append(np.abs(np.asarray(sol.evaluate(jnp.asarray(t))) - exact).max())
    slope = np.polyfit(np.log([0.2, 0.1, 0.05]), np.log(errs), 1)[0]
    assert slope > 3.6, (slope, errs)


def test_float32_event_and_dense():
    with jax.enable_x64(False):
        t = _t_hit(jnp.float32(20.0), G, "tsit5", rtol=1e-6, atol=1e-6)
        assert t.dtype == jnp.float32
        np.testing.assert_allclose(t, np.sqrt(40 / G), rtol=1e-5)
        t = _t_hit(jnp.float32(20.0), G, "rk4", dt=0.01)
        np.testing.assert_allclose(t, np.sqrt(40 / G), rtol=1e-5)
        sol = jo.solve(linear, jnp.array([1.0, 0.0]), jnp.linspace(0.0, 2.0, 3),
                       jnp.asarray(A, jnp.float32), solver="rk4", dt=0.01, dense=True)
        y = sol.evaluate(1.3)
        assert y.dtype == jnp.float32
        np.testing.assert_allclose(y, scipy.linalg.expm(A * 1.3) @ [1.0, 0.0],
                                   atol=1e-5)


def test_bad_event_and_dense_input():
    y0, ts = jnp.array([20.0, 0.0]), jnp.linspace(0.0, 5.0, 3)
    with pytest.raises(ValueError, match=r"`event` must return one real .*scalar.*"
                                         r"float64\[2\]"):
        jo.solve(fall, y0, ts, G, event=lambda t, y, g: y)
    with pytest.raises(ValueError, match=r"`event` must return .*int"):
        jo.solve(fall, y0, ts, G, event=lambda t, y, g: jnp.int32(1))
    with pytest.raises(ValueError, match=r"`event` must be a function.*'ground'"):
        jo.solve(fall, y0, ts, G, event="ground")
    with pytest.raises(ValueError, match=r"`event` failed when called.*KeyError"):
        jo.solve(fall, y0, ts, G, event=lambda t, y, g: {}["x"])
    for kw in (dict(event=ground), dict(dense=True)):
        for solver in ("tsit5", "rk4"):
            with pytest.raises(ValueError, match="'backsolve' does not support"):
                jo.solve(fall, y0, ts, G, solver=solver, dt=0.1, adjoint="backsolve",
                         **kw)
    with pytest.raises(ValueError, match="`dense` must be True or False"):
        jo.solve(fall, y0, ts, G, dense="yes")
    sol = jo.solve(fall, y0, ts, G)
    with pytest.raises(ValueError, match="solve with `dense=True`"):
        sol.evaluate(1.0)
    sol = jo.solve(fall, y0, ts, G, dense=True)
    with pytest.raises(ValueError, match=r"`t`=\[6.\] is outside the span .*\[0, 5\]"):
        sol.evaluate(jnp.array([1.0, 6.0]))
    with pytest.raises(Exception, match="outside the span"):
        jax.jit(lambda t: sol.evaluate(t))(-1.0).block_until_ready()
    # sol.evaluate is a plain function of t: jax.jit takes it (it was unhashable)
    np.testing.assert_allclose(jax.jit(sol.evaluate)(1.5), sol.evaluate(1.5))


def test_ensemble_reports_each_members_event_time():
    heights = np.array([5.0, 20.0, 45.0, 500.0])
    y0s = np.stack([heights, np.zeros(4)], -1)
    ens = jo.ensemble(fall, y0s, jnp.linspace(0.0, 5.0, 6), G, event=ground,
                      rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ens.t_event[:3], np.sqrt(2 * heights[:3] / G),
                               atol=1e-8)
    assert np.isinf(ens.t_event[3]) and ens.t_event.shape == (4,)
    fixed = jo.ensemble(fall, y0s, jnp.linspace(0.0, 5.0, 6), G, solver="rk4",
                        dt=0.01, event=ground)
    np.testing.assert_allclose(fixed.t_event[:3], np.sqrt(2 * heights[:3] / G),
                               atol=1e-8)
    assert np.isinf(fixed.t_event[3])
    with pytest.raises(ValueError, match="`dense=True` is not available from"):
        jo.ensemble(fall, y0s, jnp.linspace(0.0, 5.0, 6), G, dense=True)


# ------------------------------------------------ jo.Event: direction, booleans, resets

RESTITUTION = 0.8


def _bounce_times(h, n):
    """The analytic bounce times of a ball dropped from `h`, restitution 0.8."""
    v = np.sqrt(2 * G * h)
    times = [np.sqrt(2 * h / G)]
    for _ in range(n - 1):
        v *= RESTITUTION
        times.append(times[-1] + 2 * v / G)
    return np.array(times)


BOUNCE = jo.Event(ground, direction=-1, terminal=False, max_events=10,
                  reset=lambda t, y, g: jnp.stack([jnp.zeros_like(y[0]),
                                                   -RESTITUTION * y[1]]))


def _bounces(h, **kw):
    return jo.solve(fall, jnp.stack([h, jnp.zeros_like(h)]), jnp.linspace(0.0, 30.0, 31),
                    G, event=BOUNCE, rtol=1e-10, atol=1e-10, max_steps=20_000, **kw)


def test_ten_bounces_for_100_heights_under_vmap_and_the_fifth_ones_gradient():
    """A ball dropped from 100 heights, restitution 0.8: the bounce times of each (up
    to ten, before t = 30), in one vmapped solve, against the analytic sequence; the states between bounces
    follow the parabolas, and after the tenth (the last event kept) are inf. The
    gradient of the fifth bounce time against central differences."""
    times = jax.vmap(lambda h: _bounces(h).event_times)(jnp.asarray(HEIGHTS))
    exact = np.stack([_bounce_times(h, 10) for h in HEIGHTS])
    exact[exact > 30.0] = np.inf  # the highest drops bounce fewer times by t = 30
    assert np.isinf(exact).any() and np.isfinite(exact).all(axis=1).any()
    np.testing.assert_allclose(times, exact, rtol=0, atol=1e-8)
    sol = _bounces(jnp.asarray(20.0))
    assert int(sol.event_count) == 10 and bool(sol.ok)
    t = np.asarray(sol.ts)
    first = t < exact[19, 0]
    np.testing.assert_allclose(sol.ys[first, 0], 20.0 - G * t[first] ** 2 / 2, atol=1e-8)
    between = (t > exact[19, 0]) & (t < exact[19, 1])
    v = RESTITUTION * np.sqrt(2 * G * 20.0)
    s = t[between] - exact[19, 0]
    np.testing.assert_allclose(sol.ys[between, 0], v * s - G * s ** 2 / 2, atol=1e-8)
    assert np.all(np.isinf(np.asarray(sol.ys)[t > exact[19, 9]]))
    fifth = jax.jit(lambda h: _bounces(h).event_times[4])
    fd = (fifth(20.0 + 1e-4) - fifth(20.0 - 1e-4)) / 2e-4
    np.testing.assert_allclose(jax.grad(fifth)(20.0), fd, rtol=1e-6)


def test_bounces_on_fixed_steps():
    """RK4 steps of 0.01 (the fall is a quadratic, which RK4 and the cubic Hermite
    interpolant reproduce): the ten bounce times and the states at `ts` as with the
    adaptive solver, and the fifth bounce time's gradient."""
    sol = _bounces(jnp.asarray(20.0))
    rk4 = jo.solve(fall, jnp.array([20.0, 0.0]), jnp.linspace(0.0, 30.0, 31), G,
                   solver="rk4", dt=0.01, event=BOUNCE)
    np.testing.assert_allclose(rk4.event_times, _bounce_times(20.0, 10), atol=1e-10)
    np.testing.assert_allclose(rk4.ys, sol.ys, atol=1e-8)
    fifth = jax.jit(lambda h: jo.solve(  # NumPy times: the step count is static
        fall, jnp.stack([h, 0.0]), np.linspace(0.0, 30.0, 31), G, solver="rk4",
        dt=0.01, event=BOUNCE).event_times[4])
    fd = (fifth(20.0 + 1e-4) - fifth(20.0 - 1e-4)) / 2e-4
    np.testing.assert_allclose(jax.grad(fifth)(20.0), fd, rtol=1e-6)


@pytest.mark.parametrize("solver, kw, tol", [
    ("tsit5", dict(rtol=1e-10, atol=1e-10), 1e-9),
    ("rk4", dict(dt=1e-3), 1e-6),
])
def test_thrown_from_the_ground_lands_at_2v_over_g(solver, kw, tol):
    """The condition is zero at t0 (the ball starts on the ground): that is no
    event, either way round, so the landing is found. A height of 1 m is crossed
    going up, then going down: `direction` picks which."""
    y0, ts = jnp.array([0.0, 10.0]), jnp.linspace(0.0, 5.0, 11)
    for direction in (0, -1):
        sol = jo.solve(fall, y0, ts, G, solver=solver,
                       event=jo.Event(ground, direction=direction), **kw)
        np.testing.assert_allclose(sol.t_event, 20.0 / G, rtol=0, atol=tol)
    one_metre = lambda t, y, g: y[0] - 1.0  # noqa: E731  crossed going up, then down
    root = np.sqrt(100.0 - 2 * G)
    for direction, expected in ((1, (10.0 - root) / G), (-1, (10.0 + root) / G),
                                (0, (10.0 - root) / G)):
        sol = jo.solve(fall, y0, ts, G, solver=solver,
                       event=jo.Event(one_metre, direction=direction), **kw)
        np.testing.assert_allclose(sol.t_event, expected, rtol=0, atol=tol)
    # zero at t0 and going down (into a pit): still no event at t0, and none after
    pit = jo.solve(fall, jnp.array([0.0, -1.0]), ts, G, solver=solver, event=ground,
                   **kw)
    assert np.isinf(pit.t_event) and np.all(np.isfinite(np.asarray(pit.ys)))


@pytest.mark.parametrize("solver, kw", [
    ("tsit5", dict(rtol=1e-10, atol=1e-10)),
    ("rk4", dict(dt=1e-3)),
])
def test_boolean_condition_is_located_by_bisection(solver, kw):
    """`y[0] < 0` for a ball dropped from 20 m: the time it becomes True, to 1e-8
    (it was the end of the step, or a crash on fixed steps)."""
    sol = jo.solve(fall, jnp.array([20.0, 0.0]), jnp.linspace(0.0, 5.0, 11), G,
                   solver=solver, event=lambda t, y, g: y[0] < 0, **kw)
    np.testing.assert_allclose(sol.t_event, np.sqrt(40.0 / G), rtol=0, atol=1e-8)


def test_evaluate_after_a_terminal_event_is_inf_as_ys():
    sol = jo.solve(fall, jnp.array([20.0, 0.0]), jnp.linspace(0.0, 5.0, 11), G,
                   event=ground, dense=True)
    out = np.asarray(sol.evaluate(jnp.array([1.0, 3.0])))
    np.testing.assert_allclose(out[0], [20.0 - G / 2, -G], rtol=1e-6)
    assert np.all(np.isinf(out[1]))
    assert int(sol.event_count) == 1 and sol.event_times.shape == (1,)


def test_bad_event_objects_get_clear_errors():
    y0, ts = jnp.array([20.0, 0.0]), jnp.linspace(0.0, 5.0, 3)
    with pytest.raises(ValueError, match=r"`direction` must be -1, 0 or 1, got 2"):
        jo.Event(ground, direction=2)
    with pytest.raises(ValueError, match="`reset` and `max_events` are for events"):
        jo.Event(ground, reset=lambda t, y, g: y)
    with pytest.raises(ValueError, match="`max_events` must be a positive integer"):
        jo.Event(ground, terminal=False, max_events=0)
    with pytest.raises(ValueError, match=r"`reset` returned"):
        jo.solve(fall, y0, ts, G, event=jo.Event(
            ground, terminal=False, reset=lambda t, y, g: y[:1]))
    with pytest.raises(ValueError, match="`dense=True` with an event that does not"):
        jo.solve(fall, y0, ts, G, event=BOUNCE, dense=True)
