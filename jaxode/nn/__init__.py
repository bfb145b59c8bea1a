"""Neural-network modules (equinox): continuous-depth models and image classifiers."""

from ._classifiers import (
    MLP as MLP,
    Conv3x3 as Conv3x3,
    GroupNorm as GroupNorm,
    ODENet as ODENet,
    ResNet as ResNet,
    RKNet as RKNet,
    count_params as count_params,
)
from ._cnf import CNF as CNF
from ._neural_ode import NeuralODE as NeuralODE, NFECounter as NFECounter
