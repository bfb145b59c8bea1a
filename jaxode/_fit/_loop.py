"""The compiled optimiser loop of `fit`.

Every iteration evaluates the predictions and their Jacobian in `v` once (forward
mode by default), and from them the objective, its gradient and its Fisher
(Gauss–Newton) matrix `Jᵀ W J`. The first `steps` iterations take optax steps on the
gradient (a non-finite loss sends the point back to the last finite one with half the
step); the rest are damped Gauss–Newton steps from the best point: Levenberg–
Marquardt for least squares, Fisher scoring for the other likelihoods. Starts are
vmapped; the loop runs in chunks so that a progress bar can follow it.
"""

import math
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax

from . import _shooting
from ._problem import Problem

MAX_BAD = 40  # non-finite steps without progress (each halving the step) before stopping
CHUNKS = 25  # progress-bar updates per run


class LoopState(eqx.Module):
    v: jax.Array  # the point evaluated next
    opt_state: Any
    good_v: jax.Array  # the last point with a finite loss, and its optimiser state
    good_opt_state: Any
    factor: jax.Array  # step multiplier: halved after a non-finite loss
    bad: jax.Array  # non-finite losses since the loss last improved
    stopped: jax.Array
    done: jax.Array  # the Gauss–Newton steps have converged: nothing left to do
    best_v: jax.Array  # the lowest loss seen, with what was computed there
    best_loss: jax.Array
    best_grad: jax.Array
    best_info: jax.Array
    best_pred: jax.Array
    best_jac: jax.Array
    lam: jax.Array  # damping of the Gauss–Newton steps


class Loop(eqx.Module):
    prob: Problem
    lo: jax.Array  # bounds of v
    hi: jax.Array
    optimizer: Any
    steps: jax.Array  # optimiser steps, then Gauss–Newton steps up to `total`; both
    total: jax.Array  # are values, so a profile reuses the fit's compiled loop
    phase: str = eqx.field(static=True)  # "single" or "shoot"
    chunk: int = eqx.field(static=True)
    jac_mode: str = eqx.field(static=True)

    # -- what one iteration computes
    def predict(self, v):
        if self.phase == "shoot":
            return jnp.concatenate(_shooting.predict(self.prob, v))
        return self.prob.predict(v)

    def _penalty(self, i):
        return 10.0 ** (3.0 * jnp.minimum(1.0, i / jnp.maximum(1, self.steps - 1)))

    def objective(self, pred, v, i):
        prob = self.prob
        n = prob.obs.data.size
        value = prob.loss(pred[:n], v[: prob.n_v])
        if self.phase == "shoot":
            value = value + prob.noise.defect_cost(
                self._penalty(i), pred[n:], prob.obs, prob.shooting.s_scale)
        return value

    def weights(self, pred, v, i):
        prob = self.prob
        n = prob.obs.data.size
        w = prob.weight(pred[:n], v[: prob.n_v], fisher=False)
        if self.phase == "shoot":
            wd = prob.noise.defect_weight(self._penalty(i), prob.obs,
                                          prob.shooting.s_scale)
            w = jnp.concatenate([w, wd])
        return w

    def evaluate(self, v, i):
        """Loss, gradient, Fisher matrix, predictions and their Jacobian at `v`."""
        jacobian = jax.jacfwd if self.jac_mode == "fwd" else jax.jacrev
        both = lambda v: (self.predict(v),) * 2  # noqa: E731
        jac, pred = jacobian(both, has_aux=True)(v)
        loss, (g_pred, g_v) = jax.value_and_grad(self.objective, argnums=(0, 1))(
            pred, v, i)
        grad = jac.T @ g_pred + g_v
        w = self.weights(pred, v, i)
        info = jac.T @ (w[:, None] * jac) + jax.hessian(self.objective, argnums=1)(
            pred, v, i)
        return loss, grad, info, pred, jac

    # -- one iteration
    def step(self, state: LoopState, i, free):
        active = (i < self.total) & ~state.stopped & ~state.done
        loss, grad, info, pred, jac = self.evaluate(state.v, i)
        finite = (jnp.isfinite(loss) & jnp.all(jnp.isfinite(grad))
                  & jnp.all(jnp.isfinite(info)) & jnp.all(jnp.isfinite(jac)))
        better = finite & (loss < state.best_loss)
        sel = lambda c, a, b: jtu.tree_map(  # noqa: E731
            lambda x, y: jnp.where(c, x, y), a, b)
        best = sel(better, (state.v, loss, grad, info, pred, jac),
                   (state.best_v, state.best_loss, state.best_grad, state.best_info,
                    state.best_pred, state.best_jac))
        best_v, best_loss, best_grad, best_info, best_pred, best_jac = best

        # optimiser step from a finite point; from a non-finite one, back to the last
        # finite point with half the step
        g = jnp.where(finite, grad, 0.0) * free
        updates, new_opt = self.optimizer.update(g, state.opt_state, state.v)
        v_opt = sel(finite, jnp.clip(state.v + state.factor * updates * free,
                                     self.lo, self.hi), state.good_v)
        opt_state = sel(finite, new_opt, state.good_opt_state)
        good_v = sel(finite, state.v, state.good_v)
        good_opt = sel(finite, state.opt_state, state.good_opt_state)
        factor = jnp.where(finite, jnp.minimum(1.0, state.factor * 1.25),
                           state.factor * 0.5)
        bad = jnp.where(better, 0, state.bad + jnp.where(finite, 0, 1))

        # damped Gauss–Newton step from the best point (fixed coordinates stay)
        in_gn = i >= self.steps
        lam = jnp.where(in_gn & (i > self.steps),
                        jnp.where(better, state.lam / 3, state.lam * 2), state.lam)
        lam = jnp.clip(lam, 1e-12, 1e12)
        d = jnp.abs(jnp.diag(best_info))
        a = best_info + jnp.diag(lam * d + 1e-14 * (jnp.max(d) + 1.0))
        both_free = free[:, None] * free[None, :]
        a = jnp.where(both_free > 0, a, jnp.eye(a.shape[0], dtype=a.dtype))
        chol = jax.scipy.linalg.cho_factor(a)
        dv = jax.scipy.linalg.cho_solve(chol, -best_grad * free) * free
        v_gn = jnp.clip(best_v + jnp.where(jnp.all(jnp.isfinite(dv)), dv, 0.0),
                        self.lo, self.hi)

        v = jnp.where(in_gn, v_gn, v_opt)
        stopped = state.stopped | ((bad > MAX_BAD) & ~in_gn) | ((i == 0) & ~finite)
        # converged: the next Gauss–Newton step is below the rounding of `v` (or the
        # damping has grown as far as it goes)
        tiny = jnp.sqrt(jnp.finfo(v.dtype).eps) * 1e-2 * (1 + jnp.max(jnp.abs(best_v)))
        done = in_gn & (i > self.steps) & ((jnp.max(jnp.abs(dv)) <= tiny)
                                           | (lam >= 1e12))
        new = LoopState(v=v, opt_state=opt_state, good_v=good_v,
                        good_opt_state=good_opt, factor=factor, bad=bad,
                        stopped=stopped, done=done, best_v=best_v, best_loss=best_loss,
                        best_grad=best_grad, best_info=best_info, best_pred=best_pred,
                        best_jac=best_jac, lam=lam)
        new = jtu.tree_map(lambda x, y: jnp.where(active, x, y), new, state)
        shown = jnp.where(in_gn, best_loss, loss)
        return new, jnp.where(active, shown, jnp.where(state.done, state.best_loss,
                                                       jnp.nan))

    def n_pred(self) -> int:
        """Length of the prediction vector (observations, then shooting defects)."""
        n = self.prob.obs.data.size
        if self.phase == "shoot":
            n += self.prob.shooting.s_scale.size
        return n

    def init(self, v):
        opt_state = self.optimizer.init(v)
        m, n = v.shape[0], self.n_pred()
        zeros = lambda *shape: jnp.zeros(shape, v.dtype)  # noqa: E731
        return LoopState(v=v, opt_state=opt_state, good_v=v, good_opt_state=opt_state,
                         factor=jnp.asarray(1.0, v.dtype), bad=jnp.asarray(0),
                         stopped=jnp.asarray(False), done=jnp.asarray(False), best_v=v,
                         best_loss=jnp.asarray(jnp.inf, v.dtype), best_grad=zeros(m),
                         best_info=zeros(m, m), best_pred=zeros(n),
                         best_jac=zeros(n, m), lam=jnp.asarray(1e-3, v.dtype))

    def run(self, state, start, free):
        return lax.scan(lambda s, i: self.step(s, i, free), state,
                        start + jnp.arange(self.chunk))


@eqx.filter_jit
def _init(loop: Loop, v0):
    return jax.vmap(loop.init)(v0)


@eqx.filter_jit
def _run(loop: Loop, state, start, free):
    return jax.vmap(lambda s, fr: loop.run(s, start, fr))(state, free)


def make_loop(prob, *, phase, optimizer, steps, n_polish, jac_mode, lo, hi):
    """The loop of `steps` optimiser steps, then `n_polish` Gauss–Newton steps."""
    total = max(1, steps + n_polish)
    chunk = max(1, math.ceil(total / CHUNKS))
    return Loop(prob=prob, lo=jnp.asarray(lo), hi=jnp.asarray(hi), optimizer=optimizer,
                steps=jnp.asarray(steps), total=jnp.asarray(total), phase=phase,
                chunk=chunk, jac_mode=jac_mode)


def with_steps(loop: Loop, steps: int, n_polish: int) -> Loop:
    """The same compiled loop, running other step counts."""
    return eqx.tree_at(lambda lp: (lp.steps, lp.total), loop,
                       (jnp.asarray(steps), jnp.asarray(max(1, steps + n_polish))))


def run_loop(loop: Loop, v0, free=None, bar=None):
    """Run the loop from starts `v0` (leading axis); returns the final state and the
    per-iteration losses, shape `(starts, iterations)`."""
    if free is None:
        free = jnp.ones_like(v0)
    total = int(loop.total)
    state = _init(loop, v0)
    pieces = []
    for start in range(0, total, loop.chunk):
        state, losses = _run(loop, state, jnp.asarray(start), free)
        pieces.append(np.asarray(losses))
        if bar is not None:
            bar.update(min(loop.chunk, total - start))
            best = np.asarray(state.best_loss)
            if np.isfinite(best).any():
                bar.set_postfix(loss=f"{np.min(best[np.isfinite(best)]):.4g}")
        if bool(np.all(np.asarray(state.stopped) | np.asarray(state.done))):
            break
    return state, np.concatenate(pieces, axis=1)[:, :total]


def default_optimizer(steps: int) -> optax.GradientTransformation:
    return _default_optimizer(int(steps))


_OPTIMIZERS: dict = {}


def _default_optimizer(steps):
    # one object per step count, so that the compiled loop is reused across fits
    if steps not in _OPTIMIZERS:
        schedule = optax.warmup_cosine_decay_schedule(
            init_value=1e-3, peak_value=0.05, warmup_steps=max(1, steps // 20),
            decay_steps=max(2, steps), end_value=1e-4)
        _OPTIMIZERS[steps] = optax.adam(schedule)
    return _OPTIMIZERS[steps]
