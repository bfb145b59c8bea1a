"""Data sets: the seed problems, generated series and shipped images.

Nothing here downloads: every data set is generated, ships with the package, or is
read from files the user already has.
"""

import jax.numpy as jnp
import numpy as np

# --------------------------------------------------------- competition model (seed 000)

COMPETITION_PARAMS: dict[str, float] = {
    "r1": 0.1, "r2": 0.3, "a1": 1e-4, "a2": 2e-4, "iN1": 0.002, "iN2": 0.003,
}
"""True parameters of the seed's two-species competition model (`iN` = 1/N)."""

COMPETITION_Y0 = (100.0, 150.0)

COMPETITION_OBSERVATIONS: tuple[tuple[float, tuple[float, float]], ...] = (
    (0.0, (100.0, 150.0)),
    (10.0, (165.0, 283.0)),
    (15.0, (197.0, 290.0)),
    (30.0, (280.0, 276.0)),
    (36.0, (305.0, 269.0)),
    (40.0, (318.0, 266.0)),
    (42.0, (324.0, 264.0)),
)
"""The seed's seven sparse observations `(t, (x, y))`, rounded to whole animals."""


def competition(t, y, args):
    """Two competing species, `y = [x, y]`, `args` a dict like `COMPETITION_PARAMS`:

    `dx/dt = r1·x·(1 − x/N1) − a1·x·y`,  `dy/dt = r2·y·(1 − y/N2) − a2·x·y`.

    Works on a state of shape `(..., 2)`.
    """
    x, z = y[..., 0], y[..., 1]
    dx = args["r1"] * x * (1 - args["iN1"] * x) - args["a1"] * x * z
    dz = args["r2"] * z * (1 - args["iN2"] * z) - args["a2"] * x * z
    return jnp.stack([dx, dz], axis=-1)


def competition_observations() -> tuple[np.ndarray, np.ndarray]:
    """The seed observations as arrays `(ts, ys)` of shapes `(7,)` and `(7, 2)`."""
    ts = np.array([t for t, _ in COMPETITION_OBSERVATIONS])
    ys = np.array([y for _, y in COMPETITION_OBSERVATIONS])
    return ts, ys

# ----- sequence models (noisy sine, seed 001)


def noisy_sine(n: int = 400, stop: float = 36.0, noise: float = 0.2, *,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The seed-001 series: `n` points `x` on `[0, stop]` and `y = sin(x) + noise·u`,
    `u ~ U(0, 1)` drawn from NumPy's generator with `seed`.

    **Returns:** `(x, y)`, both of shape `(n,)`. The noise has mean `noise/2` and
    standard deviation `noise/√12` (≈ 0.058 for 0.2), the floor for any predictor.
    """
    if int(n) != n or n < 2:
        raise ValueError(f"`n` must be an integer >= 2, got {n!r}.")
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, stop, int(n))
    return x, np.sin(x) + noise * rng.random(int(n))


def sliding_windows(series, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (window of past values, next value) from a series of shape `(n, ...)`.

    **Returns:** `(inputs, targets)` of shapes `(n - window, window, ...)` and
    `(n - window, ...)`: `inputs[i] = series[i:i+window]`, `targets[i] =
    series[i+window]`.
    """
    series = np.asarray(series)
    if int(window) != window or not 1 <= window < len(series):
        raise ValueError(
            f"`window` must be an integer in [1, {len(series) - 1}], got {window!r}.")
    idx = np.arange(len(series) - window)[:, None] + np.arange(window)
    return series[idx], series[window:]
