"""`train`: the generic optax loop for equinox models.

Minibatches come from the PRNG key and the step number alone (epoch `e` uses the
permutation drawn from `fold_in(key, e)`), so a run resumed from a checkpoint draws the
same batches as an uninterrupted one, and - with the same compiled step - ends at the
same parameters, bit for bit.
"""

import functools
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax

from ._checkpoint import load_checkpoint, save_checkpoint
from ._sharding import member_mesh, replicated, split

__all__ = ["train", "load_trained", "TrainHistory"]


class TrainHistory(eqx.Module):
    """What `train` records at every step.

    - `loss`: shape `(steps,)`, the loss at each step, before its update.
    - `grad_norm`: shape `(steps,)`, the global gradient norm at each step, before
      clipping.

    `history["loss"]` reads a field by name, as with the dict `train` returned before.
    """

    loss: np.ndarray
    grad_norm: np.ndarray

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in ("loss", "grad_norm"):
            raise KeyError(f"a `TrainHistory` has 'loss' and 'grad_norm', not {name!r}.")
        return getattr(self, name)

    def __str__(self) -> str:
        if not len(self.loss):
            return "TrainHistory: no steps"
        return (f"TrainHistory over {len(self.loss)} steps: loss {self.loss[0]:.4g} -> "
                f"{self.loss[-1]:.4g}, last grad_norm {self.grad_norm[-1]:.4g}")


def _with_clipping(optimizer: optax.GradientTransformation,
                   clip_norm: float | None) -> optax.GradientTransformation:
    """The optimiser `train` steps with: gradients clipped to `clip_norm` first."""
    if clip_norm is None:
        return optimizer
    return optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    return int(value)


def _data_size(data) -> int:
    if data is None:
        return 0
    leaves = jtu.tree_leaves(data)
    if not leaves:
        raise ValueError("`data` must be a pytree with at least one array.")
    sizes = {int(jnp.shape(x)[0]) if jnp.ndim(x) else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "every array in `data` needs the same leading (sample) axis; got shapes "
            f"{[tuple(jnp.shape(x)) for x in leaves]}.")
    n = sizes.pop()
    if n == 0:
        raise ValueError(
            "`data` is empty: its arrays have 0 samples along the leading axis "
            f"(shapes {[tuple(jnp.shape(x)) for x in leaves]}).")
    return n


def _batch_indices(key, step, n, batch_size):
    per_epoch = n // batch_size
    perm = jax.random.permutation(jax.random.fold_in(key, step // per_epoch), n)
    return lax.dynamic_slice(perm, ((step % per_epoch) * batch_size,), (batch_size,))


def _same_key(a, b) -> bool:
    def data(k):
        if jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key):
            k = jax.random.key_data(k)
        return np.asarray(k)
    return np.array_equal(data(a), data(b))


def _settings_probe(opt, params, batch_size, n, clip_norm) -> np.ndarray:
    """Numbers that change when the optimiser or the batching changes: two optimiser
    updates on fixed probe gradients (per leaf: their sum and sum of squares), the
    batch size, the data size and the clipping norm. A checkpoint stores them, so a
    run resumed with another learning rate, schedule or optimiser is refused rather
    than silently continued (the state of `adam(1e-2)` and `adam(1e-3)` has the same
    shapes)."""
    leaves = jtu.tree_leaves(params)
    probe = [jtu.tree_unflatten(jtu.tree_structure(params), [
        jnp.full(jnp.shape(x), (1.0 + i) * (-1.0) ** k, jnp.result_type(x))
        for i, x in enumerate(leaves)]) for k in range(2)]
    state = opt.init(params)
    out = []
    for g in probe:
        updates, state = opt.update(g, state, params)
        for u in jtu.tree_leaves(updates):
            u = np.asarray(u, np.float64)
            out += [u.sum(), (u * u).sum()]
    out += [-1.0 if batch_size is None else batch_size, n,
            -1.0 if clip_norm is None else clip_norm]
    return np.asarray(out, np.float64)


class _Settings(NamedTuple):
    """The checked sizes and options of one `train` call."""

    steps: int
    n: int  # samples in `data` (0 without data)
    batch_size: int | None
    clip_norm: float | None
    every: int  # steps between checkpoints
    mesh: Any  # None: one device, nothing to split


def _check_arguments(data, *, steps, batch_size, key, clip_norm, checkpoint_every,
                     loss_key, devices) -> _Settings:
    """`train`'s arguments checked; a `ValueError` names the argument and its value."""
    steps = _check_int("steps", steps, 1)
    n = _data_size(data)
    if batch_size is not None:
        batch_size = _check_int("batch_size", batch_size, 1)
        if batch_size > n:
            raise ValueError(f"`batch_size`={batch_size} exceeds the {n} samples in "
                             "`data`.")
        if key is None:
            raise ValueError("`key` is required when `batch_size` is given (it draws "
                             "the minibatches).")
    if loss_key and key is None:
        raise ValueError("`key` is required when `loss_key=True` (it draws the keys "
                         "`loss_fn` is given).")
    if clip_norm is not None and not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"`clip_norm` must be a finite number > 0, got {clip_norm!r}.")
    checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1)
    mesh = member_mesh(devices)
    if mesh.size == 1 or data is None:
        mesh = None  # nothing to split
    else:
        rows = n if batch_size is None else batch_size
        if rows % mesh.size:
            what = (f"`batch_size`={batch_size}" if batch_size is not None
                    else f"the whole `data` ({n} rows, batch_size=None)")
            raise ValueError(
                f"data parallelism over {mesh.size} devices needs a batch that "
                f"divides by {mesh.size}; got {what}. Choose such a batch size, or "
                "pass devices=[jax.devices()[0]] to train on one device.")
    return _Settings(steps, n, batch_size, clip_norm, checkpoint_every, mesh)


def _resume(path, params, opt_state, key, fingerprint: np.ndarray, steps: int
            ) -> tuple[Any, Any, TrainHistory]:
    """The parameters, optimiser state and history stored in the checkpoint at `path`,
    after checking that it belongs to this run (same `key`, same settings
    `fingerprint`, at most `steps` steps); says on stderr that the run resumes."""
    (params, opt_state, saved_key), start, extra = load_checkpoint(
        path, (params, opt_state, key))
    if not _same_key(saved_key, key):
        raise ValueError(
            f"checkpoint {str(path)!r} was written with a different `key`; "
            "pass the same key to resume, or delete the file to start afresh.")
    saved = extra.get("settings")
    if saved is not None and (saved.shape != fingerprint.shape or not np.allclose(
            saved, fingerprint, rtol=1e-5, atol=0)):
        raise ValueError(
            f"checkpoint {str(path)!r} was written with different training "
            "settings (the optimiser, its learning rate or schedule, `batch_size`, "
            "`clip_norm` or the data size differ); resume with the settings it was "
            "written with, or delete the file to start afresh.")
    if start > steps:
        raise ValueError(
            f"checkpoint {str(path)!r} is at step {start}, beyond "
            f"`steps`={steps}; pass steps >= {start} or delete the file.")
    if start == steps:
        print(f"jaxode.train: checkpoint {str(path)!r} already holds all "
              f"{steps} steps; returning its model without training.", file=sys.stderr)
    else:
        print(f"jaxode.train: resuming from checkpoint {str(path)!r} at step "
              f"{start} of {steps}.", file=sys.stderr)
    return params, opt_state, TrainHistory(extra["loss"][:start],
                                           extra["grad_norm"][:start])


def _save(path, key, fingerprint: np.ndarray, params, opt_state,
          history: TrainHistory) -> None:
    """Write a checkpoint atomically: parameters, optimiser state and `key`, the step
    (`len(history.loss)`), the history so far and the settings `fingerprint`."""
    save_checkpoint(path, (params, opt_state, key), step=len(history.loss),
                    extra={"loss": history.loss, "grad_norm": history.grad_norm,
                           "settings": fingerprint})


class _Step(eqx.Module):
    """What one optimiser step needs besides the parameters, optimiser state, data and
    step number. `_take_step` is compiled with it as an argument, so it keys the
    compile cache: another `train` with the same loss, optimiser, model structure and
    data shapes reuses the compiled step."""

    loss_fn: Callable = eqx.field(static=True)
    opt: optax.GradientTransformation = eqx.field(static=True)
    static: Any  # the model's leaves that are not trained
    key: jax.Array
    n: int = eqx.field(static=True)
    batch_size: int | None = eqx.field(static=True)
    loss_key: bool = eqx.field(static=True)
    mesh: Any = eqx.field(static=True)

    def batch(self, data, step):
        batch = data if self.batch_size is None else jtu.tree_map(
            lambda a: a[_batch_indices(self.key, step, self.n, self.batch_size)], data)
        if self.mesh is not None:
            batch = lax.with_sharding_constraint(batch, split(self.mesh))
        return batch

    def loss(self, params, batch, step):
        model = eqx.combine(params, self.static)
        if not self.loss_key:
            return self.loss_fn(model, batch)
        # the shuffling folds the epoch into `key`; the loss keys come from its split
        return self.loss_fn(model, batch,
                            jax.random.fold_in(jax.random.split(self.key)[1], step))


@eqx.filter_jit
def _take_step(spec: _Step, params, opt_state, data, step):
    loss, grads = jax.value_and_grad(spec.loss)(params, spec.batch(data, step), step)
    updates, opt_state = spec.opt.update(grads, opt_state, params)
    return eqx.apply_updates(params, updates), opt_state, loss, optax.global_norm(grads)


def _loop(spec: _Step, params, opt_state, data, past: TrainHistory,
          settings: _Settings, *, save, callback, progress) -> tuple[Any, TrainHistory]:
    """Run the steps after those in `past` up to `settings.steps`: stop on a
    non-finite loss, `save(params, opt_state, history)` every `settings.every` steps
    and at the end, call `callback`, show a progress bar. **Returns:**
    `(params, history)` over all the steps."""
    start, steps = len(past.loss), settings.steps
    losses, norms = np.zeros(steps), np.zeros(steps)
    losses[:start], norms[:start] = past.loss, past.grad_norm
    bar = None
    if progress and start < steps:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, initial=start, desc="train", leave=False)
    try:
        for i in range(start, steps):
            new = _take_step(spec, params, opt_state, data, jnp.asarray(i, jnp.int32))
            loss = float(new[2])
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"the loss became {loss} at step {i}; lower the learning rate or "
                    "set `clip_norm`" + (" (the last checkpoint is kept)."
                                         if save is not None else "."))
            params, opt_state = new[0], new[1]
            losses[i], norms[i] = loss, float(new[3])
            if save is not None and ((i + 1) % settings.every == 0 or i + 1 == steps):
                save(params, opt_state, TrainHistory(losses[:i + 1], norms[:i + 1]))
            if callback is not None:
                callback(i + 1, eqx.combine(params, spec.static), loss)
            if bar is not None:
                bar.update(1)
                if i % max(1, steps // 100) == 0 or i + 1 == steps:
                    bar.set_postfix(loss=f"{loss:.4g}")
    finally:
        if bar is not None:
            bar.close()
    return params, TrainHistory(losses, norms)


def train(
    model: Any,
    loss_fn: Callable[..., jax.Array],
    data: Any,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    batch_size: int | None = None,
    key: jax.Array | None = None,
    clip_norm: float | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    progress: bool = True,
    devices: Any = None,
    loss_key: bool = False,
    callback: Callable[[int, Any, float], Any] | None = None,
) -> tuple[Any, TrainHistory]:
    """Minimise `loss_fn(model, batch)` over minibatches of `data` with optax.

    **Arguments:**

    - `model`: an equinox module (any pytree); its inexact arrays are trained, the
      rest is kept as it is.
    - `loss_fn`: `loss_fn(model, batch) -> scalar`; `batch` has the structure of
      `data` with `batch_size` rows. With `loss_key=True`,
      `loss_fn(model, batch, key)`.
    - `data`: pytree of arrays sharing a leading sample axis, or `None` for a loss
      that needs no data (it is then called with `batch=None`; it may draw its own
      samples with `loss_key=True`).
    - `optimizer`: an optax `GradientTransformation`, e.g. `optax.adam(1e-2)`.
    - `steps`: total number of optimiser steps (a resumed run counts those already
      done).
    - `batch_size`: rows per step, drawn without replacement within an epoch (the
      last incomplete batch of an epoch is dropped). `None`: the whole of `data`
      every step.
    - `key`: PRNG key for the shuffling and the loss keys; required with
      `batch_size` or `loss_key=True`.
    - `clip_norm`: clip gradients to this global norm before the optimiser.
    - `checkpoint`: a file path. If it exists, training resumes from it (and says so
      on stderr, with the step), running only the steps still to do; every
      `checkpoint_every` steps and at the end (model, optimiser state, step, key, the
      loss history and a fingerprint of the settings) are written to it atomically.
      A checkpoint written with other settings (optimiser, learning rate or schedule,
      `batch_size`, `clip_norm`, data size, `key`, model shapes) is refused.
    - `checkpoint_every`: steps between checkpoints.
    - `progress`: show a tqdm progress bar with the current loss.
    - `devices`: data parallelism over these devices (a list): the model, optimiser
      state and `data` are replicated, every minibatch is split over a 1-D mesh by
      rows, and XLA sums the gradients across devices. With more than one device the
      batch (`batch_size`, or the whole of `data`) must divide by their number.
      `None` (default): every device of this process (`jax.local_devices()`, as in
      `ensemble` and `fit`); `[jax.devices()[0]]`: one device. The result equals the
      one-device run up to the order of floating-point sums.
    - `loss_key`: give `loss_fn` a third argument, a PRNG key of its own at every
      step, drawn from `key` and the step number alone (so a resumed run draws the
      same keys), for a loss that samples: fresh data, noise, stochastic estimates.
    - `callback`: `callback(step, model, loss)` after every step, with the number of
      steps done, the model after that step and the loss the step took (a float):
      to log, evaluate or time the run as it goes.

    **Returns:** `(model, history)`: the trained model and a `TrainHistory` of arrays
    of length `steps`, `history.loss` (the loss at each step, before its update) and
    `history.grad_norm` (global gradient norm before clipping); `history["loss"]`
    reads them too.

    **Raises:** `ValueError` for bad arguments (including `devices` that are not a
    list of jax devices, or a batch that does not divide by their number), and when
    the checkpoint is corrupt, belongs to a different model shape, key or settings, or
    has more steps than `steps`.
    `FloatingPointError` when the loss becomes non-finite (the last checkpoint is
    kept).
    """
    settings = _check_arguments(
        data, steps=steps, batch_size=batch_size, key=key, clip_norm=clip_norm,
        checkpoint_every=checkpoint_every, loss_key=loss_key, devices=devices)
    if key is None:
        key = jax.random.PRNGKey(0)
    opt = _with_clipping(optimizer, clip_norm)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = opt.init(params)
    past, save = TrainHistory(np.zeros(0), np.zeros(0)), None
    if checkpoint is not None:
        fingerprint = _settings_probe(opt, params, settings.batch_size, settings.n,
                                      clip_norm)
        if Path(checkpoint).exists():
            params, opt_state, past = _resume(checkpoint, params, opt_state, key,
                                              fingerprint, settings.steps)
        save = functools.partial(_save, checkpoint, key, fingerprint)
    if settings.mesh is not None:  # replicated inputs; the batch is split in the step
        params, opt_state, data = jax.device_put((params, opt_state, data),
                                                 replicated(settings.mesh))
    spec = _Step(loss_fn, opt, static, key, settings.n, settings.batch_size,
                 bool(loss_key), settings.mesh)
    params, history = _loop(spec, params, opt_state, data, past, settings, save=save,
                            callback=callback, progress=progress)
    return eqx.combine(params, static), history


def load_trained(path, model: Any, optimizer: optax.GradientTransformation, *,
                 key: Any, clip_norm: float | None = None) -> tuple[Any, int]:
    """The model stored in a `train` checkpoint, and the step it was written at.

    **Arguments:** `path`, and what the run was started with: a model of the same
    structure (its values are replaced), the `optimizer`, the `key` and `clip_norm`
    (they fix the structure of the stored optimiser state).

    **Returns:** `(model, step)`.

    **Raises:** `ValueError` when the file is truncated or corrupt, or was written
    for another model or optimiser (the message names the first leaf that differs).
    """
    opt = _with_clipping(optimizer, clip_norm)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    (params, _, _), step, _ = load_checkpoint(path, (params, opt.init(params), key))
    return eqx.combine(params, static), step
