"""Fixed-step explicit Runge–Kutta steppers.

Each stepper is a Butcher tableau and one generic step. A stepper's `step(f, t, y, dt,
args)` is pure, so `lambda y, t: (stepper.step(f, t, y, dt, args), ...)` is an RNN cell
without learned weights; `ODECell` packages exactly that.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.tree_util as jtu
import numpy as np

from ._errors import check_same_structure, is_concrete, short
from ._types import Args, RealScalarLike, VectorField, Y

__all__ = ["ButcherTableau", "AbstractStepper", "Euler", "Midpoint", "Heun", "RK4",
           "ODECell"]


@dataclasses.dataclass(frozen=True)
class ButcherTableau:
    """Coefficients of an explicit Runge–Kutta method.

    **Arguments:**

    - `c`: nodes, one per stage, `c[0] == 0`.
    - `a`: strictly lower-triangular matrix as rows; row i has i entries.
    - `b`: weights, one per stage, summing to 1.
    - `order`: the classical order of the method.

    The tableau checks itself when created, so a mistyped coefficient fails at import.
    """

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int

    def __post_init__(self):
        s = len(self.c)
        if len(self.a) != s or len(self.b) != s:
            raise ValueError(
                f"tableau has {s} nodes, {len(self.a)} rows of `a` and "
                f"{len(self.b)} weights; all three must be equal."
            )
        if self.c[0] != 0:
            raise ValueError(f"explicit tableau needs c[0] == 0, got {self.c[0]}.")
        for i, (ci, row) in enumerate(zip(self.c, self.a)):
            if len(row) != i:
                raise ValueError(f"row {i} of `a` must have {i} entries, got {row}.")
            if not math.isclose(sum(row), ci, abs_tol=1e-14):
                raise ValueError(f"row {i} of `a` sums to {sum(row)}, but c[{i}]={ci}.")
        if not math.isclose(sum(self.b), 1.0, abs_tol=1e-14):
            raise ValueError(f"weights `b` sum to {sum(self.b)}, not 1.")

    @property
    def stages(self) -> int:
        return len(self.c)


def _axpy(y: Y, dt: RealScalarLike, coeffs: tuple[float, ...], ks: list[Y]) -> Y:
    """`y + dt * Σ coeffs[j] ks[j]`, skipping zero coefficients."""
    terms = [(c, k) for c, k in zip(coeffs, ks) if c != 0]
    if not terms:
        return y
    cs = [c for c, _ in terms]

    def combine(y_leaf, *k_leaves):
        increment = cs[0] * k_leaves[0]
        for c, k in zip(cs[1:], k_leaves[1:]):
            increment = increment + c * k
        return y_leaf + dt * increment

    return jtu.tree_map(combine, y, *[k for _, k in terms])


class AbstractStepper(eqx.Module):
    """An explicit Runge–Kutta method with a fixed step: a tableau and one step."""

    tableau: ClassVar[ButcherTableau]

    @property
    def order(self) -> int:
        return self.tableau.order

    @property
    def stages(self) -> int:
        """Vector-field evaluations per step."""
        return self.tableau.stages

    def step(self, f: VectorField, t: RealScalarLike, y: Y, dt: RealScalarLike,
             args: Args = None) -> Y:
        """One step of size `dt` from `(t, y)`: returns `y(t + dt)`, same pytree as `y`."""
        tab = self.tableau
        ks: list[Y] = []
        for ci, row in zip(tab.c, tab.a):
            ks.append(f(t + ci * dt, _axpy(y, dt, row, ks), args))
        return _axpy(y, dt, tab.b, ks)


class Euler(AbstractStepper):
    """Forward Euler, order 1: `y + dt·f(t, y)`, an RNN cell without weights."""

    tableau: ClassVar[ButcherTableau] = ButcherTableau(
        c=(0.0,), a=((),), b=(1.0,), order=1
    )


class Midpoint(AbstractStepper):
    """Explicit midpoint rule, order 2."""

    tableau: ClassVar[ButcherTableau] = ButcherTableau(
        c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2
    )


class Heun(AbstractStepper):
    """Heun's method (explicit trapezoidal rule), order 2."""

    tableau: ClassVar[ButcherTableau] = ButcherTableau(
        c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2
    )


class RK4(AbstractStepper):
    """The classical fourth-order Runge–Kutta method."""

    tableau: ClassVar[ButcherTableau] = ButcherTableau(
        c=(0.0, 0.5, 0.5, 1.0),
        a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
        order=4,
    )


class ODECell(eqx.Module):
    """An ODE solver step as an RNN cell: `cell((t, y), x) -> ((t + dt, y_next), y_next)`.

    **Arguments:**

    - `f`: vector field `f(t, y, args)`; may be an equinox module with trainable
      weights (then the cell is a learned recurrence).
    - `solver`: a fixed-step stepper or its name (`"euler"`, `"midpoint"`,
      `"heun"`, `"rk4"`), `RK4()` by default. An adaptive solver chooses its own
      steps, so it cannot be a cell: use `jaxode.solve` for it.
    - `dt`: the step size, finite and > 0.
    - `args`: passed to `f`. When the cell is driven with inputs (`x` not None),
      `x` is passed as `args` instead: a forcing term, the RNN's input sequence.

    Run it with `jaxode.scan(cell, (t0, y0), xs)` or `jaxode.scan(cell, (t0, y0),
    None, length=n)`.

    **Raises:** `ValueError` for an unknown or adaptive solver, a `dt` that is not
    finite and positive (concrete values), and, when the cell is first traced, a
    field whose output differs from the state in structure, shape or dtype.
    """

    f: Callable[..., Any]
    solver: AbstractStepper
    dt: float
    args: Args

    def __init__(self, f, solver=None, dt=0.1, args=None):
        if not callable(f):
            raise ValueError(f"`f` must be a function f(t, y, args), got {short(f)}.")
        self.f = f
        self.solver = stepper(RK4() if solver is None else solver)
        if is_concrete(dt):
            value = np.asarray(dt)
            if value.ndim or not np.isfinite(value) or value <= 0:
                raise ValueError(f"`dt` must be a finite number > 0, got {short(dt)}.")
        self.dt = dt
        self.args = args

    def __call__(self, carry: tuple[RealScalarLike, Y], x: Any = None):
        t, y = carry
        args = self.args if x is None else x
        out = eqx.filter_eval_shape(lambda t, y, a: self.f(t, y, a), t, y, args)
        check_same_structure("f", out, jax.eval_shape(lambda y: y, y), "y")
        y_next = self.solver.step(self.f, t, y, self.dt, args)
        return (t + self.dt, y_next), y_next


STEPPERS: dict[str, type[AbstractStepper]] = {
    "euler": Euler, "midpoint": Midpoint, "heun": Heun, "rk4": RK4}


def stepper(solver: Any) -> AbstractStepper:
    """A fixed-step stepper from itself or its name."""
    if isinstance(solver, AbstractStepper):
        return solver
    if isinstance(solver, str) and solver.lower() in STEPPERS:
        return STEPPERS[solver.lower()]()
    raise ValueError(
        f"`solver`={short(solver)} is not a fixed-step stepper: an ODECell takes one "
        f"step of `dt` per call, so it needs one of {', '.join(STEPPERS)} (or "
        "jaxode.Euler(), ...); an adaptive solver chooses its own steps: use "
        "jaxode.solve for it.")
