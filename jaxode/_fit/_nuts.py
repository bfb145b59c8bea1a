"""NUTS with Stan's window adaptation, from blackjax, on a `Target`.

Every chain adapts its own step size (blackjax's dual averaging) and diagonal inverse
mass matrix (blackjax's Welford estimate over Stan's doubling windows, blackjax's
`build_schedule`) during the warmup, then draws with them fixed; this is blackjax's
window adaptation (`blackjax.window_adaptation`), written as one loop so that warmup
and draws run through the same NUTS kernel (`blackjax.mcmc.nuts.build_kernel`): the
compiled program holds the model's gradient once. The chains are `vmap`ped; the
loop runs in chunks of `CHUNK` iterations (one compiled program, `eqx.filter_jit`,
reused by every chunk and every later run of the same shapes) so that a progress
bar can follow it, as `fit`'s does. The random key of iteration `i` of a chain is
`fold_in(chain key, i)`: the draws do not depend on the chunking, nor on whether the
chains run together or one after another.
"""

import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._target import Target

CHUNK = 50  # iterations per call of the compiled loop
MAX_START_TRIES = 10  # a start with a non-finite density is pulled halfway back


def blackjax_module():
    """blackjax, imported on first use: `import jaxode` must not need the extra."""
    try:
        import blackjax
    except ImportError as e:
        raise ImportError(
            "jaxode.sample needs blackjax, which the core install leaves out: "
            "pip install 'jaxode[bayes]'") from e
    return blackjax


class Settings(NamedTuple):
    """The sampler's options (static: they shape the compiled program)."""

    target_accept: float
    max_tree_depth: int


class Chain(eqx.Module):
    """One chain's state between iterations: blackjax's NUTS state, the adaptation
    states and the current step size and inverse mass matrix."""

    hmc: Any
    dual_averaging: Any
    mass_matrix: Any
    step_size: jax.Array
    inverse_mass: jax.Array


class Draws(eqx.Module):
    """What the loop records per iteration (leading axes: chains, iterations)."""

    natural: jax.Array  # (..., n) every estimated number, natural units
    log_density: jax.Array
    divergent: jax.Array
    accept: jax.Array  # mean acceptance probability of the transition
    steps: jax.Array  # leapfrog steps (gradient evaluations)
    step_size: jax.Array


def _adaptation(settings: Settings):
    blackjax = blackjax_module()
    from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
    from blackjax.adaptation.step_size import dual_averaging_adaptation

    return (blackjax, dual_averaging_adaptation(settings.target_accept),
            mass_matrix_adaptation(True))


def schedule(num_warmup: int) -> np.ndarray:
    """Stan's warmup windows (blackjax's `build_schedule`): per warmup iteration,
    `(slow window, end of a slow window)`."""
    from blackjax.adaptation.window_adaptation import build_schedule

    if num_warmup == 0:
        return np.zeros((0, 2), np.int32)
    return np.asarray(build_schedule(num_warmup), np.int32).reshape(num_warmup, 2)


@eqx.filter_jit
def init_chains(target: Target, theta0, settings: Settings) -> Chain:
    """Each chain's first state at `theta0` (rows), a start whose density is not
    finite pulled halfway back to the estimate, up to `MAX_START_TRIES` times."""
    blackjax, (da_init, _, _), (mm_init, _, _) = _adaptation(settings)
    n = target.size

    def one(theta):
        def again(c):
            theta, _, _, tries = c
            theta = jnp.where(tries == 0, theta, theta / 2)
            value, grad = target.value_and_grad(theta)
            return theta, value, grad, tries + 1

        def bad(c):
            return ~jnp.isfinite(c[1]) & (c[3] < MAX_START_TRIES)

        theta, value, grad, _ = lax.while_loop(
            bad, again, (theta, jnp.asarray(-jnp.inf, theta.dtype),
                         jnp.zeros_like(theta), jnp.asarray(0)))
        hmc = blackjax.mcmc.hmc.HMCState(theta, value, grad)
        return Chain(hmc=hmc, dual_averaging=da_init(jnp.asarray(1.0, theta.dtype)),
                     mass_matrix=mm_init(n), step_size=jnp.asarray(1.0, theta.dtype),
                     inverse_mass=jnp.ones(n, theta.dtype))

    return jax.vmap(one)(theta0)


def _adapt(chain: Chain, stage, window_end, acceptance, settings) -> Chain:
    """One warmup update of Stan's window adaptation (as blackjax's): the step size
    by dual averaging; in a slow window the mass matrix estimate too, and at the end
    of one the new inverse mass matrix, the step size restarted."""
    _, (da_init, da_update, da_final), (_, mm_update, mm_final) = _adaptation(settings)
    da = da_update(chain.dual_averaging, acceptance)
    mm = jtu.tree_map(lambda a, b: jnp.where(stage == 1, a, b),
                      mm_update(chain.mass_matrix, chain.hmc.position), chain.mass_matrix)
    new = Chain(hmc=chain.hmc, dual_averaging=da, mass_matrix=mm,
                step_size=jnp.exp(da.log_step_size), inverse_mass=chain.inverse_mass)
    mm_end = mm_final(mm)
    da_end = da_init(da_final(da))
    ended = Chain(hmc=chain.hmc, dual_averaging=da_end, mass_matrix=mm_end,
                  step_size=jnp.exp(da_end.log_step_size),
                  inverse_mass=mm_end.inverse_mass_matrix)
    return jtu.tree_map(lambda a, b: jnp.where(window_end == 1, a, b), ended, new)


def _iteration(target, settings, logdensity, kernel, chain: Chain, key, i, warmup,
               stage, window_end):
    """Iteration `i` of one chain: a NUTS transition, then (during the warmup) the
    adaptation; after the last warmup iteration the step size becomes the dual
    averaging's average."""
    hmc, info = kernel(jax.random.fold_in(key, i), chain.hmc, logdensity,
                       chain.step_size, chain.inverse_mass,
                       max_num_doublings=settings.max_tree_depth)
    moved = eqx.tree_at(lambda c: c.hmc, chain, hmc)
    adapted = _adapt(moved, stage, window_end, info.acceptance_rate, settings)
    _, (_, _, da_final), _ = _adaptation(settings)
    adapted = eqx.tree_at(lambda c: c.step_size, adapted,
                          jnp.where(i == warmup - 1, da_final(adapted.dual_averaging),
                                    adapted.step_size))
    out = jtu.tree_map(lambda a, b: jnp.where(i < warmup, a, b), adapted, moved)
    dtype = chain.step_size.dtype
    record = Draws(natural=target.natural(hmc.position)[0].astype(dtype),
                   log_density=jnp.asarray(hmc.logdensity, dtype),
                   divergent=jnp.asarray(info.is_divergent, bool),
                   accept=jnp.asarray(info.acceptance_rate, dtype),
                   steps=jnp.asarray(info.num_integration_steps, jnp.int32),
                   step_size=jnp.asarray(chain.step_size, dtype))
    return out, record


@eqx.filter_jit
def run_chunk(target: Target, chains: Chain, keys, index, warmup, stages, ends,
              total, settings: Settings):
    """`CHUNK` iterations of every chain (iterations `index`; those at or past
    `total` leave the chains as they are)."""
    blackjax = blackjax_module()
    logdensity = target.logdensity_fn()
    kernel = blackjax.mcmc.nuts.build_kernel()

    def one_chain(chain, key):
        def body(chain, xs):
            i, stage, end = xs

            def step(chain):
                return _iteration(target, settings, logdensity, kernel, chain, key, i,
                                  warmup, stage, end)

            return lax.cond(i < total, step, lambda c: (c, _no_draw(c, target)), chain)

        return lax.scan(body, chain, (index, stages, ends))

    return jax.vmap(one_chain)(chains, keys)


def _no_draw(chain: Chain, target: Target) -> Draws:
    """The record of an iteration past the end (zeros)."""
    zero = jnp.zeros((), chain.step_size.dtype)
    return Draws(natural=jnp.zeros(target.size, zero.dtype), log_density=zero,
                 divergent=jnp.asarray(False), accept=zero,
                 steps=jnp.asarray(0, jnp.int32), step_size=zero)


def run_chains(target: Target, theta0, keys, *, num_warmup: int, num_samples: int,
               settings: Settings, bar=None):
    """Warm up and draw every chain (rows of `theta0`, `keys`): the loop state at
    the end, and the `Draws` of every iteration, NumPy `(chains, iterations, ...)`.

    **Raises:** `ValueError` when the density is not finite at a start even after
    pulling it back to the estimate."""
    total = num_warmup + num_samples
    n_chunks = math.ceil(total / CHUNK)
    sched = np.zeros((n_chunks * CHUNK, 2), np.int32)
    sched[:num_warmup] = schedule(num_warmup)
    chains = init_chains(target, theta0, settings)
    if not np.isfinite(np.asarray(chains.hmc.logdensity)).all():
        raise ValueError(
            "the log posterior density is not finite at the fit's estimate: the "
            "solve fails there, or a prior gives it zero density. Check the priors "
            "against the fit (`result.params`).")
    pieces = []
    for c in range(n_chunks):
        index = np.arange(c * CHUNK, (c + 1) * CHUNK)
        chains, draws = run_chunk(
            target, chains, keys, jnp.asarray(index), jnp.asarray(num_warmup),
            jnp.asarray(sched[index, 0]), jnp.asarray(sched[index, 1]),
            jnp.asarray(total), settings)
        pieces.append(jtu.tree_map(np.asarray, draws))
        if bar is not None:
            bar.update(min(CHUNK, total - c * CHUNK) * theta0.shape[0])
            kept = np.concatenate([p.divergent for p in pieces], axis=1)[:, num_warmup:]
            bar.set_postfix(divergent=int(kept.sum()))
    draws = jtu.tree_map(lambda *a: np.concatenate(a, axis=1)[:, :total], *pieces)
    return chains, draws
