"""Type aliases shared across jaxode (jaxtyping, for documentation and checkers)."""

from typing import Any, Callable

from jaxtyping import Array, ArrayLike, Bool, Float, PyTree, Real

Y = PyTree[Float[Array, "..."]]
"""The state of an ODE: any pytree of floating arrays."""

Args = PyTree[Any]
"""Extra arguments passed to a vector field `f(t, y, args)`."""

Carry = PyTree[Any]
"""The carry of a recurrence `step(carry, x) -> (carry, y)`."""

RealScalarLike = float | int | Real[ArrayLike, ""]

VectorField = Callable[[RealScalarLike, Y, Args], Y]

Times = Real[ArrayLike, " time"]
Mask = Bool[ArrayLike, "time ..."]
