"""`fit`: recover ODE parameters from sparse, noisy observations by maximum likelihood.

One file per job: `_data` (input checks, scales, bounds, experiments), `_likelihood`
(noise models), `_problem` (the problem as an `equinox.Module`), `_shooting`,
`_loop` (the compiled optimiser and Gauss–Newton loop), `_stats` (covariance,
intervals, profiles), `_result` (`FitResult`) and `_front` (`fit`).
"""

from ._front import fit as fit
from ._result import FitResult as FitResult
from ._stats import Profile as Profile, t_quantile as t_quantile
