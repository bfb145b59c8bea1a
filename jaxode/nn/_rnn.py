"""`RNN`: run cells over a sequence with `jaxode.scan`; stacked and bidirectional."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp

from .._scan import scan

__all__ = ["RNN"]


def _as_tuple(cells) -> tuple:
    return tuple(cells) if isinstance(cells, (list, tuple)) else (cells,)


def _check_cell(name: str, cell) -> None:
    for attr in ("project", "recur", "init_carry", "input_size", "output_size"):
        if not hasattr(cell, attr):
            raise ValueError(
                f"`{name}` must be a jaxode cell (RNNCell, LSTMCell, GRUCell or one "
                f"with `project`, `recur`, `init_carry`), got {type(cell).__name__} "
                f"without `{attr}`."
            )


def _run(cell, xs, carry, mask, reverse, unroll):
    """One cell over one sequence: without a mask, the cell's own sequence layer
    (`run_inputs`) where it has one; else all input projections in one matmul, then a
    scan of `recur`."""
    if mask is None and hasattr(cell, "run_inputs"):
        return cell.run_inputs(carry, xs, reverse=reverse)
    return scan(lambda c, p: cell.recur(c, p), carry, cell.project(xs), mask=mask,
                reverse=reverse, unroll=unroll)


class RNN(eqx.Module):
    """A cell (or a stack of cells) run over a sequence.

    `rnn(xs, carry=None, mask=None) -> (ys, carry)`. Time is the leading axis: `xs` has
    shape `(time, input_size)` or `(time, batch, input_size)`.

    Before the scan each layer applies its cell's input half (`cell.project`) to all
    steps in one matmul; the scan then runs only the recurrent half (`cell.recur`,
    all gates in one matmul). Without a mask, a cell with its own sequence layer
    (`run_inputs`, as `LSTMCell` has: a written-out backward pass, the same values
    and gradients) runs that instead.

    **Arguments:**

    - `cell`: a cell, or a list of cells for stacked layers; layer `l + 1` takes the
      outputs of layer `l` as its inputs.
    - `backward`: `None`, or cells of the same sizes as `cell` (one per layer) run from
      the last step to the first. Then the model is bidirectional: each layer's output
      is `concat([forward_y, backward_y], -1)`, and the next layer's `input_size`
      must be twice the hidden size.
    - `reverse`: run the (forward) cells from the last step to the first; outputs stay
      in input order.
    - `unroll`: passed to `lax.scan` (several steps per loop iteration is often faster
      on CPU); a cell's own sequence layer (`LSTMCell` without a mask) does not use it.

    **Carry:** for one unidirectional layer, the cell's own carry (`h`, or `(h, c)` for
    an LSTM). Otherwise a tuple with one entry per layer, and for bidirectional layers
    each entry is a pair `(forward_carry, backward_carry)`. `rnn.init_carry(batch_shape)`
    builds the zero carry.

    **Raises:** `ValueError` when consecutive layers' sizes do not fit together.
    """

    cells: tuple
    backward_cells: tuple | None
    reverse: bool = eqx.field(static=True)
    unroll: int = eqx.field(static=True)

    def __init__(self, cell, *, backward=None, reverse: bool = False, unroll: int = 1):
        cells = _as_tuple(cell)
        if not cells:
            raise ValueError("`cell` must be a cell or a non-empty list of cells.")
        for i, c in enumerate(cells):
            _check_cell(f"cell[{i}]", c)
        if backward is not None:
            backward = _as_tuple(backward)
            if len(backward) != len(cells):
                raise ValueError(
                    f"`backward` needs one cell per layer ({len(cells)}), got "
                    f"{len(backward)}.")
            for i, (f, b) in enumerate(zip(cells, backward)):
                _check_cell(f"backward[{i}]", b)
                if (f.input_size, f.output_size) != (b.input_size, b.output_size):
                    raise ValueError(
                        f"layer {i}: forward cell has sizes (input {f.input_size}, "
                        f"output {f.output_size}) but backward cell has (input "
                        f"{b.input_size}, output {b.output_size}); they must match.")
        width = 2 if backward is not None else 1
        for i in range(1, len(cells)):
            want = width * cells[i - 1].output_size
            if cells[i].input_size != want:
                raise ValueError(
                    f"layer {i} has input_size={cells[i].input_size}, but layer {i - 1} "
                    f"outputs {want} features; they must be equal.")
        if int(unroll) != unroll or unroll < 1:
            raise ValueError(f"`unroll` must be an integer >= 1, got {unroll!r}.")
        self.cells = cells
        self.backward_cells = backward
        self.reverse = bool(reverse)
        self.unroll = int(unroll)

    @property
    def input_size(self) -> int:
        return self.cells[0].input_size

    @property
    def output_size(self) -> int:
        width = 1 if self.backward_cells is None else 2
        return width * self.cells[-1].output_size

    def _single(self) -> bool:
        return len(self.cells) == 1 and self.backward_cells is None

    def init_carry(self, batch_shape: tuple[int, ...] = ()):
        """The zero carry for `batch_shape` leading axes (structure: see the class)."""
        if self._single():
            return self.cells[0].init_carry(batch_shape)
        if self.backward_cells is None:
            return tuple(c.init_carry(batch_shape) for c in self.cells)
        return tuple(
            (f.init_carry(batch_shape), b.init_carry(batch_shape))
            for f, b in zip(self.cells, self.backward_cells)
        )

    def __call__(self, xs, carry: Any = None, mask: Any = None):
        """Run over `xs` of shape `(time, input_size)` or `(time, batch, input_size)`.

        **Arguments:**

        - `xs`: the input sequence, time first.
        - `carry`: initial carry (default zeros), structured as `init_carry` returns.
        - `mask`: boolean `(time,)` or `(time, batch)`; where False the step is skipped
          (carry kept, output zero), e.g. for padded sequences of unequal lengths.

        **Returns:** `(ys, carry)`: outputs of the last layer, shape
        `(time, [batch,] output_size)`, and the final carry.

        **Raises:** `ValueError` for `xs` of the wrong rank or feature size, or a
        `mask` of the wrong length.
        """
        shape = tuple(jnp.shape(xs))
        if len(shape) not in (2, 3) or shape[-1] != self.input_size:
            raise ValueError(
                f"`xs` must have shape (time, {self.input_size}) or (time, batch, "
                f"{self.input_size}), got shape {shape}.")
        if mask is not None and tuple(jnp.shape(mask))[:1] != shape[:1]:
            raise ValueError(
                f"`mask` must have shape (time,) or (time, batch) with time={shape[0]}, "
                f"got shape {tuple(jnp.shape(mask))}.")
        if carry is None:
            carry = self.init_carry(shape[1:-1])
        n_carry = 1 if self._single() else len(carry)
        if n_carry != len(self.cells):
            raise ValueError(
                f"`carry` must have one entry per layer ({len(self.cells)}), got "
                f"{n_carry}.")
        return _apply(self, xs, carry, mask)


@eqx.filter_jit
def _apply(rnn: RNN, xs, carry, mask):
    """The layers in order; jitted so that eager calls compile once per shape."""
    carries = (carry,) if rnn._single() else tuple(carry)
    out = []
    for layer, cell in enumerate(rnn.cells):
        if rnn.backward_cells is None:
            c, xs = _run(cell, xs, carries[layer], mask, rnn.reverse, rnn.unroll)
        else:
            cf, cb = carries[layer]
            cf, yf = _run(cell, xs, cf, mask, rnn.reverse, rnn.unroll)
            cb, yb = _run(rnn.backward_cells[layer], xs, cb, mask, not rnn.reverse,
                          rnn.unroll)
            c, xs = (cf, cb), jnp.concatenate([yf, yb], axis=-1)
        out.append(c)
    return xs, (out[0] if rnn._single() else tuple(out))
