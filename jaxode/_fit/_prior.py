"""Prior distributions of `sample`: one small object per family.

One convention for every family: `scale` is a standard deviation (never a variance
or a precision), and a log-normal's `loc` and `scale` are those of `log x` (Stan's
`lognormal(mu, sigma)`). Each prior knows its support, checks its own arguments
(`check`, called by `sample` with the parameter's name so that the message names
both), and gives its log-density through `jax.scipy.stats`.
"""

import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax.scipy import stats

_LOG_2 = math.log(2.0)


def _finite(name: str, value) -> bool:
    return np.ndim(value) == 0 and math.isfinite(float(value))


class Prior(eqx.Module):
    """A prior distribution of one number. Subclasses set `support()`,
    `log_prob(x)` and `median()`, and list their arguments in `_checks`."""

    # (argument, what it must be) pairs that `check` tests
    _checks: ClassVar[tuple] = ()

    def support(self) -> tuple[float, float]:
        """The open interval `(low, high)` where the density is positive."""
        return -math.inf, math.inf

    def median(self) -> float:
        """The prior median: where `sample` starts a parameter without `params0`."""
        raise NotImplementedError

    def log_prob(self, x):
        """The log-density at `x` (elementwise, JAX arrays)."""
        raise NotImplementedError

    def check(self, where: str) -> None:
        """Raise `ValueError` naming `where` (e.g. `prior['alpha']`), the argument
        and its value when the distribution is improper."""
        for name, rule in self._checks:
            value = getattr(self, name)
            if not _finite(name, value):
                raise ValueError(f"`{where}`={self!r}: `{name}`={value!r} must be a "
                                 "finite number.")
            if rule == "positive" and not float(value) > 0:
                raise ValueError(f"`{where}`={self!r}: `{name}`={value!r} must be > 0 "
                                 "(a standard deviation).")
        low, high = self.support()
        if not low < high:
            raise ValueError(f"`{where}`={self!r}: the lower end {low!r} must be below "
                             f"the upper end {high!r}.")


class Normal(Prior):
    """Normal prior with mean `loc` and standard deviation `scale`; support the real
    line."""

    loc: float
    scale: float
    _checks: ClassVar[tuple] = (("loc", "finite"), ("scale", "positive"))

    def median(self):
        return float(self.loc)

    def log_prob(self, x):
        return stats.norm.logpdf(x, self.loc, self.scale)


class TruncatedNormal(Prior):
    """Normal prior with location `loc` and standard deviation `scale` (those of the
    normal before truncation), restricted to `(low, high)`; by default to the positive
    numbers, as Stan's `real<lower=0> x; x ~ normal(loc, scale)`."""

    loc: float
    scale: float
    low: float = 0.0
    high: float = math.inf
    _checks: ClassVar[tuple] = (("loc", "finite"), ("scale", "positive"))

    def check(self, where):
        super().check(where)
        for name in ("low", "high"):
            value = getattr(self, name)
            if np.ndim(value) != 0 or math.isnan(float(value)):
                raise ValueError(f"`{where}`={self!r}: `{name}`={value!r} must be a "
                                 "number (or ±inf).")

    def support(self):
        return float(self.low), float(self.high)

    def _ab(self):
        return (self.low - self.loc) / self.scale, (self.high - self.loc) / self.scale

    def median(self):
        import scipy.stats

        a, b = self._ab()
        return float(scipy.stats.truncnorm.median(a, b, self.loc, self.scale))

    def log_prob(self, x):
        a, b = self._ab()
        return stats.truncnorm.logpdf(x, a, b, self.loc, self.scale)


class LogNormal(Prior):
    """Log-normal prior: `log x` is normal with mean `loc` and standard deviation
    `scale` (Stan's `lognormal(loc, scale)`); support the positive numbers, median
    `exp(loc)`."""

    loc: float
    scale: float
    _checks: ClassVar[tuple] = (("loc", "finite"), ("scale", "positive"))

    def support(self):
        return 0.0, math.inf

    def median(self):
        return math.exp(float(self.loc))

    def log_prob(self, x):
        log_x = jnp.log(x)
        return stats.norm.logpdf(log_x, self.loc, self.scale) - log_x


class HalfNormal(Prior):
    """Half-normal prior: `|z|` for `z` normal with mean 0 and standard deviation
    `scale`; support the positive numbers."""

    scale: float
    _checks: ClassVar[tuple] = (("scale", "positive"),)

    def support(self):
        return 0.0, math.inf

    def median(self):
        return 0.6744897501960817 * float(self.scale)

    def log_prob(self, x):
        return stats.norm.logpdf(x, 0.0, self.scale) + _LOG_2


class Uniform(Prior):
    """Uniform prior on `(low, high)`."""

    low: float
    high: float
    _checks: ClassVar[tuple] = (("low", "finite"), ("high", "finite"))

    def support(self):
        return float(self.low), float(self.high)

    def median(self):
        return 0.5 * (float(self.low) + float(self.high))

    def log_prob(self, x):
        return stats.uniform.logpdf(x, self.low, self.high - self.low)
