"""The LSTM layer's own sequence routine against scanning `LSTMCell.recur`: values and
gradients in float32 and float64, the batched and the vmapped idiom, reverse; the cell
as a step function of `jaxode.scan` and `lax.scan`; `RNN` runs the layer."""

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
