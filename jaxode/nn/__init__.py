"""Neural-network modules (equinox): recurrent cells, the `RNN` driver, forecasting."""

from ._cells import GRUCell as GRUCell, LSTMCell as LSTMCell, RNNCell as RNNCell
from ._forecast import Forecaster as Forecaster
from ._rnn import RNN as RNN
