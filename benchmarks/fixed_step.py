"""Fixed-step RK4 over many initial conditions: jaxode vs hand-written lax.scan vs
diffrax at constant step vs torchdiffeq.

The seed's competition model, 10 000 initial conditions, 1000 RK4 steps of 0.1,
float32, final state only. Run: `python benchmarks/fixed_step.py [--quick]`.
"""

import argparse

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import jaxode as jo
from _timing import machine, measure, report
from jaxode.data import COMPETITION_PARAMS, competition


class _DiffraxRK4(diffrax.AbstractERK):
    """The classical RK4 tableau in diffrax, so both sides take the same steps."""

    tableau = diffrax.ButcherTableau(
        c=np.array([0.5, 0.5, 1.0]),
        b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
        b_error=np.zeros(4),
        a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
    )
    interpolation_cls = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 4


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1000)
    ns = parser.parse_args()
    members, steps, rounds = (500, 100, 2) if ns.quick else (ns.members, ns.steps, 7)
    dt = 0.1
    t1 = dt * steps

    rng = np.random.default_rng(0)
    y0s_np = (rng.uniform(50, 300, size=(members, 2))).astype(np.float32)
    args = {k: jnp.float32(v) for k, v in COMPETITION_PARAMS.items()}
    y0s = jnp.asarray(y0s_np)
    ts = jnp.array([0.0, t1], jnp.float32)

    @jax.jit
    def jaxode_run(y0s):
        run = lambda y0: jo.solve(competition, y0, ts, args, solver="rk4", dt=dt).ys[-1]  # noqa: E731
        return jax.vmap(run)(y0s)

    @jax.jit
    def hand_scan(y0s):
        """What a JAX user writes: RK4 under lax.scan for one member, vmapped."""
        h = jnp.float32(dt)

        def rk4(y, t):
            k1 = competition(t, y, args)
            k2 = competition(t + h / 2, y + h / 2 * k1, args)
            k3 = competition(t + h / 2, y + h / 2 * k2, args)
            k4 = competition(t + h, y + h * k3, args)
            return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

        one = lambda y0: jax.lax.scan(rk4, y0, h * jnp.arange(steps, dtype=jnp.float32))[0]  # noqa: E731
        return jax.vmap(one)(y0s)

    @jax.jit
    def diffrax_run(y0s):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(competition), _DiffraxRK4(), t0=0.0, t1=t1, dt0=dt, y0=y0s,
            args=args, saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.ConstantStepSize(), max_steps=steps + 1)
        return sol.ys[-1]

    contenders = {
        "jaxode.solve(rk4), vmap": lambda: jaxode_run(y0s),
        "hand-written lax.scan RK4": lambda: hand_scan(y0s),
        "diffrax, constant step": lambda: diffrax_run(y0s),
    }

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
        tt = torch.tensor([0.0, t1], dtype=torch.float32)

        def torch_run():
            with torch.no_grad():
                return odeint(torch_f, ty0, tt, method="rk4", options={"step_size": dt})[-1]

        contenders["torchdiffeq odeint(rk4)"] = torch_run
    except ImportError:
        print("torch/torchdiffeq not installed: `pip install -e '.[bench]'` to compare")

    times = measure(contenders, rounds=rounds)
    ref = np.asarray(hand_scan(y0s))
    for name, fn in contenders.items():  # all contenders compute the same thing
        got = fn()
        got = got.numpy() if hasattr(got, "numpy") else np.asarray(got)
        err = np.max(np.abs(got - ref) / np.abs(ref))
        assert err < 1e-4, (name, err)
    print(f"Fixed-step RK4: {members} members x {steps} steps, float32; {machine()}; "
          f"jax {jax.__version__}")
    report("best of rounds (first call = compile / warm-up)", times,
           baseline="torchdiffeq odeint(rk4)" if "torchdiffeq odeint(rk4)" in times
           else "hand-written lax.scan RK4")
    j, h = times["jaxode.solve(rk4), vmap"]["best"], times["hand-written lax.scan RK4"]["best"]
    row = f"| fixed_step: RK4, {members} ICs x {steps} steps, f32 | {1e3 * j:.1f} ms | "
    row += f"hand scan {1e3 * h:.1f} ms ({j / h:.2f}x its time)"
    if "torchdiffeq odeint(rk4)" in times:
        t = times["torchdiffeq odeint(rk4)"]["best"]
        row += f"; torchdiffeq {1e3 * t:.1f} ms | **{t / j:.1f}x** faster than torchdiffeq |"
    else:
        row += " | - |"
    print("\n" + row)


if __name__ == "__main__":
    main()
