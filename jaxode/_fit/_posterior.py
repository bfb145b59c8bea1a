"""`Posterior`: the draws of `sample`, their summary and diagnostics, and posterior
predictive bands."""

import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from . import _stats


class Band(NamedTuple):
    """Pointwise posterior quantiles of the observables at `ts`: `low` and `high`
    enclose the central `level` of the draws, `median` is their median. Each is
    shaped as `FitResult.predict(ts, observed=True)` returns."""

    ts: np.ndarray
    low: np.ndarray
    median: np.ndarray
    high: np.ndarray
    level: float


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else str(x)


class Posterior(eqx.Module):
    """The result of `sample` (and `FitResult.sample`).

    - `draws`: every estimated number in natural units, NumPy
      `(chains, draws per chain, n)`: the parameters in leaf order, then the fitted
      initial states, then the noise parameters (the layout of `FitResult.cov`);
      `labels` names them (`"alpha"`, `"w[1]"`, `"y0[0]"`, `"sigma[1]"`).
    - `samples`: the same draws as a dict (see the property).
    - `divergent`: `(chains, draws)`, True where a transition diverged (its
      trajectory's energy error was too large: the sampler could not follow the
      posterior there, and the draws near such regions may be biased).
    - `accept`: `(chains, draws)`, each transition's mean acceptance probability.
    - `steps`: `(chains, draws)`, leapfrog steps (gradient evaluations) per draw;
      `warmup_steps`: `(chains,)`, those of the warmup.
    - `warmup_draws`: `(chains, num_warmup, n)`, the warmup iterations (for trace
      plots; not part of the posterior).
    - `step_size`, `inverse_mass`: each chain's adapted step size and diagonal
      inverse mass matrix (in the sampler's standardised coordinates).
    - `fit`: the `FitResult` the chains started from.
    - `summary`, `predict`: see the methods.
    """

    draws: np.ndarray
    labels: tuple = eqx.field(static=True)
    divergent: np.ndarray
    accept: np.ndarray
    steps: np.ndarray
    warmup_draws: np.ndarray
    warmup_steps: np.ndarray
    step_size: np.ndarray
    inverse_mass: np.ndarray
    fit: Any
    _row_order: tuple = eqx.field(static=True)
    _prob: Any  # the fit's Problem, its noise model one with a likelihood
    _model: Any  # the fit's FittedModel (times, groups)

    @property
    def num_chains(self) -> int:
        return self.draws.shape[0]

    @property
    def num_samples(self) -> int:
        """Draws per chain."""
        return self.draws.shape[1]

    @property
    def num_divergent(self) -> int:
        """Divergent transitions after the warmup, all chains together."""
        return int(np.sum(self.divergent))

    @property
    def names(self) -> list:
        """The labels of the estimated numbers in display order (that of `params0`,
        then `y0`, then the noise parameters)."""
        return [self.labels[i] for i in self._row_order]

    def draws_of(self, name: str, warmup: bool = False) -> np.ndarray:
        """The draws of one number by label (`"alpha"`, `"y0[1]"`), shape `(chains,
        draws)`; with `warmup=True` those of the warmup iterations.

        **Raises:** `ValueError` for an unknown label."""
        if name not in self.labels:
            raise ValueError(f"`name`={name!r} is not an estimated number; choose one "
                             f"of {self.names}.")
        source = self.warmup_draws if warmup else self.draws
        return source[..., self.labels.index(name)]

    @property
    def samples(self) -> dict:
        """The draws as a dict, each value with leading axes `(chains, draws)`: one
        entry per parameter (shaped like it; a pytree that is not a dict is under
        `"params"`), then `"y0"` (when fitted) and the noise parameters (`"sigma"`
        or `"dispersion"`, one per observable) when estimated."""
        prob, lead = self._prob, self.draws.shape[:2]
        params = _unflatten_draws(self.fit.params, self.draws[..., : prob.n_p])
        if isinstance(params, dict):  # in the order of `params0` (flattening sorts)
            out = {k: params[k] for k in self.fit.params}
        else:
            out = {"params": params}
        if prob.n_y0:  # shaped like `fit.y0`; with experiments, flat
            y0 = self.draws[..., prob.n_p: prob.n_p + prob.n_y0]
            one = not isinstance(self.fit.y0, list)
            out["y0"] = y0.reshape(*lead, *np.shape(self.fit.y0)) if one else y0
        if prob.noise.n_noise:
            out[prob.noise.dist.scale_name] = self.draws[..., prob.n_p + prob.n_y0:]
        return out

    def summary(self) -> dict:
        """One row per estimated number, in the order of `params0` (then `y0`, then
        the noise parameters): `{label: {"mean", "sd", "q05", "q50", "q95", "r_hat",
        "ess"}}` as Python floats. `r_hat` is the rank-normalised split R-hat
        (Vehtari et al. 2021; below 1.01 when the chains agree), `ess` the bulk
        effective sample size, both from `blackjax.diagnostics`."""
        x = np.asarray(self.draws, np.float64)
        flat = x.reshape(-1, x.shape[2])
        mean, sd = flat.mean(axis=0), flat.std(axis=0, ddof=1)
        q05, q50, q95 = np.quantile(flat, [0.05, 0.5, 0.95], axis=0)
        rhat, ess = _stats.r_hat(x), _stats.bulk_ess(x)
        columns = dict(mean=mean, sd=sd, q05=q05, q50=q50, q95=q95, r_hat=rhat, ess=ess)
        return {self.labels[i]: {k: float(v[i]) for k, v in columns.items()}
                for i in self._row_order}

    def __repr__(self) -> str:
        rows = self.summary()
        width = max([len(k) for k in rows] + [9])
        worst = max((r["r_hat"] for r in rows.values()), default=math.nan)
        head = (f"Posterior(noise={self._prob.noise.dist.name}, chains="
                f"{self.num_chains}, draws={self.num_samples} each, divergent="
                f"{self.num_divergent}, max r_hat={_fmt(worst)})")
        names = ("mean", "sd", "5 %", "50 %", "95 %", "r_hat", "ess")
        lines = [head, f"  {'parameter':<{width}}" + "".join(f"{n:>11}" for n in names)]
        for label, r in rows.items():
            values = (r["mean"], r["sd"], r["q05"], r["q50"], r["q95"])
            lines.append(f"  {label:<{width}}" + "".join(f"{v:>11.4g}" for v in values)
                         + f"{r['r_hat']:>11.4f}{r['ess']:>11.0f}")
        return "\n".join(lines)

    def predict(self, ts, *, level: float = 0.9, noise: bool = True,
                draws: int | None = 400, key: jax.Array | None = None,
                experiment: int = 0) -> Band:
        """Posterior predictive bands of the observables at times `ts`.

        For each of `draws` posterior draws (evenly spread over the chains; `None`
        for all) the model is solved at `ts`; with `noise=True` a new observation is
        drawn at every time from the noise model with that draw's noise parameters
        (where repeated measurements should fall), with `noise=False` the band is
        that of the model curve itself.

        **Arguments:**

        - `ts`: 1-D increasing times, not before the experiment's start time.
        - `level`: the central probability of the band.
        - `key`: a `jax.random` key for the new observations (default key 0).
        - `experiment`: with `experiments`, which one.

        **Returns:** a `Band` (`ts`, `low`, `median`, `high`, `level`), each shaped
        `(len(ts), K)` (or `(n_traj, len(ts), K)` for several trajectories).

        **Raises:** `ValueError` for a `level` outside (0, 1) or bad `ts`.
        """
        if not 0 < level < 1:
            raise ValueError(f"`level`={level!r} must be in (0, 1).")
        g, gd, grid, prepend = self._model.grid(ts, experiment)
        flat = self.draws.reshape(-1, self.draws.shape[2])
        if draws is not None and draws < flat.shape[0]:
            flat = flat[np.linspace(0, flat.shape[0] - 1, int(draws)).round().astype(int)]
        y0_at = _y0_offset(self._model.groups, experiment)
        key = jax.random.key(0) if key is None else key
        dtype = self._prob.dtype
        obs = _observables(self._prob, gd, jnp.asarray(flat, dtype),
                           tuple(grid.tolist()), y0_at, prepend, noise, key)
        low, mid, high = np.nanquantile(np.asarray(obs, np.float64),
                                        [(1 - level) / 2, 0.5, (1 + level) / 2], axis=0)
        if self._model.single or len(self._model.groups) > 1 or g.where:
            low, mid, high = low[0], mid[0], high[0]
        return Band(ts=np.asarray(grid[1:] if prepend else grid), low=low, median=mid,
                    high=high, level=level)


def _unflatten_draws(like, flat):
    """Draws `(chains, draws, n)` -> a pytree like `like`, each leaf with the two
    leading axes."""
    leaves, treedef = jtu.tree_flatten(like)
    out, i = [], 0
    for leaf in leaves:
        size = int(np.size(leaf))
        out.append(flat[..., i: i + size].reshape(*flat.shape[:2], *np.shape(leaf)))
        i += size
    return jtu.tree_unflatten(treedef, out)


def _y0_offset(groups, experiment: int) -> int:
    """Where experiment `experiment`'s initial states start among the fitted ones."""
    return sum(int(np.size(g.y0)) for g in groups[:experiment])


@eqx.filter_jit
def _observables(prob, gd, flat, grid, y0_at, prepend, noise, key):
    """The observables at `grid` (a tuple: static) for every draw (rows of
    `flat`), with new observations from the noise model when `noise`:
    `(draws, B, T, K)`."""
    keys = jax.random.split(key, flat.shape[0])

    def one(x, k):
        params = prob.unflatten(x[: prob.n_p])
        if prob.n_y0:
            y0 = jax.lax.dynamic_slice_in_dim(x, prob.n_p + y0_at, gd.y0.size)
            y0 = y0.reshape(gd.y0.shape)
        else:
            y0 = gd.y0
        ys = prob.solve_group(gd, params, y0, grid)
        ts = jnp.asarray(grid[1:] if prepend else grid, flat.dtype)
        ys = ys[:, 1:] if prepend else ys
        mu = prob.observe(gd, params, ts, ys)
        if not noise:
            return mu
        s = jnp.log(x[prob.n_p + prob.n_y0:]) if prob.noise.n_noise else jnp.zeros(0)
        log_s = prob.noise.log_scale(s.astype(mu.dtype), jnp.arange(mu.shape[-1]))
        return prob.noise.dist.draw(k, mu, log_s)

    return jax.vmap(one)(flat, keys)
