"""`PetabProblem`: a PEtab problem as one compiled objective, and `load`.

The tables are read once (`_tables`) into index arrays; the program (`Program`, an
`eqx.Module`) holds them with the model's right-hand side, initial state and the
observable and noise formulas, each compiled once by `compile_exprs`. One run
simulates every experiment: the pre-equilibration conditions under one `jax.vmap`
(solved to steady state), the experiments without and with pre-equilibration under
one `jax.vmap` each, every experiment of a group saving on the group's union of
measurement times. A right-hand side with a `Piecewise` in time (a step or pulse
input) is solved in pieces split at the times its conditions switch, so that no
adaptive step spans a jump. Gradients are JAX's, through the solves (and through
the switching times).
"""

import dataclasses
import functools
import math
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pandas as pd
import sympy as sp
from jaxtyping import Array, Bool, Float

from .._engine import Config, configure, run
from ._symbolic import OdeModel, compile_exprs
from ._tables import (
    Source,
    read_conditions,
    read_measurements,
    read_observables,
    read_parameters,
    resolve,
)

__all__ = ["PetabProblem", "PetabFit", "Program", "load"]

SCALE_NAMES = ("lin", "log", "log10")
# the error-model residual sqrt(log(2 pi sigma^2) + C) of Data2Dynamics, real for
# sigma above about 1e-11
_ERROR_MODEL_C = 50.0
_FAILED_RESIDUAL = 1e10


class _Group(eqx.Module):
    """Experiments solved under one `vmap` on the time grid `ts`, and the
    measurement rows they give (`rows`, each at `exp`, time index `k`, or at the
    steady state where `at_inf`)."""

    ts: Float[Array, " time"]
    p: Source
    y_has: Bool[Array, "exp state"]
    y: Source
    pre: Array | None
    needs_steady: Bool[Array, " exp"]
    rows: Array
    exp: Array
    k: Array
    at_inf: Bool[Array, " row"]
    steady: bool = eqx.field(static=True)


class Program(eqx.Module):
    """Everything one evaluation of the objective needs, as arrays and compiled
    functions; built by `PetabProblem`."""

    groups: tuple
    pre: tuple | None
    q0: Float[Array, " table"]
    est: Array
    scale: Array
    prior: Array
    prior_par: Array
    table_idx: Array
    obs: Array
    ph: Source
    value: Float[Array, " row"]
    transform: Array
    dist: Array
    config: Config
    rhs: object = eqx.field(static=True)
    init: object = eqx.field(static=True)
    observe: object = eqx.field(static=True)
    noise: object = eqx.field(static=True)
    t_steady: float = eqx.field(static=True)
    breaks: object = eqx.field(static=True, default=None)


# ------------------------------------------------------------------ the program


def _unscale(theta, scale):
    return jnp.where(scale == 0, theta, jnp.where(scale == 1, jnp.exp(theta),
                                                  10.0 ** theta))


def _vector_field(prog: Program):
    def f(t, y, p):
        return prog.rhs(jnp.reshape(t, (1,)).astype(y.dtype), y, p)
    return f


def _solve(prog: Program, y0, ts, p):
    """`(ys, ok)`: the solve from `y0` at `ts[0]`, saved at `ts`, split at the
    times where the right-hand side jumps (`prog.breaks(p)`, the times a condition
    of a `Piecewise` in time switches): each piece is its own solve from where the
    one before ended, so no step of the adaptive solver spans a jump (one that
    would step over a short pulse entirely)."""
    f = _vector_field(prog)
    if prog.breaks is None:
        sol = run(prog.config, f, y0, ts, p)
        return sol.ys, sol.ok
    cuts = jnp.sort(jnp.clip(prog.breaks(p).astype(ts.dtype), ts[0], ts[-1]))
    edges = jnp.concatenate([ts[:1], cuts, ts[-1:]])
    ys, y, ok = None, y0, jnp.array(True)
    for lo, hi in zip(edges[:-1], edges[1:]):
        # the save times outside [lo, hi] clipped onto its ends, then dropped
        sol = run(prog.config, f, y, jnp.concatenate(
            [lo[None], jnp.clip(ts, lo, hi), hi[None]]), p)
        ys = sol.ys[1:-1] if ys is None else jnp.where(
            (ts >= lo)[:, None], sol.ys[1:-1], ys)
        y, ok = sol.ys[-1], ok & sol.ok
    return ys, ok


def _steady(prog: Program, y0, p):
    """`y` after a solve to `t_steady`, and whether it is a steady state:
    `rms(f / (atol + rtol |y|)) < 1`."""
    f = _vector_field(prog)
    ts = jnp.array([0.0, prog.t_steady], y0.dtype)
    ys, ok = _solve(prog, y0, ts, p)
    y = ys[-1]
    scale = prog.config.atol + prog.config.rtol * jnp.abs(y)
    err = jnp.sqrt(jnp.mean((f(ts[-1], y, p) / scale) ** 2))
    return y, ok & (err < 1.0)


def _initial(prog: Program, p, has, values):
    return jnp.where(has, values, jax.vmap(prog.init)(p))


def _run_group(prog: Program, g: _Group, q, pre_ss):
    p = resolve(g.p, q)
    start = (pre_ss[g.pre] if g.pre is not None else jax.vmap(prog.init)(p))
    y0 = jnp.where(g.y_has, resolve(g.y, q), start)
    ys, ok = jax.vmap(lambda y, a: _solve(prog, y, g.ts, a))(y0, p)
    if g.steady:
        yss, ok_ss = jax.vmap(functools.partial(_steady, prog))(y0, p)
        ok = ok & (ok_ss | ~g.needs_steady)
    else:
        yss = ys[:, -1]
    y_row = jnp.where(g.at_inf[:, None], yss[g.exp], ys[g.exp, g.k])
    t_row = jnp.where(g.at_inf, jnp.inf, g.ts[g.k])
    table = q[prog.table_idx]
    ph = resolve(Source(*(a[g.rows] for a in prog.ph)), q)
    obs = prog.obs[g.rows][:, None]

    def evaluate(fn):
        values = jax.vmap(lambda t, y, a, h: fn(jnp.reshape(t, (1,)), y, a, table, h))(
            t_row, y_row, p[g.exp], ph)
        return jnp.take_along_axis(values, obs, 1)[:, 0]

    sim, sigma = evaluate(prog.observe), evaluate(prog.noise)
    return sim, sigma, ok


def table_vector(prog: Program, theta):
    """The parameter table's values (natural units) with `theta` (parameter scale)
    in the estimated entries."""
    return prog.q0.at[prog.est].set(_unscale(theta, prog.scale))


def forward(prog: Program, theta):
    """`(simulation, sigma, ok)`: per measurement row the simulated observable and
    its noise parameter; `ok` the per-experiment flags (`pre`, then each group)."""
    q = table_vector(prog, theta)
    pre_ss, oks = None, []
    if prog.pre is not None:
        p_src, has, y_src = prog.pre
        p_pre = resolve(p_src, q)
        y_pre = _initial(prog, p_pre, has, resolve(y_src, q))
        pre_ss, pre_ok = jax.vmap(functools.partial(_steady, prog))(y_pre, p_pre)
        oks.append(pre_ok)
    n = prog.value.shape[0]
    sim, sigma = jnp.zeros(n), jnp.zeros(n)
    for g in prog.groups:
        s, sd, ok = _run_group(prog, g, q, pre_ss)
        sim, sigma = sim.at[g.rows].set(s), sigma.at[g.rows].set(sd)
        oks.append(ok)
    return sim, sigma, tuple(oks)


def _transformed(prog: Program, v):
    safe = jnp.where(prog.transform == 0, 1.0, v)
    return jnp.where(prog.transform == 0, v, jnp.where(
        prog.transform == 1, jnp.log(safe), jnp.log10(safe)))


def row_nllh(prog: Program, sim, sigma):
    """PEtab's negative log-likelihood of each measurement row."""
    m = prog.value
    r = (_transformed(prog, sim) - _transformed(prog, m)) / sigma
    safe_m = jnp.where(prog.transform == 0, 1.0, m)
    jac = jnp.where(prog.transform == 0, 0.0, jnp.where(
        prog.transform == 1, jnp.log(safe_m), jnp.log(safe_m * math.log(10))))
    normal = 0.5 * jnp.log(2 * jnp.pi * sigma ** 2) + 0.5 * r ** 2
    laplace = jnp.log(2 * sigma) + jnp.abs(r)
    return jnp.where(prog.dist == 0, normal, laplace) + jac


def neg_log_prior(prog: Program, theta):
    """The sum of the estimated parameters' negative log-priors: `parameterScale*`
    types are densities of the value on the parameter scale (no change-of-variables
    term, as pyPESTO), the others densities of the natural value (`logNormal`,
    `logLaplace`: of a log-normal, log-Laplace variable)."""
    kind, a, b = prog.prior, prog.prior_par[:, 0], prog.prior_par[:, 1]
    a, b = jnp.where(kind >= 0, a, 0.0), jnp.where(kind >= 0, b, 1.0)
    v = jnp.where(kind < 3, theta, _unscale(theta, prog.scale))
    positive = v > 0
    log_v = jnp.log(jnp.where(positive, v, 1.0))
    z = jnp.where(kind >= 6, log_v, v)
    normal = 0.5 * jnp.log(2 * jnp.pi * b ** 2) + 0.5 * ((z - a) / b) ** 2
    laplace = jnp.log(2 * b) + jnp.abs(z - a) / b
    uniform = jnp.where((v >= a) & (v <= b), jnp.log(jnp.abs(b - a)), jnp.inf)
    family = kind % 3
    base = jnp.where(family == 0, normal, jnp.where(family == 1, laplace, uniform))
    base = base + jnp.where(kind >= 6, jnp.where(positive, log_v, jnp.inf), 0.0)
    return jnp.sum(jnp.where(kind >= 0, base, 0.0))


def _all_ok(oks) -> Array:
    return jnp.all(jnp.array([jnp.all(o) for o in oks])) if oks else jnp.array(True)


@eqx.filter_jit
def objective(prog: Program, theta):
    """The negative log-likelihood plus the negative log-priors; `inf` where a
    solve fails or a steady state is not reached."""
    sim, sigma, oks = forward(prog, theta)
    value = jnp.sum(row_nllh(prog, sim, sigma)) + neg_log_prior(prog, theta)
    return jnp.where(_all_ok(oks), value, jnp.inf)


@eqx.filter_jit
def residuals(prog: Program, theta):
    """The weighted residuals `(T(sim) - T(m)) / sigma` of every row, then the
    error-model residuals `sqrt(log(2 pi sigma^2) + C)`."""
    sim, sigma, oks = forward(prog, theta)
    r = (_transformed(prog, sim) - _transformed(prog, prog.value)) / sigma
    err = jnp.sqrt(jnp.log(2 * jnp.pi * sigma ** 2) + _ERROR_MODEL_C)
    out = jnp.concatenate([r, err])
    return jnp.where(_all_ok(oks), out, jnp.inf)


value_and_grad = eqx.filter_jit(
    lambda prog, theta: jax.value_and_grad(objective, argnums=1)(prog, theta))


def _forward_value_and_grad(prog: Program, theta):
    """`objective` and its gradient by forward mode, one tangent per parameter (the
    solves of `prog` must use diffrax's `ForwardMode`)."""
    grad, value = jax.jacfwd(lambda th: (objective(prog, th),) * 2, has_aux=True)(theta)
    return value, grad


value_and_grad_forward = eqx.filter_jit(_forward_value_and_grad)


def forward_mode(prog: Program) -> Program:
    """`prog` with its solves differentiated in forward mode."""
    return dataclasses.replace(prog, config=prog.config.replace(
        adjoint=diffrax.ForwardMode()))


def _finite(r):
    # a failed solve as a large residual: the optimiser steps back (a non-finite
    # Jacobian would stop the linear solve of every start under the `vmap`)
    return jnp.where(jnp.isfinite(r), r, _FAILED_RESIDUAL)


def to_box(z, lo, hi):
    """The unconstrained optimiser variable `z` mapped into the box `[lo, hi]`:
    `lo + (hi - lo) (1 + sin z) / 2` (the bounds transformation of MINUIT and lmfit).
    A bound is reached at a finite `z` with a zero derivative, where the objective
    along `z` has a minimum, so a least-squares solver converges onto it."""
    return lo + (hi - lo) * (1 + jnp.sin(z)) / 2


def from_box(theta, lo, hi):
    """The inverse of `to_box` on `[-pi/2, pi/2]`."""
    return jnp.arcsin(jnp.clip(2 * (theta - lo) / (hi - lo) - 1, -1.0, 1.0))


def _objective_fn(prog: Program, forward: bool):
    """`objective(prog, theta)` as a function of `theta`; with `forward`, its
    reverse-mode derivative is the gradient computed by forward mode (for an
    optimiser that asks for a gradient by `jax.vjp`)."""
    if not forward:
        return lambda theta: objective(prog, theta)

    @jax.custom_vjp
    def f(theta):
        return objective(prog, theta)

    def f_fwd(theta):
        return _forward_value_and_grad(prog, theta)

    f.defvjp(f_fwd, lambda grad, ct: (ct * grad,))
    return f


@eqx.filter_jit
def fit_starts(prog: Program, fwd_prog: Program, theta0, lo, hi, *, least_squares: bool,
               forward: bool, steps: tuple[int, int], rtol: float, atol: float):
    """Every start optimised within the bounds `[lo, hi]` (parameter scale), in one
    compiled program: Levenberg–Marquardt on the residuals for `steps[0]` steps
    (with `least_squares`; Jacobians by forward mode through `fwd_prog`, whose
    solves are in forward mode), then BFGS on the objective for `steps[1]` (its
    gradient by forward mode when `forward`). Returns the final points, their
    objective, whether the last optimiser reported success, and the steps taken."""
    f = _objective_fn(fwd_prog if forward else prog, forward)

    def one(th0):
        z, taken = from_box(th0, lo, hi), 0
        if least_squares:
            sol = optx.least_squares(
                lambda z, _: _finite(residuals(fwd_prog, to_box(z, lo, hi))),
                optx.LevenbergMarquardt(rtol, atol), z, options={"jac": "fwd"},
                max_steps=steps[0], throw=False)
            z, taken = sol.value, sol.stats["num_steps"]
        # BFGS finishes what Levenberg–Marquardt leaves: along a direction in which
        # the residuals barely change (a practically non-identifiable parameter) the
        # damped Gauss–Newton step crawls, and BFGS's curvature estimate does not
        sol = optx.minimise(lambda z, _: f(to_box(z, lo, hi)), optx.BFGS(rtol, atol), z,
                            max_steps=steps[1], throw=False)
        return (to_box(sol.value, lo, hi), sol.result == optx.RESULTS.successful,
                taken + sol.stats["num_steps"])

    # the starts one after the other in one program (under a `vmap`, every start
    # would take as many iterations as the slowest)
    theta, ok, taken = jax.lax.map(one, theta0)
    nll = jax.lax.map(lambda th: objective(prog, th), theta)
    nll = jnp.where(jnp.isfinite(nll), nll, jnp.inf)
    return theta, nll, ok, taken


# ------------------------------------------------------------------- building


def _build_groups(meas, conds, pre_index) -> tuple:
    """The experiments without and with pre-equilibration, one `_Group` each."""
    groups = []
    for with_pre in (False, True):
        members = [e for e, (pre, _) in enumerate(meas.experiments)
                   if (pre is not None) == with_pre]
        if not members:
            continue
        local = {e: i for i, e in enumerate(members)}
        rows = np.flatnonzero(np.isin(meas.experiment, members))
        at_inf = np.isinf(meas.time[rows])
        ts = np.unique(np.concatenate([[0.0], meas.time[rows][~at_inf]]))
        k = np.where(at_inf, 0, np.searchsorted(ts, np.where(at_inf, 0, meas.time[rows])))
        exp = np.array([local[e] for e in meas.experiment[rows]], np.int32)
        sims = [conds.ids.index(meas.experiments[e][1]) for e in members]
        needs = np.zeros(len(members), bool)
        needs[exp[at_inf]] = True
        pre = (np.array([pre_index[meas.experiments[e][0]] for e in members], np.int32)
               if with_pre else None)
        groups.append(_Group(
            ts=jnp.asarray(ts), p=Source(*(jnp.asarray(a[sims]) for a in conds.p)),
            y_has=jnp.asarray(conds.y_has[sims]),
            y=Source(*(jnp.asarray(a[sims]) for a in conds.y)),
            pre=None if pre is None else jnp.asarray(pre),
            needs_steady=jnp.asarray(needs), rows=jnp.asarray(rows, jnp.int32),
            exp=jnp.asarray(exp), k=jnp.asarray(k, jnp.int32),
            at_inf=jnp.asarray(at_inf), steady=bool(at_inf.any())))
    return tuple(groups)


def _time_breaks(model: OdeModel) -> tuple:
    """The times, as expressions in the model's parameters, where a condition of a
    `Piecewise` in `model.rhs` switches: the root in `t` of each relation (`a <= t`,
    `t < a`, `Eq(t, a)`, ...) linear in `t` and free of states. Relations with
    states are not time jumps and are left out."""
    t, params = model.t, set(model.parameters)
    found = []
    for expr in model.rhs:
        for pw in sp.sympify(expr).atoms(sp.Piecewise):
            for _, cond in pw.args:
                for rel in sp.sympify(cond).atoms(sp.core.relational.Relational):
                    d = rel.lhs - rel.rhs
                    slope = sp.diff(d, t)
                    if (t not in d.free_symbols or t in slope.free_symbols
                            or not (d.free_symbols - {t}) <= params):
                        continue
                    root = sp.simplify(-d.xreplace({t: 0}) / slope)
                    if root not in found:
                        found.append(root)
    return tuple(found)


def _compile(model: OdeModel, obs) -> tuple:
    t, states, pars = [model.t], list(model.states), list(model.parameters)
    rhs = compile_exprs(model.rhs, [t, states, pars])
    init = compile_exprs(model.initial, [pars])
    breaks = _time_breaks(model)
    breaks = compile_exprs(breaks, [pars]) if breaks else None
    args = [t, states, pars, list(obs.table), list(obs.placeholders)]
    return (rhs, init, compile_exprs(obs.formula, args), compile_exprs(obs.noise, args),
            breaks)


def _files(problem, files) -> dict:
    names = {"condition": "the condition table", "measurement": "the measurement table",
             "observable": "the observable table", "parameter": "the parameter table"}
    return {**names, **(files or {})}


# `gradient="auto"` differentiates in forward mode up to this many parameters
FORWARD_MAX = 12


class PetabProblem:
    """A PEtab problem (the tables of a `petab.v1.Problem` and an `OdeModel`) as
    one compiled objective.

    **Arguments:**

    - `problem`: a `petab.v1.Problem` (its condition, measurement, observable and
      parameter tables are read; its SBML model is not).
    - `model`: the `OdeModel` the tables refer to.
    - `solver`: the solver of every solve (default `"rodas5p"`, stiff).
    - `rtol`, `atol`: its tolerances (default `1e-8`, as AMICI), also the
      steady-state test `rms(f / (atol + rtol |y|)) < 1`.
    - `max_steps`: the most steps of one solve.
    - `steady_state_time`: how long a steady-state solve runs before the test.
    - `gradient`: how `value_and_grad` differentiates: `"forward"` (one tangent
      per estimated parameter, as AMICI's forward sensitivities), `"reverse"`
      (through the solves backwards), or `"auto"` (default): forward up to
      `FORWARD_MAX` estimated parameters. `python benchmarks/petab.py` measures
      both: forward is 2.5x faster on Boehm (9 parameters), 5x slower on
      Elowitz (21).
    - `files`: names of the table files for error messages (`{"measurement":
      ...}`); `load` passes them.

    The problem is float64: the constructor turns on JAX's 64-bit mode.

    `x_ids` are the estimated parameters, the order of every vector; `x_nominal`,
    `lower`, `upper` (dicts, natural units) and `scales` (dict of `"lin"`,
    `"log"`, `"log10"`) describe them; `theta_nominal`, `theta_lower`,
    `theta_upper` are the same on the parameter scale.

    **Raises:** `ValueError` naming the file, the row (or id), the column and the
    value for a table the program cannot read: an unknown column value, a
    measurement of an undefined observable, a non-positive measurement under a log
    transformation, a value that is neither a number nor a parameter id.
    """

    def __init__(self, problem, model: OdeModel, *, solver="rodas5p",
                 rtol: float = 1e-8, atol: float = 1e-8, max_steps: int = 100_000,
                 steady_state_time: float = 1e8, gradient: str = "auto",
                 files: dict | None = None):
        if gradient not in ("auto", "forward", "reverse"):
            raise ValueError(f"`gradient` is {gradient!r}; expected 'auto', "
                             "'forward' or 'reverse'.")
        jax.config.update("jax_enable_x64", True)
        files = _files(problem, files)
        params = read_parameters(problem.parameter_df, files["parameter"])
        obs = read_observables(problem.observable_df, model, params,
                               files["observable"])
        meas = read_measurements(problem.measurement_df, obs, params,
                                 set(problem.condition_df.index), files["measurement"])
        pre_ids = sorted({pre for pre, _ in meas.experiments if pre is not None})
        sim_ids = sorted({sim for _, sim in meas.experiments})
        conds = read_conditions(problem.condition_df, sim_ids, model, params,
                                files["condition"])
        pre = None
        if pre_ids:
            pc = read_conditions(problem.condition_df, pre_ids, model, params,
                                 files["condition"])
            pre = (Source(*map(jnp.asarray, pc.p)), jnp.asarray(pc.y_has),
                   Source(*map(jnp.asarray, pc.y)))
        est = np.flatnonzero(params.estimate)
        options = dict(solver=solver, rtol=rtol, atol=atol, max_steps=max_steps,
                       throw=False)
        rhs, init, observe, noise, breaks = _compile(model, obs)
        self.program = Program(
            groups=_build_groups(meas, conds, {c: i for i, c in enumerate(pre_ids)}),
            pre=pre, q0=jnp.asarray(params.nominal), est=jnp.asarray(est),
            scale=jnp.asarray(params.scale[est]), prior=jnp.asarray(params.prior[est]),
            prior_par=jnp.asarray(params.prior_par[est]),
            table_idx=jnp.asarray([params.ids.index(str(s)) for s in obs.table],
                                  jnp.int32),
            obs=jnp.asarray(meas.observable), ph=Source(*map(jnp.asarray,
                                                             meas.placeholders)),
            value=jnp.asarray(meas.value), transform=jnp.asarray(
                obs.transform[meas.observable]),
            dist=jnp.asarray(obs.distribution[meas.observable]),
            config=configure(**options),
            rhs=rhs, init=init, observe=observe, noise=noise,
            t_steady=float(steady_state_time), breaks=breaks)
        self._forward_program = forward_mode(self.program)
        self.problem, self.model, self.files = problem, model, files
        self._pre_ids, self._experiments = pre_ids, meas.experiments
        self._normal = bool(np.all(obs.distribution[meas.observable] == 0))
        self._priors = bool(np.any(params.prior[est] >= 0))
        self._set_parameters(params, est)
        if gradient == "auto":
            gradient = "forward" if len(self.x_ids) <= FORWARD_MAX else "reverse"
        self.gradient = gradient

    def _set_parameters(self, params, est) -> None:
        self.x_ids = tuple(params.ids[i] for i in est)
        self.x_nominal = {params.ids[i]: float(params.nominal[i]) for i in est}
        self.lower = {params.ids[i]: float(params.lower[i]) for i in est}
        self.upper = {params.ids[i]: float(params.upper[i]) for i in est}
        self.scales = {params.ids[i]: SCALE_NAMES[params.scale[i]] for i in est}
        self.theta_nominal = self.theta(self.x_nominal)
        self.theta_lower = self.theta(self.lower)
        self.theta_upper = self.theta(self.upper)

    def theta(self, x: dict | None = None) -> np.ndarray:
        """`x` (a dict of estimated parameters in natural units; missing ones take
        their nominal values) as the vector on the parameter scale."""
        x = dict(x or {})
        unknown = sorted(set(x) - set(self.x_ids))
        if unknown:
            raise ValueError(f"`x` names {unknown}, which are not estimated "
                             f"parameters; these are {list(self.x_ids)}.")
        values = {**getattr(self, "x_nominal", {}), **x}
        out = []
        for name in self.x_ids:
            v, scale = float(values.get(name, np.nan)), self.scales[name]
            out.append(v if scale == "lin" else (np.log(v) if scale == "log"
                                                 else np.log10(v)))
        return np.array(out)

    def params(self, theta) -> dict:
        """`theta` (parameter scale) as a dict in natural units."""
        x = np.asarray(_unscale(jnp.asarray(theta), self.program.scale))
        return {name: float(v) for name, v in zip(self.x_ids, x)}

    def _forward(self, x):
        theta = self.theta(x)
        if np.isnan(theta).any():
            missing = [n for n, v in zip(self.x_ids, theta) if np.isnan(v)]
            raise ValueError(f"no value for {missing}: the parameter table gives no "
                             "nominalValue; pass them in `x`.")
        sim, sigma, oks = eqx.filter_jit(forward)(self.program, jnp.asarray(theta))
        self._check(oks)
        return theta, np.asarray(sim), np.asarray(sigma)

    def _check(self, oks) -> None:
        oks = [np.asarray(o) for o in oks]
        if self._pre_ids:
            bad = [c for c, ok in zip(self._pre_ids, oks.pop(0)) if not ok]
            if bad:
                raise RuntimeError(
                    f"pre-equilibration of the conditions {bad} reached no steady "
                    f"state by t = {self.program.t_steady:g} (rms(f / (atol + rtol "
                    "|y|)) >= 1, or the solve failed); raise `steady_state_time` "
                    "or `max_steps`.")
        for g, ok in zip(self.program.groups, oks):
            with_pre = g.pre is not None
            members = [e for e in self._experiments if (e[0] is not None) == with_pre]
            bad = [e for e, good in zip(members, ok) if not good]
            if bad:
                raise RuntimeError(
                    f"the simulation of the experiments {bad} (pre-equilibration, "
                    "simulation condition) failed, or a steady-state measurement "
                    "reached no steady state; raise `max_steps` or "
                    "`steady_state_time`.")

    def simulate(self, x: dict | None = None) -> pd.DataFrame:
        """The measurement table with the simulated values in a `simulation`
        column in place of `measurement`. `x`: estimated parameters in natural
        units (default nominal). **Raises:** `RuntimeError` when a solve fails or
        a steady state is not reached, naming the conditions."""
        _, sim, _ = self._forward(x)
        df = self.problem.measurement_df.copy()
        df.insert(list(df.columns).index("measurement"), "simulation", sim)
        return df.drop(columns="measurement")

    def nllh(self, x: dict | None = None) -> float:
        """PEtab's negative log-likelihood (`-petab.v1.calculate_llh`) at `x`
        (natural units, default nominal), without priors."""
        _, sim, sigma = self._forward(x)
        return float(jnp.sum(row_nllh(self.program, jnp.asarray(sim),
                                      jnp.asarray(sigma))))

    def objective(self, theta) -> Array:
        """Negative log-likelihood plus negative log-priors at `theta` (1-D, the
        parameter scale, in `x_ids` order); `inf` where a solve fails. Jitted."""
        return objective(self.program, jnp.asarray(theta))

    def value_and_grad(self, theta) -> tuple[Array, Array]:
        """`objective(theta)` and its exact gradient (autodiff through the
        solves, in the mode `gradient` chose). Jitted."""
        if self.gradient == "forward":
            return value_and_grad_forward(self._forward_program, jnp.asarray(theta))
        return value_and_grad(self.program, jnp.asarray(theta))

    def residuals(self, theta) -> Array:
        """For normal noise, `2 R` residuals (`R` measurement rows): the weighted
        residuals `(T(sim) - T(m)) / sigma` in measurement-table order (`T` the
        observable transformation), then the error-model residuals
        `sqrt(log(2 pi sigma^2) + 50)`; half their sum of squares is the negative
        log-likelihood up to a constant. **Raises:** `ValueError` for laplace
        noise."""
        if not self._normal:
            raise ValueError("`residuals` needs normal noise for every measurement; "
                             "this problem has laplace noise: use `objective`.")
        return residuals(self.program, jnp.asarray(theta))

    def fit(self, multistart: int = 20, *, key=None, theta0=None,
            max_steps: int = 200, polish_steps: int = 200, rtol: float = 1e-8,
            atol: float = 1e-8) -> "PetabFit":
        """Multistart optimisation, every start in one compiled program. When every
        noise model is normal and no priors are set, optimistix `LevenbergMarquardt`
        on `residuals` (up to `max_steps`), then `BFGS` on `objective` (up to
        `polish_steps`); otherwise `BFGS` alone (up to `max_steps + polish_steps`).
        The search stays within the bounds: the optimiser moves an unconstrained
        variable `z`, and the parameter is `lower + (upper - lower) (1 + sin z) / 2`
        (parameter scale), which reaches an optimum on a bound as well as one
        inside. Gradients are computed in the mode `gradient` chose.

        **Arguments:**

        - `multistart`: the number of starts, drawn uniformly on the parameter scale
          within the bounds with `key` (default `jax.random.key(0)`).
        - `theta0`: the starts themselves instead, shape `(n, len(x_ids))` on the
          parameter scale (e.g. `prob.theta(x)` of a guess, or a previous result's
          `x_starts`); each must lie within the bounds.
        - `max_steps`, `polish_steps`: the steps of the two optimisers.
        - `rtol`, `atol`: their tolerances.

        **Returns:** a `PetabFit`. A start whose solve or optimiser fails is kept,
        with `nll = inf` or `ok = False`.
        """
        lo, hi = self.theta_lower, self.theta_upper
        if theta0 is None:
            key = jax.random.key(0) if key is None else key
            theta0 = jax.random.uniform(key, (multistart, len(lo)), minval=lo,
                                        maxval=hi)
        theta0 = jnp.asarray(theta0, dtype=float)
        if theta0.ndim != 2 or theta0.shape[1] != len(lo):
            raise ValueError(f"`theta0` has shape {theta0.shape}; expected "
                             f"(starts, {len(lo)}), one column per entry of `x_ids`.")
        outside = np.argwhere((np.asarray(theta0) < lo) | (np.asarray(theta0) > hi))
        if len(outside):
            i, j = outside[0]
            raise ValueError(f"`theta0[{i}]` has {self.x_ids[j]} = "
                             f"{float(theta0[i, j]):g} outside its bounds "
                             f"[{lo[j]:g}, {hi[j]:g}] (parameter scale).")
        lsq = self._normal and not self._priors
        steps = (max_steps, polish_steps) if lsq else (0, max_steps + polish_steps)
        theta, nll, ok, taken = fit_starts(
            self.program, self._forward_program, theta0, jnp.asarray(lo), jnp.asarray(hi), least_squares=lsq,
            forward=self.gradient == "forward", steps=steps, rtol=rtol, atol=atol)
        order = np.argsort(np.asarray(nll), kind="stable")
        theta, nll = np.asarray(theta)[order], np.asarray(nll)[order]
        return PetabFit(nll=float(nll[0]), theta=jnp.asarray(theta[0]),
                        params=self.params(theta[0]), x_ids=self.x_ids,
                        starts_nll=jnp.asarray(nll), x_starts=jnp.asarray(theta),
                        theta0_starts=jnp.asarray(np.asarray(theta0)[order]),
                        starts_ok=jnp.asarray(np.asarray(ok)[order]),
                        starts_steps=jnp.asarray(np.asarray(taken)[order]),
                        method="levenberg_marquardt+bfgs" if lsq else "bfgs")


class PetabFit(eqx.Module):
    """The result of `PetabProblem.fit`, starts sorted by final objective.

    - `nll`, `theta`, `params`: the best start's objective, its point on the
      parameter scale and in natural units (dict).
    - `starts_nll`: every start's final objective, sorted (`inf` for a failed
      start); `jaxode.plot.waterfall(res.starts_nll)` (or `waterfall(res)`).
    - `x_starts`, `theta0_starts`: the final and initial points (parameter scale),
      in the same order; `starts_ok`: whether the last optimiser reported
      success; `starts_steps`: the steps taken (both optimisers); `method`: the
      optimisers.
    """

    nll: float
    theta: Array
    params: dict
    x_ids: tuple = eqx.field(static=True)
    starts_nll: Array
    x_starts: Array
    theta0_starts: Array
    starts_ok: Array
    starts_steps: Array
    method: str = eqx.field(static=True)

    @property
    def starts_losses(self) -> Array:
        return self.starts_nll


def load(yaml_path, **options) -> PetabProblem:
    """Read a PEtab problem: `petab.v1.Problem.from_yaml` and the SBML model through
    `import_sbml`. Turns on JAX's 64-bit mode (the problem is float64).

    **Arguments:** `yaml_path`, the problem's YAML file; `options`, those of
    `PetabProblem` (`solver`, `rtol`, `atol`, `max_steps`, `steady_state_time`).

    **Returns:** a `PetabProblem`.

    **Raises:** `ValueError` naming a missing file, or a file, row and value the
    program cannot read.
    """
    import petab.v1
    import yaml

    jax.config.update("jax_enable_x64", True)
    path = Path(yaml_path)
    if not path.is_file():
        raise ValueError(f"the PEtab YAML file {str(path)!r} does not exist.")
    spec = yaml.safe_load(path.read_text())
    entry = spec["problems"][0]
    files = {"parameter": spec["parameter_file"]}
    for kind in ("condition", "measurement", "observable", "sbml"):
        names = entry.get(f"{kind}_files", [])
        if len(names) != 1:
            raise ValueError(f"{path.name}: expected one {kind} file, got {names}.")
        files[kind] = names[0]
    for kind, name in files.items():
        if not (path.parent / name).is_file():
            raise ValueError(f"{path.name}: the {kind} file {name!r} does not exist "
                             f"(looked in {str(path.parent)!r}).")
    from ._sbml import import_sbml

    problem = petab.v1.Problem.from_yaml(str(path))
    model = import_sbml(path.parent / files.pop("sbml"))
    return PetabProblem(problem, model, files=files, **options)
