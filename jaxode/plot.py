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
