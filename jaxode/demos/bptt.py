"""`jaxode demo bptt`: backprop through time by hand vs autodiff, truncation, and
vanishing and exploding gradients."""

import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import plot
from . import Target, report
from ..bptt import elman_grads, elman_grads_autodiff, gradient_flow
from ..nn import LSTMCell, RNNCell


def _elman_problem(key, *, vocab: int, hidden: int, length: int, scale: float):
    """Random one-hot sequence, the next symbol as target, weights N(0, scale²/H)."""
    ku, kw, kv, kx = jax.random.split(key, 4)
    H = hidden
    params = {
        "U": scale * jax.random.normal(ku, (H, vocab)) / np.sqrt(H),
        "W": scale * jax.random.normal(kw, (H, H)) / np.sqrt(H),
        "V": scale * jax.random.normal(kv, (vocab, H)) / np.sqrt(H),
    }
    symbols = jax.random.randint(kx, (length + 1,), 0, vocab)
    onehot = jax.nn.one_hot(symbols, vocab)
    return params, onehot[:-1], onehot[1:]


def _norm(tree) -> float:
    return float(np.sqrt(sum(np.sum(np.asarray(v) ** 2) for v in tree.values())))


def _diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a)


def _best_time(f, repeats: int = 5) -> float:
    jax.block_until_ready(f())
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f())
        best = min(best, time.perf_counter() - t0)
    return best


def _with_radius(cell, radius: float):
    """`cell` with its recurrent matrix rescaled to spectral radius `radius`."""
    W = cell.weight_hh
    rho = np.max(np.abs(np.linalg.eigvals(np.asarray(W))))
    return _replace(cell, W * (radius / rho))


def _replace(cell, weight_hh):
    return eqx.tree_at(lambda c: c.weight_hh, cell, weight_hh)


def run(out: Path, quick: bool = False) -> dict:
    """Hand-written vs autodiff gradients, the effect of the truncation window, and
    gradient-flow reports for vanishing, exploding and gated cells."""
    jax.config.update("jax_enable_x64", True)
    t_start = time.perf_counter()
    length = 40 if quick else 100
    key = jax.random.PRNGKey(0)

    # 1. hand-written BPTT against autodiff, float64
    params, xs, ys = _elman_problem(key, vocab=8, hidden=16, length=length, scale=1.0)
    print(f"1. Elman RNN (sigmoid hidden, softmax output, cross-entropy), vocabulary 8, "
          f"hidden 16, T = {length}, float64")
    print(f"{'window':>8} | {'max |hand - autodiff|':>21} | {'hand ms':>8} | "
          f"{'autodiff ms':>11}")
    agreement = {}
    for window in (None, 1, 5, 10):
        hand = elman_grads(params, xs, ys, window=window)
        auto = elman_grads_autodiff(params, xs, ys, window=window)
        agreement[window] = _diff(hand, auto)
        th = _best_time(lambda: elman_grads(params, xs, ys, window=window))
        ta = _best_time(lambda: elman_grads_autodiff(params, xs, ys, window=window))
        label = "full" if window is None else str(window)
        print(f"{label:>8} | {agreement[window]:>21.2e} | {1e3 * th:>8.3f} | "
              f"{1e3 * ta:>11.3f}")

    # 2. how much of the gradient a window of k steps keeps
    windows = [k for k in (1, 2, 3, 5, 10, 20, 40, 70) if k < length]
    errors = {}
    print(f"\n2. Truncation: ||g_k - g_full|| / ||g_full|| for windows k (T = {length})")
    print(f"{'weights':>22} | " + " ".join(f"{f'k={k}':>8}" for k in windows))
    for scale in (1.0, 4.0):
        p, x_, y_ = _elman_problem(key, vocab=8, hidden=16, length=length, scale=scale)
        full = elman_grads(p, x_, y_)
        full = {n: np.asarray(v) for n, v in full.items()}
        err = [_norm({n: np.asarray(elman_grads(p, x_, y_, window=k)[n]) - full[n]
                      for n in full}) / _norm(full) for k in windows]
        name = f"N(0, {scale:g}^2/H)"
        errors[f"weights {name}"] = err
        print(f"{name:>22} | " + " ".join(f"{e:8.1e}" for e in err))
    fig = plot.window_effect(windows, errors)
    path_w = Path(out) / "bptt_window.png"
    fig.savefig(path_w, dpi=110)

    # 3. gradient flow over the whole sequence
    kx, k1, k2, k3, k4, k5, k6 = jax.random.split(jax.random.PRNGKey(1), 7)
    I, H = 4, 16
    seq = jax.random.normal(kx, (length, I))
    sigmoid = RNNCell(I, H, activation="sigmoid", key=k1)
    cells = {
        "sigmoid RNN, weights U(-0.025, 0.025)": jax.tree_util.tree_map(
            lambda a: 0.1 * a, sigmoid),
        "tanh RNN, default init": RNNCell(I, H, key=k2),
        "linear RNN, spectral radius 1.5": _with_radius(
            RNNCell(I, H, activation="identity", key=k3), 1.5),
        "ReLU RNN, W = 1.5 I": _replace(RNNCell(I, H, activation="relu", key=k4),
                                        1.5 * jnp.eye(H)),
        "LSTM, forget bias 1": LSTMCell(I, H, forget_bias=1.0, key=k5),
        "LSTM, forget bias 3": LSTMCell(I, H, forget_bias=3.0, key=k6),
    }
    reports = {}
    print(f"\n3. Gradient flow: ||dL/dh_t|| for a loss on the final hidden state, "
          f"T = {length}")
    print(f"{'cell':<38} | {'||g_0||/||g_T-1||':>17} | {'per step':>8} | verdict")
    for name, cell in cells.items():
        inputs = jnp.abs(seq) if "ReLU" in name else seq
        rep = gradient_flow(cell, inputs)
        reports[name] = rep
        # a norm that underflowed to zero: the ratio is below the smallest float
        ratio = (f"{rep.ratio:.3e}" if rep.ratio > 0 else
                 f"< {np.finfo(rep.norms.dtype).tiny:.0e}")
        print(f"{name:<38} | {ratio:>17} | {rep.rate:>8.4f} | {rep.verdict}")
    fig = plot.gradient_flow(reports, title=f"Gradient flow over {length} steps")
    path_g = Path(out) / "gradient_flow.png"
    fig.savefig(path_g, dpi=110)
    print(f"\nsaved {path_w} and {path_g}  (total {time.perf_counter() - t_start:.1f} s)")
    sig, lin, gated = (reports[k] for k in (
        "sigmoid RNN, weights U(-0.025, 0.025)", "linear RNN, spectral radius 1.5",
        "LSTM, forget bias 3"))
    targets = report([
        Target("max |hand - autodiff| over all windows", max(agreement.values()), "<=",
               1e-12),
        Target("sigmoid RNN gradient ratio ||g_0||/||g_T-1|| (vanishing)", sig.ratio,
               "<", 1e-3),
        Target("linear RNN (radius 1.5) gradient ratio (exploding)", lin.ratio, ">",
               1e3),
        Target("LSTM (forget bias 3) gradient ratio (healthy, above 1e-3)",
               gated.ratio, ">=", 1e-3),
    ])
    return {"agreement": agreement, "windows": windows, "errors": errors,
            "reports": reports, "targets": targets}
