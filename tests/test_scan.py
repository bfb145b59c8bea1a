"""`jaxode.scan`: plain, masked, reversed, truncated and checkpointed recurrences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode as jo
from conftest import tree_allclose


def _elman(params, h, x):
    h = jnp.tanh(params["W"] @ h + params["U"] @ x)
    return h, params["V"] @ h


@pytest.fixture
def problem(getkey, dtype):
    H, I, T = 4, 3, 23
    params = {
        "W": 0.9 * jax.random.normal(getkey(), (H, H)) / np.sqrt(H),
        "U": jax.random.normal(getkey(), (H, I)),
        "V": jax.random.normal(getkey(), (1, H)),
    }
    xs = jax.random.normal(getkey(), (T, I))
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
    return params, jnp.zeros(H, dtype), jnp.asarray(xs, dtype)


def _t(tol64):
    """`tol64` in float64; float32 rounding (a few ulps per step) when the test runs
    with 64-bit mode off."""
    return tol64 if jnp.result_type(float) == jnp.float64 else 2e-5


def _loop(step, carry, xs, reverse=False):
    """Reference: a Python loop."""
    ys = [None] * len(xs)
    order = range(len(xs) - 1, -1, -1) if reverse else range(len(xs))
    for t in order:
        carry, ys[t] = step(carry, xs[t])
    return carry, jnp.stack(ys)


@pytest.mark.parametrize("reverse", [False, True])
def test_plain_scan_equals_python_loop(problem, reverse):
    params, h0, xs = problem
    step = lambda h, x: _elman(params, h, x)  # noqa: E731
    got = jo.scan(step, h0, xs, reverse=reverse)
    want = _loop(step, h0, xs, reverse=reverse)
    assert got[1].dtype == h0.dtype
    assert tree_allclose(got, want, rtol=_t(1e-13), atol=_t(1e-13))


def test_xs_none_with_length():
    carry, ys = jo.scan(lambda c, _: (c + 1.0, 2 * c), jnp.array(0.0), None, length=5)
    assert float(carry) == 5.0
    np.testing.assert_array_equal(ys, [0, 2, 4, 6, 8])


def test_pytree_xs_and_carry():
    xs = {"a": jnp.arange(4.0), "b": jnp.ones((4, 2))}

    def step(c, x):
        c = (c[0] + x["a"], c[1] + x["b"])
        return c, c[0] * x["b"]

    (s, v), ys = jo.scan(step, (jnp.array(0.0), jnp.zeros(2)), xs)
    assert float(s) == 6.0 and ys.shape == (4, 2)
    np.testing.assert_array_equal(v, [4.0, 4.0])


def test_mask_per_step_skips_steps(problem):
    params, h0, xs = problem
    step = lambda h, x: _elman(params, h, x)  # noqa: E731
    mask = jnp.arange(len(xs)) % 3 != 1
    carry, ys = jo.scan(step, h0, xs, mask=mask)
    # Reference: run only the kept steps.
    want_carry, want_kept = _loop(step, h0, xs[np.asarray(mask)])
    assert tree_allclose(carry, want_carry, rtol=_t(1e-13), atol=_t(1e-13))
    assert tree_allclose(ys[np.asarray(mask)], want_kept, rtol=_t(1e-13), atol=_t(1e-13))
    assert np.all(np.asarray(ys[~np.asarray(mask)]) == 0.0)


def test_mask_per_batch_row_equals_ragged_sequences(problem):
    """Padding with a (time, batch) mask == each sequence run at its own length."""
    params, _, xs = problem
    lengths = [23, 7, 15]
    B, H = len(lengths), params["W"].shape[0]
    xsb = jnp.stack([xs] * B, axis=1)  # (T, B, I)
    mask = jnp.arange(xs.shape[0])[:, None] < jnp.array(lengths)[None, :]
    bstep = jax.vmap(lambda h, x: _elman(params, h, x))
    carry, ys = jo.scan(bstep, jnp.zeros((B, H)), xsb, mask=mask)
    for b, n in enumerate(lengths):
        want_c, want_y = _loop(lambda h, x: _elman(params, h, x), jnp.zeros(H), xs[:n])
        np.testing.assert_allclose(carry[b], want_c, rtol=_t(1e-13), atol=_t(1e-13))
        np.testing.assert_allclose(ys[:n, b], want_y, rtol=_t(1e-13), atol=_t(1e-13))
        assert np.all(np.asarray(ys[n:, b]) == 0.0)


def _truncated_reference(params, h0, xs, k):
    """Loss Σ_t y_t, gradient allowed back only to the start of each k-chunk."""

    def loss(params):
        h, total = h0, 0.0
        for t in range(len(xs)):
            if t % k == 0 and t > 0:
                h = jax.lax.stop_gradient(h)
            h, y = _elman(params, h, xs[t])
            total = total + jnp.sum(y)
        return total

    return jax.grad(loss)(params)


@pytest.mark.parametrize("k", [1, 4, 5, 23, 40])
def test_truncate_matches_chunked_reference(problem, k):
    params, h0, xs = problem

    def loss(params, truncate):
        step = lambda h, x: _elman(params, h, x)  # noqa: E731
        _, ys = jo.scan(step, h0, xs, truncate=truncate)
        return jnp.sum(ys)

    # forward values unchanged
    assert abs(float(loss(params, k)) - float(loss(params, None))) < _t(1e-12)
    got = jax.grad(loss)(params, k)
    assert tree_allclose(got, _truncated_reference(params, h0, xs, k), rtol=_t(1e-11),
                         atol=_t(1e-11))
    full = jax.grad(loss)(params, None)
    if k < len(xs):  # truncation really changes the gradient of W
        assert not tree_allclose(got["W"], full["W"], rtol=1e-6, atol=1e-6)
    else:
        assert tree_allclose(got, full, rtol=_t(1e-12), atol=_t(1e-12))


def test_truncate_reverse_runs_chunks_from_the_end(problem):
    params, h0, xs = problem
    k = 5

    def loss(params, reverse_scan):
        step = lambda h, x: _elman(params, h, x)  # noqa: E731
        if reverse_scan:
            _, ys = jo.scan(step, h0, xs, truncate=k, reverse=True)
        else:
            _, ys = jo.scan(step, h0, xs[::-1], truncate=k)
            ys = ys[::-1]
        return jnp.sum(ys * jnp.arange(1.0, len(xs) + 1)[:, None])

    assert tree_allclose(jax.grad(loss)(params, True), jax.grad(loss)(params, False),
                         rtol=_t(1e-12), atol=_t(1e-12))


def test_remat_identical_values_and_gradients(problem):
    params, h0, xs = problem

    def loss(params, remat):
        step = lambda h, x: _elman(params, h, x)  # noqa: E731
        h, ys = jo.scan(step, h0, xs, remat=remat)
        return jnp.sum(ys**2) + jnp.sum(h)

    assert float(loss(params, True)) == float(loss(params, False))
    assert tree_allclose(jax.grad(loss)(params, True), jax.grad(loss)(params, False),
                         rtol=_t(1e-14), atol=_t(1e-14))


def _gradient_temp_bytes(**flag) -> int:
    """XLA's temporary buffers for the gradient of a 500-step scan run with `flag`."""
    H, T = 64, 500
    W = jax.random.normal(jax.random.PRNGKey(0), (H, H), jnp.float32) / 8
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, H), jnp.float32)

    def loss(W):
        step = lambda h, x: (jnp.tanh(2 * jnp.tanh(W @ h + x) + jnp.sin(h)), h)  # noqa: E731
        h, _ = jo.scan(step, jnp.zeros(H, jnp.float32), xs, **flag)
        return jnp.sum(h)

    return jax.jit(jax.grad(loss)).lower(W).compile().memory_analysis(
    ).temp_size_in_bytes


def test_remat_rematerialises_so_the_gradient_needs_less_memory():
    """`remat=True` is seen in the compiled gradient: the backward pass recomputes
    each step's intermediates instead of storing them, so XLA's temporary buffers
    shrink (measured 1.5 MB -> 0.26 MB here)."""
    temp = {ck: _gradient_temp_bytes(remat=ck) for ck in (False, True)}
    assert temp[True] < 0.4 * temp[False], temp


def test_truncate_with_mask_and_remat_compose(problem):
    params, h0, xs = problem
    mask = jnp.ones(len(xs), bool)
    step = lambda h, x: _elman(params, h, x)  # noqa: E731
    a = jo.scan(step, h0, xs, mask=mask, truncate=4, remat=True)
    b = jo.scan(step, h0, xs)
    assert tree_allclose(a, b, rtol=_t(1e-13), atol=_t(1e-13))


def test_old_checkpoint_keyword_warns_and_still_rematerialises(problem):
    params, h0, xs = problem
    step = lambda h, x: _elman(params, h, x)  # noqa: E731
    with pytest.warns(DeprecationWarning, match="use `remat=`"):
        old = jo.scan(step, h0, xs, checkpoint=True)
    assert tree_allclose(old, jo.scan(step, h0, xs, remat=True), rtol=0, atol=0)
    with pytest.warns(DeprecationWarning, match="use `remat=`"):
        temp = _gradient_temp_bytes(checkpoint=True)
    assert temp == _gradient_temp_bytes(remat=True) < _gradient_temp_bytes()
    for remat, checkpoint in [(True, True), (False, True), (True, False)]:
        with pytest.raises(ValueError, match=r"`remat`=.*`checkpoint`="):
            jo.scan(step, h0, xs, remat=remat, checkpoint=checkpoint)


def test_bad_inputs():
    step = lambda c, x: (c, x)  # noqa: E731
    with pytest.raises(ValueError, match="`length` is required"):
        jo.scan(step, 0.0, None)
    with pytest.raises(ValueError, match="`mask` must have shape"):
        jo.scan(step, 0.0, jnp.ones(5), mask=jnp.ones(4, bool))
    with pytest.raises(ValueError, match="`mask` must be boolean"):
        jo.scan(step, 0.0, jnp.ones(5), mask=jnp.ones(5))
    with pytest.raises(ValueError, match="`truncate` must be an integer >= 1, got 0"):
        jo.scan(step, 0.0, jnp.ones(5), truncate=0)
    with pytest.raises(ValueError, match="batch rows"):
        jo.scan(step, jnp.zeros((3, 2)), jnp.ones((5, 3)), mask=jnp.ones((5, 4), bool))
    with pytest.raises(ValueError, match="`length`=4 but `xs` has leading axis 5"):
        jo.scan(step, 0.0, jnp.ones(5), length=4)
