"""`CNF`: a continuous normalising flow (Chen et al. 2018, section 4).

A point `z(0)` drawn from a standard normal moves along `dz/dt = f(t, z, args)` to
`x = z(t1)`. Its log-density changes by the instantaneous change of variables,
`d log p(z(t))/dt = -tr(∂f/∂z)`, so

    log p(x) = log N(z(0); 0, I) - ∫_0^{t1} tr(∂f/∂z)(t, z(t)) dt,

found by integrating `(z, ∫ tr)` backwards from `z(t1) = x`. Only the trace of the
Jacobian is needed: exactly (`d` Jacobian-vector products) for low dimension, or by
Hutchinson's estimator `E[εᵀ (∂f/∂z) ε]` with one noise draw `ε` held fixed over the
solve (one Jacobian-vector product per evaluation) for high dimension.
"""

import math
import numbers
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._errors import check_field
from .._engine import Config, configure, solve_with

__all__ = ["CNF"]

_TRACES = ("exact", "hutchinson")
_NOISES = ("rademacher", "gaussian")


def _exact_trace(f, t, z, args):
    """`tr(∂f/∂z)` at one point `z` of shape `(d,)`: one JVP per basis vector."""
    eye = jnp.eye(z.shape[0], dtype=z.dtype)
    _, cols = jax.vmap(lambda e: jax.jvp(lambda u: f(t, u, args), (z,), (e,)))(eye)
    return jnp.trace(cols)


def _hutchinson_trace(f, t, z, eps, args):
    """`εᵀ (∂f/∂z) ε` at one point: one JVP."""
    _, jv = jax.jvp(lambda u: f(t, u, args), (z,), (eps,))
    return jnp.sum(eps * jv)


class _Reverse(eqx.Module):
    """The augmented dynamics in reversed time `s = t1 - t`, batched over points:
    `dz/ds = -f(t1 - s, z)`, `d(∫tr)/ds = tr(∂f/∂z)(t1 - s, z)`."""

    t1: float = eqx.field(static=True)
    trace: str = eqx.field(static=True)

    def __call__(self, s, state, field_eps_args):
        field, eps, args = field_eps_args
        z, _ = state
        t = self.t1 - s
        dz = jax.vmap(lambda u: field(t, u, args))(z)
        if self.trace == "exact":
            tr = jax.vmap(lambda u: _exact_trace(field, t, u, args))(z)
        else:
            tr = jax.vmap(lambda u, e: _hutchinson_trace(field, t, u, e, args))(z, eps)
        return -dz, tr


class _Forward(eqx.Module):
    """The augmented dynamics forward in time: `dz/dt = f`, `d(∫tr)/dt = tr(∂f/∂z)`
    (exact trace), used by `sample(..., log_prob=True)`."""

    def __call__(self, t, state, field_args):
        field, args = field_args
        z, _ = state
        dz = jax.vmap(lambda u: field(t, u, args))(z)
        tr = jax.vmap(lambda u: _exact_trace(field, t, u, args))(z)
        return dz, tr


def _flow(t, z, field_args):
    field, args = field_args
    return jax.vmap(lambda u: field(t, u, args))(z)


def _log_normal(z: Float[Array, "n d"]) -> Float[Array, " n"]:
    d = z.shape[-1]
    return -0.5 * jnp.sum(z * z, axis=-1) - 0.5 * d * math.log(2 * math.pi)


class CNF(eqx.Module):
    """A continuous normalising flow with a standard normal base at `t = 0` and the
    data at `t = t1`.

    **Arguments:**

    - `vector_field`: `vector_field(t, z, args) -> dz/dt` for ONE point `z` of shape
      `(dim,)` (usually an `eqx.Module`; its arrays are the parameters): the calling
      convention of `jaxode.solve`. The flow vmaps it over points; `args` is what the
      caller passes as `args=` to `log_prob`, `inverse` or `sample` (default `None`),
      the same for every point.
    - `dim`: the dimension of the data.
    - `t1`: the end time (default 1.0).
    - `trace`: `"exact"` (default; cost grows with `dim`) or `"hutchinson"`
      (unbiased stochastic estimate; `log_prob` then needs a `key`).
    - `noise`: Hutchinson noise, `"rademacher"` (default, ±1) or `"gaussian"`.
    - `solver`, `rtol`, `atol`, `adjoint`, `max_steps`: passed to `jaxode.solve`
      (defaults: `"dopri5"`, 1e-5, 1e-5, `"recursive"`, 4096). One ODE is solved for
      a whole batch of points.

    **Raises:** `ValueError` for a `vector_field` that does not take `(t, z, args)`,
    unknown names (`trace`, `noise`, `solver`, `adjoint`), `dim < 1`, `t1 <= 0` or
    not finite, `rtol`/`atol <= 0`, `max_steps < 1`.
    """

    vector_field: Callable[..., Array]
    dim: int = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    trace: str = eqx.field(static=True)
    noise: str = eqx.field(static=True)
    config: Config = eqx.field(static=True)

    def __init__(self, vector_field: Callable[..., Array], *, dim: int,
                 t1: float = 1.0, trace: str = "exact", noise: str = "rademacher",
                 solver: Any = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                 adjoint: Any = "recursive", max_steps: int = 4096):
        check_field("vector_field", vector_field, "vector_field(t, z, args)")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"`dim` must be a positive integer, got {dim!r}.")
        if (isinstance(t1, bool) or not isinstance(t1, numbers.Real)
                or not math.isfinite(t1) or t1 <= 0):
            raise ValueError(f"`t1` must be a finite number > 0, got {t1!r}.")
        if trace not in _TRACES:
            raise ValueError(f"`trace`={trace!r} is not one of: {', '.join(_TRACES)}.")
        if noise not in _NOISES:
            raise ValueError(f"`noise`={noise!r} is not one of: {', '.join(_NOISES)}.")
        self.config = configure(solver=solver, adjoint=adjoint, rtol=rtol, atol=atol,
                                max_steps=max_steps)
        self.vector_field = vector_field
        self.dim = dim
        self.t1 = float(t1)
        self.trace = trace
        self.noise = noise

    # the options as `configure` resolved them (names became solver and adjoint objects)
    solver = property(lambda self: self.config.solver)
    adjoint = property(lambda self: self.config.adjoint)
    rtol = property(lambda self: self.config.rtol)
    atol = property(lambda self: self.config.atol)
    max_steps = property(lambda self: self.config.max_steps)

    def _points(self, x: Array, name: str) -> tuple[Array, bool]:
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        single = x.ndim == 1
        if single:
            x = x[None]
        if x.ndim != 2 or x.shape[-1] != self.dim:
            raise ValueError(
                f"`{name}` must have shape ({self.dim},) or (n, {self.dim}), got "
                f"{tuple(jnp.shape(x))}.")
        return x, single

    def _solve(self, f, y0, args):
        ts = jnp.array([0.0, self.t1], dtype=jax.tree_util.tree_leaves(y0)[0].dtype)
        return solve_with(self.config, f, y0, ts, args)

    def inverse(self, x: Array, key: PRNGKeyArray | None = None, *,
                args: Any = None) -> tuple[Array, Array]:
        """Map data `x` back to the base: returns `(z0, ∫_0^{t1} tr(∂f/∂z) dt)`,
        shapes `(n, dim)` and `(n,)` (or `(dim,)` and `()` for a single point)."""
        x, single = self._points(x, "x")
        if self.trace == "hutchinson":
            if key is None:
                raise ValueError(
                    "`key` is required with trace='hutchinson' (it draws the noise "
                    "of the trace estimator).")
            if self.noise == "rademacher":
                eps = jr.rademacher(key, x.shape, dtype=x.dtype)
            else:
                eps = jr.normal(key, x.shape, dtype=x.dtype)
        else:
            eps = None
        state0 = (x, jnp.zeros(x.shape[:1], x.dtype))
        sol = self._solve(_Reverse(self.t1, self.trace), state0,
                          (self.vector_field, eps, args))
        z0, integral = sol.ys[0][-1], sol.ys[1][-1]
        if single:
            return z0[0], integral[0]
        return z0, integral

    def log_prob(self, x: Array, key: PRNGKeyArray | None = None, *,
                 args: Any = None) -> Array:
        """`log p(x)` of data `x` (shape `(dim,)` or `(n, dim)`): `log N(z(0)) −
        ∫_0^{t1} tr(∂f/∂z) dt`. With `trace="hutchinson"`, `key` draws the noise
        (one draw per point, fixed over the solve) and the result is an unbiased
        estimate of the integral term.

        **Returns:** shape `()` or `(n,)`.

        **Raises:** `ValueError` for a bad shape or a missing `key`.
        """
        z0, integral = self.inverse(x, key, args=args)
        return _log_normal(z0) - integral

    def sample(self, key: PRNGKeyArray, n: int, *, log_prob: bool = False,
               args: Any = None) -> Array | tuple[Array, Array]:
        """`n` samples: `z(0) ~ N(0, I)` carried forward to `t1`.

        With `log_prob=True` also returns `log p` of each sample, computed along the
        same forward trajectory with the exact trace.

        **Returns:** shape `(n, dim)` (and `(n,)`).
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"`n` must be a positive integer, got {n!r}.")
        z0 = jr.normal(key, (n, self.dim), dtype=jnp.result_type(float))
        if not log_prob:
            return self._solve(_flow, z0, (self.vector_field, args)).ys[-1]
        state0 = (z0, jnp.zeros((n,), z0.dtype))
        sol = self._solve(_Forward(), state0, (self.vector_field, args))
        x, integral = sol.ys[0][-1], sol.ys[1][-1]
        return x, _log_normal(z0) - integral
