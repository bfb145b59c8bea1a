"""Rosenbrock23: a linearly implicit, L-stable method for stiff problems, as a diffrax
solver (so `solve`, adjoints, `vmap` and `ensemble` take it unchanged).

Shampine & Reichelt's modified Rosenbrock triple (the method of MATLAB's `ode23s`;
"The MATLAB ODE suite", SIAM J. Sci. Comput. 18, 1997). With `d = 1/(2 + √2)`,
`W = I − h d J` (`J = ∂f/∂y`, `T = ∂f/∂t` at the step's start):

    k1 = W⁻¹ (f(t, y) + h d T)
    k2 = W⁻¹ (f(t + h/2, y + h k1/2) − k1) + k1
    y1 = y + h k2                                  (order 2, L-stable)
    k3 = W⁻¹ (f(t + h, y1) − e32 (k2 − f1) − 2 (k1 − f0) + h d T),  e32 = 6 + √2
    error = h (k1 − 2 k2 + k3) / 6                 (from the order-3 companion)

No Newton iterations: one Jacobian (forward mode, one JVP per state component), one LU
factorisation (lineax) and three solves per step. The interpolant between steps is the
method's own, `y(t + s h) = y + h (s(1−s) k1 + s(s−2d) k2) / (1 − 2d)`.
"""

import math
from collections.abc import Callable
from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
from jax.flatten_util import ravel_pytree

__all__ = ["Rosenbrock23"]

_D = 1.0 / (2.0 + math.sqrt(2.0))
_E32 = 6.0 + math.sqrt(2.0)


class _Rosenbrock23Interpolation(diffrax.AbstractLocalInterpolation):
    t0: jax.Array
    t1: jax.Array
    y0: object
    k1: object  # h · k1 and h · k2, as pytrees like y
    k2: object

    def evaluate(self, t0, t1=None, left=True):
        del left
        if t1 is not None:
            return jtu.tree_map(lambda a, b: b - a, self.evaluate(t0), self.evaluate(t1))
        s = (t0 - self.t0) / (self.t1 - self.t0)
        w1 = s * (1 - s) / (1 - 2 * _D)
        w2 = s * (s - 2 * _D) / (1 - 2 * _D)
        return jtu.tree_map(lambda y, a, b: (y + w1 * a + w2 * b).astype(y.dtype),
                            self.y0, self.k1, self.k2)


class Rosenbrock23(diffrax.AbstractAdaptiveSolver):
    """Shampine's L-stable Rosenbrock method of order 2 with an order-3 error
    estimate (MATLAB's `ode23s`): for stiff problems at moderate tolerances
    (`rtol` 1e-3 ... 1e-6). Needs an `ODETerm`; the Jacobian comes from
    `jax.jacfwd`. By name: `solve(..., solver="rosenbrock23")`."""

    term_structure: ClassVar = diffrax.ODETerm
    interpolation_cls: ClassVar[Callable[..., _Rosenbrock23Interpolation]] = (
        _Rosenbrock23Interpolation)

    def order(self, terms):
        return 2

    def error_order(self, terms):
        return 3

    def init(self, terms, t0, t1, y0, args):
        return None

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        flat0, unravel = ravel_pytree(y0)
        h = (t1 - t0).astype(flat0.dtype)

        def f(t, flat):
            return ravel_pytree(terms.vf(t, unravel(flat), args))[0]

        f0, dfdt = jax.jvp(lambda t: f(t, flat0), (t0,), (jnp.ones_like(t0),))
        J = jax.jacfwd(lambda y: f(t0, y))(flat0)
        W = lx.MatrixLinearOperator(jnp.eye(flat0.size, dtype=flat0.dtype)
                                    - (h * _D) * J)
        lu = lx.LU()
        state = lu.init(W, options={})

        def solve(b):
            return lx.linear_solve(W, b, lu, state=state, throw=False).value

        hdT = (h * _D) * dfdt.astype(flat0.dtype)
        k1 = solve(f0 + hdT)
        f1 = f(t0 + h / 2, flat0 + (h / 2) * k1)
        k2 = solve(f1 - k1) + k1
        flat1 = flat0 + h * k2
        f2 = f(t1, flat1)
        k3 = solve(f2 - _E32 * (k2 - f1) - 2 * (k1 - f0) + hdT)
        error = (h / 6) * (k1 - 2 * k2 + k3)
        dense = dict(y0=y0, k1=unravel(h * k1), k2=unravel(h * k2))
        return (unravel(flat1), unravel(error), dense, None,
                diffrax.RESULTS.successful)
