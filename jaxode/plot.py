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


# ----- fit (inverse problems)


def fit_curves(
    ts,
    ys,
    t_obs,
    y_obs,
    *,
    labels: Sequence[str] | None = None,
    title: str = "",
    xlabel: str = "t",
    ylabel: str = "y",
) -> Figure:
    """Fitted trajectories as curves and the observations they were fitted to as dots.

    - `ts`: shape `(time,)`; `ys`: the fitted model at `ts`, shape `(time, D)`.
    - `t_obs`: shape `(n,)`; `y_obs`: shape `(n, D)`, NaN where missing.
    - `labels`: one name per component.
    """
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ys = np.asarray(ys).reshape(len(ts), -1)
    y_obs = np.asarray(y_obs).reshape(len(t_obs), -1)
    for j in range(ys.shape[1]):
        name = labels[j] if labels is not None else f"y[{j}]"
        ax.plot(ts, ys[:, j], "-", color=colors[j % len(colors)], lw=2,
                label=f"{name} (fitted)")
        ax.plot(t_obs, y_obs[:, j], "o", color=colors[j % len(colors)], ms=7,
                mec="black", label=f"{name} (observed)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return fig


def fit_losses(losses, *, polish_start: int | None = None, title: str = "") -> Figure:
    """The loss curve of a fit on a log scale; `polish_start` marks the iteration
    where the Levenberg–Marquardt polish begins."""
    losses = np.asarray(losses, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    it = np.arange(1, len(losses) + 1)
    if polish_start is not None and 0 < polish_start < len(losses):
        ax.semilogy(it[:polish_start], losses[:polish_start], lw=1.5,
                    label="optimiser (Adam)")
        ax.semilogy(it[polish_start - 1:], losses[polish_start - 1:], lw=2,
                    label="Levenberg–Marquardt polish")
        ax.axvline(polish_start, color="gray", lw=0.8, ls=":")
        ax.legend(frameon=False)
    else:
        ax.semilogy(it, losses, lw=1.5)
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean squared residual")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    return fig
