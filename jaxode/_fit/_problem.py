"""The fit problem as an `equinox.Module`: data arrays are its dynamic fields, so the
compiled loop (keyed by `equinox.filter_jit`) is reused when only values change; the
model's structure (vector field, observation function, solver, time grids) is static.

The optimiser works on one flat vector `v`:
`[parameters on their scales | fitted initial states | log noise parameters]`
(multiple shooting appends the segment start states).
"""

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from .._engine import Config, solve_with
from ._noise import NoiseModel, Observations
from ._transform import Transform


class GroupData(eqx.Module):
    """One group of trajectories sharing their times (see `_data.Group`)."""

    grid: tuple = eqx.field(static=True)  # t0 then the observation times
    obs_index: tuple = eqx.field(static=True)  # positions of the observations in grid
    t_obs: jax.Array
    y0: jax.Array  # (B, D)
    args: Any


def resolve_args(params, args):
    """What `f` and `h` receive as their third argument: the parameters, merged with
    an experiment's known `args` (a string in `args` names a fitted parameter)."""
    if args is None:
        return params
    if isinstance(params, dict):
        def lookup(a):
            if isinstance(a, str):
                return params[a]
            return a
        args = jtu.tree_map(lookup, args)
        if isinstance(args, dict):
            return {**params, **args}
    return (params, args)


class Problem(eqx.Module):
    """What the compiled loop needs: the model, the data and the layout of `v`.
    Build it with keywords."""

    f: Callable
    h: Callable | None
    config: Config  # the solve options, checked by `configure`
    transform: Transform  # natural <-> optimiser coordinates of v[:n_v]
    groups: tuple  # a GroupData per group of trajectories
    obs: Observations
    noise: NoiseModel
    treedef: Any = eqx.field(static=True)
    shapes: tuple = eqx.field(static=True)
    dtype: Any = eqx.field(static=True)
    n_cols: int = eqx.field(static=True)
    n_p: int = eqx.field(static=True)
    n_y0: int = eqx.field(static=True)
    shooting: Any = None  # a _shooting.Segments when shooting

    @property
    def n_v(self) -> int:
        return self.n_p + self.n_y0 + self.noise.n_noise

    # -- the flat vector
    def split(self, v):
        """`v` -> (natural parameter values, list of y0 per group, log noise)."""
        natural = self.transform.from_u(v[: self.n_v], jnp)
        flat = natural[: self.n_p]
        y0s, i = [], self.n_p
        for g in self.groups:
            if self.n_y0:
                n = g.y0.size
                y0s.append(natural[i: i + n].reshape(g.y0.shape))
                i += n
            else:
                y0s.append(g.y0)
        return flat, y0s, self.noise_params(v)

    def noise_params(self, v):
        return v[self.n_p + self.n_y0: self.n_v]

    def unflatten(self, flat):
        return unflatten(self.treedef, self.shapes, self.dtype, flat, jnp)

    # -- the model
    def solve_group(self, g, params, y0, grid, throw=False):
        p = resolve_args(params, g.args)
        config = self.config.replace(throw=throw)

        def one(y):
            return solve_with(config, self.f, y, np.asarray(grid), p).ys

        return jax.vmap(one)(y0)  # (B, len(grid), D)

    def observe(self, g, params, ts, states):
        """States `(B, T, D)` at times `ts` -> observables `(B, T, K)`."""
        if self.h is None:
            return states
        p = resolve_args(params, g.args)
        return jax.vmap(jax.vmap(lambda t, y: jnp.asarray(self.h(t, y, p)),
                                 in_axes=(0, 0)), in_axes=(None, 0))(ts, states)

    def predict(self, v):
        """All predicted observables, flat in the order of `data`."""
        flat, y0s, _ = self.split(v)
        params = self.unflatten(flat)
        out = []
        for g, y0 in zip(self.groups, y0s):
            ys = self.solve_group(g, params, y0, g.grid)
            ys = ys[:, np.asarray(g.obs_index)]
            out.append(self.observe(g, params, g.t_obs, ys).reshape(-1))
        return jnp.concatenate(out)

    # -- the likelihood
    def loss(self, mu, v):
        """The objective: mean squared residual (least squares) or total negative
        log-likelihood, over the observed entries."""
        return self.noise.loss(self.obs, mu, self.noise_params(v))

    def weight(self, mu, v, fisher=True):
        """Fisher weight of each prediction; with `fisher=False` the curvature
        Gauss–Newton steps use."""
        return self.noise.weight(self.obs, mu, self.noise_params(v), fisher)

    def information(self, mu, jac, v):
        """The Fisher information `Jᵀ W J` plus the noise parameters' block."""
        w = self.weight(mu, v)
        return jac.T @ (w[:, None] * jac) + jax.hessian(self.loss, argnums=1)(mu, v)


def unflatten(treedef, shapes, dtype, flat, xp=np):
    """A flat vector -> a pytree like `params0`: JAX arrays inside the fit
    (`xp=jnp`), NumPy ones in the result."""
    out, i = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(xp.asarray(flat[i: i + size], dtype).reshape(shape))
        i += size
    return jtu.tree_unflatten(treedef, out)
