"""Ensemble throughput: members per second against member count and device count.

The problem is the two-species competition model, RK4 with 200 fixed steps of
0.1 from random initial states, float64, saving the end state. Three parts:

1. member count 1e2 ... 1e6 on one device: `jaxode.ensemble` against a batched
   torchdiffeq RK4, timed alternately in this process. Both may use every core:
   XLA's CPU runtime splits the big loop fusions of one device over its intra-op
   thread pool (one thread per core), so torch gets `torch.set_num_threads(cores)`;
2. device count: 1 and 2 host devices (`--xla_force_host_platform_device_count`),
   each in its own process, with XLA's default threading and with single-threaded
   Eigen (`--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`);
   user and system CPU time are reported next to the wall time;
3. a final markdown table row per measurement.

What holds two host devices back (jaxlib 0.10.2, 2 cores) is the baseline, not
communication (a fixed-step ensemble has no collective inside its time loop) or
spinning (system time stays a few per cent of CPU time). From about 1e5 members ONE
host device already splits each loop fusion of the vmapped RK4 step over XLA's
intra-op pool, one thread per core, and reaches 1.7-2.2x (over runs) the throughput
of the same device confined to one core; two host devices then add only the rest, to
about 2.0x one core, the physical limit of two cores (the one-core baseline itself
varies by about 10 % between runs on a shared machine). Part 2 therefore reports every configuration
against a one-core run (`sched_setaffinity`; the best of one run on each core),
besides the usual 2-vs-1-device ratio.
At 1e4 members a run lasts ~10 ms and one device's thread pool costs more than it
brings (twice the CPU seconds of the one-core run, for less speed).

Run `python benchmarks/ensemble_scaling.py` (several minutes) or with `--quick`.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

# OpenMP threads that spin while waiting make torch crawl on a busy machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

STEPS, DT = 200, 0.1
TORCH_MAX = 100_000  # the peer's Python loop over steps is slow: stop it here
FLAGS = {
    "default": "",
    # `intra_op_parallelism_threads=1`, often quoted next to this flag, is not an
    # XLA flag: XLA_FLAGS ignores it after another flag and fails on it alone.
    "eigen-off": "--xla_cpu_multi_thread_eigen=false",
}


def _problem(n: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return np.stack([rng.uniform(10.0, 500.0, n), rng.uniform(10.0, 400.0, n)], -1)


def _jaxode_runner(n: int, throw: bool = False):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    import jaxode as jo
    from jaxode.data import COMPETITION_PARAMS, competition

    args = {k: jnp.asarray(v) for k, v in COMPETITION_PARAMS.items()}
    y0s = _problem(n)
    ts = np.array([0.0, STEPS * DT])

    def run():
        sol = jo.ensemble(competition, y0s, ts, args, solver="rk4", dt=DT,
                          throw=throw)
        return np.asarray(sol.ys[:, -1])

    return run


def _torch_runner(n: int):
    import torch
    from torchdiffeq import odeint

    from jaxode.data import COMPETITION_PARAMS as P

    y0 = torch.tensor(_problem(n), dtype=torch.float64)
    ts = torch.tensor([0.0, STEPS * DT], dtype=torch.float64)

    def f(t, y):
        x, z = y[:, 0], y[:, 1]
        dx = P["r1"] * x * (1 - P["iN1"] * x) - P["a1"] * x * z
        dz = P["r2"] * z * (1 - P["iN2"] * z) - P["a2"] * x * z
        return torch.stack([dx, dz], -1)

    def run():
        with torch.no_grad():
            return odeint(f, y0, ts, method="rk4", options={"step_size": DT})[-1].numpy()

    return run


def _times(run, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        out.append(time.perf_counter() - t0)
    return out


def _time(run, repeats: int) -> float:
    return min(_times(run, repeats))


# ------------------------------------------------------------------ child process


def _thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by each thread of this process (Linux only)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        out[stat.parent.name] = (int(fields[11]) + int(fields[12])) / tick
    return out


def child(n: int, repeats: int, throw: bool, pin: int | None = None) -> None:
    """Measure one configuration; XLA_FLAGS were set by the parent. `pin` confines
    the process to that CPU before jax starts: the one-core baseline.

    Besides the wall time, count the CPU seconds per run and how many threads did
    the work: these do not depend on how busy the rest of the machine is."""
    if pin is not None:
        os.sched_setaffinity(0, {pin})
    import jax

    run = _jaxode_runner(n, throw)
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    run()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    th0 = _thread_cpu() if Path("/proc/self/task").is_dir() else {}
    times = _times(run, repeats)
    best = min(times)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    th1 = _thread_cpu() if th0 else {}
    used = sorted((th1[k] - th0.get(k, 0.0) for k in th1), reverse=True)
    busy = sum(1 for u in used if used and u > 0.25 * used[0])
    print(json.dumps({
        "devices": len(jax.devices()), "n": n, "best": best,
        "median": statistics.median(times), "compile": first - best,
        "cpu_per_run": (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        / repeats,
        "sys_share": (r1.ru_stime - r0.ru_stime)
        / max(1e-9, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime),
        "busy_threads": busy if th0 else -1,
    }))


def _spawn(devices: int, flags: str, n: int, repeats: int, throw: bool,
           pin: int | None = None) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {flags}"
    env["JAX_PLATFORMS"] = "cpu"
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(
        [str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cmd = [sys.executable, __file__, "--child", str(n), "--repeats", str(repeats)]
    if throw:
        cmd.append("--throw")
    if pin is not None:
        cmd += ["--pin", str(pin)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--throw", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pin", type=int, default=None, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.child is not None:
        child(ns.child, ns.repeats or 5, ns.throw, ns.pin)
        return

    counts = [100, 1000, 10_000] if ns.quick else [100, 1000, 10_000, 100_000,
                                                    1_000_000]
    repeats = 2 if ns.quick else 5
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"RK4, {STEPS} steps, float64")

    # 1. member count, one device, against torchdiffeq (one thread each)
    import jax

    jax.config.update("jax_enable_x64", True)
    have_torch = True
    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    except ImportError:
        have_torch = False
    print(f"\n1) members/s vs member count on {len(jax.devices())} device "
          f"(jaxode and torchdiffeq with {os.cpu_count()} threads, timed alternately, "
          "min over repeats)")
    print(f"{'members':>9} | {'compile s':>9} | {'jaxode s':>9} | {'members/s':>11} | "
          f"{'torch s':>9} | {'members/s':>11} | ratio")
    sweep = []
    for n in counts:
        run_j = _jaxode_runner(n)
        t0 = time.perf_counter()
        run_j()
        compile_s = time.perf_counter() - t0
        run_t = _torch_runner(n) if have_torch and n <= TORCH_MAX else None
        tj, tt = [], []
        reps = repeats if n < 100_000 else 3
        for _ in range(reps):  # alternate the two sides
            tj.append(_time(run_j, 1))
            if run_t is not None:
                tt.append(_time(run_t, 1))
        bj, bt = min(tj), min(tt, default=float("inf"))
        compile_s -= bj
        sweep.append((n, compile_s, bj, bt, statistics.median(tj),
                      statistics.median(tt) if tt else float("inf")))
        print(f"{n:>9} | {compile_s:9.2f} | {bj:9.4f} | {n / bj:11.3g} | "
              f"{bt:9.4f} | {n / bt:11.3g} | {bt / bj:5.2f}", flush=True)
    rates = [n / b for n, _, b, *_ in sweep]
    flat = next((sweep[i][0] for i in range(1, len(rates))
                 if rates[i] < 1.15 * rates[i - 1]), None)
    if flat is not None:
        print(f"the members/s curve flattens from about {flat} members "
              f"(rate {rates[counts.index(flat)]:.3g}/s; it rose by under 15% from "
              "the previous count): per-call overhead no longer matters")

    # 2. device count, each configuration in its own process
    sizes = [10_000] if ns.quick else [10_000, 200_000]
    print("\n2) 1 and 2 host devices, each configuration in its own process (min "
          "over repeats; 'one core' = one device confined to a single core, the "
          "physical baseline; CPU s = user + system seconds per run; busy = threads "
          "that did at least a quarter of the busiest thread's work)")
    print(f"{'members':>8} | {'flags':<10} | {'devices':>9} | {'throw':>5} | "
          f"{'s':>8} | {'members/s':>10} | {'vs 1 dev':>8} | {'vs 1 core':>9} | "
          f"{'CPU s':>6} | {'sys %':>5} | busy")
    base, core, dev = {}, {}, []
    configs = []
    for n_dev in sizes:
        configs.append((n_dev, "default", 1, False, True))
        configs += [(n_dev, flag, d, False, False) for flag in FLAGS for d in (1, 2)]
    configs += [(sizes[-1], "default", 2, True, False)]
    for n_dev, flag, d, throw, pin in configs:
        if pin:  # the best of one run on each core: a core may be busier than another
            runs = [_spawn(d, FLAGS[flag], n_dev, repeats, throw, cpu)
                    for cpu in sorted(os.sched_getaffinity(0))]
            r = min(runs, key=lambda run: run["best"])
        else:
            r = _spawn(d, FLAGS[flag], n_dev, repeats, throw)
        if pin:
            core[n_dev] = r["best"]
        elif d == 1:
            base[n_dev, flag] = r["best"]
        speed = base.get((n_dev, flag), float("nan")) / r["best"]
        vs_core = core[n_dev] / r["best"]
        dev.append((n_dev, flag, d, throw, pin, r, speed, vs_core))
        label = "1, 1 core" if pin else str(d)
        print(f"{n_dev:>8} | {flag:<10} | {label:>9} | {str(throw):>5} | "
              f"{r['best']:8.4f} | {n_dev / r['best']:10.3g} | "
              f"{'-' if pin else f'{speed:.2f}':>8} | {vs_core:9.2f} | "
              f"{r['cpu_per_run']:6.3f} | {100 * r['sys_share']:5.1f} | "
              f"{r['busy_threads']}", flush=True)
    best = max((row for row in dev if not row[4] and not row[3]), key=lambda row: row[7])
    print(f"\nfastest: {best[0]} members, {best[2]} device(s), XLA {best[1]}: "
          f"{best[7]:.2f}x one core (2 cores: at most 2x)")

    # the table a user reads: members/s against members, then 1 vs 2 devices
    print("\n| benchmark | jaxode | peer | ratio |")
    print("|---|---|---|---|")
    for n, _, bj, bt, mj, mt in sweep:
        peer, ratio = ((f"{n / bt:.3g} (median {n / mt:.3g})", f"{bt / bj:.1f}x")
                       if bt < float("inf") else ("not run", "-"))
        print(f"| ensemble RK4 {STEPS} steps f64, {n:.0e} members, 1 device, state at t1 "
              f"kept (members/s, best (median) of {repeats if n < 100_000 else 3}; "
              f"peer torchdiffeq, {os.cpu_count()} threads) | {n / bj:.3g} (median "
              f"{n / mj:.3g}) | {peer} | {ratio} |")
    for n_dev, flag, d, throw, pin, r, speed, vs_core in dev:
        if not pin and flag == "default" and not throw and n_dev == sizes[-1]:
            print(f"| ensemble {n_dev:.0e} members, {d} host device{'s' if d > 1 else ''}"
                  f" (members/s, best (median) of {repeats}; peer = 1 device on 1 core)"
                  f" | {n_dev / r['best']:.3g} (median {n_dev / r['median']:.3g}) | "
                  f"{n_dev / core[n_dev]:.3g} | {vs_core:.2f}x |")


if __name__ == "__main__":
    main()
