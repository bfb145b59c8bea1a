"""Figures. One function per figure; each returns a matplotlib `Figure`.

Figures are made without pyplot (`matplotlib.figure.Figure`), so importing this module
does not change the user's matplotlib backend, no window opens, and nothing stays in
pyplot's figure list: `fig.savefig(path)` works on any machine, with or without a
display, and a notebook shows the returned figure.
"""

from collections.abc import Sequence

import numpy as np

from ._train import TrainHistory

try:
    import matplotlib
    from matplotlib.figure import Figure
except ImportError as e:  # the core install does not carry matplotlib
    raise ImportError(
        "jaxode.plot needs matplotlib, which the core install leaves out: "
        "pip install 'jaxode[plot]' (or 'jaxode[demo]')") from e

__all__ = [
    "trajectories", "phase_portrait", "losses", "forecasts", "gradient_flow",
    "window_effect", "nfe_curves", "nfe_vs_tolerance", "densities2d", "fit_curves",
    "fit_losses", "profiles", "waterfall", "posterior", "posterior_pairs",
    "posterior_predictive",
]


def _subplots(*grid, figsize, layout="constrained", **kwargs):
    """`plt.subplots` without pyplot: a new `Figure` and its axes."""
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(*grid, **kwargs)


def _finish(fig: Figure, ax, xlabel: str, ylabel: str, title: str = "", *,
            legend: bool = True, grid_which: str = "major") -> Figure:
    """The common end of every single-axes figure: labels, title, legend, grid."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(frameon=False)
    ax.grid(alpha=0.3, which=grid_which)
    return fig


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
    fig, ax = _subplots(figsize=(7, 4.2), layout="constrained")
    runs = ys if isinstance(ys, (list, tuple)) else [ys]
    tss = ts if isinstance(ts, (list, tuple)) else [ts] * len(runs)
    styles = styles or ["-", "--", ":", "-."]
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
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
    return _finish(fig, ax, xlabel, ylabel, title,
                   legend=labels is not None or observations is not None)


# ----- scale-out and the front door (phase portraits, loss curves)


def phase_portrait(
    f,
    args=None,
    *,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    trajectories=None,
    t: float = 0.0,
    grid: int = 30,
    labels: Sequence[str] = ("x", "y"),
    title: str = "",
) -> Figure:
    """Trajectories of a planar system drawn over its vector field.

    - `f`: vector field `f(t, y, args)` of a state of shape `(2,)`.
    - `xlim`, `ylim`: the window `(low, high)` on each axis.
    - `trajectories`: optional array of shape `(members, time, 2)` (for example
      `jaxode.ensemble(...).ys`), drawn as lines from a dot at the start.
    - `t`: the time at which `f` is evaluated (for non-autonomous systems).
    - `grid`: points per axis of the streamplot grid; the colour is the speed
      `|f|`.
    """
    import jax
    import jax.numpy as jnp

    gx = np.linspace(*xlim, grid)
    gy = np.linspace(*ylim, grid)
    mx, my = np.meshgrid(gx, gy)
    states = jnp.stack([mx.ravel(), my.ravel()], axis=-1)
    field = jax.vmap(lambda y: f(t, y, args))(states)
    u, v = (np.asarray(field[:, i]).reshape(mx.shape) for i in range(2))
    speed = np.hypot(u, v)
    fig, ax = _subplots(figsize=(6, 5.2), layout="constrained")
    # the upper part of "Blues": slow regions stay visible on white
    cmap = matplotlib.colors.LinearSegmentedColormap.from_list(
        "speed", matplotlib.colormaps["Blues"](np.linspace(0.3, 1.0, 256)))
    stream = ax.streamplot(gx, gy, u, v, color=speed, cmap=cmap, density=1.2,
                           linewidth=0.8, arrowsize=0.9)
    fig.colorbar(stream.lines, ax=ax, label="speed |f|", shrink=0.8)
    if trajectories is not None:
        paths = np.asarray(trajectories)
        if paths.ndim != 3 or paths.shape[-1] != 2:
            raise ValueError(
                f"`trajectories` must have shape (members, time, 2), got {paths.shape}."
            )
        for path in paths:
            ax.plot(path[:, 0], path[:, 1], "-", color="tab:red", lw=1.3, alpha=0.85)
            ax.plot(path[0, 0], path[0, 1], "o", color="tab:red", ms=3.5)
            ax.plot(path[-1, 0], path[-1, 1], "s", color="black", ms=3.5)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    if title:
        ax.set_title(title)
    return fig


def losses(history, *, title: str = "", xlabel: str = "step",
           ylabel: str = "loss") -> Figure:
    """Loss curves against the step.

    - `history`: a 1-D array of losses, the `TrainHistory` of `jaxode.train` (its
      `loss`), or a dict `name -> 1-D array` for several curves (e.g.
      `{"train": ..., "validation": ...}`). The y axis is logarithmic when every
      value is positive. Non-finite values are left out of the axis range.
    """
    if isinstance(history, TrainHistory):
        history = history.loss
    curves = history if isinstance(history, dict) else {"loss": history}
    fig, ax = _subplots(figsize=(6.5, 4), layout="constrained")
    positive = True
    for name, values in curves.items():
        values = np.asarray(values, dtype=float).reshape(-1)
        finite = values[np.isfinite(values)]
        positive = positive and finite.size > 0 and bool(np.all(finite > 0))
        ax.plot(np.arange(values.size), values, label=name, lw=1.4)
    if positive:
        ax.set_yscale("log")
    return _finish(fig, ax, xlabel, ylabel, title, legend=len(curves) > 1,
                   grid_which="both")


# ----- sequence models (forecasting, BPTT, gradient flow)


def forecasts(
    x,
    y,
    split: int,
    single: dict,
    rollout: dict,
    losses: dict | None = None,
    *,
    title: str = "",
) -> Figure:
    """Truth vs predictions of a series, with optional training-loss curves.

    - `x`, `y`: the whole series, shape `(n,)`; `split`: index where the test part
      starts (a vertical line).
    - `single`: name -> `(x_pred, y_pred)` one-step-ahead predictions.
    - `rollout`: name -> `(x_pred, y_pred)` autoregressive predictions.
    - `losses`: name -> loss per training step (drawn on a log scale on top).
    """
    rows = 3 if losses else 2
    fig, axes = _subplots(rows, 1, figsize=(8, 2.6 * rows), layout="constrained")
    axes = list(np.atleast_1d(axes))
    if losses:
        ax = axes.pop(0)
        for name, curve in losses.items():
            ax.semilogy(np.asarray(curve), label=name)
        ax.set_xlabel("training step")
        ax.set_ylabel("training loss (MSE)")
        ax.legend(frameon=False)
        ax.grid(alpha=0.3)
    for ax, preds, what in ((axes[0], single, "one step ahead (true inputs)"),
                            (axes[1], rollout, "autoregressive (own predictions)")):
        ax.plot(x, y, color="0.6", lw=1, label="truth (noisy)")
        ax.axvline(x[split], color="0.3", ls=":", lw=1)
        for name, (xp, yp) in preds.items():
            ax.plot(xp, np.asarray(yp).reshape(len(xp)), lw=1.5, label=name)
        ax.set_title(what, fontsize=10)
        ax.set_xlim(max(x[0], 2 * x[split] - x[-1]), x[-1])
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.legend(frameon=False, fontsize=8, loc="lower left")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def gradient_flow(reports: dict, *, title: str = "") -> Figure:
    """‖∂L/∂h_t‖ against the number of steps back from the loss, one line per report.

    - `reports`: name -> `jaxode.bptt.GradientFlow`; the verdict joins the label.
      Where a norm underflowed to zero its line stops.
    """
    fig, ax = _subplots(figsize=(7, 4.2), layout="constrained")
    for i, (name, rep) in enumerate(reports.items()):
        norms = np.asarray(rep.norms, float)[::-1]
        norms = np.where(norms > 0, norms, np.nan)  # underflowed to 0: the line ends
        ax.semilogy(np.arange(len(norms)), norms, ["-", "--", "-.", ":"][i % 4],
                    label=f"{name}: {rep.verdict} (x{rep.rate:.3g}/step)")
    ax.set_xlabel("steps back from the final state  (T - 1 - t)")
    ax.set_ylabel("||dL/dh_t||")
    ax.set_title(title or "Gradient flow through time")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig


def window_effect(windows, errors: dict, *, title: str = "") -> Figure:
    """Relative gradient error of truncated BPTT against the window length.

    - `windows`: the window lengths k; `errors`: name -> relative error per k.
    """
    fig, ax = _subplots(figsize=(6.5, 4), layout="constrained")
    for name, err in errors.items():
        ax.semilogy(windows, np.maximum(np.asarray(err), 1e-17), "o-", label=name)
    ax.set_xlabel("window k (pre-activations each loss reaches back)")
    ax.set_ylabel("||g_k - g_full|| / ||g_full||")
    ax.set_title(title or "Truncated BPTT: error against the window")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3, which="both")
    return fig


# ----- neural ODEs: NFE curves and 2-D densities


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
    fig, ax = _subplots(figsize=(6, 4), layout="constrained")
    for label, values in curves.items():
        values = np.asarray(values, dtype=float)
        x = np.arange(1, len(values) + 1) if xs is None else np.asarray(xs)
        ax.plot(x, values, "o-", ms=4, label=label)
    if logx:
        ax.set_xscale("log")
    elif xs is None:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, ax, xlabel, ylabel, title)


def nfe_vs_tolerance(
    tolerances: Sequence[float],
    nfe: Sequence[float],
    *,
    errors: Sequence[float] | None = None,
    title: str = "",
) -> Figure:
    """Forward NFE against the solver tolerance (log x), with the test error on a
    second axis when `errors` (in percent) is given: depth traded for accuracy."""
    fig, ax = _subplots(figsize=(6, 4), layout="constrained")
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
    fig, axes = _subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8),
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
    band=None,
    band_label: str = "95 % prediction band",
    logy: bool = False,
) -> Figure:
    """Fitted trajectories as curves and the observations they were fitted to as dots.

    - `ts`: shape `(time,)`; `ys`: the fitted model at `ts`, shape `(time, D)`.
    - `t_obs`: shape `(n,)`; `y_obs`: shape `(n, D)`, NaN where missing.
    - `labels`: one name per component.
    - `band`: optional `(low, high)`, each shaped like `ys`, drawn as a shaded band
      (e.g. where 95 % of new observations should fall).
    - `logy`: a logarithmic y axis.
    """
    fig, ax = _subplots(figsize=(7, 4.2), layout="constrained")
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    ys = np.asarray(ys).reshape(len(ts), -1)
    y_obs = np.asarray(y_obs).reshape(len(t_obs), -1)
    for j in range(ys.shape[1]):
        name = labels[j] if labels is not None else f"y[{j}]"
        if band is not None:
            low, high = (np.asarray(b).reshape(len(ts), -1)[:, j] for b in band)
            ax.fill_between(ts, low, high, color=colors[j % len(colors)], alpha=0.18,
                            lw=0, label=f"{name}: {band_label}")
        ax.plot(ts, ys[:, j], "-", color=colors[j % len(colors)], lw=2,
                label=f"{name} (fitted)")
        ax.plot(t_obs, y_obs[:, j], "o", color=colors[j % len(colors)], ms=7,
                mec="black", label=f"{name} (observed)")
    if logy:
        ax.set_yscale("log")
    return _finish(fig, ax, xlabel, ylabel, title)


def fit_losses(losses, *, polish_start: int | None = None, title: str = "") -> Figure:
    """The loss curve of a fit on a log scale; `polish_start` marks the iteration
    where the Gauss–Newton (Levenberg–Marquardt) polish begins."""
    losses = np.asarray(losses, dtype=float)
    fig, ax = _subplots(figsize=(7, 4.2), layout="constrained")
    it = np.arange(1, len(losses) + 1)
    polished = polish_start is not None and 0 < polish_start < len(losses)
    if polished:
        ax.semilogy(it[:polish_start], losses[:polish_start], lw=1.5,
                    label="optimiser (Adam)")
        ax.semilogy(it[polish_start - 1:], losses[polish_start - 1:], lw=2,
                    label="Levenberg–Marquardt polish")
        ax.axvline(polish_start, color="gray", lw=0.8, ls=":")
    else:
        ax.semilogy(it, losses, lw=1.5)
    return _finish(fig, ax, "iteration", "mean squared residual", title,
                   legend=polished, grid_which="both")


def profiles(result, names: Sequence[str] | None = None, *, level: float = 0.95,
             title: str = "") -> Figure:
    """Profile likelihoods of a fit, one panel per parameter: the likelihood-ratio
    statistic against the parameter, the χ² threshold at `level` and the interval it
    cuts out (a flat curve that never reaches the threshold: not identifiable).

    - `result`: a `FitResult` (profiles are computed here) or a list of `Profile`s.
    - `names`: the parameters to draw; default every parameter of `params`.
    """
    if isinstance(result, (list, tuple)):
        items = list(result)
    else:
        names = list(result.params) if names is None and isinstance(
            result.params, dict) else names
        if names is None:
            raise ValueError("`names` is needed when `params` is not a dict.")
        items = [result.profile(name, level=level) for name in names]
    fig, axes = _subplots(1, len(items), figsize=(3.3 * len(items), 3.3),
                          layout="constrained", squeeze=False)
    for ax, prof in zip(axes[0], items):
        ax.plot(prof.values, prof.deviance, "-o", ms=3, lw=1.5, label="profile")
        ax.axhline(prof.threshold, color="gray", ls="--", lw=1,
                   label=f"χ² {100 * prof.level:g} %")
        ax.axvline(prof.estimate, color="black", lw=0.8, ls=":")
        low, high = prof.interval
        span = [v for v in (low, high) if np.isfinite(v)]
        if span:
            ax.axvspan(max(low, prof.values.min()), min(high, prof.values.max()),
                       color="tab:green", alpha=0.12, label="interval")
        ax.set_xlabel(prof.name)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("likelihood-ratio statistic")
    axes[0][0].legend(frameon=False, fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def waterfall(result, *, title: str = "") -> Figure:
    """The final objective of every start of a multistart fit, sorted (as in
    pyPESTO): a plateau of starts at the lowest value suggests the global optimum
    was found. `result` is a `FitResult` with `starts_losses`, or the losses."""
    losses = getattr(result, "starts_losses", result)
    if losses is None:
        raise ValueError("the fit has one start; pass `multistart=n` to `fit`.")
    losses = np.sort(np.asarray(losses, dtype=float))
    fig, ax = _subplots(figsize=(6, 4), layout="constrained")
    offset = losses - losses[0]
    floor = max(1e-12, 1e-9 * max(1.0, abs(losses[0])))
    ax.semilogy(np.arange(1, len(losses) + 1), offset + floor, "o-", ms=5)
    return _finish(fig, ax, "start (sorted by final objective)",
                   "final objective − best", title, legend=False, grid_which="both")


# ----- posterior sampling


def _names(post, names):
    names = post.names if names is None else list(names)
    for name in names:
        post.draws_of(name)  # a clear error for an unknown label
    return names


def posterior(post, names: Sequence[str] | None = None, *, title: str = "",
              bins: int = 40, max_trace: int = 400) -> Figure:
    """Trace and marginal density of each estimated number of a `Posterior`, one row
    per number: the draws of every chain against the iteration (left; mixed chains
    overlap as one band), and the histogram of all draws with their 5, 50 and 95 %
    quantiles (right).

    - `names`: labels to draw (`"alpha"`, `"y0[0]"`, `"sigma[1]"`); default all.
    - `max_trace`: draws per chain in the traces (every k-th beyond it; the
      histograms use all).
    """
    names = _names(post, names)
    fig, axes = _subplots(len(names), 2, figsize=(9, 1.7 * len(names) + 0.6),
                          layout="constrained", squeeze=False,
                          gridspec_kw={"width_ratios": [3, 1.3]})
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    rows = post.summary()
    for (trace, dens), name in zip(axes, names):
        x = post.draws_of(name)
        every = max(1, -(-x.shape[1] // max_trace))
        shown = np.arange(0, x.shape[1], every)
        for c in range(x.shape[0]):
            trace.plot(shown, x[c, shown], lw=0.5, alpha=0.75,
                       color=colors[c % len(colors)], label=f"chain {c}")
        trace.set_ylabel(name)
        trace.grid(alpha=0.3)
        dens.hist(x.reshape(-1), bins=bins, density=True, color="C0", alpha=0.45)
        r = rows[name]
        for q, style in ((r["q05"], ":"), (r["q50"], "-"), (r["q95"], ":")):
            dens.axvline(q, color="black", lw=0.9, ls=style)
        dens.set_yticks([])
        dens.set_title(f"R-hat {r['r_hat']:.3f}, ESS {r['ess']:.0f}", fontsize=8)
        dens.grid(alpha=0.3)
    axes[-1][0].set_xlabel("draw (after the warmup)")
    axes[-1][1].set_xlabel("value (lines: 5, 50, 95 %)")
    axes[0][0].legend(frameon=False, fontsize=7, ncol=min(4, post.num_chains),
                      loc="upper right")
    if title:
        fig.suptitle(title)
    return fig


def posterior_pairs(post, names: Sequence[str] | None = None, *, title: str = "",
                    max_points: int = 2000) -> Figure:
    """Pair plot of a `Posterior`: every pair of numbers as a scatter of the draws
    (below the diagonal; divergent transitions in red), each number's histogram on
    the diagonal. Correlated parameters show as narrow, tilted clouds.

    - `names`: labels to draw; default all.
    - `max_points`: draws shown per panel (evenly spread over the chains).
    """
    names = _names(post, names)
    n = len(names)
    fig, axes = _subplots(n, n, figsize=(1.9 * n + 0.6, 1.9 * n + 0.4),
                          layout="constrained", squeeze=False)
    cols = [post.draws_of(name).reshape(-1) for name in names]
    divergent = np.asarray(post.divergent).reshape(-1)
    keep = np.unique(np.linspace(0, cols[0].size - 1, max_points).round().astype(int))
    for i in range(n):
        for j in range(n):
            ax = axes[i][j]
            if j > i:
                ax.set_axis_off()
                continue
            if i == j:
                ax.hist(cols[i], bins=30, color="C0", alpha=0.6)
                ax.set_yticks([])
            else:
                ax.scatter(cols[j][keep], cols[i][keep], s=2, alpha=0.35, color="C0")
                if divergent.any():
                    ax.scatter(cols[j][divergent], cols[i][divergent], s=6,
                               color="red")
            if i == n - 1:
                ax.set_xlabel(names[j])
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(names[i])
            elif j > 0:
                ax.set_yticklabels([])
            ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    return fig


def posterior_predictive(post, ts, t_obs, y_obs, *, labels: Sequence[str] | None = None,
                         level: float = 0.9, key=None, title: str = "",
                         xlabel: str = "t", ylabel: str = "y", t_offset: float = 0.0,
                         logy: bool = False, draws: int | None = None) -> Figure:
    """The observations with the posterior predictive bands of a `Posterior`: per
    observable the median curve, the band of the model curve, and the wider band
    where new observations should fall (noise included), both at `level`.

    - `ts`: times to draw the bands at (in the model's time).
    - `t_obs`, `y_obs`: the observations, shape `(n,)` and `(n, K)` (NaN where
      missing), drawn as dots.
    - `t_offset`: added to every time on the axis (e.g. a calendar year at t = 0).
    - `key`: a `jax.random` key for the new observations.
    - `draws`: posterior draws used (default all; see `Posterior.predict`).
    """
    curve = post.predict(ts, noise=False, level=level, draws=draws)
    new = post.predict(ts, noise=True, level=level, key=key, draws=draws)
    fig, ax = _subplots(figsize=(7.5, 4.4), layout="constrained")
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    t_axis = np.asarray(curve.ts) + t_offset
    y_obs = np.asarray(y_obs).reshape(len(t_obs), -1)
    for j in range(curve.median.shape[-1]):
        name = labels[j] if labels is not None else f"y[{j}]"
        color = colors[j % len(colors)]
        ax.fill_between(t_axis, new.low[:, j], new.high[:, j], color=color,
                        alpha=0.12, lw=0,
                        label=f"{name}: {100 * level:g} % new observations")
        ax.fill_between(t_axis, curve.low[:, j], curve.high[:, j], color=color,
                        alpha=0.3, lw=0, label=f"{name}: {100 * level:g} % curve")
        ax.plot(t_axis, curve.median[:, j], "-", color=color, lw=2,
                label=f"{name} (posterior median)")
        ax.plot(np.asarray(t_obs) + t_offset, y_obs[:, j], "o", color=color, ms=6,
                mec="black", label=f"{name} (observed)")
    if logy:
        ax.set_yscale("log")
    fig = _finish(fig, ax, xlabel, ylabel, title, legend=False)
    ax.legend(frameon=False, fontsize=7, ncol=2)
    return fig
