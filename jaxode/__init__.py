"""jaxode: differentiable simulation in JAX.

An RNN and an ODE solver are the same object, a pure step function
`step(carry, x) -> (carry, y)` iterated under `lax.scan`.
"""

import importlib.metadata

from ._dense import Event as Event
from ._ensemble import ensemble as ensemble
from ._sharding import member_mesh as member_mesh
from ._fit import FitResult as FitResult, Profile as Profile, fit as fit
from ._fit import (
    Band as Band,
    HalfNormal as HalfNormal,
    LogNormal as LogNormal,
    Normal as Normal,
    Posterior as Posterior,
    Prior as Prior,
    TruncatedNormal as TruncatedNormal,
    Uniform as Uniform,
    sample as sample,
)
from ._scan import scan as scan
from ._rosenbrock import (
    AbstractRosenbrock as AbstractRosenbrock,
    Rodas5 as Rodas5,
    Rodas5P as Rodas5P,
    Rosenbrock23 as Rosenbrock23,
    RosenbrockTableau as RosenbrockTableau,
)
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
from ._train import (
    TrainHistory as TrainHistory,
    load_trained as load_trained,
    train as train,
)
from .nn._forecast import forecast as forecast

__all__ = [
    "scan", "ODECell", "Euler", "Midpoint", "Heun", "RK4", "ButcherTableau",
    "AbstractStepper", "Rosenbrock23", "Rodas5P", "Rodas5", "RosenbrockTableau",
    "AbstractRosenbrock", "Event", "solve", "Solution", "ensemble", "member_mesh",
    "fit", "FitResult", "Profile", "sample", "Posterior", "Band", "Prior", "Normal",
    "TruncatedNormal", "LogNormal", "HalfNormal", "Uniform", "train", "TrainHistory", "load_trained", "forecast",
    "bptt", "nn",
]


def __getattr__(name: str):
    # `jo.plot`, `jo.data` and `jo.petab` import on first use: `jaxode.plot` needs
    # matplotlib (the `plot` extra) and `jaxode.petab` the `petab` extra, which
    # `import jaxode` must not require
    if name in ("plot", "data", "petab"):
        import importlib

        return importlib.import_module(f"jaxode.{name}")
    raise AttributeError(f"module 'jaxode' has no attribute {name!r}")


try:
    __version__ = importlib.metadata.version("jaxode")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
