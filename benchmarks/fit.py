"""Benchmark: recover the two-species competition model's six parameters from its seven
observations.

Same problem everywhere: the competition model, its seven observations, one initial guess,
parameters in log space, float64, Dormand–Prince 5(4) with rtol = atol = 1e-6.

1. jaxode.fit (Adam, no polish) against torchdiffeq + torch.optim.Adam: the same
   number of optimiser steps with the same learning-rate schedule; the time each needs
   to reach the loss the slower of the two ends with.
2. jaxode.fit (300 Adam steps then Levenberg–Marquardt) against scipy
   `least_squares` (LM, finite differences) over `solve_ivp`, both from the same
   guess: the time to reach the least-squares optimum (+0.1 %). scipy is given a
   time budget, since from this guess it wanders into stiff parameter regions.
3. The same two from one point near the optimum (jaxode: `steps=0`, only the
   Levenberg–Marquardt steps).

jaxode times are of the second call (compilation reported apart); all times are the
minimum over repeats, the sides timed alternately, in one process.

    python benchmarks/fit.py [--quick] [--steps N] [--repeats R]
"""

import argparse
import math
import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import jaxode  # noqa: E402
from jaxode.data import competition, competition_observations  # noqa: E402

NAMES = ("r1", "r2", "a1", "a2", "iN1", "iN2")
GUESS = dict(zip(NAMES, (0.1, 0.1, 0.001, 0.001, 0.001, 0.001)))
TOL = 1e-6
TS, YS = competition_observations()


def lr_at(step: int, steps: int) -> float:
    """jaxode's default schedule: optax.warmup_cosine_decay_schedule(1e-3, 0.05,
    steps // 20, steps, 1e-4)."""
    warm = max(1, steps // 20)
    if step < warm:
        return 1e-3 + (0.05 - 1e-3) * step / warm
    frac = min(1.0, (step - warm) / max(1, steps - warm))
    return 1e-4 + (0.05 - 1e-4) * 0.5 * (1 + math.cos(math.pi * frac))


# ------------------------------------------------------------------ jaxode


def run_jaxode(steps: int, polish: bool):
    start = time.perf_counter()
    res = jaxode.fit(competition, GUESS, ts=TS, ys=YS, y0=YS[0], positive=True,
                     solver="dopri5", rtol=TOL, atol=TOL, steps=steps, polish=polish,
                     progress=False)
    return time.perf_counter() - start, res


# ------------------------------------------------------------------ torch


def make_torch(threads: int):
    import torch
    from torchdiffeq import odeint

    torch.set_num_threads(threads)
    t = torch.tensor(TS, dtype=torch.float64)
    y = torch.tensor(YS, dtype=torch.float64)

    def run(steps: int):
        logp = torch.tensor(np.log([GUESS[k] for k in NAMES]), dtype=torch.float64,
                            requires_grad=True)
        opt = torch.optim.Adam([logp], lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, steps))

        def field(_, z):
            r1, r2, a1, a2, in1, in2 = torch.exp(logp)
            x, w = z[0], z[1]
            return torch.stack([r1 * x * (1 - in1 * x) - a1 * x * w,
                                r2 * w * (1 - in2 * w) - a2 * x * w])

        losses, times = [], []
        start = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            pred = odeint(field, y[0], t, rtol=TOL, atol=TOL, method="dopri5")
            loss = ((pred[1:] - y[1:]) ** 2).mean()  # t = 0 is y0 itself
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            times.append(time.perf_counter() - start)
        return np.array(losses), np.array(times)

    return run


# ------------------------------------------------------------------ scipy


class _OutOfTime(Exception):
    pass


def run_scipy(start: dict, goal: float | None, budget: float):
    """least_squares (Levenberg–Marquardt, finite-difference Jacobian) over
    solve_ivp(RK45) in log space from `start`. Returns (total time, time at which the
    loss first fell to `goal` or inf, final loss); gives up after `budget` seconds."""
    from scipy.integrate import solve_ivp
    from scipy.optimize import least_squares

    y0 = YS[0]
    trace = []
    begin = time.perf_counter()

    def residuals(logp):
        if time.perf_counter() - begin > budget:
            raise _OutOfTime
        r1, r2, a1, a2, in1, in2 = np.exp(logp)

        def field(_, z):
            if time.perf_counter() - begin > budget:  # a stiff region: give up
                raise _OutOfTime
            x, w = z
            return [r1 * x * (1 - in1 * x) - a1 * x * w,
                    r2 * w * (1 - in2 * w) - a2 * x * w]

        sol = solve_ivp(field, (TS[0], TS[-1]), y0, method="RK45", t_eval=TS,
                        rtol=TOL, atol=TOL)
        if not sol.success or sol.y.shape[1] != len(TS):
            return np.full(2 * (len(TS) - 1), 1e6)
        r = (sol.y.T[1:] - YS[1:]).ravel()
        trace.append((time.perf_counter() - begin, float(np.mean(r * r))))
        return r

    try:
        least_squares(residuals, np.log([start[k] for k in NAMES]), method="lm",
                      xtol=1e-10, ftol=1e-10)
    except _OutOfTime:
        pass
    total = time.perf_counter() - begin
    final = min(loss for _, loss in trace)
    goal = final * 1.001 if goal is None else goal
    reach = next((t for t, loss in trace if loss <= goal), math.inf)
    return total, reach, final


# ------------------------------------------------------------------ main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run")
    parser.add_argument("--steps", type=int, default=300,
                        help="optimiser steps for jaxode and torch (default 300)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--budget", type=float, default=30.0,
                        help="seconds scipy may take per run (default 30)")
    cli = parser.parse_args()
    steps = 30 if cli.quick else cli.steps
    repeats = 1 if cli.quick else cli.repeats
    polish_steps = 50 if cli.quick else 300
    budget = 5.0 if cli.quick else cli.budget
    threads = os.cpu_count() or 1
    print(f"competition model, seven observations, float64, dopri5 rtol=atol={TOL}, {steps} Adam "
          f"steps, {threads} threads (torch.set_num_threads({threads})), load average "
          f"{os.getloadavg()[0]:.1f}")

    # ---- 1. Adam vs Adam
    torch_run = make_torch(threads)
    first, res = run_jaxode(steps, polish=False)
    jx, tq = [], []
    for _ in range(repeats):  # alternate the sides
        jx.append(run_jaxode(steps, polish=False)[0])
        t_losses, t_times = torch_run(steps)
        tq.append(t_times[-1])
    jx_total = min(jx)
    print(f"jaxode  Adam: compile {first - jx_total:.2f} s, run {jx_total:.3f} s "
          f"({1e6 * jx_total / steps:.0f} us/step), final loss {res.losses[-1]:.4g}")
    print(f"torch   Adam: run {min(tq):.3f} s ({1e6 * min(tq) / steps:.0f} us/step), "
          f"final loss {t_losses[-1]:.4g}")
    target = max(res.losses[-1], t_losses[-1])
    j_step = int(np.argmax(res.losses <= target * (1 + 1e-9)))
    t_step = int(np.argmax(t_losses <= target * (1 + 1e-9)))
    j_time = jx_total * (j_step + 1) / steps  # the compiled loop: uniform steps
    t_time = min(tq) * (t_step + 1) / steps
    adam_ratio = t_time / j_time
    print(f"time to loss {target:.4g}: jaxode {j_time:.3f} s (step {j_step + 1}), "
          f"torch {t_time:.3f} s (step {t_step + 1}); torch / jaxode = "
          f"{adam_ratio:.1f}x")

    # ---- 2. from the initial guess to the least-squares optimum
    first, res = run_jaxode(polish_steps, polish=True)
    goal = res.loss * 1.001
    jx, sp = [], []
    for _ in range(repeats):
        jx.append(run_jaxode(polish_steps, polish=True)[0])
        sp.append(run_scipy(GUESS, goal, budget))
    jx_total = min(jx)
    sp_total, sp_reach, sp_final = min(sp, key=lambda x: x[1])
    print(f"jaxode.fit ({polish_steps} Adam steps + LM) from the initial guess: compile "
          f"{first - jx_total:.2f} s, run {jx_total:.3f} s, loss {res.loss:.6g}")
    print(f"scipy least_squares(lm) over solve_ivp(RK45) from the initial guess: "
          f"{sp_total:.2f} s, best loss {sp_final:.6g}, reaches {goal:.6g}: "
          f"{'never' if math.isinf(sp_reach) else f'after {sp_reach:.3f} s'}"
          f"{f' (gave up after {budget:.0f} s)' if sp_total >= budget else ''}")
    guess_ratio = sp_reach / jx_total

    # ---- 3. both from the same point near the optimum (the end of 300 Adam steps)
    near = {k: float(v) for k, v in run_jaxode(300 if not cli.quick else steps,
                                               polish=False)[1].params.items()}
    def polish_only():
        start = time.perf_counter()
        r = jaxode.fit(competition, near, ts=TS, ys=YS, y0=YS[0], positive=True,
                       solver="dopri5", rtol=TOL, atol=TOL, steps=0, progress=False)
        return time.perf_counter() - start, r

    first, res_p = polish_only()
    jp, sp2 = [], []
    for _ in range(repeats):
        jp.append(polish_only()[0])
        sp2.append(run_scipy(near, goal, budget))
    jp_total = min(jp)
    sp2_total, sp2_reach, sp2_final = min(sp2, key=lambda x: x[1])
    print(f"from the same point near the optimum: jaxode LM (steps=0) {jp_total:.3f} s "
          f"(compile {first - jp_total:.2f} s), loss {res_p.loss:.6g}; scipy "
          f"{sp2_reach:.3f} s to {goal:.6g} ({sp2_total:.3f} s total, best "
          f"{sp2_final:.6g})")
    near_ratio = sp2_reach / jp_total if res_p.loss <= goal else float("nan")
    print()
    print("| benchmark | jaxode | peer | ratio |")
    print("|---|---|---|---|")
    print(f"| fit, competition model, {steps} Adam steps to loss {target:.3g} (vs torchdiffeq "
          f"+ Adam) | {j_time:.3f} s | {t_time:.3f} s | {adam_ratio:.1f}x |")
    print(f"| fit from the initial guess to the optimum, loss {goal:.4g} (vs scipy "
          f"least_squares + solve_ivp) | {jx_total:.3f} s | "
          f"{'not reached in %.0f s' % budget if math.isinf(sp_reach) else '%.3f s' % sp_reach}"
          f" | {'>%.0f' % (budget / jx_total) if math.isinf(sp_reach) else '%.1f' % guess_ratio}x |")
    print(f"| Levenberg–Marquardt from a point near the optimum (vs scipy least_squares "
          f"+ solve_ivp) | {jp_total:.3f} s | {sp2_reach:.3f} s | {near_ratio:.1f}x |")


if __name__ == "__main__":
    main()
