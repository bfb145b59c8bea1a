"""`FitResult`: estimates, uncertainty, likelihood figures and profiles of a fit."""

import math
import os
import pickle
from typing import Any

import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from .._checkpoint import write_atomically
from . import _stats
from ._data import element_labels
from ._loop import run_loop, with_steps

_PROFILE_STEPS = 40  # Gauss–Newton steps at each point of a profile


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else str(x)


def _plain(x):
    """A Python float for a scalar, a NumPy array otherwise."""
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x


def in_order_of(params0, tree):
    """A dict `tree` with the keys in the order of `params0` (pytree flattening
    sorts them); other trees as they are."""
    if isinstance(params0, dict) and isinstance(tree, dict):
        return {k: tree[k] for k in params0}
    return tree


class FitResult:
    """The result of `fit`.

    - `params`: the estimate, a pytree like `params0` (a dict keeps its key order).
    - `y0`: the initial state(s), estimated when `fit_y0=True`, else as given (a list,
      one per experiment, with `experiments`).
    - `sigma`: the noise scale per observable, NumPy `(K,)`: estimated with
      `sigma="estimate"` (and for `"laplace"`), as given when known, and for least
      squares (`sigma=None`) the pooled `sqrt(RSS / (n − p))`. None for counts.
    - `dispersion`: the negative binomial's dispersion `phi` per observable
      (variance `mu + mu²/phi`), else None.
    - `losses`: the objective per iteration (least squares: the mean squared residual
      over the observed entries; other likelihoods: the negative log-likelihood);
      the optimiser steps, then the best value so far during the polish. `loss`:
      the final value.
    - `nll`, `aic`, `bic`: negative log-likelihood at the estimate (for least squares
      with sigma at its maximum-likelihood value) and the information criteria, with
      `k` = every estimated number (the pooled sigma of least squares included).
    - `stderr`: standard errors, a pytree like `params`, from the Fisher information
      of the likelihood (least squares: `s² (JᵀJ)⁻¹`, `s² = RSS/(n − p)`), mapped to
      natural units; `y0_stderr` likewise for a fitted `y0`.
    - `cov`: covariance of every estimated number in natural units (parameters in
      leaf order, then fitted `y0`, then estimated noise parameters).
    - `n_obs`, `n_params`, `dof`: observed values, estimated numbers, `n − p`.
    - `opt_steps`: how many entries of `losses` are optimiser steps.
    - `starts_losses`: with `multistart`, the final loss of every start.
    - `converged`: the final point meets the first-order optimality test.
    - `confint`, `profile`, `predict`: see the methods.
    """

    def __init__(self, **fields):
        self.__dict__.update(fields)

    # -- saving: everything but the model (the user's functions) is kept
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_ctx"] = self._ctx._replace(prob=None, loop=None, predictor=None)
        return state

    def save(self, path) -> None:
        """Write the result to `path` (pickle, written atomically). A loaded result
        has every estimate, interval, covariance and loss; `predict` and `profile`
        need the model and are only available on the result `fit` returned."""
        write_atomically(os.path.abspath(os.fspath(path)),
                         lambda fh: pickle.dump(self, fh))

    @classmethod
    def load(cls, path) -> "FitResult":
        """Read a result written by `save`."""
        with open(path, "rb") as fh:
            res = pickle.load(fh)
        if not isinstance(res, cls):
            raise ValueError(f"{path!r} holds a {type(res).__name__}, not a FitResult.")
        return res

    def _model(self):
        if self._ctx.prob is None:
            raise RuntimeError(
                "this FitResult was loaded from a file and has no model (the vector "
                "field is not saved); `predict` and `profile` need the result `fit` "
                "returned.")
        return self._ctx

    # -- intervals
    def _wald(self, level):
        q = _stats.quantile(level, self.mode, self.dof)
        se = self._se_v
        lo_u, hi_u = self._v - q * se, self._v + q * se
        lo = self._to_natural(lo_u)
        hi = self._to_natural(hi_u)
        return np.minimum(lo, hi), np.maximum(lo, hi)

    def _to_natural(self, v):
        """Optimiser coordinates -> natural values (parameters, y0, noise)."""
        ctx = self._ctx
        n_p = len(ctx.spec.kind)
        out = np.empty_like(np.asarray(v, np.float64))
        out[:n_p] = _stats.natural(ctx.spec.kind, ctx.spec.unit, v[:n_p])
        out[n_p: n_p + ctx.n_y0] = v[n_p: n_p + ctx.n_y0] * ctx.y0_unit
        with np.errstate(over="ignore"):  # an unbounded interval of a log noise
            out[n_p + ctx.n_y0:] = np.exp(v[n_p + ctx.n_y0:])
        return out

    def confint(self, level: float = 0.95, method: str = "wald") -> Any:
        """Two-sided `level` confidence intervals of the parameters.

        - `method="wald"`: `estimate ± q·stderr` computed on each parameter's own
          scale and mapped back (a log-scale parameter gets a positive, asymmetric
          interval); `q` is Student's t on `n − p` degrees of freedom for least
          squares, the normal quantile for other likelihoods. Infinite when `n ≤ p`.
        - `method="profile"`: the likelihood-ratio interval of each parameter's
          profile (χ², one degree of freedom); open (`±inf`, or the bound) where the
          data do not bound it. See `profile`.

        **Returns:** a pytree like `params` whose leaves are `(low, high)` pairs:
        Python floats for scalar parameters, NumPy arrays otherwise.
        """
        if method not in ("wald", "profile"):
            raise ValueError(f"`method`={method!r} must be 'wald' or 'profile'.")
        n_p = len(self._ctx.spec.kind)
        if method == "wald":
            lo, hi = self._wald(level)
        else:
            profiles = self._profiles(list(range(n_p)), level, None, 21)
            lo = np.array([p.interval[0] for p in profiles])
            hi = np.array([p.interval[1] for p in profiles])
        lo, hi = self._ctx.unflatten(lo[:n_p]), self._ctx.unflatten(hi[:n_p])
        pairs = jtu.tree_map(lambda a, b: (_plain(a), _plain(b)), lo, hi)
        return in_order_of(self.params, pairs)

    # -- profiles
    def profile(self, name: str, level: float = 0.95, values=None, n: int = 21):
        """The profile likelihood of one number: at each value on a grid, every other
        estimated number is re-optimised (Gauss–Newton steps warm-started at the
        estimate, all grid points in one vmapped, compiled run).

        **Arguments:**

        - `name`: a parameter name as in the result's table (`"beta"`, `"w[1]"`,
          `"y0[0]"`).
        - `level`: for the likelihood-ratio interval.
        - `values`: the grid (natural units); default `n` points around the estimate
          spanning twice the Wald interval on the parameter's scale (at most a factor
          e³ for log-scale parameters, ±300 % for others), within its bounds.

        **Returns:** a `Profile` (`values`, `deviance`, `threshold`, `interval`).

        **Raises:** `ValueError` for an unknown name.
        """
        labels = self._labels
        if name not in labels:
            raise ValueError(f"`name`={name!r} is not an estimated number; choose one "
                             f"of {labels}.")
        return self._profiles([labels.index(name)], level, values, n)[0]

    def _profiles(self, index, level, values, n):
        if not 0 < level < 1:
            raise ValueError(f"`level` must be in (0, 1), got {level!r}.")
        ctx = self._ctx
        q = _stats.quantile(level, self.mode, self.dof)
        threshold = _stats.chi2_quantile(level)
        loop = with_steps(self._model().loop, 0, _PROFILE_STEPS)
        out = []
        for j in index:
            if values is not None:
                grid = self._to_u_one(j, np.sort(np.asarray(values, np.float64).ravel()))
            else:
                se = self._se_v[j]
                span = min(2 * q * se, 3.0) if np.isfinite(se) else 3.0
                span = max(span, 1e-6 * max(1.0, abs(self._v[j])))
                grid = self._v[j] + span * np.linspace(-1, 1, n)
            grid = np.clip(grid, ctx.lo[j], ctx.hi[j])
            losses = self._profile_losses(loop, j, grid)
            best = min(self.loss, float(np.nanmin(losses)))
            dev = (self.n_obs * np.log(losses / best) if self.mode == "ls"
                   else 2.0 * (losses - best))
            i_best = int(np.nanargmin(np.where(np.isfinite(dev), dev, np.nan)))
            low, high = _stats.crossing(grid, dev, threshold, i_best)
            ends = self._natural_one(j, np.array([ctx.lo[j] if low is None else low,
                                                  ctx.hi[j] if high is None else high]))
            out.append(_stats.Profile(
                self._labels[j], self._natural_one(j, grid), dev,
                float(self._natural_one(j, self._v[j:j + 1])[0]), level, threshold,
                (float(ends[0]), float(ends[1]))))
        return out

    def _profile_losses(self, loop, j, grid):
        """The best loss with coordinate `j` held at each grid value: Gauss–Newton
        steps on the others, walking outwards from the estimate, each point
        warm-started at its neighbour's solution (the fit's compiled loop)."""
        ctx = self._ctx
        free = np.ones((1, self._v.size))
        free[0, j] = 0.0
        free = jnp.asarray(free, ctx.dtype)
        losses = np.full(len(grid), np.nan)
        centre = int(np.argmin(np.abs(grid - self._v[j])))
        for direction in (range(centre, len(grid)), range(centre - 1, -1, -1)):
            v = self._v.copy()
            for i in direction:
                v[j] = grid[i]
                state, _ = run_loop(loop, jnp.asarray(v[None], ctx.dtype), free)
                losses[i] = float(np.asarray(state.best_loss)[0])
                if np.isfinite(losses[i]):
                    v = np.array(state.best_v, np.float64)[0]
        return losses

    def _natural_one(self, j, u):
        v = np.repeat(self._v[None], len(u), axis=0)
        v[:, j] = u
        return np.array([self._to_natural(row)[j] for row in v])

    def _to_u_one(self, j, nat):
        ctx = self._ctx
        n_p = len(ctx.spec.kind)
        if j < n_p:
            k, unit = ctx.spec.kind[j], ctx.spec.unit[j]
            return (np.log(nat) if k == 1 else np.log10(nat) if k == 2 else nat / unit)
        if j < n_p + ctx.n_y0:
            return nat / ctx.y0_unit[j - n_p]
        return np.log(nat)

    # -- predictions
    def predict(self, ts, *, experiment: int = 0, observed: bool = False):
        """The fitted model at times `ts` (1-D, increasing, not before the start time).

        **Returns:** the states, shape `(len(ts), D)` (or `(n_traj, len(ts), D)` for
        several trajectories); with `observed=True` the observables `h(t, y, params)`
        instead. With `experiments`, for experiment number `experiment`.
        """
        return self._model().predictor(self.params, self.y0, ts, experiment,
                                       observed)

    def __repr__(self) -> str:
        """A table in the order of `params0`: estimate, standard error and the 95 %
        Wald interval of each estimated number."""
        lo, hi = self._wald(0.95)
        est = self._to_natural(self._v)
        se = self._se_nat
        order = self._row_order
        width = max([len(self._labels[i]) for i in order] + [9])
        head = (f"FitResult(noise={self.noise}, loss={_fmt(self.loss)}, "
                f"nll={_fmt(self.nll)}, n={self.n_obs}, p={self.n_params}, "
                f"converged={self.converged})")
        lines = [head, f"  {'parameter':<{width}}  {'estimate':>12}  {'± stderr':>11}  "
                       f"{'95 % interval':>24}"]
        for i in order:
            ci = f"[{_fmt(lo[i])}, {_fmt(hi[i])}]"
            lines.append(f"  {self._labels[i]:<{width}}  {est[i]:>12.5g}  "
                         f"{'± ' + _fmt(se[i]):>11}  {ci:>24}")
        return "\n".join(lines)


def labels_for(params_order, params0, n_y0_shape, noise_names):
    """Row labels of every estimated number, in `v` order, and the display order
    (parameters in the order of `params0`)."""
    labels = element_labels(params0)
    if isinstance(params_order, dict):
        first = {}
        for i, lab in enumerate(labels):
            first.setdefault(lab.split("[")[0], []).append(i)
        order = [i for k in params_order for i in first[str(k)]]
    else:
        order = list(range(len(labels)))
    n = len(labels)
    labels = labels + list(n_y0_shape) + list(noise_names)
    order += list(range(n, len(labels)))
    return labels, order

