"""Devices: one meaning of `devices=` in `ensemble`, `fit` and `train`.

Each of them splits one leading axis (members, starts, rows of a minibatch) over a 1-D
`jax.sharding.Mesh` whose single axis is named `"members"`:

- `devices=None` (the default) is every device of this process, `jax.local_devices()`:
  on one machine, all its devices. Under `jax.distributed`, pass `jax.devices()` to
  span every process (`ensemble` and `train` accept it; `fit` runs per process).
- `devices=[d, ...]` is exactly those devices; `[jax.devices()[0]]` turns the split off.

A leading axis that does not divide by the number of devices is padded with copies of
its last entry (`ensemble`, `fit`); the padding is dropped from the results. `train`
cannot pad a minibatch without changing the loss, so it asks for a batch that divides.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._errors import short

__all__ = ["AXIS", "member_mesh", "resolve_devices", "padded_size", "pad", "split",
           "replicated"]

AXIS = "members"


def resolve_devices(devices: Any) -> list[jax.Device]:
    """The devices a `devices=` argument names (`None`: `jax.local_devices()`).

    **Raises:** `ValueError` when `devices` is not a non-empty list of distinct jax
    devices.
    """
    if devices is None:
        return list(jax.local_devices())
    if isinstance(devices, jax.Device):
        raise ValueError(
            f"`devices` must be a list of jax devices, got the single device "
            f"{devices!r}; pass [{devices!r}].")
    if isinstance(devices, np.ndarray):
        devices = devices.reshape(-1).tolist()
    if not isinstance(devices, Sequence) or isinstance(devices, (str, bytes)):
        raise ValueError(
            f"`devices` must be a list of jax devices (e.g. jax.devices()), got "
            f"{short(devices)}.")
    devices = list(devices)
    if not devices:
        raise ValueError("`devices` is empty; pass at least one jax device.")
    bad = [d for d in devices if not isinstance(d, jax.Device)]
    if bad:
        raise ValueError(
            f"`devices` must hold jax devices (from jax.devices()), but it holds "
            f"{short(bad[0])} of type {type(bad[0]).__name__}.")
    if len(set(devices)) != len(devices):
        raise ValueError(f"`devices` lists a device twice: {short(devices)}.")
    return devices


def member_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The 1-D mesh that `ensemble`, `fit` and `train` split over; its one axis is
    named `"members"`.

    **Arguments:**

    - `devices`: a list of jax devices; `None` takes `jax.local_devices()` (every
      device of this process; pass `jax.devices()` to span every process under
      `jax.distributed`).

    **Returns:** a `jax.sharding.Mesh` of shape `(len(devices),)`.

    **Raises:** `ValueError` when `devices` is not a non-empty list of distinct jax
    devices.
    """
    return Mesh(np.array(resolve_devices(devices), dtype=object), (AXIS,))


def padded_size(n: int, mesh: Mesh) -> int:
    """`n` rounded up to a multiple of the number of devices in `mesh`."""
    return -(-n // mesh.size) * mesh.size


def pad(x: Any, padded: int) -> Any:
    """Repeat the last entry of the leading axis until it has length `padded` (NumPy
    arrays stay on the host, JAX arrays and tracers stay in JAX)."""
    extra = padded - x.shape[0]
    if extra == 0:
        return x
    xp = np if isinstance(x, np.ndarray) else jnp
    return xp.concatenate([x, xp.repeat(x[-1:], extra, axis=0)], axis=0)


def split(mesh: Mesh) -> NamedSharding:
    """The leading axis split over the mesh."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A whole copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())
