"""`ensemble`: one `solve` per member, batched with `vmap` and sharded over devices.

The members (initial conditions and, optionally, parameters) share the leading axis.
The batch runs as one compiled program whose member axis is split over a 1-D
`jax.sharding.Mesh` (see `_sharding`); with `devices=jax.devices()` under
`jax.distributed` that mesh spans every process, so the
same call scales from one CPU core to several hosts.
"""

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.sharding import NamedSharding

from ._engine import Config, configure, prepare, run_checked
from ._errors import (
    check_finite,
    check_times,
    is_concrete,
    is_staged,
    raise_unless,
    short,
)
from ._fixed_solve import fixed_plan
from ._sharding import member_mesh, pad, padded_size, replicated, split
from ._solution import Solution
from ._types import Args, VectorField, Y

__all__ = ["ensemble"]


def _as_float_host(x: Any) -> Any:
    """Host copy of a concrete leaf, promoted to floating point like `solve` does."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.inexact):
        x = x.astype(jnp.result_type(float))
    return x


def _members(name: str, tree: Any) -> list[tuple[str, int]]:
    """`(path, leading size)` of every leaf of a pytree that carries a member axis."""
    out = []
    for path, leaf in jtu.tree_flatten_with_path(tree)[0]:
        where = f"{name}{jtu.keystr(path)}"
        if not eqx.is_array(leaf):
            why = ("is marked as per-member but is" if name == "args" else "is")
            raise ValueError(
                f"`{where}` {why} {short(leaf)}, not an array with a leading member "
                "axis (convert lists with np.asarray)."
            )
        if jnp.ndim(leaf) == 0:
            raise ValueError(
                f"`{where}` must have a leading member axis, got a scalar "
                f"{short(leaf)}."
            )
        out.append((where, int(jnp.shape(leaf)[0])))
    return out


def _on_device(x: Any) -> bool:
    """True for a concrete JAX array (not a tracer): its values live on devices."""
    return isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)


def _place(x: Any, sharding: NamedSharding, padded: int | None) -> Any:
    """Put one concrete leaf on the mesh: split over members (after padding) when
    `padded` is given, replicated otherwise. An array already on the mesh's devices
    stays where it is (integer members are promoted and padding is added there); a
    host value, or any value for a mesh that spans several processes, goes through
    the host so that each device receives only its own slice."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        # Already a global array (multi-process): it cannot be padded on the host.
        if padded is not None and x.shape[0] != padded:
            raise ValueError(
                f"a global (multi-process) input with {x.shape[0]} members cannot be "
                f"padded to {padded}; use a member count divisible by the "
                f"{sharding.mesh.size} devices, or pass host arrays."
            )
        return x
    if isinstance(x, jax.Array) and sharding.is_fully_addressable:
        if padded is not None:
            if not jnp.issubdtype(x.dtype, jnp.inexact):
                x = x.astype(jnp.result_type(float))
            x = pad(x, padded)
        if x.sharding.is_equivalent_to(sharding, x.ndim):
            return x
        return jax.device_put(x, sharding)
    host = _as_float_host(x) if padded is not None else np.asarray(x)
    if padded is not None:
        host = pad(host, padded)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


@jax.jit
def _all_finite(x: jax.Array) -> jax.Array:
    return jnp.isfinite(x).all()


@jax.jit
def _finite_increasing(ts: jax.Array) -> jax.Array:
    return jnp.isfinite(ts).all() & (jnp.diff(ts) > 0).all()


def _check_values(ts: Any, y0s: Any, args: Any) -> None:
    """`check_times` on `ts` and `check_finite` on `y0s` and `args`, without copying
    device arrays to the host: each one is reduced where it lives to one bool, and
    only the bools come back. Only when one of them reports a bad value (or `ts` has
    a bad shape) does the host check run on that argument, to write its usual
    message. Host values are checked where they are; tracers are skipped."""
    args = jtu.tree_map(lambda a: a if eqx.is_array_like(a) else None, args)
    trees = {"y0s": y0s, "args": args}
    with jax.ensure_compile_time_eval():  # concrete bools under an outer `jit` too
        flags = {name: [_all_finite(a) for a in jtu.tree_leaves(tree)
                        if _on_device(a) and jnp.issubdtype(a.dtype, jnp.inexact)]
                 for name, tree in trees.items()}
        if _on_device(ts) and ts.ndim == 1 and ts.shape[0] > 0:
            flags["ts"] = [_finite_increasing(ts)]
    ok = {name: all(bools) for name, bools in jax.device_get(flags).items()}
    if not ok.get("ts", False):
        check_times("ts", ts)
    for name, tree in trees.items():
        if ok[name]:  # device leaves are fine: check what is on the host
            tree = jtu.tree_map(lambda a: None if _on_device(a) else a, tree)
        check_finite(name, tree)


def _float_times(ts: Any) -> jax.Array:
    """`ts` as a floating-point JAX array. A concrete value (a list, a NumPy array, a
    constant closed over by an outer `jit`) stays concrete, not a tracer of that
    `jit`, so that a fixed `dt` can plan the steps from it."""
    with jax.ensure_compile_time_eval():
        ts = jnp.asarray(ts)
        if jnp.issubdtype(ts.dtype, jnp.inexact):
            return ts
        return ts.astype(jnp.result_type(float))


@eqx.filter_jit
def _program(f, y0s, ts, mapped, shared, n, mesh, static_ts, config, in_program,
             ts_checked):
    """The one compiled program: pad, shard, vmap the solve, drop the padding.

    **Returns:** the `Solution` and the members' failure checks, `[(ok, message)]`
    with `ok` per member; the program holds the checks itself when `config.throw`
    and `in_program` (see `_engine.run`). `ts_checked`: the values of `ts` were
    checked on the host, so the program does not check them again."""
    padded = padded_size(n, mesh)
    if static_ts is not None:
        ts = np.asarray(static_ts)
    y0s = jtu.tree_map(lambda a: pad(a, padded), y0s)
    mapped = jtu.tree_map(lambda a: pad(a, padded), mapped)
    y0s, mapped = jax.lax.with_sharding_constraint((y0s, mapped), split(mesh))
    messages = []

    def one(y0, member_args):
        member_args = eqx.combine(member_args, shared)
        y0, ts_, ts_host = prepare(y0, ts, member_args, ts_checked=ts_checked)
        sol, checks = run_checked(config, f, y0, ts_, member_args, ts_host, in_program)
        messages[:] = [message for _, message in checks]
        return (sol.ys, sol.stats, sol.ok, sol.t_event, None, sol.result,
                sol.event_times), [ok for ok, _ in checks]

    out, oks = jax.vmap(one)(y0s, mapped)
    out, oks = jax.lax.with_sharding_constraint((out, oks), split(mesh))
    if padded != n:
        out, oks = jtu.tree_map(lambda a: a[:n], (out, oks))
    return Solution(jnp.asarray(ts), *out), list(zip(oks, messages))


def _planned(config: Config, ts) -> tuple[Config, tuple | None]:
    """The configuration the members run with, and the save times to hold static.

    Tolerances become arrays, so new values do not recompile. A fixed-step `dt`
    needs concrete `ts`: when every interval takes the same number of steps, that
    count (and whether the spans are equal) replaces `dt`, so the times stay traced
    and new values of them or of `dt` with the same count do not recompile;
    otherwise the grid is part of the program and `ts` is held static."""
    # an explicit (scalar) transfer: nothing else moves inputs between host and device
    config = config.replace(**{
        name: jax.device_put(np.asarray(getattr(config, name), ts.dtype))
        for name in ("rtol", "atol") if isinstance(getattr(config, name), (int, float))})
    if not (config.fixed_step and config.dt is not None):
        return config, None
    if not is_concrete(ts):
        raise ValueError(
            "a fixed-step ensemble with `dt` needs concrete `ts` (the number of "
            "steps sets array shapes); pass them as constants, or pass "
            "`substeps=k` instead of `dt`.")
    host = np.asarray(ts, np.float64)
    counts, uniform = fixed_plan(ts, host, config.dt, config.substeps)
    if isinstance(counts, int) and config.event is None:
        return config.replace(dt=None, plan=(counts, uniform)), None
    return config, tuple(host.tolist())


def ensemble(
    f: VectorField,
    y0s: Y,
    ts: Any,
    args: Args = None,
    *,
    member_args: Any = False,
    devices: Sequence[jax.Device] | None = None,
    **solve_kwargs: Any,
) -> Solution:
    """Solve `dy/dt = f(t, y, args)` for many members at once, sharded over devices.

    Member `i` starts from `y0s[i]` (every leaf of `y0s` indexed on its leading
    axis) and uses `args`, or its own slice of `args` where `member_args` says so.
    All members run as one compiled program — `jax.vmap` of `jaxode.solve` — whose
    member axis is split over a 1-D mesh of `devices`. When the member count does
    not divide by the number of devices, the last member is repeated to fill the
    mesh and the repeats are dropped from the result.

    **Arguments:**

    - `f`: vector field `f(t, y, args)`, as for `solve` (written for ONE member).
    - `y0s`: initial states, a pytree whose leaves all have the member count as
      leading axis.
    - `ts`: 1-D save times, shared by all members.
    - `args`: passed to `f`; shared by all members unless `member_args` marks it.
    - `member_args`: `True` when every leaf of `args` has a leading member axis; a
      pytree prefix of `args` of booleans to mark some leaves (e.g.
      `{"r1": True, "r2": False}`); `False` (default) to share `args`.
    - `devices`: a list of jax devices for the mesh; `None` (default) uses every
      device of this process (`jax.local_devices()`); under `jax.distributed`, pass
      `jax.devices()` to span every process. The same meaning as in `fit` and `train`.
    - `**solve_kwargs`: `solver`, `dt`, `rtol`, `atol`, `adjoint`, `max_steps`,
      `throw`, as for `solve`.

    **Returns:** a `Solution` with `sol.ts` of shape `(time,)` and, per member,
    `sol.ys` leaves of shape `(members, time, *state)`, `sol.stats[k]` and `sol.ok`
    of shape `(members,)`. When the member count divides by the number of devices
    the outputs stay split over the mesh (`sol.ys.sharding`); otherwise they are
    gathered (replicated) after the padding is dropped. Under `jax.distributed`
    the outputs are global arrays: use
    `jax.experimental.multihost_utils.process_allgather` to read them on every host.

    **Raises:** `ValueError` when the member axes of `y0s` and `args` disagree, the
    ensemble is empty, `devices` is not a list of jax devices, or a `solve` argument
    is bad (the message names the argument and the value).

    Works inside `jax.jit` and `jax.grad`; values of `y0s`, `args`, `ts`, `rtol` and
    `atol` can change without recompiling. A fixed `dt` plans the steps from the
    values of `ts`, so under `jit` `ts` must be a constant (NumPy times closed over
    are); a jitted function that takes `ts` as an argument passes `substeps=k`.
    Inputs already on the devices are checked there (one bool per array comes back
    to the host) and are not moved when they already sit on the mesh as the
    program splits them (members) or replicates them (the rest).
    """
    mesh = member_mesh(devices)
    if solve_kwargs.get("progress"):
        raise ValueError("`progress`=True is not supported by `ensemble`; the "
                         "members run in one program without a per-member bar.")
    leaves = jtu.tree_leaves(y0s)
    if not leaves:
        raise ValueError(f"`y0s` holds no arrays: {short(y0s)}.")
    try:
        mapped, shared = eqx.partition(args, member_args)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"`member_args`={short(member_args)} must be a bool or a pytree prefix "
            f"of `args` made of bools: {e}"
        ) from e
    sizes = _members("y0s", y0s) + _members("args", mapped)
    n = sizes[0][1]
    for where, size in sizes:
        if size != n:
            raise ValueError(
                f"member axes disagree: `{sizes[0][0]}` has {n} members but "
                f"`{where}` has {size}; every per-member leaf needs the same "
                "leading size."
            )
    if n == 0:
        raise ValueError("the ensemble is empty: `y0s` has 0 members (leading axis "
                         "of length 0); pass at least one initial state.")

    ts = _float_times(ts)
    _check_values(ts, y0s, args)

    config = configure(**solve_kwargs)
    if config.dense:
        raise ValueError(
            "`dense=True` is not available from `ensemble` (each member would carry "
            "its own interpolant); use `jax.vmap` of `jaxode.solve(..., dense=True)` "
            "and `sol.evaluate`.")
    config, static_ts = _planned(config, ts)

    if is_concrete((y0s, mapped)):
        padded = padded_size(n, mesh)
        whole = replicated(mesh)
        y0s = jtu.tree_map(lambda a: _place(a, split(mesh), padded), y0s)
        mapped = jtu.tree_map(lambda a: _place(a, split(mesh), padded), mapped)
        shared = jtu.tree_map(
            lambda a: _place(a, whole, None) if eqx.is_array(a) and is_concrete(a) else a,
            shared)
        if is_concrete(ts):
            ts = _place(ts, whole, None)
    in_program = is_staged()
    sol, checks = _program(f, y0s, ts, mapped, shared, n, mesh, static_ts, config,
                           in_program, is_concrete(ts))
    if config.throw and not in_program:
        raise_unless(checks)
    return sol
