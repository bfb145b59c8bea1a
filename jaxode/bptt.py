"""Backpropagation through time, by hand and by autodiff, and gradient-flow reports.

The network is the plain Elman RNN with a softmax read-out (no biases):

    a_t = U x_t + W s_{t-1},   s_t = σ(a_t),   s_{-1} = 0,
    o_t = softmax(V s_t),      L = Σ_t L_t,   L_t = −Σ_k y_tk log o_tk.

`params` is a dict `{"U": (H, I), "W": (H, H), "V": (O, H)}`; `xs` has shape
`(T, I)` and `ys` (one-hot targets) shape `(T, O)`.

**The backward recursion.** With `e_t = ∂L_t/∂(V s_t) = o_t − y_t` (one-hot `y`) and
`σ'_t = s_t ⊙ (1 − s_t)`:

    δ_t = ∂L/∂a_t = (Vᵀ e_t + Wᵀ δ_{t+1}) ⊙ σ'_t,        δ_T = 0,
    ∂L/∂V = Σ_t e_t s_tᵀ,   ∂L/∂U = Σ_t δ_t x_tᵀ,   ∂L/∂W = Σ_t δ_t s_{t-1}ᵀ.

**Windowed truncation** (`window=k`): the gradient of each `L_t` is followed back
through the pre-activations `a_t, a_{t-1}, …, a_{t-k+1}` only; `s_{t-k}` is treated as
a constant. Then `δ^{(t)}_t = Vᵀ e_t ⊙ σ'_t`, `δ^{(t)}_{j-1} = Wᵀ δ^{(t)}_j ⊙ σ'_{j-1}`,
and `U`, `W` collect `δ^{(t)}_j x_jᵀ` and `δ^{(t)}_j s_{j-1}ᵀ` for the k values of j.
`window=10` looks back at most 10 steps. (This differs from `jaxode.scan(...,
truncate=k)`, which cuts the gradient at fixed chunk boundaries.)
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

__all__ = ["elman_forward", "elman_loss", "elman_grads", "elman_grads_autodiff",
           "gradient_flow", "GradientFlow"]


# ------------------------------------------------------------------------ the network

def _check(params, xs, ys, window) -> None:
    if not isinstance(params, dict) or set(params) != {"U", "W", "V"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"`params` must be a dict with keys 'U', 'W', 'V', got {got}.")
    U, W, V = (jnp.shape(params[k]) for k in "UWV")
    if len(U) != 2 or W != (U[0], U[0]) or len(V) != 2 or V[1] != U[0]:
        raise ValueError(
            "`params` must have shapes U (H, I), W (H, H), V (O, H); got U "
            f"{tuple(U)}, W {tuple(W)}, V {tuple(V)}.")
    I_, O = U[1], V[0]
    if jnp.ndim(xs) != 2 or jnp.shape(xs)[1] != I_:
        raise ValueError(f"`xs` must have shape (T, {I_}), got {tuple(jnp.shape(xs))}.")
    if ys is not None and tuple(jnp.shape(ys)) != (jnp.shape(xs)[0], O):
        raise ValueError(
            f"`ys` must have shape ({jnp.shape(xs)[0]}, {O}) (time, outputs), got "
            f"{tuple(jnp.shape(ys))}.")
    if window is not None and (isinstance(window, bool) or int(window) != window
                               or window < 1):
        raise ValueError(f"`window` must be an integer >= 1 or None, got {window!r}.")


def elman_forward(params: dict, xs) -> tuple[jax.Array, jax.Array]:
    """Run the network. **Returns:** `(states, outputs)`, shapes `(T, H)`, `(T, O)`."""
    _check(params, xs, None, None)
    U, W, V = params["U"], params["W"], params["V"]
    pre = xs @ U.T

    def step(s, a_in):
        s = jax.nn.sigmoid(a_in + W @ s)
        return s, s

    _, states = lax.scan(step, jnp.zeros(U.shape[0], pre.dtype), pre)
    return states, jax.nn.softmax(states @ V.T, axis=-1)


def _step_losses(params, states, ys):
    logits = states @ params["V"].T
    return -jnp.sum(ys * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def elman_loss(params: dict, xs, ys) -> jax.Array:
    """The summed cross-entropy `Σ_t −Σ_k y_tk log o_tk`."""
    _check(params, xs, ys, None)
    states, _ = elman_forward(params, xs)
    return jnp.sum(_step_losses(params, states, ys))


# ------------------------------------------------------------------- BPTT by hand

@jax.jit
def _full_by_hand(params, xs, ys):
    W, V = params["W"], params["V"]
    states, outs = elman_forward(params, xs)
    e = outs * jnp.sum(ys, axis=-1, keepdims=True) - ys  # ∂L_t/∂(V s_t)
    dsig = states * (1 - states)
    local = (e @ V) * dsig                                 # Vᵀ e_t ⊙ σ'_t, all t

    def back(delta_next, inputs):
        loc, ds = inputs
        delta = loc + (delta_next @ W) * ds                # (Vᵀe_t + Wᵀδ_{t+1}) ⊙ σ'_t
        return delta, delta

    _, deltas = lax.scan(back, jnp.zeros_like(states[0]), (local, dsig), reverse=True)
    prev = jnp.concatenate([jnp.zeros_like(states[:1]), states[:-1]])  # s_{t-1}
    return {"U": deltas.T @ xs, "W": deltas.T @ prev, "V": e.T @ states}


@jax.jit
def _windowed_by_hand(params, xs, ys, window):
    U, W, V = params["U"], params["W"], params["V"]
    states, outs = elman_forward(params, xs)
    T = xs.shape[0]
    e = outs * jnp.sum(ys, axis=-1, keepdims=True) - ys
    dsig = states * (1 - states)
    prev = jnp.concatenate([jnp.zeros_like(states[:1]), states[:-1]])
    dsig_prev = prev * (1 - prev)
    t = jnp.arange(T)

    # Row t of `deltas` holds δ^{(t)}_{t-m}: loss_t's gradient m steps back. The
    # window is a traced bound, so one compiled loop serves every window length.
    def back(m, carry):
        deltas, dU, dW = carry
        j = t - m
        valid = (j >= 0)[:, None]
        jc = jnp.clip(j, 0, T - 1)
        d = jnp.where(valid, deltas, 0)
        dU = dU + d.T @ xs[jc]
        dW = dW + d.T @ prev[jc]
        deltas = (d @ W) * dsig_prev[jc]                   # Wᵀ δ_j ⊙ σ'_{j-1}
        return deltas, dU, dW

    init = ((e @ V) * dsig, jnp.zeros_like(U), jnp.zeros_like(W))
    _, dU, dW = lax.fori_loop(0, jnp.minimum(window, T), back, init)
    return {"U": dU, "W": dW, "V": e.T @ states}


def elman_grads(params: dict, xs, ys, *, window: int | None = None) -> dict:
    """Gradients of `elman_loss` by backprop through time written out by hand.

    No `jax.grad` inside: the forward pass stores the states, and the backward pass is
    the recursion in the module docstring. `window=None` is full BPTT (equal to
    `jax.grad(elman_loss)`); `window=k` follows each `L_t` back through k
    pre-activations only, in O(T·k·H²).

    **Arguments:** `params` `{"U": (H, I), "W": (H, H), "V": (O, H)}`, `xs` `(T, I)`,
    `ys` `(T, O)` one-hot, `window` an integer ≥ 1 or `None`.

    **Returns:** a dict of gradients shaped like `params`.

    **Raises:** `ValueError` for wrong keys or shapes, or `window < 1`.
    """
    _check(params, xs, ys, window)
    if window is None or window >= jnp.shape(xs)[0]:
        return _full_by_hand(params, xs, ys)
    return _windowed_by_hand(params, xs, ys, jnp.asarray(int(window)))


# --------------------------------------------------------------- BPTT by autodiff

def _windowed_loss(params, xs, ys, window):
    """Σ_t L_t where L_t is recomputed from the constant state s_{t-k}."""
    U, W = params["U"], params["W"]
    T = xs.shape[0]
    states = lax.stop_gradient(elman_forward(params, xs)[0])
    padded = jnp.concatenate([jnp.zeros((window, states.shape[1]), states.dtype), states])
    pre = xs @ U.T

    def loss_t(t, y):
        s0 = padded[t]  # s_{t-k}, a constant (zero before the start)

        def step(s, m):
            j = t - window + 1 + m
            new = jax.nn.sigmoid(pre[jnp.clip(j, 0, T - 1)] + W @ s)
            return jnp.where(j >= 0, new, s), None

        s, _ = lax.scan(step, s0, jnp.arange(window))
        return -jnp.sum(y * jax.nn.log_softmax(params["V"] @ s))

    return jnp.sum(jax.vmap(loss_t)(jnp.arange(T), ys))


_full_autodiff = jax.jit(jax.grad(elman_loss))
_windowed_autodiff = jax.jit(jax.grad(_windowed_loss), static_argnames="window")


def elman_grads_autodiff(params: dict, xs, ys, *, window: int | None = None) -> dict:
    """The same gradients as `elman_grads`, by `jax.grad`.

    With `window=k` each `L_t` is recomputed from `stop_gradient(s_{t-k})` over the k
    steps up to t, so autodiff sees exactly the truncated dependency graph.
    """
    _check(params, xs, ys, window)
    if window is None or window >= jnp.shape(xs)[0]:
        return _full_autodiff(params, xs, ys)
    return _windowed_autodiff(params, xs, ys, window=int(window))


# ------------------------------------------------------------------- gradient flow

class GradientFlow(eqx.Module):
    """How ‖∂L/∂h_t‖ changes as the gradient travels back from the last step.

    - `norms`: shape `(T,)`, ‖∂L/∂h_t‖ for t = 0..T−1 (for an LSTM, `h_t` is the whole
      carry `(h_t, c_t)`).
    - `step_ratios`: shape `(T−1,)`, `norms[t] / norms[t+1]`, the factor applied by
      one step back.
    - `rate`: the geometric mean of `step_ratios`, `(norms[0]/norms[-1])^(1/(T−1))`
      (over the steps where the norm has not underflowed to zero); below 1 the
      gradient decays going back, above 1 it grows.
    - `ratio`: `norms[0] / norms[-1]`, the change over the whole sequence (0 when
      `norms[0]` underflowed: the ratio is then below the smallest float64).
    - `verdict`: `"vanishing"` (ratio below the `vanishing` threshold), `"exploding"`
      (above `exploding`) or `"healthy"`.
    """

    norms: np.ndarray
    step_ratios: np.ndarray
    rate: float
    ratio: float
    verdict: str = eqx.field(static=True)

    def __str__(self) -> str:
        return (f"{self.verdict}: ||dL/dh|| goes from {self.norms[-1]:.3g} at the last "
                f"step to {self.norms[0]:.3g} at the first ({len(self.norms)} steps, "
                f"x{self.rate:.3g} per step back)")


def gradient_flow(
    cell: Callable,
    xs,
    ys=None,
    *,
    carry: Any = None,
    vanishing: float = 1e-3,
    exploding: float = 1e3,
) -> GradientFlow:
    """Measure ‖∂L/∂h_t‖ at every step for a loss on the final hidden state `h_T`.

    A zero perturbation `ε_t` is added to the carry after each step and `jax.grad`
    with respect to all `ε_t` gives the total derivative of `L` with respect to each
    intermediate carry, including every path through later steps.

    **Arguments:**

    - `cell`: a step `cell(carry, x) -> (carry, y)` (any jaxode cell).
    - `xs`: the input sequence, shape `(T, input_size)`, `T >= 2`.
    - `ys`: target for the final hidden state `h_T` (the carry, or its first element
      for a tuple carry such as an LSTM's `(h, c)`); the loss is `½‖h_T − ys‖²`.
      `None` (default) uses `L = Σ h_T`.
    - `carry`: initial carry (default `cell.init_carry()`).
    - `vanishing`, `exploding`: thresholds on `norms[0] / norms[-1]` for the verdict.

    **Returns:** a `GradientFlow` report.

    **Raises:** `ValueError` for a sequence shorter than 2 steps or bad thresholds.
    """
    if jnp.ndim(xs) < 1 or jnp.shape(xs)[0] < 2:
        raise ValueError(
            f"`xs` must be a sequence of at least 2 steps, got shape "
            f"{tuple(jnp.shape(xs))}.")
    if not 0 < vanishing < 1 < exploding:
        raise ValueError(
            f"need 0 < `vanishing` < 1 < `exploding`, got {vanishing!r}, {exploding!r}.")
    if carry is None:
        carry = cell.init_carry()
    T = jnp.shape(xs)[0]
    eps = jtu.tree_map(lambda c: jnp.zeros((T, *jnp.shape(c)), jnp.result_type(c)), carry)

    def loss(eps):
        def step(c, x_e):
            x, e = x_e
            c, _ = cell(c, x)
            return jtu.tree_map(jnp.add, c, e), None

        final, _ = lax.scan(step, carry, (xs, eps))
        h = final[0] if isinstance(final, (tuple, list)) else final
        if ys is None:
            return jnp.sum(h)
        return 0.5 * jnp.sum((h - ys) ** 2)

    grads = jax.jit(jax.grad(loss))(eps)
    norms = np.sqrt(sum(np.sum(np.asarray(g, np.float64).reshape(T, -1) ** 2, axis=1)
                        for g in jtu.tree_leaves(grads)))
    if not (np.isfinite(norms[-1]) and norms[-1] > 0):
        raise ValueError("the gradient at the last step is zero or not finite; "
                         "choose `ys` so that the loss depends on the final state.")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        step_ratios = norms[:-1] / norms[1:]
        ratio = float(norms[0] / norms[-1])
        # per-step rate over the span where the norm is still positive and finite
        usable = np.flatnonzero(np.isfinite(norms) & (norms > 0))
        first = int(usable[0])
        rate = float((norms[first] / norms[-1]) ** (1 / max(T - 1 - first, 1)))
    verdict = ("vanishing" if ratio < vanishing else
               "exploding" if ratio > exploding else "healthy")
    return GradientFlow(norms=norms, step_ratios=step_ratios, rate=rate,
                        ratio=ratio, verdict=verdict)
