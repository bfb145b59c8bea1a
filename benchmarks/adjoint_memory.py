"""Peak memory of a gradient through a NeuralODE solve as the number of steps grows.

The same vector field (an MLP applied to 64 rows of 16 features, float32) is integrated
over [0, 1] with a constant step (`diffrax.Euler`, so the step count is exact), and
`jax.grad` of a loss of the final state is compiled for 1k, 4k and 16k steps with the
three adjoints. Memory is XLA's own analysis of the compiled executable: temporary
buffers plus arguments plus outputs. Backsolve integrates the adjoint backwards and keeps
nothing per step; recursive checkpointing keeps a number of checkpoints that grows
slowly with `max_steps`; direct keeps the steps.

    python benchmarks/adjoint_memory.py [--quick] [--out out/adjoint_memory.png]
"""

import argparse
import time
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from jaxode.nn import NeuralODE


class Field(eqx.Module):
    mlp: eqx.nn.MLP

    def __call__(self, t, y, args):
        return jax.vmap(self.mlp)(y)


def peak_bytes(adjoint: str, steps: int) -> tuple[int, float]:
    field = Field(eqx.nn.MLP(16, 16, 64, 2, activation=jnp.tanh, key=jr.PRNGKey(0)))
    model = NeuralODE(field, t1=1.0, solver=diffrax.Euler(), dt=1.0 / steps,
                      adjoint=adjoint, max_steps=steps, count_nfe=False)
    y0 = jr.normal(jr.PRNGKey(1), (64, 16))

    def loss(m, y):
        return jnp.sum(m(y) ** 2)

    t = time.perf_counter()
    compiled = eqx.filter_jit(eqx.filter_grad(loss)).lower(model, y0).compile()
    seconds = time.perf_counter() - t
    mem = compiled.compiled.memory_analysis()
    total = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
    return int(total), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 and 400 steps only")
    parser.add_argument("--out", type=Path, default=Path("out/adjoint_memory.png"))
    ns = parser.parse_args()
    steps_list = [100, 400] if ns.quick else [1000, 4000, 16000]
    adjoints = ["backsolve", "recursive", "direct"]
    table: dict[str, list[int]] = {}
    print(f"{'adjoint':<10} " + " ".join(f"{s:>12,d}" for s in steps_list)
          + "   (bytes of the compiled grad step; compile seconds in brackets)")
    for adjoint in adjoints:
        row, cells = [], []
        for steps in steps_list:
            nbytes, seconds = peak_bytes(adjoint, steps)
            row.append(nbytes)
            cells.append(f"{nbytes / 2**20:7.2f} MB ({seconds:4.1f}s)")
        table[adjoint] = row
        print(f"{adjoint:<10} " + " ".join(cells), flush=True)

    growth = {a: table[a][-1] / table[a][0] for a in adjoints}
    print(f"\ngrowth from {steps_list[0]:,} to {steps_list[-1]:,} steps: "
          + ", ".join(f"{a} {g:.2f}x" for a, g in growth.items()))
    print(f"backsolve target <= 1.2x: {'met' if growth['backsolve'] <= 1.2 else 'MISSED'}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for adjoint in adjoints:
        ax.plot(steps_list, [b / 2**20 for b in table[adjoint]], "o-", label=adjoint)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("solver steps")
    ax.set_ylabel("memory of the compiled gradient (MB)")
    ax.set_title("gradient through a NeuralODE solve: memory against steps")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3, which="both")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(ns.out, dpi=120)
    print(f"saved {ns.out}")

    print("\n| benchmark | backsolve | recursive | direct |")
    print("|---|---|---|---|")
    for i, steps in enumerate(steps_list):
        print(f"| adjoint memory, {steps:,} steps | "
              + " | ".join(f"{table[a][i] / 2**20:.2f} MB" for a in adjoints) + " |")
    print(f"| growth {steps_list[0]:,} -> {steps_list[-1]:,} | "
          + " | ".join(f"{growth[a]:.2f}x" for a in adjoints) + " |")


if __name__ == "__main__":
    main()
