"""Fixed-step RK4 over many initial conditions, written as users write it: jaxode vs a
hand-written `vmap(lax.scan)` vs diffrax at constant step vs torchdiffeq.

The two-species competition model, 10 000 initial conditions, float32 times from
`jnp.linspace(0, 50, 1001)`, RK4 with `dt=0.05` (1000 steps), with the default
`throw=True`, in three forms:

- `jax.jit(jax.vmap(lambda y: jo.solve(...).ys))`: the solve inside the caller's
  `jit`, so the run-time check of `throw=True` is a host callback in that program
  (on CPU, jaxlib then runs the whole program synchronously on the calling thread);
  also timed with `throw=False`;
- `jax.vmap(lambda y: jo.solve(...).ys)` without `jit`: solve's own compiled program,
  vmapped, with the failure flags read after it has run;
- `jo.ensemble(...)`, the same.

Two cases: the whole (10000, 1001, 2) trajectory kept, and only the final state kept
(the forms without `jit` then save the two times `ts[0]`, `ts[-1]`: outside a `jit`
nothing drops the states a caller does not keep). The hand-written scan saves the
same array (the initial state, then every step). Every contender is checked against
the hand scan before the table is printed.

    python benchmarks/fixed_step.py [--quick] [--rounds N]
"""

import argparse
import resource

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import jaxode as jo
from _diffrax_rk4 import DiffraxRK4
from _timing import machine, measure, report
from jaxode.data import COMPETITION_PARAMS, competition


def _contenders(members, steps, y0s_np):
    args = {k: jnp.float32(v) for k, v in COMPETITION_PARAMS.items()}
    t1 = 0.05 * steps
    ts = jnp.linspace(0.0, t1, steps + 1)  # float32, as everyone writes it
    y0s = jnp.asarray(y0s_np)

    def user(y, throw=True, ts=ts):  # the README's pattern
        return jo.solve(competition, y, ts, args, solver=jo.RK4(), dt=0.05,
                        throw=throw).ys

    def ensemble(ts):
        return jo.ensemble(competition, y0s, ts, args, solver=jo.RK4(), dt=0.05).ys

    ends = ts[jnp.array([0, steps])]

    def rk4(y, t):
        h = ts[1] - ts[0]
        k1 = competition(t, y, args)
        k2 = competition(t + h / 2, y + h / 2 * k1, args)
        k3 = competition(t + h / 2, y + h / 2 * k2, args)
        k4 = competition(t + h, y + h * k3, args)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return y, y

    def hand(y):
        final, path = jax.lax.scan(rk4, y, ts[:-1])
        return jnp.concatenate([y[None], path]), final

    def diffrax_run(y0s, save_all):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(competition), DiffraxRK4(), t0=ts[0], t1=ts[-1],
            dt0=ts[1] - ts[0], y0=y0s, args=args,
            saveat=diffrax.SaveAt(ts=ts) if save_all else diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.ConstantStepSize(), max_steps=steps + 1)
        return sol.ys if save_all else sol.ys[-1]

    jitted = {
        ("all", "jaxode"): jax.jit(jax.vmap(user)),
        ("all", "hand"): jax.jit(jax.vmap(lambda y: hand(y)[0])),
        ("all", "jaxode throw=False"): jax.jit(jax.vmap(lambda y: user(y, False))),
        ("all", "diffrax"): jax.jit(lambda y0s: jnp.moveaxis(diffrax_run(y0s, True), 0, 1)),
        ("final", "jaxode"): jax.jit(jax.vmap(lambda y: user(y)[-1])),
        ("final", "hand"): jax.jit(jax.vmap(lambda y: hand(y)[1])),
        ("final", "diffrax"): jax.jit(lambda y0s: diffrax_run(y0s, False)),
    }
    cases = {"all": {}, "final": {}}
    for (case, name), fn in jitted.items():
        cases[case][name] = (lambda fn=fn: fn(y0s))
    # the same solve without the caller's jit: the failure flags are read after it
    cases["all"]["jaxode, no jit"] = lambda: jax.vmap(user)(y0s)
    cases["all"]["jaxode ensemble"] = lambda: ensemble(ts)
    cases["final"]["jaxode, no jit"] = lambda: jax.vmap(
        lambda y: user(y, ts=ends)[-1])(y0s)
    cases["final"]["jaxode ensemble"] = lambda: ensemble(ends)[:, -1]
    try:
        import torch
        from torchdiffeq import odeint

        torch.set_num_threads(2)
        tp = {k: torch.tensor(v, dtype=torch.float32) for k, v in COMPETITION_PARAMS.items()}

        def torch_f(t, y):
            x, z = y[:, 0], y[:, 1]
            dx = tp["r1"] * x * (1 - tp["iN1"] * x) - tp["a1"] * x * z
            dz = tp["r2"] * z * (1 - tp["iN2"] * z) - tp["a2"] * x * z
            return torch.stack([dx, dz], dim=-1)

        ty0 = torch.tensor(y0s_np)
        tts = torch.tensor(np.asarray(ts))

        def torch_all():
            with torch.no_grad():  # odeint saves at every time it is given
                return odeint(torch_f, ty0, tts, method="rk4").transpose(0, 1)

        def torch_final():
            with torch.no_grad():
                return odeint(torch_f, ty0, tts, method="rk4")[-1]

        cases["all"]["torchdiffeq"] = torch_all
        cases["final"]["torchdiffeq"] = torch_final
    except ImportError:
        print("torch/torchdiffeq not installed: `pip install -e '.[bench]'` to compare")
    return cases


def _check(cases):
    for case, contenders in cases.items():
        ref = np.asarray(contenders["hand"]())
        for name, fn in contenders.items():
            got = fn()
            got = got.numpy() if hasattr(got, "numpy") else np.asarray(got)
            assert got.shape == ref.shape, (case, name, got.shape, ref.shape)
            err = np.max(np.abs(got - ref) / np.abs(ref))
            assert err < 1e-4, (case, name, err)


def _cpu_per_call(fn, calls=10):
    """User and system CPU seconds per call: user time is the computation; system
    time here is mostly the kernel paging in fresh output buffers."""
    fn()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(calls):
        out = fn()
        out = out.block_until_ready() if hasattr(out, "block_until_ready") else out
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return ((r1.ru_utime - r0.ru_utime) / calls, (r1.ru_stime - r0.ru_stime) / calls)


_FORMS = {  # contender -> how the row names it
    "jaxode": "jit(vmap(solve))",
    "jaxode, no jit": "vmap(solve), no jit",
    "jaxode ensemble": "ensemble",
}


def _rows(case, what, times, cases, members, steps):
    """The table rows of one case: one per form of the jaxode call."""
    h, d = times["hand"]["best"], times["diffrax"]["best"]
    peer = f"hand-written vmap(lax.scan) {1e3 * h:.1f} ms; diffrax {1e3 * d:.1f} ms"
    if "torchdiffeq" in times:
        peer += f"; torchdiffeq {1e3 * times['torchdiffeq']['best']:.0f} ms"
    extra = ""
    if "jaxode throw=False" in times:
        q = times["jaxode throw=False"]["best"]
        extra = f"; jit(vmap(solve)) with throw=False {1e3 * q:.1f} ms ({h / q:.2f}x)"
        cpu = {name: _cpu_per_call(cases[case][name])
               for name in ("jaxode", "jaxode throw=False", "jaxode, no jit", "hand")}
        for name, (user, system) in cpu.items():
            print(f"CPU per call, {name:<20}: user {1e3 * user:6.1f} ms, "
                  f"system {1e3 * system:6.1f} ms")
        extra += (f"; user CPU per call: jaxode {1e3 * cpu['jaxode'][0]:.0f} ms, "
                  f"hand {1e3 * cpu['hand'][0]:.0f} ms")
    rows = []
    for name, form in _FORMS.items():
        j = times[name]["best"]
        ratio = f"**{h / j:.2f}x** the hand scan's speed"
        if "torchdiffeq" in times:
            ratio += f"; {times['torchdiffeq']['best'] / j:.0f}x torchdiffeq"
        print(f"jaxode {form} / hand-scan speed ({what}): {h / j:.2f}")
        rows.append(f"| fixed_step: RK4, {members} ICs x {steps} steps, f32 linspace "
                    f"times, {what}, throw=True, {form} | {1e3 * j:.1f} ms | {peer}"
                    f"{extra if name == 'jaxode' else ''} | {ratio} |")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, two rounds")
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=15)
    ns = parser.parse_args()
    members, steps, rounds = (500, 100, 2) if ns.quick else (ns.members, 1000, ns.rounds)
    rng = np.random.default_rng(0)
    y0s_np = rng.uniform(50, 300, size=(members, 2)).astype(np.float32)
    cases = _contenders(members, steps, y0s_np)
    _check(cases)
    print(f"Fixed-step RK4: {members} members x {steps} steps of jnp.linspace float32 "
          f"times; {machine()}; jax {jax.__version__}")
    rows = []
    for case, what in [("all", f"all {steps + 1} states saved"),
                       ("final", "final state only")]:
        times = measure(cases[case], rounds=rounds)
        report(f"{what}: best of {rounds} rounds (first call = compile / warm-up)",
               times, baseline="hand")
        rows += _rows(case, what, times, cases, members, steps)
    print("\n| benchmark | jaxode | peer | ratio |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
