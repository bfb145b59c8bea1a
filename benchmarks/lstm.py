"""Training step of an LSTM / GRU layer: jaxode vs PyTorch, one process, CPU, float32.

One step = forward over the sequence, backward, Adam update. Batch 32, length 100,
input 8, hidden 128, MSE of the outputs against a fixed random target.

Two idioms for jaxode's `RNN`: time-major batched input `(time, batch, input)`, and
the equinox idiom, `jax.vmap` over examples of `(time, input)`. The LSTM runs
`jaxode.nn.LSTMCell`'s own sequence routine (see `jaxode/nn/_lstm.py`); the GRU
computes the input projections of all steps in one matmul, then scans one fused
matmul per step, with `unroll` steps per loop iteration. As a reference point, the
plain `lax.scan` over `equinox.nn.LSTMCell` is timed too.

    python benchmarks/lstm.py            # full run
    python benchmarks/lstm.py --quick    # tiny smoke run
"""

import argparse
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--repeats", type=int, default=7)
parser.add_argument("--unroll", type=int, nargs="*", default=[1, 4, 10])
ns = parser.parse_args()

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

import jaxode as jo  # noqa: E402

torch.set_num_threads(ns.threads)
B, T, I, H = (4, 12, 3, 16) if ns.quick else (32, 100, 8, 128)
REPEATS = 2 if ns.quick else ns.repeats
UNROLLS = [1] if ns.quick else ns.unroll
INNER = 2 if ns.quick else 5  # steps per timed block
LR = 1e-3

rng = np.random.default_rng(0)
X = rng.normal(size=(T, B, I)).astype(np.float32)
Y = rng.normal(size=(T, B, H)).astype(np.float32)


def jax_step_fn(model):
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt = optax.adam(LR)

    def loss(p, x, y):
        ys = eqx.combine(p, static)(x)
        return jnp.mean((ys - y) ** 2)

    @jax.jit
    def step(p, s, x, y):
        value, g = jax.value_and_grad(loss)(p, x, y)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, value

    return step, params, opt.init(params)


class JaxodeModel(eqx.Module):
    """Time-major batched input: `rnn(xs)` with xs (time, batch, input)."""
    rnn: jo.nn.RNN

    def __call__(self, x):
        return self.rnn(x)[0]


class JaxodeVmapModel(eqx.Module):
    """The equinox idiom: one example (time, input) per call, `jax.vmap` over a
    batch-major (batch, time, input) array."""
    rnn: jo.nn.RNN

    def __call__(self, x):
        return jax.vmap(lambda xe: self.rnn(xe)[0])(x)


class EqxScanModel(eqx.Module):
    """The plain baseline: lax.scan over equinox's LSTMCell, vmapped over the batch."""
    cell: eqx.nn.LSTMCell

    def __call__(self, x):
        def f(carry, xt):
            h, c = jax.vmap(self.cell)(xt, carry)
            return (h, c), h
        z = jnp.zeros((x.shape[1], H), x.dtype)
        return jax.lax.scan(f, (z, z), x)[1]


class Runner:
    """Callable that runs INNER training steps; keeps its state between calls."""

    def __init__(self, name, kind, model=None, batch_major=False):
        self.name = name
        self.kind = kind
        if kind == "jax":
            self.step, self.p, self.s = jax_step_fn(model)
            self.x, self.y = jnp.asarray(X), jnp.asarray(Y)
            if batch_major:
                self.x, self.y = (jnp.asarray(a.transpose(1, 0, 2)) for a in (X, Y))
        else:
            torch.manual_seed(0)
            self.m = model
            self.opt = torch.optim.Adam(self.m.parameters(), lr=LR)
            self.x, self.y = torch.from_numpy(X), torch.from_numpy(Y)

    def __call__(self, n=INNER):
        for _ in range(n):
            if self.kind == "jax":
                self.p, self.s, loss = self.step(self.p, self.s, self.x, self.y)
            else:
                self.opt.zero_grad(set_to_none=True)
                out, _ = self.m(self.x)
                loss = torch.mean((out - self.y) ** 2)
                loss.backward()
                self.opt.step()
        if self.kind == "jax":
            jax.block_until_ready(self.p)
        return float(loss) if self.kind == "jax" else loss.item()


def main():
    key = jax.random.PRNGKey(0)
    f32 = jnp.float32
    runners = {}
    for cell_name, make, torch_cls in (
            ("LSTM", lambda: jo.nn.LSTMCell(I, H, forget_bias=0.0, dtype=f32, key=key),
             torch.nn.LSTM),
            ("GRU", lambda: jo.nn.GRUCell(I, H, dtype=f32, key=key), torch.nn.GRU)):
        # the LSTM runs its own sequence routine (unroll does not apply)
        for u in (UNROLLS if cell_name == "GRU" else [1]):
            runners[(cell_name, f"jaxode unroll={u}")] = Runner(
                f"jaxode {cell_name} unroll={u}", "jax",
                JaxodeModel(jo.nn.RNN(make(), unroll=u)))
        runners[(cell_name, "jaxode vmap")] = Runner(
            f"jaxode {cell_name} vmap", "jax", JaxodeVmapModel(jo.nn.RNN(make())),
            batch_major=True)
        if cell_name == "LSTM":
            runners[(cell_name, "eqx scan")] = Runner(
                "lax.scan(eqx.nn.LSTMCell)", "jax",
                EqxScanModel(eqx.nn.LSTMCell(I, H, key=key)))
        runners[(cell_name, "torch")] = Runner(f"torch.nn.{cell_name}", "torch",
                                               torch_cls(I, H))

    print(f"training step (forward + backward + Adam), batch {B}, length {T}, input "
          f"{I}, hidden {H}, float32; torch threads {torch.get_num_threads()}, "
          f"jax devices {jax.devices()}, {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.1f}")
    for (cell, name), r in runners.items():
        t0 = time.perf_counter()
        r(1)
        first = time.perf_counter() - t0
        if r.kind == "jax":
            print(f"  compile + first step {cell:<4} {name:<18}: {first:7.3f} s")
    best = {k: np.inf for k in runners}
    for _ in range(REPEATS):  # alternate the contenders within every repeat
        for k, r in runners.items():
            t0 = time.perf_counter()
            r()
            best[k] = min(best[k], (time.perf_counter() - t0) / INNER)
    rows = []
    for cell in ("LSTM", "GRU"):
        peer = best[(cell, "torch")]
        print(f"\n{cell}: ms per training step (min over {REPEATS} repeats of "
              f"{INNER} steps)")
        for (c, name), t in best.items():
            if c == cell:
                print(f"  {name:<18} {1e3 * t:8.2f} ms   speed vs torch {peer / t:5.2f}x")
        jx = min((t, name) for (c, name), t in best.items()
                 if c == cell and name.startswith("jaxode unroll"))
        vm = best[(cell, "jaxode vmap")]
        rows.append((cell, f"batched time-major, {jx[1].split()[-1]}", jx[0], peer, ""))
        rows.append((cell, "vmap over examples", vm, peer,
                     f"; {jx[0] / vm:.2f}x the batched form's speed"))
    print("\n| benchmark | jaxode | peer | ratio |")
    print("|---|---|---|---|")
    for cell, name, t, peer, extra in rows:
        print(f"| {cell} train step B={B} T={T} I={I} H={H} f32, {name} | "
              f"{1e3 * t:.2f} ms | torch.nn.{cell} {1e3 * peer:.2f} ms | "
              f"**{peer / t:.2f}x** torch's speed{extra} |")


if __name__ == "__main__":
    main()
