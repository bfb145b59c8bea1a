"""`jaxode demo odenet`: ResNet, RK-Net, ODE-Net and MLP on the 8×8 digits.

Reproduces the seed's comparison (Chen et al. 2018, table 1) at small scale: test error
(mean over training seeds), parameters, peak memory of one compiled training step,
time per step, and for the ODE-Net the forward and backward numbers of function
evaluations (NFE); then the NFE over training and the NFE against the tolerance.
"""

import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from .. import plot
from ..data import digits
from ..nn import MLP, NFECounter, ODENet, ResNet, RKNet, count_params


def _compile(step, *args) -> tuple[int, float]:
    """Compile the step once: XLA's memory analysis of the executable (temporary +
    argument + output bytes) and the compile time in seconds."""
    t = time.perf_counter()
    compiled = eqx.filter_jit(step).lower(*args).compile().compiled
    seconds = time.perf_counter() - t
    mem = compiled.memory_analysis()
    return int(mem.temp_size_in_bytes + mem.argument_size_in_bytes
               + mem.output_size_in_bytes), seconds


def _make_step(optimizer):
    # No augmentation: on 8x8 digits even a one-pixel shift moves an eighth of the
    # image, and it cost the models several points of test error.
    def step(model, opt_state, x, y):
        def loss_fn(m):
            logits = m(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(model, updates), opt_state, loss

    return step


@eqx.filter_jit
def _predict(model, x):
    return jnp.argmax(model(x), axis=-1)


def _error(model, x, y) -> float:
    return float(np.mean(np.asarray(_predict(model, x)) != y)) * 100


def _train(name, build, data, *, seed, epochs, batch, lr, counter=None,
           subset=None, measure=True):
    xtr, ytr, xte, yte = data
    if subset is not None:
        xtr, ytr = xtr[:subset], ytr[:subset]
    key = jr.PRNGKey(seed)
    key, mkey = jr.split(key)
    model = build(mkey)
    per_epoch = len(ytr) // batch
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, per_epoch,
                                                  epochs * per_epoch)
    optimizer = optax.adamw(schedule, weight_decay=1e-4)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    step_fn = _make_step(optimizer)
    step = eqx.filter_jit(step_fn)
    rng = np.random.default_rng(seed)
    x0, y0 = jnp.asarray(xtr[:batch]), jnp.asarray(ytr[:batch])
    memory, compile_s = (_compile(step_fn, model, opt_state, x0, y0) if measure
                         else (0, 0.0))
    times, nfe_f, nfe_b = [], [], []
    for _ in range(epochs):
        perm = rng.permutation(len(ytr))
        if counter is not None:
            counter.reset()
        for i in range(per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            t = time.perf_counter()
            model, opt_state, loss = step(model, opt_state, xtr[idx], ytr[idx])
            jax.block_until_ready(loss)
            times.append(time.perf_counter() - t)
        if counter is not None:
            # backsolve: each backward evaluation also evaluates f once
            nfe_b.append(counter.backward / per_epoch)
            nfe_f.append((counter.forward - counter.backward) / per_epoch)
    return {
        "name": name, "model": model, "error": _error(model, xte, yte),
        "params": count_params(model), "memory": memory, "compile": compile_s,
        "step": float(np.median(times)), "nfe_f": nfe_f, "nfe_b": nfe_b,
    }


def run(out: Path, quick: bool = False, *, seeds: tuple[int, ...] | None = None,
        epochs: int | None = None) -> dict:
    """Train the four classifiers on digits, print the comparison table, save the
    NFE-vs-epoch and NFE-vs-tolerance figures. `seeds` and `epochs` override the
    defaults (three seeds and 30 epochs; quick: one seed, three short epochs)."""
    data = digits()
    xtr, ytr, xte, yte = data
    seeds = seeds if seeds is not None else ((0,) if quick else (0, 1, 2))
    epochs = epochs if epochs is not None else (3 if quick else 30)
    subset = 640 if quick else None  # quick: 10 steps per epoch
    batch, lr, channels = 64, 3e-3, 32
    counter = NFECounter()  # shared: one compiled ODE-Net step for all seeds
    builders = {
        "ResNet (6 blocks)": lambda k: ResNet(channels, key=k),
        "RK-Net (RK4, 2 steps)": lambda k: RKNet(channels, steps=2, key=k),
        "ODE-Net (dopri5, 1e-3)": lambda k: ODENet(channels, count_nfe=counter, key=k),
        "MLP (300 hidden)": lambda k: MLP(64, 300, key=k),
    }
    print(f"digits: {subset or len(ytr)} training and {len(yte)} test images of "
          f"8x8; {epochs} epochs, batch {batch}, AdamW (peak lr {lr}), "
          f"{len(seeds)} seed(s)")
    if quick:
        print("quick run: 30 training steps per model, far too few to learn; the "
              "full run (without --quick) trains 30 epochs x 3 seeds")
    results = {}
    for name, build in builders.items():
        runs = []
        for seed in seeds:
            r = _train(name, build, data, seed=seed, epochs=epochs, batch=batch, lr=lr,
                       counter=counter if name.startswith("ODE") else None,
                       subset=subset, measure=seed == seeds[0])
            runs.append(r)
            compile_note = f", compile {r['compile']:.1f} s" if r["compile"] else ""
            print(f"  {name:<24} seed {seed}: test error {r['error']:5.2f} %  "
                  f"({r['step'] * 1e3:.0f} ms/step{compile_note})", flush=True)
        results[name] = runs

    header = (f"| {'model':<24} | {'test error %':>13} | {'params':>7} | "
              f"{'step memory':>11} | {'ms/step':>7} | {'NFE fwd':>7} | "
              f"{'NFE bwd':>7} |")
    print()
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, runs in results.items():
        errs = np.array([r["error"] for r in runs])
        err = f"{errs.mean():.2f}" + (f" ± {errs.std(ddof=1):.2f}" if len(errs) > 1
                                      else "")
        r0 = runs[0]
        nf = f"{np.mean([r['nfe_f'][-1] for r in runs]):.1f}" if r0["nfe_f"] else "-"
        nb = f"{np.mean([r['nfe_b'][-1] for r in runs]):.1f}" if r0["nfe_b"] else "-"
        print(f"| {name:<24} | {err:>13} | {r0['params']:>7,} | "
              f"{r0['memory'] / 2**20:>8.2f} MB | {r0['step'] * 1e3:>7.0f} | "
              f"{nf:>7} | {nb:>7} |")
    print("(NFE per training batch in the last epoch, mean over seeds; the RK-Net "
          "always makes 8 evaluations, the ResNet 6 block calls.)")

    ode_runs = results["ODE-Net (dopri5, 1e-3)"]
    fig = plot.nfe_curves(
        {"forward NFE": ode_runs[0]["nfe_f"], "backward NFE": ode_runs[0]["nfe_b"]},
        title="ODE-Net on digits: evaluations per batch during training")
    path = Path(out) / "odenet_nfe_epoch.png"
    fig.savefig(path, dpi=120)
    print(f"saved {path}")

    model = ode_runs[0]["model"]
    tols = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4, 1e-5]
    predict = eqx.filter_jit(lambda m, x, tol: jnp.argmax(m(x, rtol=tol, atol=tol), -1))
    nfes, errs = [], []
    print("\nODE-Net test set (one batch of 360) against the tolerance used at test "
          "time:")
    print(f"| {'rtol = atol':>11} | {'forward NFE':>11} | {'test error %':>12} |")
    print(f"|{'-' * 13}|{'-' * 13}|{'-' * 14}|")
    for tol in tols:
        counter.reset()
        pred = np.asarray(predict(model, jnp.asarray(xte), tol))
        nfes.append(counter.forward)
        errs.append(float(np.mean(pred != yte)) * 100)
        print(f"| {tol:>11.0e} | {nfes[-1]:>11d} | {errs[-1]:>12.2f} |")
    fig = plot.nfe_vs_tolerance(tols, nfes, errors=errs,
                                title="ODE-Net: depth (NFE) against tolerance")
    path = Path(out) / "odenet_nfe_tolerance.png"
    fig.savefig(path, dpi=120)
    print(f"saved {path}")
    return results
