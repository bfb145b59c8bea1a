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

from .. import plot
from . import Target, report
from ..data import digits
from ..nn import MLP, NFECounter, ODENet, ResNet, RKNet, count_params


def _programs(model, optimizer, options):
    """The two compiled programs of one architecture, shared by all training seeds:
    `train(params, opt_state, x, y) -> (params, opt_state, loss)` and
    `predict(params, x, tol) -> labels` (`tol`: the ODE-Net's rtol = atol, a traced
    value, so the tolerance sweep reuses the program). `options`: XLA compiler
    options (the quick run lowers the optimisation level: compile time dominates)."""
    static = eqx.filter(model, eqx.is_inexact_array, inverse=True)

    def train(params, opt_state, x, y):
        # No augmentation: on 8x8 digits even a one-pixel shift moves an eighth of
        # the image, and it cost every model several points of test error.
        def loss_fn(p):
            logits = eqx.combine(p, static)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(params, updates), opt_state, loss

    def predict(params, x, tol):
        m = eqx.combine(params, static)
        logits = m(x, rtol=tol, atol=tol) if isinstance(m, ODENet) else m(x)
        return jnp.argmax(logits, axis=-1)

    return {"train": jax.jit(train, compiler_options=options),
            "predict": jax.jit(predict, compiler_options=options)}


def _train(name, build, programs, optimizer, data, *, seed, epochs, batch,
           counter=None, tol=1e-3, measure=True):
    xtr, ytr, xte, yte = data
    model = build(jr.split(jr.PRNGKey(seed))[1])
    params = eqx.filter(model, eqx.is_inexact_array)
    opt_state = optimizer.init(params)
    memory = compile_s = 0.0
    if measure:  # compile ahead of time: XLA's memory analysis of the step, and the
        # executable the training runs (all seeds), so the step compiles once
        t = time.perf_counter()
        programs["train"] = programs["train"].lower(
            params, opt_state, xtr[:batch], ytr[:batch]).compile()
        compile_s = time.perf_counter() - t
        mem = programs["train"].memory_analysis()
        memory = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes
                     + mem.output_size_in_bytes)
    train, predict = programs["train"], programs["predict"]
    per_epoch = len(ytr) // batch
    rng = np.random.default_rng(seed)
    times, nfe_f, nfe_b = [], [], []
    for _ in range(epochs):
        perm = rng.permutation(len(ytr))
        if counter is not None:
            counter.reset()
        for i in range(per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            t = time.perf_counter()
            params, opt_state, loss = train(params, opt_state, xtr[idx], ytr[idx])
            jax.block_until_ready(loss)
            times.append(time.perf_counter() - t)
        if counter is not None:
            # backsolve: each backward evaluation also evaluates f once
            nfe_b.append(counter.backward / per_epoch)
            nfe_f.append((counter.forward - counter.backward) / per_epoch)
    model = eqx.combine(params, eqx.filter(model, eqx.is_inexact_array, inverse=True))
    error = float(np.mean(np.asarray(predict(params, xte, tol)) != yte)) * 100
    return {
        "name": name, "model": model, "params_tree": params, "error": error,
        "params": count_params(model), "memory": memory, "compile": compile_s,
        "step": float(np.median(times)), "nfe_f": nfe_f, "nfe_b": nfe_b,
    }


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
        "ODE-Net (dopri5, 1e-3)": lambda k: ODENet(channels, count_nfe=counter, key=k),
        "MLP (300 hidden)": lambda k: MLP(64, 300, key=k),
    }
    if quick:  # the two the targets compare; the others only add compile time
        builders = {k: builders[k] for k in ("ResNet (6 blocks)",
                                             "ODE-Net (dopri5, 1e-3)")}
    print(f"digits: {len(data[1])} training and {len(yte)} test images of 8x8; "
          f"{epochs} epochs, batch {batch}, AdamW (peak lr {lr}, cosine decay), "
          f"{channels} channels, {len(seeds)} seed(s)")
    if quick:
        print("quick run: ResNet and ODE-Net only, 10 training steps each, far too "
              "few to learn; the full run (without --quick) trains all four models "
              "12 epochs x 3 seeds")
    results = {}
    for name, build in builders.items():
        programs = _programs(build(jr.PRNGKey(0)), optimizer, options)
        runs = []
        for seed in seeds:
            r = _train(name, build, programs, optimizer, data, seed=seed,
                       epochs=epochs, batch=batch,
                       counter=counter if name.startswith("ODE") else None,
                       measure=seed == seeds[0])
            runs.append(r)
            compile_note = f", compile {r['compile']:.1f} s" if r["compile"] else ""
            print(f"  {name:<24} seed {seed}: test error {r['error']:5.2f} %  "
                  f"({r['step'] * 1e3:.0f} ms/step{compile_note})", flush=True)
        results[name] = runs
        if name.startswith("ODE"):
            ode_predict = programs["predict"]

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

    params = ode_runs[0]["params_tree"]
    tols = [1e-1, 1e-3, 1e-5] if quick else [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4, 1e-5]
    nfes, errs = [], []
    print("\nODE-Net test set (one batch of 360) against the tolerance used at test "
          "time:")
    print(f"| {'rtol = atol':>11} | {'forward NFE':>11} | {'test error %':>12} |")
    print(f"|{'-' * 13}|{'-' * 13}|{'-' * 14}|")
    for tol in tols:
        counter.reset()
        pred = np.asarray(ode_predict(params, xte, tol))
        nfes.append(counter.forward)
        errs.append(float(np.mean(pred != yte)) * 100)
        print(f"| {tol:>11.0e} | {nfes[-1]:>11d} | {errs[-1]:>12.2f} |")
    fig = plot.nfe_vs_tolerance(tols, nfes, errors=errs,
                                title="ODE-Net: depth (NFE) against tolerance")
    path = Path(out) / "odenet_nfe_tolerance.png"
    fig.savefig(path, dpi=120)
    print(f"saved {path}")
    resnet, odenet = results["ResNet (6 blocks)"][0], ode_runs[0]
    targets = [
        Target("ODE-Net parameters / ResNet parameters",
               odenet["params"] / resnet["params"], "<=", 0.3),
        Target("ODE-Net step memory / ResNet step memory (backsolve adjoint)",
               odenet["memory"] / resnet["memory"], "<=", 0.6),
        Target("forward NFE at rtol 1e-5 / at 1e-1 (tighter tolerance, deeper net)",
               nfes[-1] / nfes[0], ">=", 2.0),
    ]
    if not quick:  # ten training steps cannot learn: the errors count in full runs
        for name in ("ResNet (6 blocks)", "ODE-Net (dopri5, 1e-3)"):
            targets.append(Target(f"{name} mean test error %", float(np.mean(
                [r["error"] for r in results[name]])), "<=", 3.0))
    return {**results, "targets": report(targets)}
