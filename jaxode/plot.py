"""Figures. One function per figure; each returns the matplotlib `Figure`.

Matplotlib is imported with the non-interactive Agg backend, so figures can be saved
on machines without a display.
"""

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def trajectories(
    ts,
    ys,
    *,
    labels: Sequence[str] | None = None,
    styles: Sequence[str] | None = None,
    observations: tuple | None = None,
    title: str = "",
    xlabel: str = "t",
    ylabel: str = "y",
) -> Figure:
    """Plot state components against time.

    - `ts`: shape `(time,)`; `ys`: shape `(time, components)`, or a list of such
      arrays (several solutions on one axes, one `label`/`style` prefix each).
    - `observations`: optional `(t_obs, y_obs)` drawn as dots, shape `(n, components)`.
    """
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    runs = ys if isinstance(ys, (list, tuple)) else [ys]
    tss = ts if isinstance(ts, (list, tuple)) else [ts] * len(runs)
    styles = styles or ["-", "--", ":", "-."]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for r, (t, y) in enumerate(zip(tss, runs)):
        y = np.asarray(y).reshape(len(t), -1)
        for j in range(y.shape[1]):
            name = None
            if labels is not None:
                name = labels[r * y.shape[1] + j] if len(labels) > y.shape[1] else (
                    labels[j] if r == 0 else None)
            ax.plot(t, y[:, j], styles[r % len(styles)], color=colors[j % len(colors)],
                    label=name)
    if observations is not None:
        t_obs, y_obs = observations
        y_obs = np.asarray(y_obs).reshape(len(t_obs), -1)
        for j in range(y_obs.shape[1]):
            ax.plot(t_obs, y_obs[:, j], "o", color=colors[j % len(colors)], ms=6,
                    mec="black", label="observed" if j == 0 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if labels is not None or observations is not None:
        ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return fig


# ----- neural ODEs: NFE curves and 2-D densities (seed 004)


def nfe_curves(
    curves: dict[str, Sequence[float]],
    *,
    xs: Sequence[float] | None = None,
    xlabel: str = "epoch",
    ylabel: str = "NFE per batch",
    logx: bool = False,
    title: str = "",
) -> Figure:
    """Number of function evaluations against training epoch (or any x).

    - `curves`: label -> sequence of NFE values, e.g. `{"forward": [...],
      "backward": [...]}`; all drawn against `xs` (default `1, 2, ...`).
    """
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for label, values in curves.items():
        values = np.asarray(values, dtype=float)
        x = np.arange(1, len(values) + 1) if xs is None else np.asarray(xs)
        ax.plot(x, values, "o-", ms=4, label=label)
    if logx:
        ax.set_xscale("log")
    elif xs is None:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return fig


def nfe_vs_tolerance(
    tolerances: Sequence[float],
    nfe: Sequence[float],
    *,
    errors: Sequence[float] | None = None,
    title: str = "",
) -> Figure:
    """Forward NFE against the solver tolerance (log x), with the test error on a
    second axis when `errors` (in percent) is given: depth traded for accuracy."""
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.plot(tolerances, nfe, "o-", color="C0", label="forward NFE")
    ax.set_xscale("log")
    ax.set_xlabel("tolerance (rtol = atol)")
    ax.set_ylabel("forward NFE per batch", color="C0")
    ax.grid(alpha=0.3)
    if errors is not None:
        ax2 = ax.twinx()
        ax2.plot(tolerances, errors, "s--", color="C3", label="test error")
        ax2.set_ylabel("test error (%)", color="C3")
    if title:
        ax.set_title(title)
    return fig


def densities2d(
    panels: Sequence[tuple[str, object]],
    *,
    lim: float = 3.0,
    title: str = "",
) -> Figure:
    """Side-by-side 2-D panels, each `(title, content)` where content is either an
    `(n, 2)` array of points (scatter) or a tuple `(xx, yy, density)` of grids
    (image of the density)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8),
                             layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, (name, content) in zip(axes, panels):
        if isinstance(content, tuple):
            xx, yy, dens = (np.asarray(c) for c in content)
            ax.pcolormesh(xx, yy, dens, shading="auto", cmap="magma")
        else:
            pts = np.asarray(content)
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, color="C0")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig
