"""`fit`: recover ODE parameters from sparse, noisy observations by maximum likelihood.

One file per job: `_data` (input checks, bounds, experiments), `_transform` (scales
and the one map between natural values and optimiser coordinates), `_likelihood`
(distributions), `_noise` (noise models: how the observations are scored),
`_problem` (the problem as an `equinox.Module`), `_shooting`, `_loop` (the compiled
optimiser and Gauss–Newton loop), `_stats` (quantiles, covariance, convergence),
`_profile` (profile likelihoods), `_result` (`FitResult`), `_save` (its file format)
and `_front` (`fit`).

Posterior sampling on the same problem: `_prior` (prior distributions), `_target`
(the log posterior density in unconstrained coordinates), `_nuts` (blackjax's NUTS,
chains vmapped), `_sampling` (from a `FitResult` to a `Posterior`), `_posterior`
(`Posterior`: summary, diagnostics, predictive bands) and `_sample` (`sample`).
"""

from ._front import fit as fit
from ._profile import Profile as Profile
from ._result import FitResult as FitResult
from ._stats import t_quantile as t_quantile
from ._posterior import Band as Band, Posterior as Posterior
from ._prior import (
    HalfNormal as HalfNormal,
    LogNormal as LogNormal,
    Normal as Normal,
    Prior as Prior,
    TruncatedNormal as TruncatedNormal,
    Uniform as Uniform,
)
from ._sample import sample as sample
