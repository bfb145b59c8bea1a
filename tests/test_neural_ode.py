"""NeuralODE (solution, NFE counts, gradients across adjoints) and the classifiers."""


import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.linalg as jsl
import numpy as np
import pytest
import scipy.linalg

import jaxode as jo
from jaxode.nn import MLP, NeuralODE, ODENet, ResNet, RKNet, count_params
from jaxode.nn._classifiers import Conv3x3

from conftest import LinearField as Linear


class Tanh(eqx.Module):
    """A small nonlinear, time-dependent field with a few parameters."""

    W: jax.Array
    b: jax.Array

    def __call__(self, t, y, args):
        return jnp.tanh(self.W @ y + self.b * (1 + t))


A = jnp.array([[-0.1, 2.0], [-2.0, -0.1]])


def test_linear_field_matches_matrix_exponential():
    model = NeuralODE(Linear(A), t1=2.0, solver="dopri5", rtol=1e-10, atol=1e-10)
    y0 = jnp.array([1.0, -0.5])
    ts = jnp.linspace(0.0, 2.0, 5)
    ys = model(y0, ts)
    expected = jnp.stack([jsl.expm(t * A) @ y0 for t in ts])
    np.testing.assert_allclose(ys, expected, atol=1e-8)


def test_forward_nfe_counted_exactly_and_survives_jit_cache():
    model = NeuralODE(Tanh(jnp.eye(2), jnp.ones(2)), t1=3.0, rtol=1e-7, atol=1e-7,
                      count_nfe=True)
    y0 = jnp.array([0.3, -0.2])
    run = eqx.filter_jit(lambda m, y: m.solve(y).stats)
    stats = run(model, y0)  # compiles
    nfe = int(stats["nfe"])
    model.counter.reset()
    for _ in range(3):  # served from the jit cache: the hook still fires
        assert int(run(model, y0)["nfe"]) == nfe
    assert model.counter.forward == 3 * nfe
    assert model.counter.backward == 0
    # dopri5 is first-same-as-last: 1 + 6 evaluations per step
    assert nfe == 1 + 6 * int(stats["num_steps"])


def _loss(model, y0):
    ys = model(y0, jnp.linspace(0.0, 1.5, 4))
    return jnp.sum(ys ** 2) + jnp.sum(jnp.sin(ys[-1]))


_KEY1, _KEY2 = jr.split(jr.PRNGKey(0))
FIELD = Tanh(0.8 * jr.normal(_KEY1, (3, 3)), 0.3 * jr.normal(_KEY2, (3,)))
Y0 = jnp.array([0.5, -0.3, 0.2])


def _adjoint_runs():
    """For each adjoint: the model, its compiled gradient of `_loss`, the gradient
    and the forward/backward evaluation counts of one gradient call (one compiled
    program per adjoint, shared by the checks of the test below)."""
    runs = {}
    for adjoint in ["recursive", "backsolve"]:
        model = NeuralODE(FIELD, t1=1.5, rtol=1e-10, atol=1e-10, adjoint=adjoint,
                          count_nfe=True)
        grad = eqx.filter_jit(eqx.filter_grad(_loss))
        g = grad(model, Y0)  # compiles
        with model.counter.measure() as m:
            g = grad(model, Y0)
        runs[adjoint] = dict(model=model, grad=g.vector_field, forward=m.forward,
                             backward=m.backward)
    return runs


def test_backward_nfe_and_gradients_agree_across_adjoints_and_finite_differences():
    # one test, so each adjoint's compiled gradient is built once
    adjoint_runs = _adjoint_runs()
    for adjoint in ["recursive", "backsolve"]:
        _check_backward_nfe(adjoint, adjoint_runs[adjoint])
    _check_gradients_agree(adjoint_runs)


def _check_backward_nfe(adjoint, run):
    nfe = int(eqx.filter_jit(lambda m: m.solve(Y0, jnp.linspace(0.0, 1.5, 4)).stats)(
        run["model"])["nfe"])
    if adjoint == "recursive":
        # one vector-Jacobian product per forward evaluation (the checkpointed
        # recomputation adds forward evaluations, never VJPs)
        assert run["backward"] == nfe
        assert run["forward"] >= nfe
    else:
        # backsolve: each evaluation of the adjoint dynamics is one VJP plus one
        # evaluation of f; the forward solve is the plain solve
        assert run["backward"] > 0
        assert run["forward"] == nfe + run["backward"]


def _check_gradients_agree(adjoint_runs):
    rec, back = adjoint_runs["recursive"]["grad"], adjoint_runs["backsolve"]["grad"]
    np.testing.assert_allclose(back.W, rec.W, atol=1e-6)
    np.testing.assert_allclose(back.b, rec.b, atol=1e-6)
    # central finite differences on every entry of W, through one compiled loss
    model = NeuralODE(FIELD, t1=1.5, rtol=1e-11, atol=1e-11, count_nfe=False)
    loss = eqx.filter_jit(lambda W: _loss(eqx.tree_at(
        lambda m: m.vector_field.W, model, W), Y0))
    h = 1e-5
    fd = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            fd[i, j] = (loss(FIELD.W.at[i, j].add(h))
                        - loss(FIELD.W.at[i, j].add(-h))) / (2 * h)
    np.testing.assert_allclose(rec.W, fd, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32])  # float64: the tests above
def test_float32_solution_and_adjoints(dtype):
    """With 64-bit mode off, as users run, a NeuralODE stays float32; its solution
    matches the matrix exponential and the backsolve gradient the recursive one, to
    float32 accuracy."""
    with jax.enable_x64(False):
        _float32_solution_and_adjoints(dtype, 1e-5)


def _float32_solution_and_adjoints(dtype, tol):
    W = jnp.asarray(FIELD.W, dtype)
    field = Tanh(W, jnp.asarray(FIELD.b, dtype))
    y0 = jnp.asarray(Y0, dtype)
    lin = NeuralODE(Linear(jnp.asarray(A, dtype)), t1=2.0, solver="dopri5", rtol=tol,
                    atol=tol, count_nfe=False)
    out = lin(jnp.array([1.0, -0.5], dtype))
    assert out.dtype == dtype
    exact = scipy.linalg.expm(2.0 * np.asarray(A, np.float64)) @ [1.0, -0.5]
    np.testing.assert_allclose(out, exact, atol=20 * tol)
    grads = {}
    for adjoint in ["recursive", "backsolve"]:
        model = NeuralODE(field, t1=1.5, rtol=tol, atol=tol, adjoint=adjoint,
                          count_nfe=False)
        grads[adjoint] = eqx.filter_grad(_loss)(model, y0).vector_field.W
        assert grads[adjoint].dtype == dtype
    np.testing.assert_allclose(grads["backsolve"], grads["recursive"],
                               atol=100 * tol)


def _grad_bytes(adjoint: str, steps: int) -> int:
    """Temporary + argument + output bytes of the compiled gradient of a NeuralODE
    loss over `steps` constant steps (diffrax's Euler: the step count is exact)."""
    W = 0.3 * jr.normal(jr.PRNGKey(0), (32, 32))
    model = NeuralODE(Tanh(W, jnp.zeros(32)), t1=1.0, solver=diffrax.Euler(),
                      dt=1.0 / steps, adjoint=adjoint, max_steps=steps,
                      count_nfe=False)
    y0 = jr.normal(jr.PRNGKey(1), (32,))
    grad = eqx.filter_jit(eqx.filter_grad(lambda m: jnp.sum(m(y0) ** 2)))
    mem = grad.lower(model).compile().compiled.memory_analysis()
    return (mem.temp_size_in_bytes + mem.argument_size_in_bytes
            + mem.output_size_in_bytes)


def test_backsolve_memory_does_not_grow_with_the_number_of_steps():
    """The continuous adjoint keeps nothing per step: 16x the steps, the same memory
    (the README's claim, at small size)."""
    growth = _grad_bytes("backsolve", 4000) / _grad_bytes("backsolve", 250)
    # checkpointed backprop grows >= 1.5x here (and direct backprop 16x: the
    # fixed-step test in test_fixed.py), so a backsolve that fell back to either
    # fails this
    assert growth <= 1.05, growth


def test_fixed_step_solver_and_y0_gradient():
    model = NeuralODE(Linear(A), t1=1.0, solver="rk4", dt=0.01, adjoint="backsolve")
    y0 = jnp.array([1.0, 0.5])
    np.testing.assert_allclose(model(y0), jsl.expm(A) @ y0, atol=1e-8)
    # d/dy0 of sum(y(t1)) = expm(A)^T 1
    g = jax.grad(lambda y: jnp.sum(model(y)))(y0)
    np.testing.assert_allclose(g, jsl.expm(A).T @ jnp.ones(2), atol=1e-8)


class Scaled(eqx.Module):
    """`f(t, y, args) = args * A y`: `args` is a conditioning input."""

    A: jax.Array

    def __call__(self, t, y, args):
        return args * (self.A @ y)


@pytest.mark.parametrize("solver, dt", [("dopri5", None), ("rk4", 0.01)])
def test_args_reach_the_vector_field(solver, dt):
    # y(t1) = expm(c A t1) y0 for the field c * A y: the args change the answer
    model = NeuralODE(Scaled(A), t1=1.0, solver=solver, dt=dt, rtol=1e-10, atol=1e-10)
    y0 = jnp.array([1.0, -0.5])
    run = jax.jit(lambda c: model(y0, None, c))  # args are traced: one program
    for c in [0.5, 2.0]:
        np.testing.assert_allclose(run(c), jsl.expm(c * A) @ y0,
                                   rtol=1e-8 if dt is None else 2e-6)
    # and the gradient with respect to args: d/dc sum(y(1)) = 1^T A expm(c A) y0
    g = jax.grad(lambda c: jnp.sum(model(y0, None, c)))(2.0)
    np.testing.assert_allclose(g, jnp.sum(A @ jsl.expm(2.0 * A) @ y0), rtol=1e-6)


def test_bad_arguments():
    field = Linear(A)
    with pytest.raises(ValueError, match="`solver`='rk5'"):
        NeuralODE(field, solver="rk5")
    with pytest.raises(ValueError, match="`adjoint`='adjoint'"):
        NeuralODE(field, adjoint="adjoint")
    with pytest.raises(ValueError, match="`t1` must be > 0"):
        NeuralODE(field, t1=0.0)
    with pytest.raises(ValueError, match="`rtol` must be > 0"):
        NeuralODE(field, rtol=-1.0)
    with pytest.raises(ValueError, match="`vector_field` must be callable"):
        NeuralODE(3.0)
    with pytest.raises(ValueError, match=r"vector_field\(t, y, args\) .*signature is "
                                         r"\(t, y\)"):
        NeuralODE(lambda t, y: y)
    with pytest.raises(ValueError, match="shape"):
        ResNet(4, key=jr.PRNGKey(0))(jnp.zeros((8, 8)))
    with pytest.raises(ValueError, match="64 features"):
        MLP(key=jr.PRNGKey(0))(jnp.zeros((2, 7, 7)))


def test_solve_accepts_a_module_with_a_trace_field():
    """Regression: jax.eval_shape took an eqx.Module with a `trace` field for a
    jitted function, so `solve`'s input check failed on it."""

    class Field(eqx.Module):
        trace: str = "exact"

        def __call__(self, t, y, args):
            return -y

    sol = jo.solve(Field(), jnp.array([1.0]), jnp.array([0.0, 1.0]), rtol=1e-10,
                   atol=1e-10)
    np.testing.assert_allclose(sol.ys[-1], np.exp(-1.0), atol=1e-8)


# ---------------------------------------------------------------- classifiers


@pytest.mark.parametrize("stride", [1, 2])
def test_conv3x3_matches_lax_conv(stride):
    key1, key2 = jr.split(jr.PRNGKey(1))
    conv = Conv3x3(3, 5, stride=stride, key=key1)
    x = jr.normal(key2, (2, 8, 8, 3))
    kernel = conv.weight.reshape(3, 3, 3, 5)  # (kh, kw, in, out)
    ref = jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), ((1, 1), (1, 1)) if stride == 1 else ((1, 1),) * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC")) + conv.bias
    if stride == 2:  # lax keeps the top-left taps of each stride window as well
        ref = jax.lax.conv_general_dilated(
            x, kernel, (1, 1), ((1, 1), (1, 1)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"))[:, ::2, ::2] + conv.bias
    np.testing.assert_allclose(conv(x), ref, atol=1e-10)


def _conv_params(cin, cout):
    return 9 * cin * cout + cout


def test_parameter_counts():
    c, k = 16, jr.PRNGKey(0)
    norm = 2 * c
    stem = _conv_params(1, c) + norm + _conv_params(c, c)
    head = norm + c * 10 + 10
    block = 2 * norm + 2 * _conv_params(c, c)
    ode_block = 3 * norm + 2 * _conv_params(c + 1, c)
    assert count_params(ResNet(c, key=k)) == stem + 6 * block + head
    assert count_params(ODENet(c, key=k)) == stem + ode_block + head
    assert count_params(RKNet(c, key=k)) == stem + ode_block + head
    assert count_params(MLP(key=k)) == 64 * 300 + 300 + 300 * 10 + 10 == 22510
    # the default width used by the demo: the ODE-Net has under 40 % of the
    # ResNet's parameters
    assert count_params(ODENet(key=k)) / count_params(ResNet(key=k)) < 0.4


def test_classifiers_forward_and_rknet_is_rk4():
    k = jr.PRNGKey(2)
    x = jr.uniform(k, (2, 8, 8))
    ode = ODENet(8, key=k, rtol=1e-10, atol=1e-10, max_steps=4096, count_nfe=False)(x)
    for out in [ResNet(8, key=k)(x), ode, MLP(key=k)(x)]:
        assert out.shape == (2, 10) and bool(jnp.all(jnp.isfinite(out)))
    # the RK-Net is the ODE-Net's block integrated by RK4: the RK4 error shrinks as
    # h^4, so 2 steps -> 16 steps cuts the gap to the adaptive solve by up to 8^4
    gap2 = float(jnp.max(jnp.abs(RKNet(8, key=k, steps=2)(x) - ode)))
    gap16 = float(jnp.max(jnp.abs(RKNet(8, key=k, steps=16)(x) - ode)))
    assert gap16 < 1e-4, (gap2, gap16)
    assert gap2 / gap16 > 100, (gap2, gap16)  # 4th order: 4096; 2nd: 64


def test_solve_accepts_args_with_non_array_leaves():
    """Regression: `solve`'s input check ran jax.eval_shape on `args`, which fails
    on a module holding a function (here the MLP's activation)."""
    mlp = eqx.nn.MLP(2, 2, 8, 1, activation=jnp.tanh, key=jr.PRNGKey(0))
    f = lambda t, y, m: m(y)  # noqa: E731
    ts = jnp.array([0.0, 0.5])
    sol = jo.solve(f, jnp.array([1.0, 0.0]), ts, mlp, rtol=1e-10, atol=1e-10)
    fixed = jo.solve(f, jnp.array([1.0, 0.0]), ts, mlp, solver="rk4", dt=1e-3)
    np.testing.assert_allclose(sol.ys[-1], fixed.ys[-1], atol=1e-9)


def test_a_default_training_step_has_no_evaluation_counting_callbacks():
    # counting evaluations is opt-in: the default model's compiled gradient holds none
    # of the per-evaluation host callbacks (a round trip to Python per evaluation);
    # the callbacks that stay are equinox's run-time error checks (`eqx.error_if`),
    # which raise when the solve fails
    def callbacks(model):
        step = jax.jit(jax.grad(lambda m, y: jnp.sum(m(y) ** 2)))
        return step.lower(model, Y0).as_text().count("callback")

    assert callbacks(NeuralODE(FIELD, t1=0.5)) < callbacks(
        NeuralODE(FIELD, t1=0.5, count_nfe=True))
