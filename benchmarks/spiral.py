"""The classic spiral fit: jaxode (NeuralODE) against torchdiffeq, in one process.

True dynamics `dy/dt = (y³) A`, `A = [[-0.1, 2], [-2, -0.1]]`, `y0 = [2, 0]`, 1000
points on `[0, 25]`. Model `dy/dt = MLP(y³)` (2 -> 50 -> 2, tanh), trained by RMSprop
(lr 1e-3) on minibatches of 20 windows of 10 steps, each window one dopri5 solve with
rtol 1e-7, atol 1e-9, float32 on both sides. Sides: jaxode backprop through the solver
("recursive") against torchdiffeq `odeint`, and jaxode "backsolve" against
`odeint_adjoint`. Both start from the same weights; the minibatch is drawn inside the
jitted jaxode step, on the host for torch. Timing: the first step (tracing and
compilation) is timed in a fresh process, for jaxode and for the same loop written
with raw diffrax; then blocks of iterations timed alternately, min over blocks.

    python benchmarks/spiral.py [--quick] [--threads N]
"""

import argparse
import json
import os
import subprocess
import sys
import time


def _threads_from_argv() -> int:
    """`--threads N` (default 1), read before jax is imported: XLA's CPU thread pool
    is fixed at import, and both sides must run on the same number of threads."""
    if "--threads" in sys.argv:
        return int(sys.argv[sys.argv.index("--threads") + 1])
    return 1


THREADS = _threads_from_argv()
if THREADS == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false").strip()

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jaxode as jo  # noqa: E402
from jaxode.nn import NeuralODE  # noqa: E402

A = np.array([[-0.1, 2.0], [-2.0, -0.1]], dtype=np.float32)
N_POINTS, T_END, BATCH, WINDOW = 1000, 25.0, 20, 10
RTOL, ATOL = 1e-7, 1e-9


def truth() -> tuple[np.ndarray, np.ndarray]:
    ts = np.linspace(0.0, T_END, N_POINTS).astype(np.float32)
    A_ = jnp.asarray(A)
    sol = jo.solve(lambda t, y, a: (y ** 3) @ a, jnp.array([[2.0, 0.0]]), ts, A_,
                   solver="dopri5", rtol=RTOL, atol=ATOL, max_steps=100_000)
    return ts, np.asarray(sol.ys)  # (1000, 1, 2)


class Field(eqx.Module):
    l1: eqx.nn.Linear
    l2: eqx.nn.Linear

    def __call__(self, t, y, args):
        h = jnp.tanh(y ** 3 @ self.l1.weight.T + self.l1.bias)
        return h @ self.l2.weight.T + self.l2.bias


def jax_side(adjoint, weights, ts, ys):
    key = jr.PRNGKey(0)
    k1, k2 = jr.split(key)
    field = Field(eqx.nn.Linear(2, 50, key=k1), eqx.nn.Linear(50, 2, key=k2))
    w1, b1, w2, b2 = (jnp.asarray(w) for w in weights)
    field = eqx.tree_at(lambda f: (f.l1.weight, f.l1.bias, f.l2.weight, f.l2.bias),
                        field, (w1, b1, w2, b2))
    model = NeuralODE(field, t1=float(ts[WINDOW - 1]), solver="dopri5", rtol=RTOL,
                      atol=ATOL, adjoint=adjoint, max_steps=4096, count_nfe=False)
    opt = optax.rmsprop(1e-3, decay=0.99, eps=1e-8, eps_in_sqrt=False)  # = torch
    opt_state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    ts_j, ys_j = jnp.asarray(ts), jnp.asarray(ys)
    batch_t = ts_j[:WINDOW]

    @eqx.filter_jit
    def step(model, opt_state, key):
        s = jr.choice(key, N_POINTS - WINDOW, (BATCH,), replace=False)
        y0 = ys_j[s, 0]  # (20, 2)
        target = ys_j[s[None, :] + jnp.arange(WINDOW)[:, None], 0]  # (10, 20, 2)

        def loss_fn(m):
            return jnp.mean(jnp.abs(m(y0, batch_t) - target))

        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        updates, opt_state = opt.update(grads, opt_state)
        return eqx.apply_updates(model, updates), opt_state, loss

    state = {"model": model, "opt": opt_state, "key": jr.PRNGKey(1)}

    def run(iters):
        for _ in range(iters):
            state["key"], sub = jr.split(state["key"])
            state["model"], state["opt"], loss = step(state["model"], state["opt"], sub)
        return float(loss)

    t = time.perf_counter()
    run(1)
    compile_s = time.perf_counter() - t
    return run, compile_s


def raw_diffrax_first_step(adjoint, ts, ys) -> float:
    """Seconds to the end of the first training step of the same loop written with
    raw diffrax (no jaxode): the reference for jaxode's compile time."""
    import diffrax

    k1, k2 = jr.split(jr.PRNGKey(0))
    field = Field(eqx.nn.Linear(2, 50, key=k1), eqx.nn.Linear(50, 2, key=k2))
    opt = optax.rmsprop(1e-3, decay=0.99, eps=1e-8, eps_in_sqrt=False)
    opt_state = opt.init(eqx.filter(field, eqx.is_inexact_array))
    ts_j, ys_j = jnp.asarray(ts), jnp.asarray(ys)
    batch_t = ts_j[:WINDOW]
    adj = (diffrax.RecursiveCheckpointAdjoint() if adjoint == "recursive"
           else diffrax.BacksolveAdjoint())

    @eqx.filter_jit
    def step(field, opt_state, key):
        s = jr.choice(key, N_POINTS - WINDOW, (BATCH,), replace=False)
        y0 = ys_j[s, 0]
        target = ys_j[s[None, :] + jnp.arange(WINDOW)[:, None], 0]

        def loss_fn(f):
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(lambda t, y, a: a(t, y)), diffrax.Dopri5(), batch_t[0],
                batch_t[-1], None, y0, f, saveat=diffrax.SaveAt(ts=batch_t),
                stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
                adjoint=adj, max_steps=4096)
            return jnp.mean(jnp.abs(sol.ys - target))

        loss, grads = eqx.filter_value_and_grad(loss_fn)(field)
        updates, opt_state = opt.update(grads, opt_state)
        return eqx.apply_updates(field, updates), opt_state, loss

    t = time.perf_counter()
    jax.block_until_ready(step(field, opt_state, jr.PRNGKey(1)))
    return time.perf_counter() - t


def torch_side(adjoint, weights, ts, ys):
    import torch
    from torchdiffeq import odeint, odeint_adjoint

    class Func(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(2, 50), torch.nn.Tanh(),
                                           torch.nn.Linear(50, 2))

        def forward(self, t, y):
            return self.net(y ** 3)

    func = Func()
    with torch.no_grad():
        for p, w in zip([func.net[0].weight, func.net[0].bias, func.net[2].weight,
                         func.net[2].bias], weights):
            p.copy_(torch.from_numpy(np.asarray(w)))
    solve = odeint_adjoint if adjoint else odeint
    opt = torch.optim.RMSprop(func.parameters(), lr=1e-3)
    ts_t, ys_t = torch.from_numpy(ts.copy()), torch.from_numpy(ys.copy())
    batch_t = ts_t[:WINDOW]
    rng = np.random.default_rng(1)

    def run(iters):
        for _ in range(iters):
            s = torch.from_numpy(rng.choice(N_POINTS - WINDOW, BATCH, replace=False))
            y0 = ys_t[s]  # (20, 1, 2)
            target = torch.stack([ys_t[s + i] for i in range(WINDOW)], dim=0)
            opt.zero_grad()
            pred = solve(func, y0, batch_t, rtol=RTOL, atol=ATOL, method="dopri5")
            loss = torch.mean(torch.abs(pred - target))
            loss.backward()
            opt.step()
        return float(loss.detach())

    return run


def _initial_weights() -> list:
    import torch

    torch.manual_seed(0)
    init = torch.nn.Sequential(torch.nn.Linear(2, 50), torch.nn.Linear(50, 2))
    return [p.detach().numpy().copy() for p in (init[0].weight, init[0].bias,
                                                init[1].weight, init[1].bias)]


def first_step_in_fresh_process(side: str, adjoint: str, threads: int) -> float:
    """The first training step (tracing + compilation + one run) as a new user meets
    it: in a new process, after the data were generated."""
    cmd = [sys.executable, __file__, "--threads", str(threads), "--first-step", side,
           adjoint]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for both sides (1: XLA and torch single-threaded)")
    parser.add_argument("--first-step", nargs=2, metavar=("SIDE", "ADJOINT"),
                        help=argparse.SUPPRESS)  # child: time one first step
    ns = parser.parse_args()
    if ns.first_step:
        side, adjoint = ns.first_step
        ts, ys = truth()
        if side == "raw":
            seconds = raw_diffrax_first_step(adjoint, ts, ys)
        else:
            seconds = jax_side(adjoint, _initial_weights(), ts, ys)[1]
        print(json.dumps({"seconds": seconds}))
        return
    import torch

    threads = ns.threads
    torch.set_num_threads(threads)
    iters, blocks = (5, 2) if ns.quick else (20, 5)

    ts, ys = truth()
    weights = _initial_weights()
    pairs = [("backprop through solver", "recursive", False, "odeint"),
             ("continuous adjoint", "backsolve", True, "odeint_adjoint")]
    print(f"spiral fit: dopri5 rtol={RTOL} atol={ATOL}, float32, batch {BATCH} "
          f"windows of {WINDOW} steps, {threads} threads; "
          f"{blocks} alternating blocks of {iters} iterations")
    rows = []
    for label, jadj, tadj, tname in pairs:
        jrun, compile_s = jax_side(jadj, weights, ts, ys)
        trun = torch_side(tadj, weights, ts, ys)
        trun(1)  # warm-up
        jt, tt = [], []
        for _ in range(blocks):
            t = time.perf_counter()
            jloss = jrun(iters)
            jt.append((time.perf_counter() - t) / iters)
            t = time.perf_counter()
            tloss = trun(iters)
            tt.append((time.perf_counter() - t) / iters)
        j, tm = min(jt), min(tt)
        compile_s = first_step_in_fresh_process("jaxode", jadj, threads)
        raw_s = first_step_in_fresh_process("raw", jadj, threads)
        print(f"{label}: jaxode ({jadj}) {j * 1e3:.2f} ms/iter (first step in a new "
              f"process {compile_s:.1f} s; the same step in raw diffrax {raw_s:.1f} s, "
              f"loss {jloss:.4f}); torchdiffeq {tname} {tm * 1e3:.2f} ms/iter (loss "
              f"{tloss:.4f}); ratio {tm / j:.1f}x", flush=True)
        rows.append((f"spiral, {label} ({jadj} vs {tname})", j, tm, compile_s, raw_s))
    print("\n| benchmark | jaxode | peer | ratio |")
    print("|---|---|---|---|")
    for name, j, tm, c, raw_s in rows:
        print(f"| {name}, per iteration | {j * 1e3:.2f} ms (first step with compile "
              f"{c:.1f} s; raw diffrax {raw_s:.1f} s) | {tm * 1e3:.2f} ms | "
              f"{tm / j:.1f}x |")


if __name__ == "__main__":
    main()
