"""Recurrent cells, the RNN driver, Forecaster and forecast."""


import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode as jo
from jaxode.data import noisy_sine, sliding_windows

from conftest import tree_allclose


# ------------------------------------------------------- cells against NumPy equations

def _sig(a):
    return 1 / (1 + np.exp(-a))


def np_rnn(cell, h, x):
    act = {"tanh": np.tanh, "sigmoid": _sig, "relu": lambda a: np.maximum(a, 0),
           "identity": lambda a: a}[cell.activation]
    Wi, Wh, b = (np.asarray(a) for a in (cell.weight_ih, cell.weight_hh, cell.bias))
    h = act(Wi @ x + Wh @ h + b)
    return h, h


def np_lstm(cell, carry, x):
    h, c = carry
    Wi, Wh, b = (np.asarray(a) for a in (cell.weight_ih, cell.weight_hh, cell.bias))
    H = cell.hidden_size
    z = Wi @ x + Wh @ h + b
    i, f, g, o = _sig(z[:H]), _sig(z[H:2 * H]), np.tanh(z[2 * H:3 * H]), _sig(z[3 * H:])
    c = f * c + i * g
    h = o * np.tanh(c)
    return (h, c), h


def np_gru(cell, h, x):
    Wi, Wh, b, bhn = (np.asarray(a) for a in (cell.weight_ih, cell.weight_hh,
                                              cell.bias, cell.bias_hn))
    H = cell.hidden_size
    gi, gh = Wi @ x + b, Wh @ h
    r = _sig(gi[:H] + gh[:H])
    z = _sig(gi[H:2 * H] + gh[H:2 * H])
    n = np.tanh(gi[2 * H:] + r * (gh[2 * H:] + bhn))
    h = (1 - z) * n + z * h
    return h, h


CELLS = [
    (lambda k: jo.nn.RNNCell(3, 5, key=k), np_rnn),
    (lambda k: jo.nn.RNNCell(3, 5, activation="sigmoid", key=k), np_rnn),
    (lambda k: jo.nn.RNNCell(3, 5, activation="relu", key=k), np_rnn),
    (lambda k: jo.nn.LSTMCell(3, 5, key=k), np_lstm),
    (lambda k: jo.nn.GRUCell(3, 5, key=k), np_gru),
]


@pytest.mark.parametrize("make,reference", CELLS)
def test_cell_matches_numpy_equations(make, reference, getkey):
    cell = make(getkey())
    xs = np.asarray(jax.random.normal(getkey(), (6, 3)))
    carry_np = jax.tree_util.tree_map(np.asarray, cell.init_carry())
    carry = cell.init_carry()
    for x in xs:
        carry_np, y_np = reference(cell, carry_np, x)
        carry, y = cell(carry, jnp.asarray(x))
        assert tree_allclose(carry, carry_np, rtol=1e-12, atol=1e-12)
        assert np.allclose(y, y_np, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make,reference", CELLS)
def test_rnn_hoisted_projection_equals_python_loop(make, reference, getkey):
    cell = make(getkey())
    xs = jax.random.normal(getkey(), (7, 2, 3))  # (time, batch, features)
    ys, final = jo.nn.RNN(cell, unroll=3)(xs)
    carry = cell.init_carry((2,))
    for t in range(7):
        carry, y = cell(carry, xs[t])
        assert np.allclose(ys[t], y, rtol=1e-12, atol=1e-12)
    assert tree_allclose(final, carry)


def test_lstm_forget_bias_and_sizes(getkey):
    cell = jo.nn.LSTMCell(2, 4, forget_bias=5.0, key=getkey())
    b = np.asarray(cell.bias)
    assert np.all(b[4:8] > 4.0) and np.all(np.abs(b[:4]) <= 0.5)
    assert cell.weight_ih.shape == (16, 2) and cell.weight_hh.shape == (16, 4)


# ---------------------------------------------------------- masking, reverse, stacking

def test_mask_skips_padding_per_batch_row(getkey):
    cell = jo.nn.GRUCell(2, 4, key=getkey())
    rnn = jo.nn.RNN(cell)
    xs = jax.random.normal(getkey(), (6, 3, 2))
    lengths = [6, 4, 1]
    mask = jnp.arange(6)[:, None] < jnp.asarray(lengths)[None, :]
    ys, final = rnn(xs, mask=mask)
    for b, n in enumerate(lengths):
        ys_b, final_b = rnn(xs[:n, b])
        assert np.allclose(final[b], final_b, atol=1e-12)
        assert np.allclose(ys[:n, b], ys_b, atol=1e-12)
        assert np.all(ys[n:, b] == 0)


def test_reverse_with_mask_starts_at_last_valid_step(getkey):
    rnn = jo.nn.RNN(jo.nn.RNNCell(2, 3, key=getkey()), reverse=True)
    xs = jax.random.normal(getkey(), (5, 2))
    mask = jnp.array([True, True, True, False, False])
    ys, final = rnn(xs, mask=mask)
    ys_ref, final_ref = jo.nn.RNN(rnn.cells[0])(xs[:3][::-1])
    assert np.allclose(final, final_ref, atol=1e-12)
    assert np.allclose(ys[:3], ys_ref[::-1], atol=1e-12)


def test_stacked_and_bidirectional_equal_manual_composition(getkey):
    c1, c2 = jo.nn.LSTMCell(3, 4, key=getkey()), jo.nn.GRUCell(8, 2, key=getkey())
    b1, b2 = jo.nn.LSTMCell(3, 4, key=getkey()), jo.nn.GRUCell(8, 2, key=getkey())
    xs = jax.random.normal(getkey(), (6, 3))
    ys, (carry1, carry2) = jo.nn.RNN([c1, c2], backward=[b1, b2])(xs)
    f1, cf1 = jo.nn.RNN(c1)(xs)
    r1, cb1 = jo.nn.RNN(b1)(xs[::-1])
    h1 = jnp.concatenate([f1, r1[::-1]], -1)
    f2, _ = jo.nn.RNN(c2)(h1)
    r2, _ = jo.nn.RNN(b2)(h1[::-1])
    assert ys.shape == (6, 4)
    assert np.allclose(ys, jnp.concatenate([f2, r2[::-1]], -1), atol=1e-12)
    assert tree_allclose(carry1, (cf1, cb1))
    # unidirectional stack: tuple carry, one entry per layer
    ys2, carries = jo.nn.RNN([c1, jo.nn.RNNCell(4, 3, key=getkey())])(xs)
    assert ys2.shape == (6, 3) and len(carries) == 2


def test_rnn_gradients_match_finite_differences(getkey):
    cell = jo.nn.LSTMCell(2, 3, key=getkey())
    xs = jax.random.normal(getkey(), (8, 2))

    def loss(w):
        c = eqx.tree_at(lambda c: c.weight_hh, cell, w)
        ys, _ = jo.nn.RNN(c)(xs)
        return jnp.sum(ys**2)

    w = cell.weight_hh
    g = jax.grad(loss)(w)
    eps = 1e-6
    for idx in [(0, 0), (5, 2), (11, 1)]:
        e = jnp.zeros_like(w).at[idx].set(eps)
        fd = (loss(w + e) - loss(w - e)) / (2 * eps)
        assert abs(g[idx] - fd) < 1e-8


@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_fused_backward_equals_autodiff_of_scan(reverse, getkey):
    """`LSTMCell.run_inputs` has a hand-written backward; compare it with jax.grad of
    the plain scan over `recur` (all parameters, inputs and the initial carry)."""
    cell = jo.nn.LSTMCell(3, 4, key=getkey())
    xs = jax.random.normal(getkey(), (9, 2, 3))
    h0, c0 = (jax.random.normal(getkey(), (2, 4)) for _ in range(2))
    target = jax.random.normal(getkey(), (9, 2, 4))

    def loss(cell, xs, h0, c0, fused):
        if fused:
            (h, c), ys = cell.run_inputs((h0, c0), xs, reverse=reverse)
        else:
            (h, c), ys = jo.scan(lambda k, p: cell.recur(k, p), (h0, c0),
                                 cell.project(xs), reverse=reverse)
        return jnp.sum((ys - target) ** 2) + jnp.sum(h * c) + jnp.sum(jnp.sin(c))

    g1 = jax.jit(jax.grad(lambda *a: loss(*a, True), argnums=(0, 1, 2, 3)))(
        cell, xs, h0, c0)
    g2 = jax.jit(jax.grad(lambda *a: loss(*a, False), argnums=(0, 1, 2, 3)))(
        cell, xs, h0, c0)
    assert np.isclose(loss(cell, xs, h0, c0, True), loss(cell, xs, h0, c0, False),
                      rtol=1e-13)
    assert tree_allclose(g1, g2, rtol=1e-11, atol=1e-11)


# ----------------------------------------------------------------------- bad input

def test_bad_inputs_give_clear_errors(getkey):
    rnn = jo.nn.RNN(jo.nn.LSTMCell(3, 4, key=getkey()))
    with pytest.raises(ValueError, match=r"\(time, 3\).*got shape \(5, 2\)"):
        rnn(jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"got shape \(3,\)"):
        rnn(jnp.zeros(3))
    with pytest.raises(ValueError, match="time=5"):
        rnn(jnp.zeros((5, 3)), mask=jnp.ones(4, bool))
    with pytest.raises(ValueError, match="layer 1 has input_size=5"):
        jo.nn.RNN([jo.nn.RNNCell(3, 4, key=getkey()), jo.nn.RNNCell(5, 2, key=getkey())])
    with pytest.raises(ValueError, match="activation"):
        jo.nn.RNNCell(3, 4, activation="softsign", key=getkey())
    with pytest.raises(ValueError, match="hidden_size"):
        jo.nn.GRUCell(3, 0, key=getkey())
    model = jo.nn.Forecaster(jo.nn.GRUCell(1, 4, key=getkey()), window=5, key=getkey())
    with pytest.raises(ValueError, match="horizon"):
        jo.forecast(model, jnp.zeros((8, 1)), 0)
    with pytest.raises(ValueError, match="n >= window=5"):
        jo.forecast(model, jnp.zeros((3, 1)), 2)
    with pytest.raises(ValueError, match=r"\(5, 1\)"):
        model(jnp.zeros((4, 1)))


# ------------------------------------------------------------------------ forecasting

@pytest.mark.parametrize("make", [lambda k: jo.nn.RNNCell(2, 6, key=k),
                                  lambda k: jo.nn.LSTMCell(2, 6, key=k)])
def test_forecast_equals_step_by_step_loop(make, getkey):
    model = jo.nn.Forecaster(make(getkey()), window=4, key=getkey())
    history = jax.random.normal(getkey(), (9, 2))
    preds = jo.forecast(model, history, 6)
    buf = list(np.asarray(history[-4:]))
    for j in range(6):
        y = np.asarray(model(jnp.asarray(np.stack(buf))))
        assert np.allclose(preds[j], y, rtol=1e-12, atol=1e-12)
        buf = buf[1:] + [y]
    # batched history: every batch member forecast independently
    hist_b = jax.random.normal(getkey(), (9, 3, 2))
    preds_b = jo.forecast(model, hist_b, 6)
    for b in range(3):
        assert np.allclose(preds_b[:, b], jo.forecast(model, hist_b[:, b], 6), atol=1e-12)


TRACES = []


class _Counting(eqx.Module):
    inner: jo.nn.Forecaster
    window: int = eqx.field(static=True)

    def __call__(self, xs):
        TRACES.append(1)  # runs only while JAX traces
        return self.inner(xs)


def test_forecast_compiles_once_per_shape(getkey):
    inner = jo.nn.Forecaster(jo.nn.GRUCell(1, 3, key=getkey()), window=3, key=getkey())
    model = _Counting(inner, 3)
    jo.forecast(model, jnp.ones((5, 1)), 4)
    n = len(TRACES)
    assert n >= 1
    for v in (2.0, 3.0):
        jo.forecast(model, v * jnp.ones((5, 1)), 4)
    other = eqx.tree_at(lambda m: m.inner.bias, model, jnp.ones(1))
    jo.forecast(other, jnp.ones((5, 1)), 4)
    assert len(TRACES) == n


def test_sliding_windows_and_noisy_sine():
    x, y = noisy_sine(400, 36.0, 0.2, seed=3)
    assert x.shape == y.shape == (400,)
    noise = y - np.sin(x)
    assert 0 <= noise.min() and noise.max() <= 0.2
    assert abs(noise.std() - 0.2 / np.sqrt(12)) < 0.01
    xs, ys = sliding_windows(np.arange(12.0), 10)
    assert xs.shape == (2, 10) and np.all(xs[1] == np.arange(1, 11)) and ys[1] == 11
    with pytest.raises(ValueError, match="window"):
        sliding_windows(np.arange(5.0), 5)
