"""`jaxode demo sine`: an Elman RNN and an LSTM forecast a noisy sine series."""

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import forecast, plot, train
from . import Target, report
from ..data import noisy_sine, sliding_windows
from ..nn import Forecaster, LSTMCell, RNNCell

WINDOW, HIDDEN, SPLIT, HORIZON = 10, 12, 320, 80
TARGET_SINGLE, TARGET_ROLLOUT = 0.08, 0.3


def _mse(model, batch):
    xs, ys = batch  # xs: (batch, window, 1) -> time-major for the model
    return jnp.mean((model(jnp.swapaxes(xs, 0, 1)) - ys) ** 2)


def fit_and_score(cell, y, *, steps: int, key, lr: float = 1e-2) -> dict:
    """Train a `Forecaster` around `cell` on `y[:SPLIT]`; score it on `y[SPLIT:]`."""
    k_model, k_train = jax.random.split(key)
    model = Forecaster(cell, window=WINDOW, key=k_model)
    xs, ys = sliding_windows(y[:SPLIT], WINDOW)
    t0 = time.perf_counter()
    model, history = train(
        model, _mse, (xs, ys), optimizer=optax.adam(
            optax.cosine_decay_schedule(lr, steps, alpha=0.05)),
        steps=steps, key=k_train, progress=False)
    seconds = time.perf_counter() - t0
    # one step ahead: every test value predicted from the true 10 values before it
    test_xs, test_ys = sliding_windows(y[SPLIT - WINDOW:], WINDOW)
    single = np.asarray(model(jnp.swapaxes(jnp.asarray(test_xs), 0, 1)))
    # autoregressive: 80 steps from the training part alone, one compiled scan
    rollout = np.asarray(forecast(model, y[:SPLIT], HORIZON))
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(model))
    return {
        "model": model, "history": history, "seconds": seconds, "params": n_params,
        "single": single, "rollout": rollout,
        "rmse_single": float(np.sqrt(np.mean((single - test_ys) ** 2))),
        "rmse_rollout": float(np.sqrt(np.mean((rollout - y[SPLIT:]) ** 2))),
    }


def run(out: Path, quick: bool = False) -> dict:
    """Train an Elman RNN (tanh) and an LSTM, hidden size 12, on windows of 10 of the
    first 80 % of 400 noisy sine points; report single-step and 80-step autoregressive
    test RMSE; save the loss curves and predictions."""
    t_start = time.perf_counter()
    steps = 700 if quick else 1000
    x, y = noisy_sine(400, 36.0, 0.2, seed=0)
    y = y[:, None].astype(np.float32)
    key_rnn, key_lstm = jax.random.split(jax.random.PRNGKey(0))
    results = {
        "Elman RNN": fit_and_score(RNNCell(1, HIDDEN, key=key_rnn), y, steps=steps,
                                   key=key_rnn),
        "LSTM": fit_and_score(LSTMCell(1, HIDDEN, key=key_lstm), y, steps=steps,
                              key=key_lstm),
    }
    noise_floor = 0.2 / np.sqrt(12)
    print(f"Noisy sine: 400 points on [0, 36], y = sin(x) + 0.2*U(0,1); train on the "
          f"first {SPLIT}, windows of {WINDOW}, hidden size {HIDDEN}, Adam, {steps} "
          f"full-batch steps. Noise std alone: {noise_floor:.3f}.")
    print(f"{'model':<10} | {'params':>6} | {'train s':>7} | {'final loss':>10} | "
          f"{'1-step RMSE':>11} | {f'{HORIZON}-step RMSE':>12}")
    print("-" * 73)
    for name, r in results.items():
        print(f"{name:<10} | {r['params']:>6} | {r['seconds']:>7.1f} | "
              f"{r['history'].loss[-1]:>10.5f} | {r['rmse_single']:>11.4f} | "
              f"{r['rmse_rollout']:>12.4f}")
    targets = report([
        *(Target(f"{name} 1-step test RMSE", r["rmse_single"], "<=", TARGET_SINGLE)
          for name, r in results.items()),
        Target(f"LSTM {HORIZON}-step autoregressive RMSE",
               results["LSTM"]["rmse_rollout"], "<=", TARGET_ROLLOUT),
    ])

    xt = x[SPLIT:]
    fig = plot.forecasts(
        x, y[:, 0], SPLIT,
        single={n: (xt, r["single"]) for n, r in results.items()},
        rollout={n: (xt, r["rollout"]) for n, r in results.items()},
        losses={n: r["history"].loss for n, r in results.items()},
        title="Noisy sine: Elman RNN and LSTM forecasters (test part right of the line)",
    )
    path = Path(out) / "sine.png"
    fig.savefig(path, dpi=110)
    print(f"saved {path}  (total {time.perf_counter() - t_start:.1f} s)")
    return {**results, "targets": targets}
