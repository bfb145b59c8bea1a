"""`FitResult`: estimates, uncertainty, likelihood figures and profiles of a fit."""

import math
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from .._errors import check_times
from . import _profile, _save, _stats
from ._noise import NoiseModel, resolve_noise
from ._sampling import sample_fit
from ._transform import Scale, Transform


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


class FittedModel(eqx.Module):
    """What `predict` and `profile` need beyond the numbers: the problem with the
    user's functions, the compiled loop (reused by profiles) and the data groups.
    Not saved."""

    prob: Any
    loop: Any
    groups: tuple  # the `_data.Group`s
    single: bool
    dtype: Any

    def grid(self, ts_new, experiment: int):
        """Checked times `ts_new` of experiment number `experiment`: its group of
        trajectories, its `GroupData`, the solve grid (from its `t0`) and whether
        `t0` was put in front of `ts_new`."""
        ts_new = np.asarray(ts_new, dtype=np.float64)
        check_times("ts", ts_new)
        if not 0 <= experiment < len(self.groups):
            raise ValueError(f"`experiment`={experiment!r} must be in "
                             f"0 … {len(self.groups) - 1}.")
        g, gd = self.groups[experiment], self.prob.groups[experiment]
        if ts_new[0] < g.t0:
            raise ValueError(f"`ts` starts at {ts_new[0]}, before the fit's start time "
                             f"t0={g.t0}.")
        prepend = bool(ts_new[0] > g.t0)
        grid = np.concatenate([[g.t0], ts_new]) if prepend else ts_new
        return g, gd, grid, prepend

    def predict(self, params, y0, ts_new, experiment, observed):
        g, gd, grid, prepend = self.grid(ts_new, experiment)
        ts_new = grid[1:] if prepend else grid
        y0b = jnp.asarray(y0[experiment] if isinstance(y0, list) else y0).reshape(
            g.y0.shape)
        out = self.prob.solve_group(gd, params, y0b, grid, throw=True)
        out = out[:, 1:] if prepend else out
        if observed:
            out = self.prob.observe(gd, params, jnp.asarray(ts_new), out)
        return out[0] if (self.single or isinstance(y0, list)) else out


# saved as arrays (pytrees of arrays), and as JSON values
_ARRAYS = ("params", "y0", "sigma", "dispersion", "losses", "stderr", "y0_stderr",
           "cov", "starts_losses", "_v", "_se_v", "_se_nat", "_lo", "_hi")
_VALUES = ("loss", "nll", "aic", "bic", "n_obs", "n_params", "dof", "converged",
           "message", "opt_steps", "noise", "_labels", "_row_order")


class FitResult(eqx.Module):
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
    - `message`: why the fit is not trusted (empty when nothing went wrong).
    - `noise`: the name of the noise model; `mode`: how its scale was treated
      (`"ls"`, `"known"`, `"estimate"`, `"none"`).
    - `confint`, `profile`, `predict`, `save`, `load`: see the methods.
    """

    params: Any
    y0: Any
    sigma: np.ndarray | None
    dispersion: np.ndarray | None
    losses: np.ndarray
    stderr: Any
    y0_stderr: Any
    cov: np.ndarray
    starts_losses: np.ndarray | None
    loss: float = eqx.field(static=True)
    nll: float = eqx.field(static=True)
    aic: float = eqx.field(static=True)
    bic: float = eqx.field(static=True)
    n_obs: int = eqx.field(static=True)
    n_params: int = eqx.field(static=True)
    dof: int = eqx.field(static=True)
    converged: bool = eqx.field(static=True)
    message: str = eqx.field(static=True)
    opt_steps: int = eqx.field(static=True)
    noise: str = eqx.field(static=True)
    # every estimated number in optimiser coordinates: the estimate, its standard
    # error, its bounds; the map to natural units; labels and display order
    _v: np.ndarray
    _se_v: np.ndarray
    _se_nat: np.ndarray
    _lo: np.ndarray
    _hi: np.ndarray
    _transform: Transform
    _labels: tuple = eqx.field(static=True)
    _row_order: tuple = eqx.field(static=True)
    _noise_model: NoiseModel
    _model: FittedModel | None = None

    @property
    def mode(self) -> str:
        return self._noise_model.mode

    # -- saving: everything but the model (the user's functions) is kept
    def save(self, path) -> None:
        """Write the result to `path`, atomically: a JSON header (format version,
        field names, shapes, dtypes and the structure of `params`), then the arrays
        (`equinox.tree_serialise_leaves`). A loaded result has every estimate,
        interval, covariance and loss; `predict` and `profile` need the model and
        are only available on the result `fit` returned.

        **Raises:** `ValueError` when `params` is not made of dicts (with string
        keys), lists, tuples and arrays.
        """
        values = {name: getattr(self, name) for name in _VALUES}
        values["scales"] = [s.value for s in self._transform.scales()]
        values["noise_sigma"] = _save.plain(self._noise_model.sigma_argument())
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        arrays["_unit"] = self._transform.unit
        _save.write(path, arrays, values)

    @classmethod
    def load(cls, path) -> "FitResult":
        """Read a result written by `save`. A file that an earlier version of jaxode
        saved (a pickle) is read too; `save` it again to store it in this format.

        **Raises:** `ValueError` when `path` is not a saved `FitResult` or is
        damaged.
        """
        fields = _save.read(path)
        transform = Transform.of([Scale(s) for s in fields.pop("scales")],
                                 fields.pop("_unit"))
        noise = resolve_noise(fields["noise"], fields.pop("noise_sigma"),
                              _n_cols(fields))
        fields["_labels"] = tuple(fields["_labels"])
        fields["_row_order"] = tuple(fields["_row_order"])
        return cls(**fields, _transform=transform, _noise_model=noise)

    def _fitted_model(self) -> FittedModel:
        if self._model is None:
            raise RuntimeError(
                "this FitResult was loaded from a file and has no model (the vector "
                "field is not saved); `predict` and `profile` need the result `fit` "
                "returned.")
        return self._model

    # -- intervals
    def _n_p(self) -> int:
        return sum(int(np.size(x)) for x in jtu.tree_leaves(self.params))

    def _wald(self, level):
        q = _stats.quantile(level, self._noise_model, self.dof)
        lo = self._to_natural(self._v - q * self._se_v)
        hi = self._to_natural(self._v + q * self._se_v)
        return np.minimum(lo, hi), np.maximum(lo, hi)

    def _to_natural(self, v):
        """Optimiser coordinates -> natural values (parameters, y0, noise)."""
        with np.errstate(over="ignore"):  # an unbounded interval of a log noise
            return self._transform.from_u(np.asarray(v, np.float64))

    def _unflatten(self, flat):
        """Numbers in leaf order -> a pytree like `params`."""
        leaves, treedef = jtu.tree_flatten(self.params)
        out, i = [], 0
        for leaf in leaves:
            size = int(np.size(leaf))
            out.append(np.asarray(flat[i: i + size], leaf.dtype).reshape(np.shape(leaf)))
            i += size
        return jtu.tree_unflatten(treedef, out)

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
        n_p = self._n_p()
        if method == "wald":
            lo, hi = self._wald(level)
        else:
            profiles = _profile.profiles(self, list(range(n_p)), level, None, 21)
            lo = np.array([p.interval[0] for p in profiles])
            hi = np.array([p.interval[1] for p in profiles])
        lo, hi = self._unflatten(lo[:n_p]), self._unflatten(hi[:n_p])
        pairs = jtu.tree_map(lambda a, b: (_plain(a), _plain(b)), lo, hi)
        return in_order_of(self.params, pairs)

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

        **Raises:** `ValueError` for an unknown name; `RuntimeError` on a result
        loaded from a file (it has no model).
        """
        labels = list(self._labels)
        if name not in labels:
            raise ValueError(f"`name`={name!r} is not an estimated number; choose one "
                             f"of {labels}.")
        return _profile.profiles(self, [labels.index(name)], level, values, n)[0]

    # -- predictions
    def predict(self, ts, *, experiment: int = 0, observed: bool = False):
        """The fitted model at times `ts` (1-D, increasing, not before the start time).

        **Returns:** the states, shape `(len(ts), D)` (or `(n_traj, len(ts), D)` for
        several trajectories); with `observed=True` the observables `h(t, y, params)`
        instead. With `experiments`, for experiment number `experiment`.

        **Raises:** `RuntimeError` on a result loaded from a file (it has no model).
        """
        return self._fitted_model().predict(self.params, self.y0, ts, experiment,
                                            observed)

    # -- posterior sampling
    def sample(self, prior: dict, *, key, num_chains: int = 4, num_warmup: int = 1000,
               num_samples: int = 1000, jitter: float = 1.0,
               target_accept: float = 0.8, max_tree_depth: int = 10,
               chain_method: str = "vectorized", progress: bool = True):
        """Draw from the posterior of the fitted model with NUTS, starting at this
        estimate: the fit's problem (its solves, observation and noise model, data)
        with `prior` on every estimated number. See `jaxode.sample` for the
        arguments; needs the `bayes` extra (blackjax).

        A least-squares fit (`sigma=None`) gets one sigma per observable, started
        at the pooled value: give `prior["sigma"]`. The support of each number is
        its prior's, cut by the fit's `positive` and `bounds`.

        **Returns:** a `Posterior`.

        **Raises:** `ValueError` for bad priors (an unknown name, a missing or an
        improper prior) or an estimate outside a prior's support; `RuntimeError`
        on a result loaded from a file (it has no model).
        """
        return sample_fit(self, prior, key=key, num_chains=num_chains,
                          num_warmup=num_warmup, num_samples=num_samples, jitter=jitter,
                          target_accept=target_accept, max_tree_depth=max_tree_depth,
                          chain_method=chain_method, progress=progress)

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


def _n_cols(fields) -> int:
    """The number of observables, as far as the noise model needs it."""
    scale = fields["sigma"] if fields["sigma"] is not None else fields["dispersion"]
    return 0 if scale is None else int(np.size(scale))
