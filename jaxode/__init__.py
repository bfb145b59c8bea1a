"""jaxode: differentiable simulation in JAX.

An RNN and an ODE solver are the same object, a pure step function
`step(carry, x) -> (carry, y)` iterated under `lax.scan`.
"""

import importlib.metadata

from ._ensemble import ensemble as ensemble, member_mesh as member_mesh
from ._fit import FitResult as FitResult, Profile as Profile, fit as fit
from ._scan import scan as scan
from ._rosenbrock import Rosenbrock23 as Rosenbrock23
from ._solve import Solution as Solution, solve as solve
from ._solvers import (
    RK4 as RK4,
    AbstractStepper as AbstractStepper,
    ButcherTableau as ButcherTableau,
    Euler as Euler,
    Heun as Heun,
    Midpoint as Midpoint,
    ODECell as ODECell,
)
from . import bptt as bptt, nn as nn
from ._train import load_trained as load_trained, train as train
from .nn._forecast import forecast as forecast

try:
    __version__ = importlib.metadata.version("jaxode")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
