"""Hand-written BPTT against autodiff and a NumPy loop; gradient-flow verdicts."""


import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode as jo
from jaxode.bptt import elman_grads, elman_grads_autodiff, elman_loss, gradient_flow

GRAD = jax.jit(jax.grad(elman_loss))


def _problem(key, H=6, I=4, O=3, T=25, scale=1.0):
    k = jax.random.split(key, 5)
    params = {"U": scale * jax.random.normal(k[0], (H, I)),
              "W": scale * jax.random.normal(k[1], (H, H)),
              "V": scale * jax.random.normal(k[2], (O, H))}
    xs = jax.random.normal(k[3], (T, I))
    ys = jax.nn.one_hot(jax.random.randint(k[4], (T,), 0, O), O)
    return params, xs, ys


def numpy_bptt(params, xs, ys, window):
    """Loop form: for each t, walk the local gradient back `window` pre-activations."""
    U, W, V = (np.asarray(params[n]) for n in "UWV")
    xs, ys = np.asarray(xs), np.asarray(ys)
    T, H = len(xs), U.shape[0]
    s = np.zeros((T + 1, H))  # s[-1] is the zero initial state
    outs = []
    for t in range(T):
        s[t] = 1 / (1 + np.exp(-(U @ xs[t] + W @ s[t - 1])))
        z = V @ s[t]
        e = np.exp(z - z.max())
        outs.append(e / e.sum())
    err = np.array(outs) - ys
    dU, dW, dV = np.zeros_like(U), np.zeros_like(W), err.T @ s[:-1]
    for t in range(T - 1, -1, -1):
        delta = (V.T @ err[t]) * s[t] * (1 - s[t])
        for j in range(t, max(-1, t - window), -1):
            dU += np.outer(delta, xs[j])
            dW += np.outer(delta, s[j - 1])
            delta = (W.T @ delta) * s[j - 1] * (1 - s[j - 1])
    return {"U": dU, "W": dW, "V": dV}


def _close(a, b, tol=1e-10):
    return all(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k]))) < tol for k in "UWV")


def test_full_bptt_by_hand_equals_jax_grad(getkey):
    params, xs, ys = _problem(getkey())
    assert _close(elman_grads(params, xs, ys), GRAD(params, xs, ys))
    assert _close(elman_grads(params, xs, ys), numpy_bptt(params, xs, ys, window=25))


@pytest.mark.parametrize("window", [1, 2, 10, 24])
def test_windowed_by_hand_equals_autodiff_and_numpy(window, getkey):
    params, xs, ys = _problem(getkey())
    hand = elman_grads(params, xs, ys, window=window)
    assert _close(hand, elman_grads_autodiff(params, xs, ys, window=window))
    assert _close(hand, numpy_bptt(params, xs, ys, window))
    full = GRAD(params, xs, ys)
    assert np.max(np.abs(hand["V"] - full["V"])) < 1e-10  # V is never truncated
    if window <= 10:
        assert not _close(hand, full, tol=1e-6)  # truncation changes U and W


def test_window_error_shrinks_with_window(getkey):
    params, xs, ys = _problem(getkey(), T=40)
    full = elman_grads(params, xs, ys)
    errs = [np.linalg.norm(np.asarray(elman_grads(params, xs, ys, window=k)["W"]
                                      - full["W"])) for k in (1, 3, 10, 30)]
    assert all(a > b for a, b in zip(errs, errs[1:]))
    assert _close(elman_grads(params, xs, ys, window=40), full)


def test_bptt_bad_input(getkey):
    params, xs, ys = _problem(getkey())
    with pytest.raises(ValueError, match="window"):
        elman_grads(params, xs, ys, window=0)
    with pytest.raises(ValueError, match=r"`xs` must have shape \(T, 4\)"):
        elman_grads(params, xs[:, :3], ys)
    with pytest.raises(ValueError, match=r"`ys` must have shape \(25, 3\)"):
        elman_grads(params, xs, ys[:5])
    with pytest.raises(ValueError, match="keys"):
        elman_grads({"U": params["U"]}, xs, ys)


# --------------------------------------------------------------------- gradient flow

def test_gradient_flow_linear_rnn_matches_matrix_powers(getkey):
    cell = jo.nn.RNNCell(2, 4, activation="identity", key=getkey())
    xs = jax.random.normal(getkey(), (12, 2))
    rep = gradient_flow(cell, xs)
    W = np.asarray(cell.weight_hh)
    g = np.ones(4)  # dL/dh_T for L = sum(h_T)
    for t in range(11, -1, -1):
        assert np.isclose(rep.norms[t], np.linalg.norm(g), rtol=1e-10)
        g = W.T @ g
    assert np.allclose(rep.step_ratios, rep.norms[:-1] / rep.norms[1:])


def _with_radius(cell, radius):
    W = cell.weight_hh
    rho = np.max(np.abs(np.linalg.eigvals(np.asarray(W))))
    return eqx.tree_at(lambda c: c.weight_hh, cell, W * radius / rho)


def test_gradient_flow_verdicts_over_100_steps(getkey):
    xs = jax.random.normal(getkey(), (100, 3))
    small_sigmoid = jax.tree_util.tree_map(
        lambda a: 0.1 * a, jo.nn.RNNCell(3, 8, activation="sigmoid", key=getkey()))
    sig = gradient_flow(small_sigmoid, xs)
    assert sig.verdict == "vanishing" and sig.rate < 0.05
    lin = gradient_flow(_with_radius(jo.nn.RNNCell(3, 8, activation="identity",
                                                   key=getkey()), 1.5), xs)
    assert lin.verdict == "exploding" and abs(lin.rate - 1.5) < 0.05
    # nonnegative W (Perron root 1.5): once the state is positive every unit is on
    relu = jo.nn.RNNCell(3, 8, activation="relu", key=getkey())
    relu = eqx.tree_at(lambda c: c.weight_hh, relu, jnp.abs(relu.weight_hh))
    relu = gradient_flow(_with_radius(relu, 1.5), jnp.abs(xs))
    assert relu.verdict == "exploding" and abs(relu.rate - 1.5) < 0.05
    lstm = gradient_flow(jo.nn.LSTMCell(3, 8, forget_bias=1.0, key=getkey()), xs)
    assert lstm.rate > 10 * sig.rate and lstm.ratio > 1e20 * sig.ratio
    assert "vanishing" in str(sig)
    with pytest.raises(ValueError, match="at least 2 steps"):
        gradient_flow(small_sigmoid, xs[:1])


def test_gradient_flow_report_is_a_module_with_a_readable_repr(getkey):
    rep = gradient_flow(jo.nn.RNNCell(2, 4, key=getkey()), jnp.ones((12, 2)))
    assert isinstance(rep, jo.bptt.GradientFlow) and isinstance(rep, eqx.Module)
    numbers = jax.tree_util.tree_leaves(rep)  # the verdict is a label, not a leaf
    assert len(numbers) == 4 and numbers[0] is rep.norms
    text = repr(rep)
    assert "norms=f64[12](numpy)" in text and "step_ratios=f64[11](numpy)" in text
    assert f"rate={rep.rate!r}" in text and f"verdict={rep.verdict!r}" in text
    assert str(rep).startswith(f"{rep.verdict}: ||dL/dh|| goes from ")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rep.verdict = "healthy"
