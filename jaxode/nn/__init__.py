"""Neural-network modules (equinox): recurrent cells, the `RNN` driver, forecasting,
continuous-depth models, image classifiers and normalising flows."""

from ._cells import GRUCell as GRUCell, RNNCell as RNNCell
from ._lstm import LSTMCell as LSTMCell
from ._forecast import Forecaster as Forecaster
from ._rnn import RNN as RNN
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

__all__ = [
    "RNNCell", "LSTMCell", "GRUCell", "RNN", "Forecaster", "NeuralODE", "NFECounter",
    "CNF", "ODENet", "ResNet", "RKNet", "MLP", "Conv3x3", "GroupNorm", "count_params",
]
