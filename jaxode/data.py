"""Data sets: model problems, generated series and shipped images.

Nothing here downloads: every data set is generated, ships with the package, or is
read from files the user already has.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = [
    "competition", "competition_observations", "COMPETITION_PARAMS", "COMPETITION_Y0",
    "COMPETITION_OBSERVATIONS", "lotka_volterra", "lynx_hare", "LYNX_HARE",
    "LYNX_HARE_POSTERIOR", "sir", "influenza_1978", "INFLUENZA_1978",
    "INFLUENZA_1978_N", "StiffProblem", "STIFF_PROBLEMS", "noisy_sine",
    "sliding_windows", "digits", "read_idx", "mnist", "toy2d", "TOY2D",
]

# --------------------------------------------------------- two-species competition model

COMPETITION_PARAMS: dict[str, float] = {
    "r1": 0.1, "r2": 0.3, "a1": 1e-4, "a2": 2e-4, "iN1": 0.002, "iN2": 0.003,
}
"""True parameters of the two-species competition model (`iN` = 1/N)."""

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
"""Seven sparse observations `(t, (x, y))` of the competition model from
`COMPETITION_Y0` (1000 Euler steps of h = 0.1), rounded to whole animals."""


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
    """The seven observations as arrays `(ts, ys)` of shapes `(7,)` and `(7, 2)`."""
    ts = np.array([t for t, _ in COMPETITION_OBSERVATIONS])
    ys = np.array([y for _, y in COMPETITION_OBSERVATIONS])
    return ts, ys


# ------------------------------------------------------------------- real data sets

LYNX_HARE: tuple[tuple[int, float, float], ...] = (
    (1900, 30.0, 4.0), (1901, 47.2, 6.1), (1902, 70.2, 9.8), (1903, 77.4, 35.2),
    (1904, 36.3, 59.4), (1905, 20.6, 41.7), (1906, 18.1, 19.0), (1907, 21.4, 13.0),
    (1908, 22.0, 8.3), (1909, 25.4, 9.1), (1910, 27.1, 7.4), (1911, 40.3, 8.0),
    (1912, 57.0, 12.3), (1913, 76.6, 19.5), (1914, 52.3, 45.7), (1915, 19.5, 51.1),
    (1916, 11.2, 29.7), (1917, 7.6, 15.8), (1918, 14.6, 9.7), (1919, 16.2, 10.1),
    (1920, 24.7, 8.6),
)
"""Hudson's Bay Company pelts, `(year, hares, lynxes)` in thousands, 1900–1920.

Source: the pelt counts of the Hudson's Bay Company (C. G. Hewitt, *The Conservation
of the Wild Life of Canada*, 1921), as tabulated for the Lotka–Volterra case study of
B. Carpenter, "Predator-Prey Population Dynamics: the Lotka-Volterra model in Stan"
(2018), whose posterior means are `LYNX_HARE_POSTERIOR`."""

LYNX_HARE_POSTERIOR: dict[str, float] = {
    "alpha": 0.55, "beta": 0.028, "gamma": 0.80, "delta": 0.024,
    "hare0": 33.9, "lynx0": 5.9, "sigma": 0.25,
}
"""Posterior means of Carpenter's (2018) Lotka–Volterra model with log-normal noise
on the Hudson's Bay series: `d hare/dt = (alpha − beta·lynx)·hare`,
`d lynx/dt = (−gamma + delta·hare)·lynx`."""


def lotka_volterra(t, y, p):
    """Predator–prey model, `y = [hare, lynx]`, `p` a dict with `alpha`, `beta`,
    `gamma`, `delta` (see `LYNX_HARE_POSTERIOR`)."""
    hare, lynx = y[..., 0], y[..., 1]
    return jnp.stack([(p["alpha"] - p["beta"] * lynx) * hare,
                      (-p["gamma"] + p["delta"] * hare) * lynx], axis=-1)


def lynx_hare() -> tuple[np.ndarray, np.ndarray]:
    """The Hudson's Bay series as `(years, ys)`: years `(21,)` and `ys (21, 2)` with
    columns hares, lynxes (thousands of pelts)."""
    table = np.array(LYNX_HARE)
    return table[:, 0], table[:, 1:]


INFLUENZA_1978: tuple[int, ...] = (3, 8, 26, 76, 225, 298, 258, 233, 189, 128, 68, 29,
                                   14, 4)
"""Boys confined to bed on days 1–14 of the influenza outbreak at an English boarding
school in January 1978: 763 boys, one ill on day 0. Source: "Influenza in a boarding
school", *British Medical Journal* 1 (1978) 587; fitted by least squares in J. D.
Murray, *Mathematical Biology* (β ≈ 1.66, γ ≈ 0.44 per day) and with negative-
binomial noise in Grinsztajn et al., "Bayesian workflow for disease transmission
modeling in Stan", *Statistics in Medicine* 40 (2021) (β ≈ 1.73, γ ≈ 0.54, R0 ≈ 3.2)."""

INFLUENZA_1978_N = 763


def sir(t, y, p):
    """SIR epidemic, `y = [S, I, R]` (counts), `p` a dict with `beta`, `gamma` and
    the population `N`: `S' = −beta·S·I/N`, `I' = beta·S·I/N − gamma·I`,
    `R' = gamma·I`."""
    s, i = y[..., 0], y[..., 1]
    infection = p["beta"] * s * i / p["N"]
    return jnp.stack([-infection, infection - p["gamma"] * i, p["gamma"] * i], axis=-1)


def influenza_1978() -> tuple[np.ndarray, np.ndarray]:
    """The outbreak as `(days, in_bed)`: days 1–14 and the bed-confined counts."""
    return np.arange(1.0, 15.0), np.array(INFLUENZA_1978, dtype=float)


# ------------------------------------------------------------------ stiff problems


class StiffProblem(NamedTuple):
    """A stiff test problem: `f(t, y, args)` (args unused), `y0` at `t = 0`, the end
    time `t1`, the solution there (`reference`), and `atol_per_rtol`, the absolute
    tolerance to pair with each relative one (the scale of the smallest component
    that matters)."""

    name: str
    f: Callable
    y0: tuple[float, ...]
    t1: float
    reference: tuple[float, ...]
    atol_per_rtol: float


def _robertson(t, y, args):
    y1, y2, y3 = y[0], y[1], y[2]
    return jnp.stack([-0.04 * y1 + 1e4 * y2 * y3,
                      0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 ** 2,
                      3e7 * y2 ** 2])


def _hires(t, y, args):
    y1, y2, y3, y4, y5, y6, y7, y8 = (y[i] for i in range(8))
    return jnp.stack([
        -1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007,
        1.71 * y1 - 8.75 * y2,
        -10.03 * y3 + 0.43 * y4 + 0.035 * y5,
        8.32 * y2 + 1.71 * y3 - 1.12 * y4,
        -1.745 * y5 + 0.43 * y6 + 0.43 * y7,
        -280.0 * y6 * y8 + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
        280.0 * y6 * y8 - 1.81 * y7,
        -280.0 * y6 * y8 + 1.81 * y7,
    ])


def _orego(t, y, args):
    y1, y2, y3 = y[0], y[1], y[2]
    return jnp.stack([77.27 * (y2 + y1 * (1 - 8.375e-6 * y1 - y2)),
                      (y3 - (1 + y1) * y2) / 77.27,
                      0.161 * (y1 - y3)])


def _van_der_pol(t, y, args):
    return jnp.stack([y[1], 1000.0 * (1 - y[0] ** 2) * y[1] - y[0]])


# POLLU: the chemistry of the air pollution model of the Dutch National Institute of
# Public Health and the Environment (RIVM), 20 species and 25 reactions with rate
# constants from 3.5e-4 to 4.4e11 (J. G. Verwer, SIAM J. Sci. Comput. 15, 1994;
# problem POLLU of the Test Set for IVP Solvers)
_POLLU_K = (0.35, 26.6, 1.23e4, 8.6e-4, 8.2e-4, 1.5e4, 1.3e-4, 2.4e4, 1.65e4, 9e3,
            2.2e-2, 1.2e4, 1.88, 1.63e4, 4.8e6, 3.5e-4, 1.75e-2, 1e8, 4.44e11, 1.24e3,
            2.1, 5.78, 4.74e-2, 1.78e3, 3.12)
# reaction j: (rate constant index, reactant species), species numbered from 1
_POLLU_REACTANTS = ((1,), (2, 4), (5, 2), (7,), (7,), (7, 6), (9,), (9, 6), (11, 2),
                    (11, 1), (13,), (10, 2), (14,), (1, 6), (3,), (4,), (4,), (16,),
                    (16,), (17, 6), (19,), (19,), (1, 4), (19, 1), (20,))
# species i: (consumed by reactions, produced by reactions; a reaction listed twice
# makes two)
_POLLU_BALANCE = (
    ((1, 10, 14, 23, 24), (2, 3, 9, 11, 12, 22, 25)), ((2, 3, 9, 12), (1, 21)),
    ((15,), (1, 17, 19, 22)), ((2, 16, 17, 23), (15,)), ((3,), (4, 4, 6, 7, 13, 20)),
    ((6, 8, 14, 20), (3, 18, 18)), ((4, 5, 6), (13,)), ((), (4, 5, 6, 7)),
    ((7, 8), ()), ((12,), (7, 9)), ((9, 10), (8, 11)), ((), (9,)), ((11,), (10,)),
    ((13,), (12,)), ((), (14,)), ((18, 19), (16,)), ((20,), ()), ((), (20,)),
    ((21, 22, 24), (23, 25)), ((25,), (24,)))


def _pollu(t, y, args):
    r = [k * math.prod(y[i - 1] for i in species)
         for k, species in zip(_POLLU_K, _POLLU_REACTANTS)]
    return jnp.stack([sum((r[j - 1] for j in made), 0.0) - sum((r[j - 1] for j in used),
                                                               0.0)
                      for used, made in _POLLU_BALANCE])


STIFF_PROBLEMS: dict[str, StiffProblem] = {
    # ROBER, HIRES and OREGO with the reference solutions of the Test Set for IVP
    # Solvers (F. Mazzia, C. Magherini et al., Bari, release 2.4)
    "robertson": StiffProblem(
        "Robertson", _robertson, (1.0, 0.0, 0.0), 1e11,
        (0.2083340149701255e-7, 0.8333360770334713e-13, 0.9999999791665050), 1e-4),
    "hires": StiffProblem(
        "HIRES", _hires, (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0057), 321.8122,
        (0.7371312573325668e-3, 0.1442485726316185e-3, 0.5888729740967575e-4,
         0.1175651343283149e-2, 0.2386356198831331e-2, 0.6238968252742796e-2,
         0.2849998395185769e-2, 0.2850001604814231e-2), 1e-4),
    "orego": StiffProblem(
        "OREGO", _orego, (1.0, 2.0, 3.0), 360.0,
        (0.1000814870318523e1, 0.1228178521549917e4, 0.1320554942846706e3), 1.0),
    # Van der Pol with mu = 1000 over [0, 2000] (about 1.2 relaxation periods); its
    # reference was computed with SciPy's Radau at rtol = 1e-13, atol = 1e-15 (the
    # same run reproduces the three Test Set references above to 4e-10, 1e-13, 1e-13)
    "van_der_pol": StiffProblem(
        "Van der Pol (mu = 1000)", _van_der_pol, (2.0, 0.0), 2000.0,
        (1.7061677321704887, -0.0008928097010247914), 1e-2),
    # POLLU to t = 60 (minutes); its reference from SciPy's Radau at rtol = 1e-13,
    # atol = 1e-20 (BDF at rtol 1e-12 agrees to 6e-12)
    "pollu": StiffProblem(
        "POLLU", _pollu,
        (0.0, 0.2, 0.0, 0.04, 0.0, 0.0, 0.1, 0.3, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
         0.0, 0.007, 0.0, 0.0, 0.0), 60.0,
        (0.056462554800227605, 0.13424841304223378, 4.139734331099421e-09,
         0.0055231402074843545, 2.0189772623021936e-07, 1.464541863493965e-07,
         0.07784249118997953, 0.32450753533960264, 0.007494013383880416,
         1.6222931573015625e-08, 1.1358638332570764e-08, 0.002230505975721349,
         0.00020871628827986288, 1.3969210168401558e-05, 0.008964884856898272,
         4.352846369330099e-18, 0.0068992196962633905, 0.00010078030373659396,
         1.7721465139699787e-06, 5.6829432923163655e-05), 1e-4),
}
"""Stiff test problems for `jaxode.solve(..., solver="stiff")` and
`benchmarks/stiff.py`."""

# ----- sequence models (noisy sine)


def noisy_sine(n: int = 400, stop: float = 36.0, noise: float = 0.2, *,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy sine series: `n` points `x` on `[0, stop]` and `y = sin(x) + noise·u`,
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


# ----- neural ODEs: images and toy 2-D densities

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_IDX_DTYPES = {
    0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 handwritten digits (1797 images, no download).

    The split is fixed and needs no random numbers: every fifth image (index 0, 5,
    10, ...) is a test image, so the test set has 360 images and the training set
    1437, with all ten classes in both.

    **Returns:** `(x_train, y_train, x_test, y_test)`: images `float32` of shape
    `(n, 8, 8)` scaled to `[0, 1]`, labels `int32` of shape `(n,)`.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # the core install does not carry scikit-learn
        raise ImportError(
            "jaxode.data.digits needs scikit-learn (for its bundled digits), which the "
            "core install leaves out: pip install 'jaxode[data]' (or 'jaxode[demo]')"
        ) from e

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int32)
    test = np.arange(len(y)) % 5 == 0
    return x[~test], y[~test], x[test], y[test]


def read_idx(path) -> np.ndarray:
    """Read one IDX file (the MNIST format), raw or gzip-compressed.

    **Returns:** the array with the dtype and shape stored in the file header.

    **Raises:** `ValueError` when the file is not a valid IDX file (bad magic number,
    unknown type code, or a size that does not match the header).
    """
    import gzip
    from pathlib import Path

    path = Path(path)
    with path.open("rb") as fh:
        start = fh.read(2)
    opener = gzip.open if start == b"\x1f\x8b" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{path} is not an IDX file: it must start with two zero bytes, then a "
            f"type code and the number of dimensions.")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes).")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big")
                  for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: the header promises shape {shape} of {dtype.name} "
            f"({expected} bytes) but the file holds {len(data) - header} bytes of "
            f"data.")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(
        dtype.newbyteorder("="))


def mnist(directory) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST from the four IDX files in `directory` (raw, or gzip with `.gz` added).

    Nothing is downloaded. Put `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
    `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` (each optionally ending in
    `.gz`) into `directory`.

    **Returns:** `(x_train, y_train, x_test, y_test)`: images `float32` `(n, 28, 28)`
    in `[0, 1]`, labels `int32` `(n,)`.

    **Raises:** `FileNotFoundError` naming the directory and the missing files;
    `ValueError` for malformed files or images and labels of different lengths.
    """
    from pathlib import Path

    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(
            f"MNIST directory {str(root)!r} does not exist. jaxode does not download "
            f"data: create it and put the four MNIST IDX files in it "
            f"({', '.join(n for pair in _MNIST_FILES.values() for n in pair)}; raw or "
            f"with .gz).")
    found, missing = {}, []
    for pair in _MNIST_FILES.values():
        for name in pair:
            for candidate in (root / name, root / (name + ".gz")):
                if candidate.is_file():
                    found[name] = candidate
                    break
            else:
                missing.append(name)
    if missing:
        raise FileNotFoundError(
            f"MNIST files missing from {str(root)!r}: {', '.join(missing)} (raw or "
            f"with .gz). Put the IDX files there; jaxode does not download data.")
    out = []
    for images_name, labels_name in _MNIST_FILES.values():
        images, labels = read_idx(found[images_name]), read_idx(found[labels_name])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{found[images_name]} and {found[labels_name]} do not form an image "
                f"set: shapes {images.shape} and {labels.shape}; expected (n, rows, "
                f"cols) and (n,).")
        out += [(images / 255.0).astype(np.float32), labels.astype(np.int32)]
    return out[0], out[1], out[2], out[3]


TOY2D = ("moons", "circles", "8gaussians", "pinwheel")


def toy2d(name: str, n: int, key) -> "jnp.ndarray":
    """`n` samples of a toy 2-D density, roughly centred and of unit scale.

    - `"moons"`: two interleaved half circles; `"circles"`: two concentric rings;
      `"8gaussians"`: eight small Gaussians on a circle of radius 2;
      `"pinwheel"`: five curved arms.

    **Returns:** array of shape `(n, 2)`, floating dtype of the current JAX default.

    **Raises:** `ValueError` for an unknown name or a non-positive `n`.
    """
    import jax.random as jr

    if name not in TOY2D:
        raise ValueError(f"`name`={name!r} is not one of: {', '.join(TOY2D)}.")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` must be a positive integer, got {n!r}.")
    k1, k2, k3 = jr.split(key, 3)
    dtype = jnp.result_type(float)
    if name == "moons":
        upper = jr.bernoulli(k1, 0.5, (n,))
        angle = jr.uniform(k2, (n,), dtype) * jnp.pi
        x = jnp.where(upper, jnp.cos(angle), 1 - jnp.cos(angle))
        y = jnp.where(upper, jnp.sin(angle), 0.5 - jnp.sin(angle))
        pts = jnp.stack([x - 0.5, y - 0.25], axis=-1) * 1.6
        return pts + 0.08 * jr.normal(k3, (n, 2), dtype)
    if name == "circles":
        outer = jr.bernoulli(k1, 0.5, (n,))
        angle = jr.uniform(k2, (n,), dtype) * 2 * jnp.pi
        radius = jnp.where(outer, 2.0, 1.0)
        pts = radius[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
        return pts + 0.08 * jr.normal(k3, (n, 2), dtype)
    if name == "8gaussians":
        centre = jr.randint(k1, (n,), 0, 8)
        angle = centre.astype(dtype) * (2 * jnp.pi / 8)
        pts = 2.0 * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
        return pts + 0.15 * jr.normal(k2, (n, 2), dtype)
    # pinwheel: radial Gaussian spread, rotated more the further out a point is
    arm = jr.randint(k1, (n,), 0, 5)
    radial = 1.0 + 0.3 * jr.normal(k2, (n,), dtype)
    tangential = 0.1 * jr.normal(k3, (n,), dtype)
    angle = arm.astype(dtype) * (2 * jnp.pi / 5) + 0.6 * jnp.exp(radial)
    c, s = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([c * radial - s * tangential, s * radial + c * tangential],
                     axis=-1) * 1.2
