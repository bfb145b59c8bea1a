"""The Rosenbrock engine: Rodas5P and Rodas5 tableaux, their orders (solution, stiff
accuracy, dense output), the reference stiff problems, mass-matrix DAEs, Jacobians,
gradients, batching and bad input."""

import dataclasses

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode as jo
from jaxode._rosenbrock import RODAS5, RODAS5P, AbstractRosenbrock, RosenbrockTableau
from jaxode.data import STIFF_PROBLEMS

METHODS = {"rodas5p": RODAS5P, "rodas5": RODAS5}


def _unchecked(tableau: RosenbrockTableau, **changes) -> RosenbrockTableau:
    """A copy of `tableau` with `changes`, skipping its self-check (to see that the
    order tests catch what the check would)."""
    out = object.__new__(RosenbrockTableau)
    for field in dataclasses.fields(RosenbrockTableau):
        object.__setattr__(out, field.name, changes.get(field.name,
                                                        getattr(tableau, field.name)))
    return out


def _solver_with(tableau):
    class Method(AbstractRosenbrock):
        pass

    Method.tableau = tableau
    return Method()


# y' = lam (y − phi(t)) + phi'(t), phi = sin: y(t) = sin t + (y0 − 0) e^{lam t}
def _prothero_robinson(lam):
    def f(t, y, args):
        return lam * (y - jnp.sin(t)) + jnp.cos(t)

    def exact(t, y0):
        return np.sin(t) + y0 * np.exp(lam * t)

    return f, exact


def _fixed_steps(solver, f, y0, t1, n, dense_at=None):
    saveat = (diffrax.SaveAt(t1=True) if dense_at is None
              else diffrax.SaveAt(ts=jnp.asarray(dense_at)))
    sol = diffrax.diffeqsolve(diffrax.ODETerm(f), solver, 0.0, t1, t1 / n,
                              jnp.asarray(y0), saveat=saveat, max_steps=10_000)
    return np.asarray(sol.ys)


def _slope(hs, errs):
    return np.polyfit(np.log(hs), np.log(errs), 1)[0]


@pytest.mark.parametrize("name", METHODS)
def test_order_five_on_a_non_autonomous_problem_and_c_d_swap_fails(name):
    """Empirical order 5 ± 0.3 on y' = -(y − sin t) + cos t (closed form). A tableau
    with `c` and `d` swapped is refused by its self-check; run regardless, it loses
    the order (the time derivative and stage times enter only for non-autonomous f)."""
    f, exact = _prothero_robinson(-1.0)
    ns = np.array([8, 16, 32, 64])
    y0 = np.array([1.0])

    def slope(solver):
        errs = [abs(_fixed_steps(solver, f, y0, 2.0, n)[-1, 0] - exact(2.0, 1.0))
                for n in ns]
        return _slope(2.0 / ns, errs)

    tableau = METHODS[name]
    assert abs(slope(_solver_with(tableau)) - 5) < 0.3
    with pytest.raises(ValueError, match=r"c\[0\] == 0 and d\[0\] == gamma"):
        dataclasses.replace(tableau, c=tableau.d, d=tableau.c)
    swapped = _unchecked(tableau, c=tableau.d, d=tableau.c)
    assert abs(slope(_solver_with(swapped)) - 5) > 1


@pytest.mark.parametrize("name", METHODS)
def test_stiff_prothero_robinson_keeps_its_accuracy(name):
    """lam = -1e6, far beyond any explicit method's stability, with steps h·lam up
    to -2.5e5: the error stays below 3e-9 (measured 1.2e-9 at h = 0.25) and falls
    with every halving of h (measured 2.2 to 2.6 times)."""
    f, exact = _prothero_robinson(-1e6)
    ns = np.array([8, 16, 32, 64])
    errs = [abs(_fixed_steps(jo.solve.__globals__["SOLVERS"][name](), f,
                             np.array([0.0]), 2.0, n)[-1, 0] - exact(2.0, 0.0))
            for n in ns]
    assert max(errs) < 3e-9, errs
    assert all(b < a / 2 for a, b in zip(errs, errs[1:])), errs


@pytest.mark.parametrize("name", METHODS)
def test_dense_output_is_fourth_order_between_steps(name):
    """Inside steps (θ = 0.3 and 0.7 of each), against the closed form: slope ≥ 3.7."""
    f, exact = _prothero_robinson(-1.0)
    solver = jo.solve.__globals__["SOLVERS"][name]()
    errs, hs = [], []
    for n in (8, 16, 32, 64):
        h = 2.0 / n
        ts = np.sort(np.concatenate([np.arange(n) * h + 0.3 * h,
                                     np.arange(n) * h + 0.7 * h]))
        ys = _fixed_steps(solver, f, np.array([1.0]), 2.0, n, dense_at=ts)[:, 0]
        errs.append(np.max(np.abs(ys - exact(ts, 1.0))))
        hs.append(h)
    assert _slope(hs, errs) >= 3.7, errs


@pytest.mark.parametrize("key, atol", [("robertson", 1e-18), ("hires", 1e-14)])
def test_reference_problems_at_rtol_1e_10(key, atol):
    """Rodas5P within 1e-7 relative of the Test Set's reference solutions in every
    component, and its statistics: 8 stages per step, one Jacobian and one LU each.
    Robertson's y1 (2e-8) and y2 (8e-14) at t = 1e11 need an atol below them (at
    atol 1e-14 their error is 1e-7; at 1e-18, 6e-10)."""
    p = STIFF_PROBLEMS[key]
    sol = jo.solve(p.f, jnp.asarray(p.y0), jnp.array([0.0, p.t1]), solver="stiff",
                   rtol=1e-10, atol=atol, max_steps=100_000)
    ref = np.asarray(p.reference)
    err = np.max(np.abs(np.asarray(sol.ys[-1]) - ref) / np.abs(ref))
    assert err < 1e-7, err
    s = {k: int(v) for k, v in sol.stats.items()}
    assert s["nfe"] == 8 * s["num_steps"]
    assert s["num_jacobians"] == s["num_lu"] == s["num_steps"]
    assert s["num_rejected"] < 0.1 * s["num_steps"]


def test_nfe_matches_a_counter_inside_f_and_jac_is_used():
    """`stats["nfe"]` counts what `f` really runs; with `jac=`, `f` is not
    differentiated (its JVP never runs), and the solution equals the jacfwd one."""
    calls = {"f": 0, "jac": 0}

    def count(name):
        def bump():
            calls[name] += 1
        return jax.debug.callback(bump)

    def f(t, y, k):
        count("f")
        return jnp.stack([-k * y[0] * y[1], k * y[0] * y[1] - y[1]])

    def jac(t, y, k):
        count("jac")
        return jnp.array([[-k * y[1], -k * y[0]], [k * y[1], k * y[0] - 1.0]])

    y0, ts = jnp.array([2.0, 1.0]), jnp.linspace(0.0, 3.0, 4)
    plain = jo.solve(f, y0, ts, 3.0, solver="rodas5p", rtol=1e-8, atol=1e-8)
    jax.effects_barrier()
    # the jvp-batched f runs once per step as one (vmapped) call: no extra count
    assert calls["f"] == int(plain.stats["nfe"]), calls
    calls.update(f=0)
    given = jo.solve(f, y0, ts, 3.0, solver="rodas5p", rtol=1e-8, atol=1e-8, jac=jac)
    jax.effects_barrier()
    assert calls["f"] == int(given.stats["nfe"])
    assert calls["jac"] == int(given.stats["num_jacobians"]) > 0
    np.testing.assert_allclose(given.ys, plain.ys, rtol=1e-12)


def _rober_dae(t, y, args):
    k1, k2, k3 = args
    y1, y2, y3 = y[0], y[1], y[2]
    return jnp.stack([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2 ** 2,
                      y1 + y2 + y3 - 1.0])


ROBER_K = (0.04, 3e7, 1e4)
DAE_MASS = np.diag([1.0, 1.0, 0.0])


def test_robertson_as_a_dae_equals_the_ode_form():
    """M = diag(1, 1, 0): the third equation is the conservation law. The two forms
    agree to 1e-8 relative at every save time; the DAE keeps the sum at 1."""
    p = STIFF_PROBLEMS["robertson"]
    ts = jnp.array([0.0, 1e-5, 1e-2, 1.0, 1e2, 1e4, 1e6])
    kw = dict(solver="rodas5p", rtol=1e-12, atol=1e-18, max_steps=100_000)
    ode = jo.solve(p.f, jnp.asarray(p.y0), ts, **kw)
    dae = jo.solve(_rober_dae, jnp.asarray(p.y0), ts, ROBER_K, mass=DAE_MASS, **kw)
    # y3 of the DAE is 1 − y1 − y2: absolute rounding of 1 (1e-16) where y3 ~ 1e-11
    np.testing.assert_allclose(dae.ys, ode.ys, rtol=1e-8, atol=1e-15)
    np.testing.assert_allclose(np.sum(np.asarray(dae.ys), axis=1), 1.0, atol=1e-14)


def test_dae_bad_input_gets_clear_errors():
    y0 = jnp.array([1.0, 0.0, 0.0])
    ts = jnp.array([0.0, 1.0])
    with pytest.raises(Exception, match="not a consistent initial value"):
        jo.solve(_rober_dae, jnp.array([1.0, 0.0, 0.1]), ts, ROBER_K, solver="rodas5p",
                 mass=DAE_MASS)
    with pytest.raises(ValueError, match=r"`mass` must be an \(3, 3\) matrix .* "
                                         r"shape \(2, 2\)"):
        jo.solve(_rober_dae, y0, ts, ROBER_K, solver="rodas5p", mass=np.eye(2))
    with pytest.raises(ValueError, match="`mass` is for the Rosenbrock solvers.*Tsit5"):
        jo.solve(_rober_dae, y0, ts, ROBER_K, mass=DAE_MASS)
    with pytest.raises(ValueError, match="backsolve.*`mass`"):
        jo.solve(_rober_dae, y0, ts, ROBER_K, solver="rodas5p", mass=DAE_MASS,
                 adjoint="backsolve")
    with pytest.raises(ValueError, match=r"`jac` must return the \(3, 3\) Jacobian.*"
                                         r"\(3,\)"):
        jo.solve(_rober_dae, y0, ts, ROBER_K, solver="rodas5p", jac=lambda t, y, a: y)
    with pytest.raises(ValueError, match="`jac` failed when called"):
        jo.solve(_rober_dae, y0, ts, ROBER_K, solver="rodas5p",
                 jac=lambda t, y, a: y @ jnp.ones((2, 2)))


def test_a_dae_that_leaves_a_variable_undetermined_ends_with_a_result_code():
    """y1' = −y1, 0 = y1 − exp(−t): nothing determines y2, so W is singular at every
    step size. The solve ends with `RESULTS.singular` and a message about it, not
    NaNs or a run to `max_steps`."""
    def f(t, y, args):
        return jnp.stack([-y[0] + 0 * y[1], y[0] - jnp.exp(-t)])

    mass = np.diag([1.0, 0.0])
    y0, ts = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    sol = jo.solve(f, y0, ts, solver="rodas5p", mass=mass, throw=False)
    assert not bool(sol.ok)
    assert sol.result == diffrax.RESULTS.singular
    assert int(sol.stats["num_steps"]) < 1000
    with pytest.raises(Exception, match="stayed singular"):
        jo.solve(f, y0, ts, solver="rodas5p", mass=mass)


def _log_rates_loss(adjoint):
    p = STIFF_PROBLEMS["robertson"]
    ts = jnp.array([0.0, 1.0, 10.0, 100.0])

    def f(t, y, k):
        y1, y2, y3 = y[0], y[1], y[2]
        return jnp.stack([-k[0] * y1 + k[2] * y2 * y3,
                          k[0] * y1 - k[2] * y2 * y3 - k[1] * y2 ** 2,
                          k[1] * y2 ** 2])

    def loss(logk):  # the rates go in through `args`, as the adjoints need
        ys = jo.solve(f, jnp.asarray(p.y0), ts, jnp.exp(logk), solver="rodas5p",
                      rtol=1e-10,
                      atol=1e-14, adjoint=adjoint, max_steps=10_000).ys
        return jnp.sum(ys[:, 0] ** 2) + 1e4 * jnp.sum(ys[:, 1])

    return jax.jit(loss)


def test_gradients_on_robertson_match_finite_differences_and_each_other():
    """d loss / d log k by backprop through the steps and by forward mode, against
    central differences (step 1e-4 in log k)."""
    logk = jnp.log(jnp.array(ROBER_K))
    recursive = _log_rates_loss("recursive")
    g = jax.grad(recursive)(logk)
    eye = np.eye(3)
    fd = np.array([(recursive(logk + 1e-4 * e) - recursive(logk - 1e-4 * e)) / 2e-4
                   for e in eye])
    np.testing.assert_allclose(g, fd, rtol=2e-4)
    # the same discrete derivative, but lineax differentiates its solves differently
    # in the two modes (measured 2e-8)
    np.testing.assert_allclose(jax.jacfwd(_log_rates_loss("forward"))(logk), g,
                               rtol=1e-6)


def test_backsolve_gradient_on_a_stiff_oscillator_matches_recursive():
    """The continuous adjoint re-solves `y` backwards in time, which a dissipative
    stiff problem (Robertson) does not survive; a stiff oscillator (eigenvalues
    -w/100 ± w i, w = 1e3: explicit methods need steps below 3e-3) it does."""
    def f(t, y, p):
        w, c = p[0], p[1]
        return jnp.stack([-w / 100 * y[0] + w * y[1] + c * jnp.cos(t),
                          -w * y[0] - w / 100 * y[1]])

    ts = jnp.linspace(0.0, 0.2, 5)

    def loss(logp, adjoint):
        ys = jo.solve(f, jnp.array([1.0, 0.0]), ts, jnp.exp(logp), solver="rodas5p",
                      rtol=1e-10, atol=1e-10, adjoint=adjoint, max_steps=10_000).ys
        return jnp.sum(ys ** 2)

    logp = jnp.log(jnp.array([1e3, 5.0]))
    g = jax.grad(loss)(logp, "recursive")
    # the adjoint ODE is solved to rtol 1e-10 over 30 periods: measured 1.7e-4
    np.testing.assert_allclose(jax.grad(loss)(logp, "backsolve"), g, rtol=1e-3)


def test_vmap_matches_a_loop_and_ensemble_members_meet_their_own_tolerance():
    """A forced stiff problem whose stiffness k spans 1 ... 1e6 across members: the
    batched solve equals a loop, and each member is within its tolerance of a tight
    reference, taking its own number of steps."""
    def f(t, y, k):
        return jnp.stack([-k * (y[0] - jnp.cos(t)), y[0] - y[1]])

    ks = jnp.array([1.0, 1e2, 1e4, 1e6])
    y0 = jnp.array([0.0, 1.0])
    ts = jnp.linspace(0.0, 2.0, 5)

    def run(k, rtol):
        return jo.solve(f, y0, ts, k, solver="rodas5p", rtol=rtol, atol=rtol)

    looped = np.stack([run(k, 1e-6).ys for k in ks])
    batched = jax.vmap(lambda k: run(k, 1e-6).ys)(ks)
    # batched LU kernels round differently from one-matrix ones, and W's condition
    # (up to k·h ~ 1e6) amplifies that: measured 4e-9 at k = 1e6, 1e-12 below
    np.testing.assert_allclose(batched, looped, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(batched[:3], looped[:3], rtol=1e-10, atol=1e-12)
    ens = jo.ensemble(f, jnp.tile(y0, (4, 1)), ts, ks, member_args=True,
                      solver="rodas5p", rtol=1e-6,
                      atol=1e-6)
    np.testing.assert_allclose(ens.ys, looped, rtol=1e-7, atol=1e-12)
    steps = np.asarray(ens.stats["num_steps"])
    assert len(set(steps.tolist())) > 1, steps
    ref = jax.vmap(lambda k: run(k, 1e-12).ys)(ks)
    errs = np.max(np.abs(np.asarray(ens.ys) - np.asarray(ref)), axis=(1, 2))
    assert np.all(errs < 1e-5), errs  # rtol = atol = 1e-6, global error ~ a few tols


def test_time_derivative_is_skipped_for_autonomous_fields():
    from jaxode._rosenbrock import _reads_t

    y = jnp.ones(2)
    assert not _reads_t(lambda t, y: -y, jnp.array(0.0), y)
    assert not _reads_t(lambda t, y: (2 * t, -y)[1], jnp.array(0.0), y)
    assert _reads_t(lambda t, y: -y * t, jnp.array(0.0), y)
    assert _reads_t(lambda t, y: -y + jnp.sin(t), jnp.array(0.0), y)


def test_float32_at_an_unreachable_tolerance_warns_with_the_reason():
    f = STIFF_PROBLEMS["robertson"].f
    with jax.enable_x64(False):
        with pytest.warns(RuntimeWarning, match=r"Rodas5P in float32 with rtol=1e-07"
                                                r".*float32 resolves about 1e-7"):
            jo.solve(f, jnp.array([1.0, 0.0, 0.0]), jnp.array([0.0, 1.0]),
                     solver="rodas5p", rtol=1e-7, atol=1e-10, throw=False)


def test_fit_recovers_robertson_rate_constants_on_log_scale():
    """Three rate constants spanning eleven orders of magnitude, from 2 % noise on
    y1 and y3 (and y2 scaled by 1e4) at 12 times, fitted on log scale with Rodas5P."""
    ts = jnp.asarray(np.geomspace(1e-3, 1e3, 12))
    ts = jnp.concatenate([jnp.zeros(1), ts])
    k_true = {"k1": 0.04, "k2": 3e7, "k3": 1e4}

    def f(t, y, p):
        return jnp.stack([-p["k1"] * y[0] + p["k3"] * y[1] * y[2],
                       p["k1"] * y[0] - p["k3"] * y[1] * y[2] - p["k2"] * y[1] ** 2,
                       p["k2"] * y[1] ** 2])

    y0 = jnp.array([1.0, 0.0, 0.0])
    clean = jo.solve(f, y0, ts, k_true, solver="rodas5p", rtol=1e-8,
                     atol=1e-12).ys
    scale = jnp.array([1.0, 1e4, 1.0])
    noise = 0.02 * jax.random.normal(jax.random.PRNGKey(3), clean.shape)
    obs = clean * scale * (1 + noise)
    res = jo.fit(f, {"k1": 0.1, "k2": 1e7, "k3": 3e3}, ts=ts, ys=obs, y0=y0,
                 observe=lambda t, y, p: y * scale, positive=True, solver="rodas5p",
                 steps=300, progress=False)
    for name, value in k_true.items():
        assert abs(np.log(res.params[name] / value)) < 0.1, (name, res.params)


def test_events_and_dense_output_run_on_the_rosenbrock_interpolant():
    """A dropped ball lands at sqrt(2h/g) (the event's root found on Rodas5P's
    interpolant), with d t / d h = 1 / sqrt(2 g h); dense output of a harmonic
    oscillator between steps matches cos t."""
    def fall(t, y, g):
        return jnp.stack([y[1], -g])

    def t_hit(h):
        return jo.solve(fall, jnp.stack([h, 0.0]), jnp.linspace(0.0, 5.0, 11), 9.81,
                        solver="rodas5p", event=lambda t, y, g: y[0], rtol=1e-10,
                        atol=1e-10).t_event

    np.testing.assert_allclose(t_hit(20.0), np.sqrt(40 / 9.81), rtol=1e-12)
    np.testing.assert_allclose(jax.grad(t_hit)(20.0), 1 / np.sqrt(2 * 9.81 * 20),
                               rtol=1e-10)
    sol = jo.solve(lambda t, y, a: jnp.stack([y[1], -y[0]]), jnp.array([1.0, 0.0]),
                   jnp.array([0.0, 3.0]), solver="rodas5p", dense=True, rtol=1e-10,
                   atol=1e-10)
    t = jnp.linspace(0.0, 3.0, 13)
    np.testing.assert_allclose(sol.evaluate(t)[:, 0], np.cos(t), atol=1e-9)


def test_a_failed_float32_stiff_solve_says_float32_and_not_use_a_stiff_solver():
    """Van der Pol with mu = 1000 in float32 to t = 3000 at rtol 1e-4: near
    t = 1600 float32 cannot resolve the steps the transient needs, and every step is
    rejected. The message names float32 and does not suggest the stiff solver
    already in use."""
    p = STIFF_PROBLEMS["van_der_pol"]
    with jax.enable_x64(False):
        y0, ts = jnp.asarray(p.y0, jnp.float32), jnp.array([0.0, 3000.0])
        sol = jo.solve(p.f, y0, ts, solver="rodas5p", rtol=1e-4, atol=1e-6,
                       max_steps=2000, throw=False)
        assert not bool(sol.ok) and int(sol.stats["num_rejected"]) > 1500
        with pytest.raises(Exception, match="ran in float32") as err:
            jo.solve(p.f, y0, ts, solver="rodas5p", rtol=1e-4, atol=1e-6,
                     max_steps=2000)
    assert "try solver" not in str(err.value) and "float64" in str(err.value)


def test_vmapped_gradients_of_members_with_different_steps_and_a_failure():
    """Members that take different numbers of steps each get their own gradient (a
    finished member steps in place while the others go on), and a member whose solve
    meets NaN fails on its own (`ok` False, NaN gradient): nothing raises, nothing
    leaks into the others. A multistart fit vmaps its starts like this."""
    ts = jnp.linspace(0.0, 1.0, 4)

    def loss(k):
        sol = jo.solve(lambda t, y, k: -jnp.sqrt(k) * y, jnp.array([1.0, 2.0]), ts, k,
                       solver="rodas5p", throw=False)
        return jnp.sum(sol.ys), sol.ok

    ks = jnp.array([4.0, 400.0, -1.0])
    (_, ok), grads = jax.vmap(jax.value_and_grad(loss, has_aux=True))(ks)
    assert list(np.asarray(ok)) == [True, True, False]
    assert not np.isfinite(float(grads[2]))
    for i in (0, 1):
        alone = jax.grad(lambda k: loss(k)[0])(ks[i])
        np.testing.assert_allclose(grads[i], alone, rtol=1e-8)
        # d/dk of 3·sum_t exp(-sqrt(k) t)
        r = float(jnp.sqrt(ks[i]))
        exact = float(jnp.sum(3.0 * -ts / (2 * r) * jnp.exp(-r * ts)))
        np.testing.assert_allclose(grads[i], exact, rtol=1e-4)
