"""The LSTM layer's own sequence routine against scanning `LSTMCell.recur`: values and
gradients in float32 and float64, the batched and the vmapped idiom (against a loop of
single examples, per-example gradients, one weight-gradient matmul over time and
examples), reverse; the cell as a step function of `jaxode.scan` and `lax.scan`; `RNN`
runs the layer."""

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

import jaxode as jo

TOL = {jnp.float32: 2e-5, jnp.float64: 1e-12}


def _reference(cell, xs, carry):
    return jax.lax.scan(lambda c, x: cell.recur(c, cell.project(x)), carry, xs)


def _data(dtype, batch=(4,)):
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    cell = jo.nn.LSTMCell(3, 6, dtype=dtype, key=keys[0])
    xs = jax.random.normal(keys[1], (7, *batch, 3), dtype)
    target = jax.random.normal(keys[2], (7, *batch, 6), dtype)
    carry = (jax.random.normal(keys[3], (*batch, 6), dtype),
             jax.random.normal(keys[4], (*batch, 6), dtype))
    return cell, xs, target, carry


def _assert_trees_close(a, b, tol):
    for u, v in zip(jtu.tree_leaves(a), jtu.tree_leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("batch", [(4,), ()])
def test_values_and_gradients_equal_scanning_recur(dtype, batch):
    cell, xs, target, carry = _data(dtype, batch)

    def loss(run, cell, xs, carry):
        (h, c), ys = run(cell, xs, carry)
        return jnp.sum(ys * target) + jnp.sum(c * h)

    fast = lambda cell, xs, carry: cell.run_inputs(carry, xs)  # noqa: E731
    _assert_trees_close(fast(cell, xs, carry), _reference(cell, xs, carry), TOL[dtype])
    g_fast = eqx.filter_grad(lambda *a: loss(fast, *a))(cell, xs, carry)
    g_ref = eqx.filter_grad(lambda *a: loss(_reference, *a))(cell, xs, carry)
    _assert_trees_close(g_fast, g_ref, 10 * TOL[dtype])
    dx_fast = jax.grad(lambda xs, c: loss(fast, cell, xs, c), argnums=(0, 1))(xs, carry)
    dx_ref = jax.grad(lambda xs, c: loss(_reference, cell, xs, c), argnums=(0, 1))(
        xs, carry)
    _assert_trees_close(dx_fast, dx_ref, 10 * TOL[dtype])


def test_vmap_over_examples_equals_the_batched_layer():
    cell, xs, target, _ = _data(jnp.float64)
    rnn = jo.nn.RNN(cell)

    def batched(rnn):
        return jnp.sum(rnn(xs)[0] * target)

    def vmapped(rnn):
        ys = jax.vmap(lambda x: rnn(x)[0], in_axes=1, out_axes=1)(xs)
        return jnp.sum(ys * target)

    np.testing.assert_allclose(vmapped(rnn), batched(rnn), rtol=1e-12)
    _assert_trees_close(eqx.filter_grad(vmapped)(rnn), eqx.filter_grad(batched)(rnn),
                        1e-12)


def _one_example(rnn, x, target, carry):
    """The loss of one example: `x` (time, input), `carry` a pair or None."""
    ys, (h, c) = rnn(x, carry)
    return jnp.sum(ys * target) + jnp.sum(h * c)


def _one_example_by_scan(rnn, x, target, carry):
    """`_one_example` through the plain scan of `recur`, differentiated by JAX."""
    cell = rnn.cells[0]
    carry = cell.init_carry() if carry is None else carry
    (h, c), ys = _reference(cell, x, carry)
    return jnp.sum(ys * target) + jnp.sum(h * c)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("given_carry", [True, False])
def test_vmap_over_examples_equals_a_loop_of_single_examples(dtype, given_carry):
    """`jax.vmap` over `(time, input)` examples: the outputs equal a Python loop of
    single examples through the plain scan of `recur`, and the gradients (parameters,
    inputs, initial carry) equal the looped and the batched `(time, batch, input)`
    gradients."""
    cell, xs, target, carry = _data(dtype)
    rnn = jo.nn.RNN(cell)
    if not given_carry:  # the zero carry, built inside the vmapped function
        carry = (jnp.zeros_like(carry[0]), jnp.zeros_like(carry[1]))
    n = xs.shape[1]

    def pick(tree, b):
        return jtu.tree_map(lambda a: a[b], tree)

    def vmapped(rnn, xs, carry):
        if given_carry:
            losses = jax.vmap(_one_example, in_axes=(None, 1, 1, 0))(
                rnn, xs, target, carry)
        else:
            losses = jax.vmap(_one_example, in_axes=(None, 1, 1, None))(
                rnn, xs, target, None)
        return jnp.sum(losses)

    def looped(rnn, xs, carry):
        return sum(_one_example_by_scan(rnn, xs[:, b], target[:, b],
                                        pick(carry, b) if given_carry else None)
                   for b in range(n))

    def batched(rnn, xs, carry):
        ys, (h, c) = rnn(xs, carry)
        return jnp.sum(ys * target) + jnp.sum(h * c)

    ys_vmap = jax.vmap(lambda x, c: rnn(x, c)[0], in_axes=(1, 0), out_axes=1)(xs, carry)
    ys_loop = jnp.stack([_reference(cell, xs[:, b], pick(carry, b))[1]
                         for b in range(n)], axis=1)
    _assert_trees_close(ys_vmap, ys_loop, TOL[dtype])

    def grad(fn):
        return eqx.filter_grad(lambda a: fn(*a))((rnn, xs, carry))

    g_vmap = grad(vmapped)
    if not given_carry:  # the carry is not an input there: compare the rest
        g_vmap = g_vmap[:2]
    for other in (looped, batched):
        g = grad(other)
        _assert_trees_close(g_vmap, g if given_carry else g[:2], 10 * TOL[dtype])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_per_example_gradients_under_vmap_are_not_summed(dtype):
    """`vmap(grad(...))`: each example gets its own parameter gradient, equal to the
    gradient of that example alone through the plain scan of `recur`."""
    cell, xs, target, _ = _data(dtype)
    rnn = jo.nn.RNN(cell)
    grads = jax.vmap(eqx.filter_grad(_one_example), in_axes=(None, 1, 1, None))(
        rnn, xs, target, None)
    for b in range(xs.shape[1]):
        alone = eqx.filter_grad(_one_example_by_scan)(rnn, xs[:, b], target[:, b], None)
        _assert_trees_close(jtu.tree_map(lambda g, b=b: g[b], grads), alone,
                            10 * TOL[dtype])


def test_under_vmap_the_weight_gradient_is_one_matmul_over_time_and_examples():
    """Under `grad(vmap(...))` the program has no per-example (batched) matmul: the
    weight gradient contracts time and examples in one `dot_general`."""
    cell, xs, target, _ = _data(jnp.float32)
    rnn = jo.nn.RNN(cell)

    def loss(rnn):
        ys = jax.vmap(lambda x: rnn(x)[0], in_axes=1, out_axes=1)(xs)
        return jnp.sum(ys * target)

    program = str(jax.make_jaxpr(eqx.filter_grad(loss))(rnn))
    dims = re.findall(r"dimension_numbers=\(\((\[[0-9, ]*\]), \[[0-9, ]*\]\), "
                      r"\((\[[0-9, ]*\]), \[[0-9, ]*\]\)\)", program)
    assert dims, program
    assert all(batch == "[]" for _, batch in dims), dims
    assert ("[0, 1]", "[]") in dims, dims


def test_vmap_over_models_falls_back_to_one_layer_per_model():
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    cells = eqx.filter_vmap(lambda k: jo.nn.LSTMCell(2, 3, key=k))(keys)
    xs = jax.random.normal(keys[0], (5, 2))
    z = (jnp.zeros(3), jnp.zeros(3))
    got = eqx.filter_vmap(lambda c: c.run_inputs(z, xs)[1])(cells)
    want = eqx.filter_vmap(lambda c: _reference(c, xs, z)[1])(cells)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_reverse_runs_from_the_last_step():
    cell, xs, _, carry = _data(jnp.float64)
    (h, c), ys = cell.run_inputs(carry, xs, reverse=True)
    (h2, c2), ys2 = _reference(cell, xs[::-1], carry)
    np.testing.assert_allclose(ys, ys2[::-1], rtol=1e-12)
    np.testing.assert_allclose(h, h2, rtol=1e-12)


def test_wrong_input_size_names_the_shape():
    cell, xs, _, carry = _data(jnp.float64)
    with pytest.raises(ValueError, match=r"`x` must have shape \(\.\.\., 3\)"):
        cell.run_inputs(carry, xs[..., :2])


def test_the_cell_is_a_step_of_jaxode_scan_and_lax_scan():
    cell, xs, _, carry = _data(jnp.float64)
    want = cell.run_inputs(carry, xs)
    _assert_trees_close(jo.scan(cell, carry, xs), want, 1e-12)
    _assert_trees_close(jax.lax.scan(lambda c, x: cell(c, x), carry, xs), want,
                        1e-12)


def test_rnn_runs_the_written_out_layer_without_a_mask():
    cell, xs, _, _ = _data(jnp.float64)
    program = jax.make_jaxpr(lambda xs: jo.nn.RNN(cell)(xs)[0])(xs)
    assert "custom_vjp" in str(program)
