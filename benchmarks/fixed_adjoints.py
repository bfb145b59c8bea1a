"""Gradient time and memory of a fixed-step solve with each adjoint, 1k to 16k steps.

A 64-d tanh vector field `f(t, y, W) = tanh(W y)`, float32, integrated over [0, 1] by
jaxode's RK4 with `dt = 1/steps`; `jax.grad` of the squared final state with respect
to `W`, compiled once per step count. Memory is XLA's analysis of the compiled
gradient (temporary buffers); time is the best of alternating rounds. diffrax's
RecursiveCheckpointAdjoint on the same tableau at constant step is the peer for the
memory growth of checkpointing.

    python benchmarks/fixed_adjoints.py [--quick]
"""

import argparse
import time

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr

import jaxode as jo
from _diffrax_rk4 import DiffraxRK4
from _timing import block

ADJOINTS = ["direct", "recursive", "backsolve"]


def _problem():
    W = jr.normal(jr.PRNGKey(0), (64, 64), jnp.float32) / 8
    y0 = jr.normal(jr.PRNGKey(1), (64,), jnp.float32)
    return W, y0


def field(t, y, W):
    return jnp.tanh(W @ y)


def jaxode_grad(adjoint, steps):
    ts = jnp.array([0.0, 1.0], jnp.float32)
    _, y0 = _problem()

    def loss(W):
        sol = jo.solve(field, y0, ts, W, solver="rk4", dt=1.0 / steps, adjoint=adjoint)
        return jnp.sum(sol.ys[-1] ** 2)

    return jax.jit(jax.grad(loss))


def diffrax_grad(steps):
    _, y0 = _problem()

    def loss(W):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), DiffraxRK4(), 0.0, 1.0, 1.0 / steps, y0, args=W,
            stepsize_controller=diffrax.ConstantStepSize(), max_steps=steps + 1,
            adjoint=diffrax.RecursiveCheckpointAdjoint())
        return jnp.sum(sol.ys[-1] ** 2)

    return jax.jit(jax.grad(loss))


def measure(fn, W, rounds):
    t0 = time.perf_counter()
    compiled = fn.lower(W).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis().temp_size_in_bytes
    block(compiled(W))
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        block(compiled(W))
        best = min(best, time.perf_counter() - t0)
    return mem, best, compile_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="250 and 1000 steps")
    ns = parser.parse_args()
    steps_list = [250, 1000] if ns.quick else [1000, 4000, 16000]
    rounds = 2 if ns.quick else 5
    W, _ = _problem()
    table = {}
    print(f"{'adjoint':<22}" + "".join(f"{s:>26,d}" for s in steps_list)
          + "   (temp memory; best grad time; compile s)")
    for name in ADJOINTS + ["diffrax recursive"]:
        cells, row = [], []
        for steps in steps_list:
            fn = diffrax_grad(steps) if name.startswith("diffrax") else jaxode_grad(
                name, steps)
            mem, best, comp = measure(fn, W, rounds)
            row.append((mem, best))
            cells.append(f"{mem / 2**20:7.2f} MB {1e3 * best:7.1f} ms ({comp:3.0f}s)")
        table[name] = row
        print(f"{name:<22}" + "".join(f"{c:>26}" for c in cells), flush=True)
    g = {a: table[a][-1][0] / table[a][0][0] for a in table}
    print(f"\nmemory growth {steps_list[0]:,} -> {steps_list[-1]:,} steps: "
          + ", ".join(f"{a} {v:.2f}x" for a, v in g.items()))
    print(f"targets: recursive <= 4x {'met' if g['recursive'] <= 4 else 'MISSED'}; "
          f"backsolve <= 1.2x {'met' if g['backsolve'] <= 1.2 else 'MISSED'}")
    print("\n| benchmark | jaxode | peer | ratio |\n|---|---|---|---|")
    last = steps_list[-1]
    for a in ADJOINTS:
        (m0, _), (m1, t1) = table[a][0], table[a][-1]
        d1 = table["direct"][-1][1]
        x1 = table["diffrax recursive"][-1][1]
        print(f"| fixed-step grad of the final state, RK4 64-d tanh f32, adjoint={a}, {steps_list[0]:,} -> "
              f"{last:,} steps | {m0 / 2**20:.2f} -> {m1 / 2**20:.2f} MB; "
              f"{1e3 * t1:.1f} ms at {last:,} | direct {1e3 * d1:.1f} ms; diffrax "
              f"RecursiveCheckpointAdjoint {1e3 * x1:.1f} ms, "
              f"{g['diffrax recursive']:.2f}x memory growth | "
              f"memory growth {g[a]:.2f}x; {t1 / d1:.2f}x direct's time |")


if __name__ == "__main__":
    main()
