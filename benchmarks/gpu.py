"""jaxode on the accelerator JAX sees (a GPU; the CPU when there is none) against its
peers, every contender in this one process, with a time cap per section.

Sections (each catches its own failure, prints it and hands over to the next):

1. `lorenz_rk4`: the ensemble of the DiffEqGPU paper (Utkarsh et al., CMAME 2024):
   Lorenz, `u0 = [1, 0, 0]`, per-member parameters `(10, 28, 8/3)` times uniform
   [0, 1) factors, t in [0, 1], fixed-step RK4 with dt = 1e-3 (1000 steps), float32,
   the final state kept. jaxode `ensemble` (called as a user calls it, and inside
   `jax.jit`), the README's `jax.jit(jax.vmap(lambda y0: jo.solve(...)))` against a
   hand-written `vmap(lax.scan)`, diffrax under `vmap` (the classical RK4 tableau)
   and torchdiffeq `odeint(method="rk4")` on the batch (its RK4 is the 3/8 rule).
2. `lorenz_tsit5`: the same with adaptive Tsit5, rtol = atol = 1e-6, each member
   with its own step sizes (`vmap` of adaptive solves; diffrax Tsit5 under `vmap`);
   torchdiffeq `dopri5` on the batch has ONE step size for all members (its error
   norm is taken over the whole batch).
3. `stiff`: Robertson to t = 1e5 (10 save times kept, float64), each member with
   its own rate constants (log-normal, 30 % spread), `ensemble(solver="rodas5p")`
   against diffrax Kvaerno5 under `vmap` and, where SciPy is installed, a Python
   loop of LSODA over a subset (the model of `benchmarks/stiff.py`).
4. `lstm`: a training step (forward, backward, Adam) of an LSTM layer, float32,
   against `torch.nn.LSTM` (cuDNN on a GPU), the same weights on both sides.
5. `spiral`: the spiral Neural ODE training step (dopri5, rtol 1e-7, atol 1e-9,
   float32, a fixed minibatch of 20 windows of 10 steps) against torchdiffeq:
   backprop through the solver against `odeint`, backsolve against
   `odeint_adjoint`.
6. `odenet`: a training step of the ODE-Net image classifier (`jaxode.nn.ODENet`,
   dopri5 rtol = atol = 1e-3, backsolve) on synthetic images against the same
   network in torch (`nn.Conv2d`, `nn.GroupNorm`, `odeint_adjoint`), same weights.
7. `loop`: what XLA makes of the time loop: time against the number of steps at
   fixed members (the slope is the time per step; on a GPU with few members it
   should be the cost of running one loop iteration, launches and all, rather
   than arithmetic), and the hand scan's `unroll` (2, 4, 8) on that time.

Every contender's answer is checked before it is timed (the Lorenz ensembles
against the hand scan, the stiff ensembles against Kvaerno5, the training steps'
loss and gradient against the peer's); a wrong answer is printed, never timed.
Timing: the first call (compile, or warm-up) apart, then the contenders alternately,
in rotating order, the minimum over rounds. Sizes grow until the next one is
predicted not to fit the section's time; what is skipped is printed.

Sizes: on an accelerator the full ones (Lorenz 2^10 ... 2^23 members, Robertson
10^4 ... 10^6, LSTM B=256 T=100 H=256), in about 7 minutes; on the CPU moderate ones
(about 5 minutes); `--quick` tiny ones (a smoke run).
Everything runs on JAX's first device (`ensemble` is given `devices=` that one).
torch rows run on torch's GPU when torch sees CUDA, on torch's CPU only when the
JAX device is the CPU too, and are left out otherwise (the table says why).
float32 matrix products are full float32 on both sides (TensorFloat-32 off).

    python benchmarks/gpu.py [--quick] [--budget S] [--sections a,b] [--out FILE]
"""

import argparse
import contextlib
import datetime
import math
import os
import platform
import signal
import sys
import time
import traceback

START = time.perf_counter()
# jax and torch share the accelerator: JAX takes memory as it needs it
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
if "--quick" in sys.argv[1:] and "optimization_level" not in os.environ.get(
        "XLA_FLAGS", ""):  # a smoke run compiles far more than it computes
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()
# torch's OpenMP threads spinning while they wait make it crawl on a busy CPU
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jaxode as jo  # noqa: E402
from _diffrax_rk4 import DiffraxRK4  # noqa: E402
from _timing import block  # noqa: E402

SECTIONS = ("lorenz_rk4", "lorenz_tsit5", "stiff", "lstm", "spiral", "odenet", "loop")
# each section's share of the time budget; time a section leaves unused goes on to
# the sections after it
SHARES = {"lorenz_rk4": 0.25, "lorenz_tsit5": 0.22, "stiff": 0.14, "lstm": 0.07,
          "spiral": 0.11, "odenet": 0.10, "loop": 0.11}
PLANS = {
    "gpu": {"lorenz": [2 ** k for k in (10, 12, 14, 16, 18, 20, 22, 23)],
            "stiff": [10 ** 4, 10 ** 5, 10 ** 6], "rounds": 5,
            "lstm": (256, 100, 32, 256), "odenet": (28, 64, 128),
            "spiral_inner": 10, "loop_members": [2 ** 10, 2 ** 20],
            "loop_steps": [250, 1000, 4000], "unrolls": [1, 2, 4, 8],
            "budget": 400.0},
    "cpu": {"lorenz": [2 ** 10, 2 ** 12, 2 ** 14], "stiff": [10 ** 3, 10 ** 4],
            "rounds": 5, "lstm": (64, 50, 32, 128), "odenet": (8, 16, 64),
            "spiral_inner": 10, "loop_members": [2 ** 10],
            "loop_steps": [250, 500, 1000], "unrolls": [1, 2, 4, 8],
            "budget": 270.0},
    "quick": {"lorenz": [2 ** 8], "stiff": [100], "rounds": 2,
              "lstm": (4, 12, 3, 16), "odenet": (8, 8, 8), "spiral_inner": 2,
              "loop_members": [2 ** 6], "loop_steps": [50, 100, 200],
              "unrolls": [1, 2], "budget": 120.0},
}
# every contender runs on the first device (`ensemble` would split over all of them)
ONE = jax.devices()[:1]
DIFFER = "its answer differs from jaxode's (the check lines above): not timed"
PAPER = ("DiffEqGPU paper (Utkarsh et al., CMAME 2024), V100, 2^23 Lorenz members, "
         "f32, t in [0, 1], dt = 1e-3: context, not measured here")


# ------------------------------------------------------------------ the machine


class Torch:
    """torch and torchdiffeq as found here, and where the torch rows run."""

    def __init__(self, jax_platform: str):
        self.torch = self.odeint = self.odeint_adjoint = self.device = None
        self.missing = ""
        try:
            self._find(jax_platform)
        except Exception as e:  # a broken install: the JAX rows still run
            self.device = None
            self.note = f"torch not usable ({first_line(e)})"

    def _find(self, jax_platform: str) -> None:
        try:
            import torch
        except ImportError as e:
            self.note = f"torch not importable ({e})"
            return
        self.torch = torch
        try:
            from torchdiffeq import odeint, odeint_adjoint

            self.odeint, self.odeint_adjoint = odeint, odeint_adjoint
        except ImportError as e:
            self.missing = f"torchdiffeq not importable ({e})"
        if jax_platform == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)
            self.device = torch.device("cpu")
            self.note = (f"torch {torch.__version__} on the CPU, "
                         f"{torch.get_num_threads()} threads (the JAX device is the "
                         "CPU too)")
        elif torch.cuda.is_available():
            self.device = torch.device("cuda")
            # float32 means float32: no TensorFloat-32 on either side
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            self.note = (f"torch {torch.__version__} on "
                         f"{torch.cuda.get_device_name(0)} (CUDA)")
        else:
            self.note = (f"torch {torch.__version__} sees no CUDA device (torch on "
                         "the CPU against JAX on an accelerator would compare the "
                         "hardware)")

    def why_not(self, need_diffeq: bool = True) -> str | None:
        """None when the torch rows can run, else the reason they do not."""
        if self.device is None:
            return self.note
        if need_diffeq and self.odeint is None:
            return self.missing
        return None

    def sync(self):
        if self.device is not None and self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def tensor(self, x, dtype=None):
        t = self.torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        return t if dtype is None else t.to(dtype)


def host(x) -> np.ndarray:
    """A result as a NumPy array, whichever library made it."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def describe_device() -> tuple[str, str]:
    d = jax.devices()[0]
    return d.platform, getattr(d, "device_kind", d.platform)


# --------------------------------------------------------------- time and checks


class Section:
    """A section's clock: its deadline, and the rows and notes it adds."""

    def __init__(self, name: str, cap: float, ctx):
        self.name, self.cap, self.ctx = name, cap, ctx
        self.deadline = time.perf_counter() + cap

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def row(self, benchmark: str, ours: str, peer: str, ratio: str) -> None:
        line = f"| {self.ctx.tag}: {benchmark} | {ours} | {peer} | {ratio} |"
        self.ctx.rows.append(line)
        # marked, so that `jaxode bench` reads each row once, from the final table
        print(f"  row: {line}", flush=True)

    def skip(self, what: str) -> None:
        self.ctx.skipped.append(f"{self.name}: {what}")
        print(f"  skipped: {what}", flush=True)


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160] if text else ''}"


def race(contenders: dict, *, rounds: int, deadline: float, reference=None,
         error=None, tol=None, time_reference=True, keep=()) -> dict:
    """Time zero-argument callables: each one's first call apart (compile or
    warm-up), then rounds in rotating order, the min kept; rounds stop at
    `deadline` (after at least one).

    With `error`, every first result is checked before any timing:
    `error(got, ref)`, `ref` the result of the contender `reference` (or None);
    a contender whose error is over `tol` (or NaN), or that fails, is not timed.
    With `time_reference=False` the reference only checks (its "best" is then its
    first call). The results of the contenders in `keep` are kept (on the host).

    **Returns:** `{name: {"first", "best", "rounds", "err"[, "out"]}}`, or
    `{name: {"error": why}}`."""
    res, outs = {}, {}
    for name, fn in contenders.items():
        t0 = time.perf_counter()
        try:
            outs[name] = block(fn())
            res[name] = {"first": time.perf_counter() - t0, "best": math.inf,
                         "rounds": 0, "err": None}
        except Exception as e:  # one contender failing leaves the others
            res[name] = {"error": f"failed ({first_line(e)})"}
            print(f"  {name}: {res[name]['error']}", flush=True)
    for name in keep:
        if name in outs:
            res[name]["out"] = host(outs[name])
    if error is not None:
        _check(res, outs, reference, error, tol)
    outs.clear()
    live = [n for n in contenders if "error" not in res[n]]
    if not time_reference and reference in live:
        live.remove(reference)
        res[reference]["best"] = res[reference]["first"]
    for r in range(rounds):
        guess = sum(res[n]["best"] for n in live) if r else 0.0
        if r and time.perf_counter() + guess > deadline:
            break
        k = r % max(1, len(live))
        for name in live[k:] + live[:k]:
            t0 = time.perf_counter()
            block(contenders[name]())
            res[name]["best"] = min(res[name]["best"], time.perf_counter() - t0)
            res[name]["rounds"] += 1
    for name in live:
        r = res[name]
        print(f"  {name:<34} best {1e3 * r['best']:10.3f} ms  first call "
              f"{r['first']:7.2f} s  rounds {r['rounds']}"
              + ("" if r["err"] is None else f"  error {r['err']:.1e}"), flush=True)
    return res


def _check(res, outs, reference, error, tol):
    if reference is not None and reference not in outs:
        for name in outs:
            if name != reference:
                res[name] = {"error": f"not checked ({reference} failed): not timed"}
        return
    ref = None if reference is None else host(outs[reference])
    for name, out in outs.items():
        if name == reference or "error" in res[name]:
            continue
        err = float(error(host(out), ref))
        res[name]["err"] = err
        if not err <= tol:  # NaN fails too
            res[name] = {"error": f"WRONG ANSWER (error {err:.1e} > {tol:g}): "
                                  "not timed"}
            print(f"  {name}: {res[name]['error']}", flush=True)


def rel_error(got, ref):
    """Largest difference, relative to the largest magnitude of the reference."""
    if got.shape != ref.shape:
        return float("inf")
    return np.max(np.abs(got - ref)) / np.max(np.abs(ref))


def grow(sec: Section, sizes, history: dict, active: list, reference: str):
    """The sizes to run, one at a time: stops when the next size is predicted not to
    fit the section's time, and drops a contender whose next run would not fit.
    `history[name] = (n, first, best)` of its last run; time per call is taken to
    grow like `n ** a`, with `a` from the last two runs, at least 0.5."""
    for n in sizes:
        cost = {}
        for name in active:
            if name not in history:
                continue
            runs = history[name]
            n0, first0, best0 = runs[-1]
            a = 0.5
            if len(runs) > 1 and runs[-2][2] > 0:
                n1, _, best1 = runs[-2]
                a = max(0.5, math.log(max(best0, 1e-9) / best1) / math.log(n0 / n1))
            per = best0 * (n / n0) ** a
            cost[name] = max(first0 - best0, 0.0) + 2 * per  # compile, first, 1 round
        left = sec.left()
        if cost.get(reference, 0.0) > left:
            sec.skip(f"sizes from {n} on (the {reference} alone would need "
                     f"~{cost[reference]:.0f} s, {left:.0f} s left)")
            return
        for name in sorted(cost, key=cost.get, reverse=True):
            if name != reference and sum(cost.values()) > left:
                sec.skip(f"{name} from {n} members on (~{cost.pop(name):.0f} s "
                         f"predicted, {left:.0f} s left in the section)")
                active.remove(name)
        yield n


def record(history: dict, active: list, res: dict, n: int) -> None:
    for name, r in res.items():
        if "error" in r:
            if name in active:
                active.remove(name)
        else:
            history.setdefault(name, []).append((n, r["first"], r["best"]))


@contextlib.contextmanager
def alarm(seconds: float):
    """Raise TimeoutError in this thread after `seconds` (a backstop: a call running
    in XLA or torch is interrupted only when it returns to Python)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def ring(signum, frame):
        raise TimeoutError(f"the section ran past its backstop of {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(1.0, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------- Lorenz


def lorenz(t, u, p):
    x, y, z = u[0], u[1], u[2]
    return jnp.stack([p[0] * (y - x), x * (p[1] - z) - y, x * y - p[2] * z])


def lorenz_members(n: int) -> tuple[np.ndarray, np.ndarray]:
    """`u0 = [1, 0, 0]` for all; parameters (10, 28, 8/3) times uniform factors, as in
    the paper. Member i is the same for every `n` (the draws fill rows in order)."""
    rng = np.random.default_rng(0)
    ps = (rng.uniform(size=(n, 3)) * np.array([10.0, 28.0, 8.0 / 3.0])).astype(np.float32)
    return np.tile(np.array([1.0, 0.0, 0.0], np.float32), (n, 1)), ps


def hand_rk4(steps: int, h: float, unroll: int = 1):
    """The hand-written ensemble: `jit(vmap(lax.scan))` of the classical RK4 step,
    the final state kept."""
    h = np.float32(h)

    def one(u, p):
        def step(u, _):
            k1 = lorenz(0.0, u, p)
            k2 = lorenz(0.0, u + h / 2 * k1, p)
            k3 = lorenz(0.0, u + h / 2 * k2, p)
            k4 = lorenz(0.0, u + h * k3, p)
            return u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

        return jax.lax.scan(step, u, None, length=steps, unroll=unroll)[0]

    return jax.jit(jax.vmap(one))


def jaxode_lorenz(ts, solve_kwargs: dict) -> dict:
    """jaxode's three forms: `ensemble` as a user calls it, `ensemble` inside
    `jax.jit` (no host round trip for the checks and placement of the inputs; a
    fixed step is given as `substeps`, as `ensemble` asks under `jit`), and the
    README's `jit(vmap(solve))`."""
    def ens(u0s, ps, **kw):
        return jo.ensemble(lorenz, u0s, ts, ps, member_args=True, devices=ONE,
                           **{**solve_kwargs, **kw}).ys[:, -1]

    dt = solve_kwargs.get("dt")
    jit_kw = {} if dt is None else {"dt": None, "substeps": round(1.0 / dt)}

    def one(u0, p):
        return jo.solve(lorenz, u0, ts, p, **solve_kwargs).ys[-1]

    return {"jaxode ensemble": ens,
            "jaxode jit(ensemble)": jax.jit(lambda u0s, ps: ens(u0s, ps, **jit_kw)),
            "jaxode jit(vmap(solve))": jax.jit(jax.vmap(one))}


def diffrax_lorenz(solver, controller, dt0, max_steps):
    def one(u0, p):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(lorenz), solver, t0=jnp.float32(0), t1=jnp.float32(1),
            dt0=dt0, y0=u0, args=p, saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=controller, max_steps=max_steps).ys[-1]

    return jax.jit(jax.vmap(one))


def torch_lorenz(tc: Torch, u0s, ps, **odeint_kwargs):
    torch = tc.torch
    u0, p = tc.tensor(u0s), tc.tensor(ps)
    tt = tc.tensor(np.array([0.0, 1.0], np.float32))
    s, r, b = p.unbind(-1)

    def f(t, u):
        x, y, z = u.unbind(-1)
        return torch.stack([s * (y - x), x * (r - z) - y, x * y - b * z], -1)

    def run():
        with torch.no_grad():
            out = tc.odeint(f, u0, tt, **odeint_kwargs)[-1]
        tc.sync()
        return out

    return run


def lorenz_contenders(ctx, n: int, active: list, adaptive: bool) -> dict:
    u0s_np, ps_np = lorenz_members(n)
    u0s, ps = jnp.asarray(u0s_np), jnp.asarray(ps_np)
    ts = np.array([0.0, 1.0], np.float32)
    if adaptive:
        ours = jaxode_lorenz(ts, dict(solver="tsit5", rtol=1e-6, atol=1e-6))
        ours.pop("jaxode jit(ensemble)")
        peer = diffrax_lorenz(diffrax.Tsit5(), diffrax.PIDController(
            rtol=1e-6, atol=1e-6), None, 4096)
        torch_kwargs = dict(method="dopri5", rtol=1e-6, atol=1e-6)
    else:
        ours = jaxode_lorenz(ts, dict(solver="rk4", dt=1e-3))
        peer = diffrax_lorenz(DiffraxRK4(), diffrax.ConstantStepSize(),
                              jnp.float32(1e-3), 1010)
        torch_kwargs = dict(method="rk4", options={"step_size": 1e-3})
    fns = {"hand vmap(lax.scan)": hand_rk4(1000, 1e-3)}
    fns.update(ours)
    fns["diffrax vmap"] = peer
    out = {name: (lambda fn=fn: fn(u0s, ps)) for name, fn in fns.items()
           if name in active}
    if "torchdiffeq" in active:
        out["torchdiffeq"] = torch_lorenz(ctx.torch, u0s_np, ps_np, **torch_kwargs)
    return out


def lorenz_section(sec: Section, adaptive: bool) -> None:
    ctx = sec.ctx
    active = ["hand vmap(lax.scan)", "jaxode ensemble", "jaxode jit(ensemble)",
              "jaxode jit(vmap(solve))", "diffrax vmap", "torchdiffeq"]
    if adaptive:
        active.remove("jaxode jit(ensemble)")
    why = ctx.torch.why_not()
    if why:
        active.remove("torchdiffeq")
        sec.skip(f"torchdiffeq: {why}")
    reference = "hand vmap(lax.scan)"
    what = ("Tsit5 rtol=atol=1e-6, own step sizes per member" if adaptive
            else "RK4 dt=1e-3 (1000 steps)")
    print(f"Lorenz, {what}, t in [0, 1], float32, final state kept; answers checked "
          f"against the hand-written RK4 scan (dt = 1e-3)", flush=True)
    if not adaptive:
        sec.row(PAPER, "-", "Julia GPU kernel ensemble: fixed-step RK 145 ms, adaptive "
                "Tsit5 69.5 ms; diffrax vmap: 10.0 s and 2.61 s",
                "paper: the kernels 69x and 38x diffrax's speed")
    history = {}
    for n in grow(sec, ctx.plan["lorenz"], history, active, reference):
        print(f" {n} members ({sec.left():.0f} s left in the section)", flush=True)
        fns = lorenz_contenders(ctx, n, active, adaptive)
        res = race(fns, rounds=ctx.plan["rounds"], deadline=sec.deadline,
                   reference=reference, error=rel_error, tol=1e-3,
                   time_reference=not adaptive)  # adaptive: it only checks
        record(history, active, res, n)
        lorenz_row(sec, n, res, adaptive)


def fmt(seconds: float) -> str:
    if seconds < 0:  # a fitted intercept below zero: noise
        return "-" + fmt(-seconds)
    if seconds < 1e-3:
        return f"{1e6 * seconds:.1f} µs"
    if seconds < 1.0:
        return f"{1e3 * seconds:.2f} ms"
    return f"{seconds:.2f} s"


def timed(res: dict, name: str) -> float | None:
    r = res.get(name)
    return None if r is None or "error" in r else r["best"]


def peer_cells(res: dict, ours: float, peers: dict) -> tuple[str, str]:
    """The peer and ratio cells: each peer's time (or why it has none) and jaxode's
    speed relative to it (`peers`: {name in res: label})."""
    times, ratios = [], []
    for name, label in peers.items():
        if name not in res:
            continue
        t = timed(res, name)
        if t is None:
            times.append(f"{label}: {res[name]['error']}")
        else:
            times.append(f"{label} {fmt(t)}")
            ratios.append(f"{t / ours:.3g}x {label}")
    if not ratios:
        return "; ".join(times) or "-", "-"
    head, _, rest = ratios[0].partition(" ")
    return "; ".join(times), "; ".join([f"**{head}** {rest}"] + ratios[1:])


def lorenz_row(sec: Section, n: int, res: dict, adaptive: bool) -> None:
    ours = [k for k in ("jaxode ensemble", "jaxode jit(ensemble)",
                        "jaxode jit(vmap(solve))") if k in res]
    main = next((k for k in ours if timed(res, k) is not None), None)
    what = ("Tsit5 rtol=atol=1e-6, per-member steps" if adaptive
            else "RK4 dt=1e-3 (1000 steps)")
    bench = (f"Lorenz ensemble, {what}, t in [0, 1], f32, final state kept, "
             f"2^{round(math.log2(n))} = {n} members")
    if main is None:
        sec.row(bench, "; ".join(f"{k}: {res[k]['error']}" for k in ours), "-", "-")
        return
    t = res[main]["best"]
    cell = (f"{main.removeprefix('jaxode ')} {fmt(t)} ({n / t:.3g} members/s, "
            f"{fmt(t / n)}/member; compile {res[main]['first'] - t:.1f} s)")
    for k in ours:
        if k != main:
            other = timed(res, k)
            cell += (f"; {k.removeprefix('jaxode ')} "
                     + (fmt(other) if other is not None else res[k]["error"]))
    label = "torchdiffeq dopri5 (one step size for the batch)" if adaptive else \
        "torchdiffeq rk4"
    peers = {"hand vmap(lax.scan)": "hand vmap(lax.scan)",
             "diffrax vmap": "diffrax vmap",
             "torchdiffeq": f"{label} ({sec.ctx.torch.device})"}
    if adaptive:
        peers.pop("hand vmap(lax.scan)")
    peer, ratio = peer_cells(res, t, peers)
    why = sec.ctx.torch.why_not()
    if why:
        peer += f"; torchdiffeq: not run ({why})"
    sec.row(bench, cell, peer, ratio)


# ----------------------------------------------------------------------- stiff


ROBER_K = np.array([0.04, 3e7, 1e4])
ROBER_TS = np.concatenate([[0.0], np.geomspace(1e-3, 1e5, 9)])


def rober(t, y, k):
    return jnp.stack([-k[0] * y[0] + k[2] * y[1] * y[2],
                      k[0] * y[0] - k[2] * y[1] * y[2] - k[1] * y[1] ** 2,
                      k[1] * y[1] ** 2])


def rober_members(n: int) -> np.ndarray:
    """Rate constants per member, log-normal with a 30 % spread; member i is the
    same for every `n`."""
    rng = np.random.default_rng(0)
    return ROBER_K * np.exp(0.3 * rng.standard_normal((n, 3)))


def kvaerno5_vmap():
    def one(y0, k):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(rober), diffrax.Kvaerno5(), 0.0, ROBER_TS[-1], None, y0, k,
            saveat=diffrax.SaveAt(ts=jnp.asarray(ROBER_TS)),
            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-10,
                                                      pcoeff=0.3, icoeff=0.4),
            max_steps=100_000).ys

    return jax.jit(jax.vmap(one))


def lsoda_loop(ks: np.ndarray):
    """A Python loop of SciPy's LSODA with the analytic Jacobian, or None without
    SciPy."""
    try:
        import scipy.integrate
    except ImportError:
        return None

    def f(t, y, k):
        return [-k[0] * y[0] + k[2] * y[1] * y[2],
                k[0] * y[0] - k[2] * y[1] * y[2] - k[1] * y[1] ** 2, k[1] * y[1] ** 2]

    def jac(t, y, k):
        return [[-k[0], k[2] * y[2], k[2] * y[1]],
                [k[0], -k[2] * y[2] - 2 * k[1] * y[1], -k[2] * y[1]],
                [0.0, 2 * k[1] * y[1], 0.0]]

    def run():
        return np.stack([scipy.integrate.solve_ivp(
            f, (0.0, ROBER_TS[-1]), [1.0, 0.0, 0.0], method="LSODA", t_eval=ROBER_TS,
            rtol=1e-6, atol=1e-10, jac=jac, args=(k,)).y.T for k in ks])

    return run


def stiff_error(got, ref):
    """Largest difference over the members both hold, relative to |ref| + 1e-10."""
    m = min(len(got), len(ref))
    got, ref = got[:m], ref[:m]
    return np.max(np.abs(got - ref) / (np.abs(ref) + 1e-10))


def stiff_section(sec: Section) -> None:
    with jax.enable_x64(True):
        _stiff(sec)


def _stiff(sec: Section) -> None:
    ctx = sec.ctx
    sizes = ctx.plan["stiff"]
    active = ["jaxode ensemble rodas5p", "diffrax Kvaerno5 vmap"]
    kv = kvaerno5_vmap()
    loop_n = min(sizes[0], 20 if len(sizes) == 1 else 100)
    lsoda = lsoda_loop(rober_members(loop_n))
    lsoda_rate, ref, history = None, None, {}
    print("Robertson to t = 1e5, 10 save times kept, float64, rtol 1e-6, atol 1e-10, "
          "each member with its own rate constants; answers checked against "
          "Kvaerno5 on the first members of the first size", flush=True)
    for n in grow(sec, sizes, history, active, "jaxode ensemble rodas5p"):
        print(f" {n} members ({sec.left():.0f} s left in the section)", flush=True)
        ks = jnp.asarray(rober_members(n))
        y0s = jnp.tile(jnp.array([1.0, 0.0, 0.0]), (n, 1))
        fns = {"jaxode ensemble rodas5p": lambda y0s=y0s, ks=ks: jo.ensemble(
            rober, y0s, ROBER_TS, ks, member_args=True, devices=ONE, solver="rodas5p",
            rtol=1e-6, atol=1e-10, max_steps=100_000).ys,
            "diffrax Kvaerno5 vmap": lambda y0s=y0s, ks=ks: kv(y0s, ks)}
        fns = {k: v for k, v in fns.items() if k in active}
        if lsoda is not None and lsoda_rate is None:
            fns[f"LSODA loop ({loop_n} members)"] = lsoda
        first = ref is None
        res = race(fns, rounds=ctx.plan["rounds"], deadline=sec.deadline,
                   reference="diffrax Kvaerno5 vmap" if first else None,
                   error=(lambda got, r: stiff_error(got, r[:64])) if first else
                   (lambda got, _, ref=ref: stiff_error(got, ref)), tol=1e-3,
                   keep=["diffrax Kvaerno5 vmap"] if first else ())
        if first:
            if "out" not in res.get("diffrax Kvaerno5 vmap", {}):
                sec.skip("every size: Kvaerno5, the check, did not run")
                return
            ref = res["diffrax Kvaerno5 vmap"].pop("out")[:64]
        loop_res = res.pop(f"LSODA loop ({loop_n} members)", None)
        if loop_res is not None and "error" not in loop_res:
            lsoda_rate = loop_n / loop_res["best"]
        record(history, active, res, n)
        stiff_row(sec, n, res, lsoda_rate, loop_n, lsoda is not None)


def stiff_row(sec, n, res, lsoda_rate, loop_n, have_scipy) -> None:
    bench = (f"stiff ensemble: Robertson to t=1e5, 10 save times kept, f64, rtol "
             f"1e-6 atol 1e-10, {n} members with own rate constants")
    t = timed(res, "jaxode ensemble rodas5p")
    if t is None:
        sec.row(bench, res["jaxode ensemble rodas5p"]["error"], "-", "-")
        return
    ours = (f"rodas5p `ensemble` {fmt(t)}: {n / t:.3g} members/s (compile "
            f"{res['jaxode ensemble rodas5p']['first'] - t:.1f} s)")
    peers, ratios = [], []
    kv = res.get("diffrax Kvaerno5 vmap")
    if kv is not None and "error" not in kv:
        peers.append(f"diffrax Kvaerno5 vmap {fmt(kv['best'])}: "
                     f"{n / kv['best']:.3g} members/s")
        ratios.append(f"{kv['best'] / t:.3g}x Kvaerno5's throughput")
    elif kv is not None:
        peers.append(f"diffrax Kvaerno5 vmap: {kv['error']}")
    if lsoda_rate is not None:
        peers.append(f"Python loop of SciPy LSODA: {lsoda_rate:.3g} members/s "
                     f"(measured on {loop_n} members)")
        ratios.append(f"{n / t / lsoda_rate:.3g}x LSODA's")
    elif not have_scipy:
        peers.append("SciPy LSODA: not run (SciPy not installed)")
    if ratios:
        head, _, rest = ratios[0].partition(" ")
        ratios[0] = f"**{head}** {rest}"
    sec.row(bench, ours, "; ".join(peers) or "-", "; ".join(ratios) or "-")


# ------------------------------------------------------------------------ LSTM


def steps_runner(step, state: list, batch: tuple, inner: int):
    """A callable running `inner` jitted training steps, `state = [params,
    opt_state]` carried over from call to call; returns the last loss."""
    def run():
        for _ in range(inner):
            state[0], state[1], loss, _ = step(state[0], state[1], *batch)
        return loss

    return run


def first_step(step, state: list, batch: tuple):
    """The first training step (compilation included), timed; it advances `state`.

    **Returns:** `(loss, gradient, seconds)`, the loss and gradient at the initial
    parameters."""
    t0 = time.perf_counter()
    state[0], state[1], loss, grads = block(step(state[0], state[1], *batch))
    return loss, grads, time.perf_counter() - t0


def torch_steps(tc: Torch, module, loss_fn, opt, inner: int):
    def run():
        for _ in range(inner):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(module)
            loss.backward()
            opt.step()
        tc.sync()
        return loss.detach()

    return run


def jax_trainer(model, loss, optimizer):
    """`(step, state)`: a jitted optimiser step `step(params, opt_state, *batch)
    -> (params, opt_state, loss, gradient)` and the initial `[params, opt_state]`."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def value(p, *batch):
        return loss(eqx.combine(p, static), *batch)

    @jax.jit
    def step(p, s, *batch):
        v, g = jax.value_and_grad(value)(p, *batch)
        updates, s = optimizer.update(g, s, p)
        return optax.apply_updates(p, updates), s, v, g

    return step, [params, optimizer.init(params)]


def agree(sec: Section, what: str, checks: list) -> bool:
    """Compare `(label, jaxode value, peer value, tolerance)`: the difference in
    norm relative to the peer's. Prints each; False (and a note) when one is over
    its tolerance (or NaN)."""
    bad = []
    for label, a, b, tol in checks:
        a, b = np.asarray(host(a), np.float64), np.asarray(host(b), np.float64)
        err = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)
        print(f"  check {what}: {label} relative difference {err:.1e} (at most "
              f"{tol:g})", flush=True)
        if not err <= tol:
            bad.append(f"{label} {err:.1e} > {tol:g}")
    if bad:
        sec.skip(f"{what}: WRONG ANSWER, jaxode and the peer differ ({'; '.join(bad)})"
                 ": not timed")
    return not bad


def lstm_section(sec: Section) -> None:
    ctx, tc = sec.ctx, sec.ctx.torch
    B, T, I, H = ctx.plan["lstm"]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(T, B, I)).astype(np.float32)
    Y = rng.normal(size=(T, B, H)).astype(np.float32)
    cell = jo.nn.LSTMCell(I, H, forget_bias=0.0, dtype=jnp.float32,
                          key=jax.random.key(0))
    step, state = jax_trainer(
        jo.nn.RNN(cell), lambda m, x, y: jnp.mean((m(x)[0] - y) ** 2), optax.adam(1e-3))
    inner = ctx.plan["spiral_inner"]
    batch = (jnp.asarray(X), jnp.asarray(Y))
    v, g, first = first_step(step, state, batch)
    fns = {"jaxode": steps_runner(step, state, batch, inner)}
    why = tc.why_not(need_diffeq=False)
    peer, cudnn, nopeer = "torch.nn.LSTM", False, why
    if why:
        sec.skip(f"torch.nn.LSTM: {why}")
    else:
        torch = tc.torch
        lstm = torch.nn.LSTM(I, H).to(tc.device)
        with torch.no_grad():
            for name, value in (("weight_ih_l0", cell.weight_ih), ("weight_hh_l0",
                                cell.weight_hh), ("bias_ih_l0", cell.bias),
                                ("bias_hh_l0", jnp.zeros_like(cell.bias))):
                getattr(lstm, name).copy_(tc.tensor(np.asarray(value)))
        xt, yt = tc.tensor(X), tc.tensor(Y)
        loss_t = lambda m: torch.mean((m(xt)[0] - yt) ** 2)  # noqa: E731
        value = loss_t(lstm)
        value.backward()
        if agree(sec, "LSTM loss and gradient", [
                ("loss", v, value, 1e-3),
                ("d loss / d W_hh", g.cells[0].weight_hh, lstm.weight_hh_l0.grad, 1e-2),
                ("d loss / d W_ih", g.cells[0].weight_ih, lstm.weight_ih_l0.grad,
                 1e-2)]):
            fns[peer] = torch_steps(tc, lstm, loss_t, torch.optim.Adam(
                lstm.parameters(), lr=1e-3), inner)
        else:
            nopeer = DIFFER
        cudnn = tc.device.type == "cuda" and torch.backends.cudnn.is_available()
    res = race(fns, rounds=ctx.plan["rounds"], deadline=sec.deadline)
    label = f"{peer} ({'cuDNN' if not why and cudnn else tc.device})"
    train_row(sec, f"LSTM training step (forward, backward, Adam), B={B} T={T} I={I} "
              f"H={H}, f32", res, "jaxode", "jaxode RNN(LSTMCell)",
              {peer: label} if peer in res else {}, inner, first, nopeer=nopeer)


def train_row(sec, bench, res, ours, label, peers, inner, first, extra="",
              nopeer="") -> None:
    """A training-step row: time per step, the first step apart; `nopeer` says why
    there is no peer when `peers` is empty."""
    t = timed(res, ours)
    if t is None:
        sec.row(bench, res[ours]["error"], "-", "-")
        return
    per = {k: dict(v, best=v["best"] / inner) if "best" in v else v
           for k, v in res.items()}
    cell = f"{label} {fmt(t / inner)}/step (first step {first:.1f} s)"
    peer, ratio = peer_cells(per, t / inner, peers)
    sec.row(bench, cell + extra, peer if peers else f"peer not run: {nopeer}", ratio)


# ---------------------------------------------------------------------- spiral


SPIRAL_A = np.array([[-0.1, 2.0], [-2.0, -0.1]], np.float32)


class SpiralField(eqx.Module):
    l1: eqx.nn.Linear
    l2: eqx.nn.Linear

    def __call__(self, t, y, args):
        h = jnp.tanh(y ** 3 @ self.l1.weight.T + self.l1.bias)
        return h @ self.l2.weight.T + self.l2.bias


def spiral_data():
    """1000 points of the true spiral on [0, 25], a fixed minibatch of 20 windows
    of 10 steps, and initial weights of the 2 -> 50 -> 2 field."""
    ts = np.linspace(0.0, 25.0, 1000).astype(np.float32)
    ys = np.asarray(jo.solve(lambda t, y, a: (y ** 3) @ a, jnp.array([2.0, 0.0]), ts,
                             jnp.asarray(SPIRAL_A), solver="dopri5", rtol=1e-7,
                             atol=1e-9, max_steps=100_000).ys)
    rng = np.random.default_rng(1)
    s = rng.choice(1000 - 10, 20, replace=False)
    y0, target = ys[s], ys[s[None, :] + np.arange(10)[:, None]]  # (20, 2), (10, 20, 2)
    w = [rng.uniform(-b, b, size=shape).astype(np.float32) for b, shape in
         ((2 ** -0.5, (50, 2)), (2 ** -0.5, (50,)), (50 ** -0.5, (2, 50)),
          (50 ** -0.5, (2,)))]
    return ts[:10], y0, target, w


def spiral_jax(adjoint, batch_t, weights):
    k1, k2 = jax.random.split(jax.random.key(0))
    field = SpiralField(eqx.nn.Linear(2, 50, key=k1), eqx.nn.Linear(50, 2, key=k2))
    field = eqx.tree_at(lambda f: (f.l1.weight, f.l1.bias, f.l2.weight, f.l2.bias),
                        field, tuple(jnp.asarray(w) for w in weights))
    model = jo.nn.NeuralODE(field, t1=float(batch_t[-1]), solver="dopri5", rtol=1e-7,
                            atol=1e-9, adjoint=adjoint, max_steps=4096)
    ts = jnp.asarray(batch_t)
    loss = lambda m, y0, target: jnp.mean(jnp.abs(m(y0, ts) - target))  # noqa: E731
    opt = optax.rmsprop(1e-3, decay=0.99, eps=1e-8, eps_in_sqrt=False)  # = torch's
    return jax_trainer(model, loss, opt)


def spiral_torch(tc: Torch, adjoint: bool, batch_t, weights, y0, target):
    torch = tc.torch
    net = torch.nn.Sequential(torch.nn.Linear(2, 50), torch.nn.Tanh(),
                              torch.nn.Linear(50, 2)).to(tc.device)
    with torch.no_grad():
        for p, w in zip([net[0].weight, net[0].bias, net[2].weight, net[2].bias],
                        weights, strict=True):
            p.copy_(tc.tensor(w))

    class Func(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t, y):
            return self.net(y ** 3)

    func = Func()
    solve = tc.odeint_adjoint if adjoint else tc.odeint
    tt, y0t, yt = tc.tensor(batch_t), tc.tensor(y0), tc.tensor(target)

    def loss(m):
        return torch.mean(torch.abs(solve(m, y0t, tt, rtol=1e-7, atol=1e-9,
                                          method="dopri5") - yt))

    return func, loss, torch.optim.RMSprop(func.parameters(), lr=1e-3)


def spiral_section(sec: Section) -> None:
    ctx, tc = sec.ctx, sec.ctx.torch
    batch_t, y0, target, weights = spiral_data()
    inner = ctx.plan["spiral_inner"]
    why = tc.why_not()
    if why:
        sec.skip(f"torchdiffeq: {why}")
    fns, pairs, firsts, nopeer = {}, [], {}, {}
    for jadj, tname, tol in (("recursive", "odeint", 1e-3),
                             ("backsolve", "odeint_adjoint", 1e-2)):
        step, state = spiral_jax(jadj, batch_t, weights)
        batch = (jnp.asarray(y0), jnp.asarray(target))
        v, g, firsts[jadj] = first_step(step, state, batch)
        fns[f"jaxode {jadj}"] = steps_runner(step, state, batch, inner)
        if why:
            continue
        func, loss, opt = spiral_torch(tc, tname == "odeint_adjoint", batch_t,
                                       weights, y0, target)
        value = loss(func)
        value.backward()
        tp = [func.net[0].weight, func.net[0].bias, func.net[2].weight, func.net[2].bias]
        jp = [g.vector_field.l1.weight, g.vector_field.l1.bias,
              g.vector_field.l2.weight, g.vector_field.l2.bias]
        if agree(sec, f"spiral {jadj} against {tname}", [("loss", v, value, 1e-4)] + [
                (f"d loss / d {n}", a, b.grad, tol) for n, a, b in
                zip(("W1", "b1", "W2", "b2"), jp, tp, strict=True)]):
            fns[f"torchdiffeq {tname}"] = torch_steps(tc, func, loss, opt, inner)
            pairs.append((jadj, f"torchdiffeq {tname}"))
        else:
            nopeer[jadj] = f"torchdiffeq {tname}: {DIFFER}"
    res = race(fns, rounds=ctx.plan["rounds"], deadline=sec.deadline)
    for jadj, label in (("recursive", "backprop through the solver"),
                        ("backsolve", "continuous adjoint")):
        peer = [p for j, p in pairs if j == jadj]
        train_row(sec, f"spiral Neural ODE training step, {label}: dopri5 rtol 1e-7 "
                  "atol 1e-9, f32, 20 windows x 10 steps, RMSprop", res,
                  f"jaxode {jadj}", f"jaxode {jadj}",
                  {p: f"{p} ({tc.device})" for p in peer}, inner, firsts[jadj],
                  nopeer=nopeer.get(jadj, why))


# ---------------------------------------------------------------------- ODE-Net


def conv_weight(conv) -> np.ndarray:
    """`Conv3x3.weight`, row `(3i + j) * in + c` of tap `(i, j)` and input channel
    `c`, as a torch `Conv2d` weight `(out, in, 3, 3)`."""
    w = np.asarray(conv.weight)
    return w.reshape(3, 3, conv.in_channels, conv.out_channels).transpose(3, 2, 0, 1)


def torch_odenet(tc: Torch, model):
    """`model` (a `jaxode.nn.ODENet`) written with torch layers and
    `odeint_adjoint`, holding the same weights; the forward NFE is counted."""
    torch, nn = tc.torch, tc.torch.nn

    def conv(c, stride=1):
        m = nn.Conv2d(c.in_channels, c.out_channels, 3, stride=stride, padding=1)
        with torch.no_grad():
            m.weight.copy_(tc.tensor(conv_weight(c)))
            m.bias.copy_(tc.tensor(np.asarray(c.bias)))
        return m

    def norm(g):
        m = nn.GroupNorm(g.groups, g.scale.shape[0], eps=g.eps)
        with torch.no_grad():
            m.weight.copy_(tc.tensor(np.asarray(g.scale)))
            m.bias.copy_(tc.tensor(np.asarray(g.shift)))
        return m

    block = model.ode.vector_field

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.conv1 = norm(block.norm1), conv(block.conv1)
            self.norm2, self.conv2 = norm(block.norm2), conv(block.conv2)
            self.norm3 = norm(block.norm3)
            self.nfe = 0

        def forward(self, t, x):
            self.nfe += 1
            plane = t * torch.ones_like(x[:, :1])
            x = self.conv1(torch.cat([torch.relu(self.norm1(x)), plane], 1))
            x = self.conv2(torch.cat([torch.relu(self.norm2(x)), plane], 1))
            return self.norm3(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.norm = conv(model.stem.conv1), norm(model.stem.norm)
            self.conv2, self.block = conv(model.stem.conv2, stride=2), Block()
            self.head_norm = norm(model.head.norm)
            self.linear = nn.Linear(*model.head.linear.weight.shape[::-1])
            with torch.no_grad():
                self.linear.weight.copy_(tc.tensor(np.asarray(model.head.linear.weight)))
                self.linear.bias.copy_(tc.tensor(np.asarray(model.head.linear.bias)))
            self.ts = tc.tensor(np.array([0.0, 1.0], np.float32))

        def forward(self, x):  # x: (batch, 1, H, W)
            x = self.conv2(torch.relu(self.norm(self.conv1(x))))
            x = tc.odeint_adjoint(self.block, x, self.ts, rtol=1e-3, atol=1e-3,
                                  method="dopri5")[-1]
            return self.linear(torch.relu(self.head_norm(x)).mean((2, 3)))

    return Net().to(tc.device)


def odenet_section(sec: Section) -> None:
    ctx, tc = sec.ctx, sec.ctx.torch
    side, channels, batch = ctx.plan["odenet"]
    rng = np.random.default_rng(0)
    images = rng.normal(size=(batch, side, side)).astype(np.float32)
    labels = rng.integers(0, 10, size=batch)
    model = jo.nn.ODENet(channels, key=jax.random.key(0))  # dopri5 1e-3, backsolve

    def loss(m, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

    step, state = jax_trainer(model, loss, optax.adam(1e-3))
    inner = max(1, ctx.plan["spiral_inner"] // 2)
    batch_j = (jnp.asarray(images), jnp.asarray(labels))
    v, g, first = first_step(step, state, batch_j)
    fns = {"jaxode": steps_runner(step, state, batch_j, inner)}
    nfe = int(model.ode.solve(model.stem(batch_j[0][..., None])).stats["nfe"])
    extra = f"; forward NFE {nfe}"
    peers = {}
    why = nopeer = tc.why_not()
    if why:
        sec.skip(f"torch ODE-Net: {why}")
    else:
        torch = tc.torch
        net = torch_odenet(tc, model)
        xt, yt = tc.tensor(images[:, None]), tc.tensor(labels).long()
        loss_t = lambda m: torch.nn.functional.cross_entropy(m(xt), yt)  # noqa: E731
        with torch.no_grad():
            net(xt)
        peer_nfe, net.block.nfe = net.block.nfe, 0
        value = loss_t(net)
        value.backward()
        # At rtol 1e-3 the weight gradient of either continuous adjoint is 15-50 %
        # off one of RK4 with 400 steps (both sides, measured on 8x8 images): the
        # block's gradient is held only to pointing the same way.
        if agree(sec, "ODE-Net loss and gradient", [
                ("loss", v, value, 1e-3),
                ("d loss / d head weight", g.head.linear.weight, net.linear.weight.grad,
                 1e-2),
                ("d loss / d block conv1", conv_weight(g.ode.vector_field.conv1),
                 net.block.conv1.weight.grad, 1.0)]):
            fns["torch"] = torch_steps(tc, net, loss_t, torch.optim.Adam(
                net.parameters(), lr=1e-3), inner)
            peers["torch"] = (f"torch + torchdiffeq odeint_adjoint ({tc.device}; "
                              f"forward NFE {peer_nfe})")
        else:
            nopeer = DIFFER
    res = race(fns, rounds=ctx.plan["rounds"], deadline=sec.deadline)
    train_row(sec, f"ODE-Net classifier training step (Adam): {side}x{side} synthetic "
              f"images, batch {batch}, {channels} channels, dopri5 rtol=atol=1e-3, "
              "backsolve adjoint, f32", res, "jaxode", "jaxode nn.ODENet", peers,
              inner, first, extra, nopeer)


# ------------------------------------------------------------------------ loop


def loop_contenders(m: int, steps: int, unrolls) -> dict:
    u0s_np, ps_np = lorenz_members(m)
    u0s, ps = jnp.asarray(u0s_np), jnp.asarray(ps_np)
    ts = np.array([0.0, steps * 1e-3], np.float32)
    fns = {f"hand unroll={u}": hand_rk4(steps, 1e-3, u) for u in unrolls}
    fns["jaxode jit(vmap(solve))"] = jaxode_lorenz(
        ts, dict(solver="rk4", dt=1e-3))["jaxode jit(vmap(solve))"]
    return {name: (lambda fn=fn: fn(u0s, ps)) for name, fn in fns.items()}


def loop_section(sec: Section) -> None:
    """Time against steps at fixed members; the slope is the time per step."""
    ctx = sec.ctx
    unrolls, counts = ctx.plan["unrolls"], ctx.plan["loop_steps"]
    compile_s = 0.0  # the first step count's calls of the member count before
    for m in ctx.plan["loop_members"]:
        if compile_s > sec.left():
            sec.skip(f"loop: {m} members (~{compile_s:.0f} s for its first step count"
                     f", {sec.left():.0f} s left)")
            continue
        times, done = {}, []
        for steps in counts:
            if done:  # compile again, run `steps / done[-1]` times longer
                guess = sum(r["first"] - r["best"] + 3 * r["best"] * steps / done[-1]
                            for r in (runs[-1] for runs in times.values())
                            if r["best"] == r["best"])
                if guess > sec.left():
                    sec.skip(f"loop: {m} members, from {steps} steps on (~{guess:.0f}"
                             f" s predicted, {sec.left():.0f} s left)")
                    break
            print(f" {m} members, {steps} steps", flush=True)
            res = race(loop_contenders(m, steps, unrolls), rounds=ctx.plan["rounds"],
                       deadline=sec.deadline, reference="hand unroll=1",
                       error=rel_error, tol=1e-3)
            for name, r in res.items():
                times.setdefault(name, []).append(
                    r if "error" not in r else {"first": 0.0, "best": math.nan})
            done.append(steps)
            if len(done) == 1:
                compile_s = sum(r.get("first", 0.0) for r in res.values())
        if len(done) < 2:
            sec.skip(f"loop: {m} members, fewer than two step counts ran: no slope")
            continue
        loop_rows(sec, m, done, times, unrolls)


def loop_rows(sec: Section, m: int, done: list, times: dict, unrolls) -> None:
    """Least-squares line of best time against steps: slope = time per step,
    intercept = the fixed cost of a call."""
    fit = {}
    for name, runs in times.items():
        best = np.array([r["best"] for r in runs])
        if np.all(np.isfinite(best)):
            fit[name] = np.polyfit(np.array(done, float), best, 1)
    span = f"slope over {done[0]}..{done[-1]} steps"
    j, h = fit.get("jaxode jit(vmap(solve))"), fit.get("hand unroll=1")
    if j is None or h is None:
        sec.row(f"loop: Lorenz RK4 f32, {m} members: time per step", "failed or "
                "wrong" if j is None else f"{fmt(j[0])}/step", "-", "-")
        return
    sec.row(f"loop: Lorenz RK4 f32, {m} members, final state: time per step ({span})",
            f"jit(vmap(solve)) {fmt(j[0])}/step (intercept {fmt(j[1])})",
            f"hand vmap(lax.scan) {fmt(h[0])}/step (intercept {fmt(h[1])})",
            f"**{h[0] / j[0]:.3g}x** the hand scan's per-step speed")
    for u in unrolls[1:]:
        hu = fit.get(f"hand unroll={u}")
        if hu is None:
            sec.row(f"loop: hand scan unroll={u}, {m} members", "-", "failed", "-")
            continue
        sec.row(f"loop: hand vmap(lax.scan) with unroll={u}, Lorenz RK4 f32, {m} "
                f"members: time per step ({span})", f"{fmt(j[0])}/step",
                f"hand unroll={u} {fmt(hu[0])}/step; unroll=1 {fmt(h[0])}/step",
                f"unroll={u}: **{h[0] / hu[0]:.3g}x** unroll=1's per-step speed; "
                f"jaxode {hu[0] / j[0]:.3g}x unroll={u}'s")


# ------------------------------------------------------------------------ main


class Context:
    def __init__(self, plan: dict, torch: Torch, tag: str):
        self.plan, self.torch, self.tag = plan, torch, tag
        self.rows: list[str] = []
        self.skipped: list[str] = []


RUNNERS = {
    "lorenz_rk4": lambda sec: lorenz_section(sec, adaptive=False),
    "lorenz_tsit5": lambda sec: lorenz_section(sec, adaptive=True),
    "stiff": stiff_section,
    "lstm": lstm_section,
    "spiral": spiral_section,
    "odenet": odenet_section,
    "loop": loop_section,
}


def run_sections(ctx: Context, names: list[str], budget: float) -> None:
    """Each section in turn, with a share of the time left; a failure is printed
    and recorded, and the next section runs."""
    end = START + budget
    for i, name in enumerate(names):
        left = end - time.perf_counter()
        shares = sum(SHARES[n] for n in names[i:])
        cap = left * SHARES[name] / shares
        if cap < 2.0:
            ctx.skipped.append(f"{name}: not run, the time budget is spent "
                               f"({left:.0f} s left)")
            print(f"\n== {name}: not run, out of time", flush=True)
            continue
        print(f"\n== {name} (cap {cap:.0f} s of {left:.0f} s left)", flush=True)
        t0 = time.perf_counter()
        sec = Section(name, cap, ctx)
        try:
            with alarm(min(1.5 * cap, end - time.perf_counter()) + 30):
                RUNNERS[name](sec)
        except Exception as e:  # the next section still runs
            traceback.print_exc(file=sys.stdout)
            ctx.skipped.append(f"{name}: FAILED ({first_line(e)})")
            sec.row(f"{name}: FAILED ({first_line(e)})", "-", "-", "-")
        print(f"== {name}: {time.perf_counter() - t0:.0f} s", flush=True)


def header(ctx: Context, mode: str, budget: float) -> list[str]:
    platform_, kind = describe_device()
    now = datetime.datetime.now(datetime.timezone.utc)
    return [
        f"device: {kind} (JAX platform {platform_}, {len(jax.devices())} device(s)); "
        f"{platform.machine()}, {os.cpu_count()} CPUs",
        f"date: {now:%Y-%m-%d %H:%M} UTC; command: python benchmarks/gpu.py "
        + " ".join(sys.argv[1:]),
        f"mode: {mode} sizes, time budget {budget:.0f} s; jax {jax.__version__}, "
        f"diffrax {diffrax.__version__}, equinox {eqx.__version__}, "
        f"optax {optax.__version__}",
        f"peers: {ctx.torch.note}; float32 matrix products in full float32 on "
        "both sides (TensorFloat-32 off)",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, a smoke run (timings not meaningful)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole run (default: 400 on an "
                        "accelerator, 270 on the CPU, 120 with --quick)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, from: {', '.join(SECTIONS)}")
    parser.add_argument("--out", default=None,
                        help="also write the header and the table to this file")
    ns = parser.parse_args()
    names = [s.strip() for s in ns.sections.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    # float32 matrix products in full float32 (not TensorFloat-32 where the GPU has
    # it), as torch's are with the flags `Torch` sets
    jax.config.update("jax_default_matmul_precision", "highest")
    platform_, kind = describe_device()
    mode = "quick" if ns.quick else ("cpu" if platform_ == "cpu" else "gpu")
    plan = PLANS[mode]
    budget = ns.budget or plan["budget"]
    ctx = Context(plan, Torch(platform_), kind)
    lines = header(ctx, mode, budget)
    print("\n".join(lines), flush=True)
    try:
        run_sections(ctx, names, budget)
    finally:  # the table, whatever happened
        table = ["", "| benchmark | jaxode | peer | ratio |", "|---|---|---|---|",
                 *ctx.rows, ""]
        table += [f"skipped or failed: {s}" for s in ctx.skipped] or ["nothing skipped"]
        table.append(f"(wall time {time.perf_counter() - START:.0f} s)")
        print("\n".join(table), flush=True)
        if ns.out:
            with open(ns.out, "w", encoding="utf-8") as fh:
                fh.write("\n".join(lines + table) + "\n")
    # a section that raised is a failure of the script (a skip for time is not)
    return 1 if any(": FAILED (" in s for s in ctx.skipped) else 0


if __name__ == "__main__":
    sys.exit(main())
