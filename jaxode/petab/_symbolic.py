"""An ODE model in symbols, and the one way symbols become JAX functions.

`OdeModel` is what `_sbml.import_sbml` reads from an SBML file: the states, the
constants the model reads (its parameters), the right-hand side, the initial state
and the assignment-rule variables, all as sympy expressions. `compile_exprs` turns
sympy expressions into one JAX function: common subexpressions are computed once
(`sympy.cse`), `Piecewise` becomes `jnp.select`, and nothing runs in Python per step.
"""

import dataclasses
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import sympy as sp

__all__ = ["OdeModel", "compile_exprs"]


@dataclasses.dataclass(frozen=True)
class OdeModel:
    """`dy/dt = rhs(t, y, p)`, `y(t0) = initial(p)`, in symbols.

    - `t`: the time symbol.
    - `states`: the differential variables `y`, in order.
    - `parameters`: every constant the model reads (SBML parameters, compartment
      sizes, constant species), in order: the vector `p`.
    - `defaults`: the SBML values of `parameters`.
    - `rhs`: `dy/dt`, one expression per state, in `t`, `states` and `parameters`.
    - `initial`: `y` at the start, one expression per state, in `parameters`.
    - `assignments`: assignment-rule variables, each an expression in `t`,
      `states` and `parameters` (already substituted into `rhs` and `initial`).
    """

    t: sp.Symbol
    states: tuple[sp.Symbol, ...]
    parameters: tuple[sp.Symbol, ...]
    defaults: tuple[float, ...]
    rhs: tuple[sp.Expr, ...]
    initial: tuple[sp.Expr, ...]
    assignments: dict

    def substitute(self, expr: sp.Expr) -> sp.Expr:
        """`expr` with assignment-rule variables replaced by their expressions."""
        return sp.sympify(expr).xreplace(self.assignments)


def compile_exprs(exprs: Sequence[sp.Expr],
                  args: Sequence[Sequence[sp.Symbol]]) -> Callable:
    """`g(*arrays) -> jnp.ndarray` of shape `(len(exprs),)`: `exprs` evaluated with
    the symbols of `args[i]` taken from `arrays[i][j]` (each array 1-D).

    Common subexpressions are computed once (`lambdify(cse=True)`); `Piecewise`
    becomes `jnp.select`.
    """
    exprs = [sp.sympify(e) for e in exprs]
    fn = sp.lambdify([list(group) for group in args], exprs, modules="jax", cse=True)

    def g(*arrays):
        if not exprs:
            return jnp.zeros(0)
        out = fn(*arrays)
        dtype = jnp.result_type(*[jnp.asarray(a).dtype for a in arrays])
        return jnp.stack([jnp.broadcast_to(jnp.asarray(o, dtype), ()) for o in out])

    return g
