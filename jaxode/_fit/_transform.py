"""Scales and the one map between natural values and optimiser coordinates.

The optimiser works on one flat vector `v`; every number in it has a `Scale`:
linear numbers (parameters, fitted initial states) are optimised in units of their
start, log-scale ones as `log x` or `log10 x` (noise parameters are always `log`).
`Transform` holds the scale of each number and maps whole vectors both ways, inside
the compiled fit (`xp=jax.numpy`) and in the result (`xp=numpy`).
"""

import enum
import math
from collections.abc import Sequence

import equinox as eqx
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Bool, Float


class Scale(enum.Enum):
    """How one number is optimised: `LIN` in units of its start, `LOG` as its natural
    log, `LOG10` as its base-10 log (both keep it positive)."""

    LIN = "lin"
    LOG = "log"
    LOG10 = "log10"


def unit_of(x) -> np.ndarray:
    """The unit a linear number is optimised in: its own size (1 for a zero)."""
    x = np.asarray(x)
    return np.where(x != 0, np.abs(x), 1.0)


class Transform(eqx.Module):
    """Natural values <-> optimiser coordinates, one `Scale` per number.

    `log`, `log10` mark the numbers on those scales; the others are linear, in units
    of `unit`. Index it (`transform[j]`, `transform[:n]`) for some of the numbers."""

    log: Bool[Array, "..."]
    log10: Bool[Array, "..."]
    unit: Float[Array, "..."]

    @classmethod
    def of(cls, scales: Sequence[Scale], unit) -> "Transform":
        """The transform of numbers on `scales`, linear ones in units `unit`."""
        return cls(log=np.array([s is Scale.LOG for s in scales], bool),
                   log10=np.array([s is Scale.LOG10 for s in scales], bool),
                   unit=np.asarray(unit, np.float64))

    def __getitem__(self, index) -> "Transform":
        return jtu.tree_map(lambda a: a[index], self)

    def __add__(self, other: "Transform") -> "Transform":
        """The numbers of `self`, then those of `other`."""
        return jtu.tree_map(lambda a, b: np.concatenate([a, b]), self, other)

    def scales(self) -> list[Scale]:
        """The scale of every number."""
        return [Scale.LOG if lg else Scale.LOG10 if l10 else Scale.LIN
                for lg, l10 in zip(np.asarray(self.log), np.asarray(self.log10))]

    def to_u(self, x, xp=np):
        """Natural values -> optimiser coordinates (`xp` is NumPy or jax.numpy)."""
        safe = xp.where(self.log | self.log10, x, 1.0)
        return xp.where(self.log, xp.log(safe),
                        xp.where(self.log10, xp.log10(safe), x / self.unit))

    def from_u(self, u, xp=np):
        """Optimiser coordinates -> natural values."""
        return xp.where(self.log, xp.exp(xp.where(self.log, u, 0.0)),
                        xp.where(self.log10, 10.0 ** xp.where(self.log10, u, 0.0),
                                 u * self.unit))

    def slope(self, x):
        """The derivative of each natural value `x` in its optimiser coordinate."""
        return np.where(self.log, x, np.where(self.log10, x * math.log(10), self.unit))

    def u_bounds(self, lo, hi):
        """Bounds in natural units -> in optimiser coordinates (a log-scale bound at
        0 is -inf)."""
        positive = self.log | self.log10
        with np.errstate(divide="ignore"):
            u_lo = self.to_u(np.where(positive, np.maximum(lo, 0.0), lo))
            u_hi = self.to_u(hi)
        return np.where(np.isnan(u_lo), -np.inf, u_lo), u_hi
