"""`jaxode demo odenet`: ResNet, RK-Net, ODE-Net and MLP on the 8×8 digits.

Reproduces the comparison of Chen et al. 2018 (table 1) at small scale: test error
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

from .. import plot, train
from . import Target, report
from ..data import digits
from ..nn import MLP, NFECounter, ODENet, ResNet, RKNet, count_params

ODE_NET = "ODE-Net (dopri5, 1e-3)"


def _cross_entropy(model, batch):
    # No augmentation: on 8x8 digits even a one-pixel shift moves an eighth of the
    # image, and it cost every model several points of test error.
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def _predictor(model, options):
    """`predict(params, x, tol) -> labels`, compiled once per architecture and shared
    by all training seeds (`tol`: the ODE-Net's rtol = atol, a traced value, so the
    tolerance sweep reuses the program). `options`: XLA compiler options (the quick
    run lowers the optimisation level: compile time dominates)."""
    static = eqx.filter(model, eqx.is_inexact_array, inverse=True)

    def predict(params, x, tol):
        m = eqx.combine(params, static)
        logits = m(x, rtol=tol, atol=tol) if isinstance(m, ODENet) else m(x)
        return jnp.argmax(logits, axis=-1)

    return jax.jit(predict, compiler_options=options)


def _step_memory(model, optimizer, batch, options) -> int:
    """Bytes of device memory one compiled training step uses, by XLA's memory
    analysis (arguments, outputs and temporaries)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(
            lambda p: _cross_entropy(eqx.combine(p, static), batch))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(params, updates), opt_state, loss

    mem = jax.jit(step, compiler_options=options).lower(
        params, optimizer.init(params), batch).compile().memory_analysis()
    return int(mem.temp_size_in_bytes + mem.argument_size_in_bytes
               + mem.output_size_in_bytes)


class _StepLog:
    """A `train` callback: the wall time of every step (the first one compiles) and,
    with an NFE counter, the forward and backward NFE per batch of every epoch."""

    def __init__(self, per_epoch: int, counter: NFECounter | None):
        self.per_epoch, self.counter = per_epoch, counter
        self.times, self.nfe_f, self.nfe_b = [], [], []
        if counter is not None:
            counter.reset()
        self.last = time.perf_counter()

    def __call__(self, step, model, loss):
        now = time.perf_counter()
        self.times.append(now - self.last)
        if self.counter is not None and step % self.per_epoch == 0:
            # backsolve: each backward evaluation also evaluates f once
            self.nfe_b.append(self.counter.backward / self.per_epoch)
            self.nfe_f.append((self.counter.forward - self.counter.backward)
                              / self.per_epoch)
            self.counter.reset()
        self.last = time.perf_counter()


def _train(name, build, predict, optimizer, data, *, seed, epochs, batch, options,
           counter=None, tol=1e-3, measure=True):
    xtr, ytr, xte, yte = data
    train_key, model_key = jr.split(jr.PRNGKey(seed))
    model = build(model_key)
    memory = _step_memory(model, optimizer, (xtr[:batch], ytr[:batch]),
                          options) if measure else 0
    log = _StepLog(len(ytr) // batch, counter)
    model, _ = train(model, _cross_entropy, (xtr, ytr), optimizer=optimizer,
                     steps=epochs * log.per_epoch, batch_size=batch, key=train_key,
                     callback=log, progress=False)
    step = float(np.median(log.times[1:] or log.times))
    params = eqx.filter(model, eqx.is_inexact_array)
    error = float(np.mean(np.asarray(predict(params, xte, tol)) != yte)) * 100
    return {
        "name": name, "model": model, "params_tree": params, "error": error,
        "params": count_params(model), "memory": memory, "step": step,
        "compile": max(log.times[0] - step, 0.0) if measure else 0.0,
        "nfe_f": log.nfe_f, "nfe_b": log.nfe_b,
    }


def _train_all(builders, optimizer, data, *, seeds, epochs, batch, options, counter):
    """Every architecture for every seed, a line each. **Returns:** `(results,
    predictors)`: name -> the runs, and name -> the compiled `predict`."""
    results, predictors = {}, {}
    for name, build in builders.items():
        predictors[name] = _predictor(build(jr.PRNGKey(0)), options)
        runs = []
        for seed in seeds:
            r = _train(name, build, predictors[name], optimizer, data, seed=seed,
                       epochs=epochs, batch=batch, options=options,
                       counter=counter if name == ODE_NET else None,
                       measure=seed == seeds[0])
            runs.append(r)
            compile_note = f", compile {r['compile']:.1f} s" if r["compile"] else ""
            print(f"  {name:<24} seed {seed}: test error {r['error']:5.2f} %  "
                  f"({r['step'] * 1e3:.0f} ms/step{compile_note})", flush=True)
        results[name] = runs
    return results, predictors


def _print_table(results) -> None:
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


def _save(fig, out: Path, name: str) -> None:
    path = Path(out) / name
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


def _tolerance_sweep(out, predict, params, data, counter, quick) -> list[int]:
    """The trained ODE-Net's forward NFE and test error against the tolerance used
    at test time: a table and a figure. **Returns:** the NFE per tolerance."""
    _, _, xte, yte = data
    tols = [1e-1, 1e-3, 1e-5] if quick else [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4, 1e-5]
    nfes, errs = [], []
    print("\nODE-Net test set (one batch of 360) against the tolerance used at test "
          "time:")
    print(f"| {'rtol = atol':>11} | {'forward NFE':>11} | {'test error %':>12} |")
    print(f"|{'-' * 13}|{'-' * 13}|{'-' * 14}|")
    for tol in tols:
        counter.reset()
        pred = np.asarray(predict(params, xte, tol))
        nfes.append(counter.forward)
        errs.append(float(np.mean(pred != yte)) * 100)
        print(f"| {tol:>11.0e} | {nfes[-1]:>11d} | {errs[-1]:>12.2f} |")
    _save(plot.nfe_vs_tolerance(tols, nfes, errors=errs,
                                title="ODE-Net: depth (NFE) against tolerance"),
          out, "odenet_nfe_tolerance.png")
    return nfes


def _targets(results, nfes, quick) -> list[Target]:
    resnet, odenet = results["ResNet (6 blocks)"][0], results[ODE_NET][0]
    targets = [
        Target("ODE-Net parameters / ResNet parameters",
               odenet["params"] / resnet["params"], "<=", 0.3),
        Target("ODE-Net step memory / ResNet step memory (backsolve adjoint)",
               odenet["memory"] / resnet["memory"], "<=", 0.6),
        Target("forward NFE at rtol 1e-5 / at 1e-1 (tighter tolerance, deeper net)",
               nfes[-1] / nfes[0], ">=", 2.0),
    ]
    if not quick:  # ten training steps cannot learn: the errors count in full runs
        for name in ("ResNet (6 blocks)", ODE_NET):
            targets.append(Target(f"{name} mean test error %", float(np.mean(
                [r["error"] for r in results[name]])), "<=", 3.0))
    return targets


def run(out: Path, quick: bool = False, *, seeds: tuple[int, ...] | None = None,
        epochs: int | None = None) -> dict:
    """Train the four classifiers on digits, print the comparison table, save the
    NFE-vs-epoch and NFE-vs-tolerance figures. `seeds` and `epochs` override the
    defaults (three seeds and 12 epochs of the 1437 training images; quick: the
    ResNet and the ODE-Net only, one seed, two epochs of 320 images, 16 instead of
    32 channels, and XLA's optimisation level lowered, since compiling dominates
    such a short run)."""
    data = digits()
    xtr, ytr, xte, yte = data
    seeds = seeds if seeds is not None else ((0,) if quick else (0, 1, 2))
    epochs = epochs if epochs is not None else (2 if quick else 12)
    if quick:  # 5 steps per epoch
        data = (xtr[:320], ytr[:320], xte, yte)
    batch, lr, channels = 64, 3e-3, (16 if quick else 32)
    options = {"xla_backend_optimization_level": 0} if quick else None
    per_epoch = len(data[1]) // batch
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, per_epoch,
                                                  epochs * per_epoch)
    optimizer = optax.adamw(schedule, weight_decay=1e-4)
    counter = NFECounter()  # the ODE-Net's forward/backward evaluation counts
    builders = {
        "ResNet (6 blocks)": lambda k: ResNet(channels, key=k),
        "RK-Net (RK4, 2 steps)": lambda k: RKNet(channels, steps=2, key=k),
        ODE_NET: lambda k: ODENet(channels, count_nfe=counter, key=k),
        "MLP (300 hidden)": lambda k: MLP(64, 300, key=k),
    }
    if quick:  # the two the targets compare; the others only add compile time
        builders = {k: builders[k] for k in ("ResNet (6 blocks)", ODE_NET)}
    print(f"digits: {len(data[1])} training and {len(yte)} test images of 8x8; "
          f"{epochs} epochs, batch {batch}, AdamW (peak lr {lr}, cosine decay), "
          f"{channels} channels, {len(seeds)} seed(s)")
    if quick:
        print("quick run: ResNet and ODE-Net only, 10 training steps each, far too "
              "few to learn; the full run (without --quick) trains all four models "
              "12 epochs x 3 seeds")
    results, predictors = _train_all(builders, optimizer, data, seeds=seeds,
                                     epochs=epochs, batch=batch, options=options,
                                     counter=counter)
    _print_table(results)
    ode_runs = results[ODE_NET]
    _save(plot.nfe_curves(
        {"forward NFE": ode_runs[0]["nfe_f"], "backward NFE": ode_runs[0]["nfe_b"]},
        title="ODE-Net on digits: evaluations per batch during training"),
        out, "odenet_nfe_epoch.png")
    nfes = _tolerance_sweep(out, predictors[ODE_NET], ode_runs[0]["params_tree"],
                            data, counter, quick)
    return {**results, "targets": report(_targets(results, nfes, quick))}
