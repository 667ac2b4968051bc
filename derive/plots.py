"""Training curves and the cost surface as PNG files (matplotlib, Agg, no pyplot state)."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from .errors import SpecError
from .files import write_file

PLOT_FIX = "pip install 'nnderive[plot]' (the plot extra: matplotlib)"
NICE_STEPS = [1, 2, 5, 10]          # tick steps for MaxNLocator: 0.05 apart, not matplotlib's default 0.015
CURVES_DPI, SURFACE_DPI = 110, 100
MAX_LOG_TICKS = 7                     # labelled ticks on a log axis of losses
PAD = 0.08                            # inches of figure edge kept clear by the layout (matplotlib's own: 0.04)


def new_figure(flag: str, **kwargs):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise SpecError(flag, "", "matplotlib is not installed", PLOT_FIX) from None
    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def plot_curves(metrics: dict, path, title: str = "") -> None:
    """Write a PNG of the train and test loss per epoch, beside the test accuracy or regression error
    (when there is one) and the sharpness with its stability threshold (when training measured it)."""
    figure = curves_figure(metrics, title)
    write_file(Path(path), lambda f: figure.savefig(f, format="png", dpi=CURVES_DPI))


def curves_figure(metrics: dict, title: str = ""):
    """The figure plot_curves writes: one panel for the loss (log scale), one for the test accuracy or
    the regression error (test_rmse, test_mae: see derive.train.ERRORS) when the rows have one, one
    for the sharpness when metrics has it."""
    from .train import ERRORS
    rows = metrics["epochs"]
    epochs = [r["epoch"] for r in rows]
    error = next((key for key in ERRORS if any(r.get(f"test_{key}") is not None for r in rows)), None)
    has_accuracy = error is None and any(r.get("test_accuracy") is not None for r in rows)
    sharpness = metrics.get("sharpness")
    panels = 1 + (has_accuracy or error is not None) + (sharpness is not None)
    figure = new_figure("--plot", figsize=(0.5 + 5.25 * panels, 4.2), layout="constrained")
    figure.get_layout_engine().set(w_pad=PAD, h_pad=PAD)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    ax = axes[0]
    curves = [("train", "o-", [r["train_loss"] for r in rows])]
    if any(r.get("test_loss") is not None for r in rows):
        curves.append(("test", "s-", [r["test_loss"] for r in rows]))
    for label, style, values in curves:
        ax.plot(epochs, _shown(values), style, ms=3, label=label)
    _value_axis(ax, [v for _, _, values in curves for v in values], "loss (batch mean)")
    ax.set(xlabel="epoch", title="loss")
    ax.legend()
    if has_accuracy:
        ax = axes[1]
        acc = [r["test_accuracy"] for r in rows]
        ax.plot(epochs, _shown(acc), "o-", ms=3, color="C2")
        _nice_linear(ax.yaxis, nbins=6)
        last = next((a for a in reversed(acc) if a is not None), None)
        ax.set(xlabel="epoch", ylabel="test accuracy",
               title="test accuracy" + ("" if last is None else f" (last {last:.3f})"))
        ax.grid(True, alpha=0.3)
    elif error is not None:
        ax = axes[1]
        values = [r.get(f"test_{error}") for r in rows]
        ax.plot(epochs, _shown(values), "o-", ms=3, color="C2")
        _value_axis(ax, values, f"test {ERRORS[error]}")
        last = next((v for v in reversed(values) if v is not None), None)
        ax.set(xlabel="epoch", title=f"test {ERRORS[error]}" + ("" if last is None else f" (last {last:.4g})"))
    if sharpness is not None:
        _plot_sharpness(axes[-1], [0] + epochs, [sharpness["initial"]] + [r["sharpness"] for r in rows], sharpness)
    for ax in axes:
        _nice_linear(ax.xaxis, nbins=8, integer=True)
    if title:
        fit_suptitle(figure, title)
    return figure


def _shown(values) -> list[float]:
    return [np.nan if v is None else v for v in values]


def _nice_linear(axis, nbins: int, integer: bool = False) -> None:
    """Ticks at 1, 2, 2.5 or 5 times a power of ten, at most nbins of them, written without an offset."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter
    axis.set_major_locator(MaxNLocator(nbins=nbins, steps=NICE_STEPS, integer=integer))
    axis.set_major_formatter(ScalarFormatter(useOffset=False))


def _value_axis(ax, values, label: str) -> None:
    """A y axis for positive values that may span decades (losses, errors): log scale, labelled so, with
    limits at the labelled ticks just outside the data, so at least two labels show. The labels are at
    1-9, 1-2-3-5, 1-2-5 or 1 times powers of ten: the densest of those giving at most MAX_LOG_TICKS.
    Linear (nice ticks) when a value is 0 or below, which a log axis cannot show."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter
    finite = [v for v in values if v is not None and math.isfinite(v)]
    ax.grid(True, which="major", alpha=0.3)
    if not finite or min(finite) <= 0:
        _nice_linear(ax.yaxis, nbins=6)
        ax.set_ylabel(label)
        return
    lo, hi = min(finite), max(finite)
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 2)
    for subs in ((1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 5), (1, 2, 5), (1,)):
        ticks = sorted(float(f"{s}e{k}") for k in decades for s in subs)   # 3e-1 is 0.3; 3 * 0.1 is not
        below = max(t for t in ticks if t <= lo * (1 + 1e-12))
        above = min(t for t in ticks if t >= hi * (1 - 1e-12))
        if below == above:                   # a single value at a tick: one tick either side
            above = min(t for t in ticks if t > above)
        shown = [t for t in ticks if below <= t <= above]
        if len(shown) <= MAX_LOG_TICKS:
            break
    ax.set_yscale("log")
    ax.set_ylim(below, above)
    if len(shown) <= MAX_LOG_TICKS:
        ax.yaxis.set_major_locator(FixedLocator(shown))
    else:                                    # many decades: matplotlib's choice of every k-th decade
        ax.yaxis.set_major_locator(LogLocator(base=10, numticks=MAX_LOG_TICKS))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))   # 0.2, not 2 x 10^-1
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=range(1, 10), numticks=12))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="minor", alpha=0.12)
    ax.set_ylabel(f"{label}, log scale")


def fit_suptitle(figure, text: str, fontsize: str = "large"):
    """The figure's title, wrapped onto as many lines as it needs to fit the figure's width."""
    renderer = figure.canvas.get_renderer()
    room = figure.bbox.width - 2 * PAD * figure.dpi
    title = figure.suptitle(text, fontsize=fontsize)
    columns = len(text)
    for _ in range(8):                       # each pass narrows by the measured overflow: 2 suffice in practice
        width = title.get_window_extent(renderer).width
        if width <= room or columns <= 20:
            break
        columns = max(20, int(columns * room / width) - 1)
        title.set_text(textwrap.fill(text, columns))
    return title


def _plot_sharpness(ax, epochs, values, about) -> None:
    """The sharpness per epoch (epoch 0: the starting point), with the optimizer's stability threshold."""
    ax.plot(epochs, _shown(values), "o-", ms=3, color="C3", label="top Hessian eigenvalue")
    if about.get("threshold") is not None:
        ax.axhline(about["threshold"], color="k", ls="--", lw=1,
                   label=f"{about['threshold_formula']} = {about['threshold']:.4g} (stability threshold)")
    _nice_linear(ax.yaxis, nbins=6)
    last = next((v for v in reversed(values) if v is not None), None)
    ax.set(xlabel="epoch", ylabel="sharpness",
           title=f"sharpness, {about['examples']} training examples"
                 + ("" if last is None else f" (last {last:.4g})"))
    ax.grid(True, alpha=0.3)
    ax.legend()


def plot_surface(u, v, losses, labels, point, gradient, path, title: str = "", step=None) -> None:
    """Write a PNG of the cost surface: a 3-D view beside a contour map with the current point.

    point: (u0, v0, loss0), the current values and loss; gradient: (dL/du, dL/dv) there.
    step: (du, dv, loss) the move along -gradient to the lowest loss on that line within the grid
    (derive.surface.line_minimum), drawn as the arrow; None draws the direction of -gradient only,
    a fifth of the grid long, and the legend says it is not to scale.
    """
    figure = surface_figure(u, v, losses, labels, point, gradient, title, step)
    write_file(Path(path), lambda f: figure.savefig(f, format="png", dpi=SURFACE_DPI))


def surface_figure(u, v, losses, labels, point, gradient, title: str = "", step=None):
    """The figure plot_surface writes."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter
    figure = new_figure("surface", figsize=(12, 5.2), layout="constrained")
    figure.get_layout_engine().set(w_pad=PAD, h_pad=PAD)
    U, V = np.meshgrid(u, v)
    shown = np.where(np.isfinite(losses), losses, np.nan)
    ax3 = figure.add_subplot(1, 2, 1, projection="3d", computed_zorder=False)  # keep the point above the surface
    ax3.plot_surface(U, V, shown, cmap="viridis", rstride=1, cstride=1, linewidth=0, antialiased=True, alpha=0.9)
    ax3.scatter([point[0]], [point[1]], [point[2]], color="red", s=40, depthshade=False, zorder=5,
                label="current point")
    ax3.set(xlabel=labels[0], ylabel=labels[1], title="cost surface")
    ax3.set_zlabel("loss", labelpad=10)
    for axis in (ax3.xaxis, ax3.yaxis, ax3.zaxis):
        axis.set_major_locator(MaxNLocator(5, steps=NICE_STEPS))
        axis.set_major_formatter(ScalarFormatter(useOffset=False))
    ax3.legend(loc="upper left")
    ax = figure.add_subplot(1, 2, 2)
    levels = _levels(shown)
    filled = ax.contourf(U, V, shown, levels=levels, cmap="viridis")
    ax.contour(U, V, shown, levels=levels[::2] if np.ndim(levels) else 15, colors="white", linewidths=0.5,
               alpha=0.6)
    bar = figure.colorbar(filled, ax=ax, pad=0.03)
    bar.locator = MaxNLocator(nbins=6, steps=NICE_STEPS)
    bar.formatter = ScalarFormatter(useOffset=False)
    bar.set_label("loss", labelpad=8)
    ax.plot(point[0], point[1], "o", color="red", label=f"current point (loss {point[2]:.4g})")
    g = np.asarray(gradient, dtype=float)
    norm = float(np.linalg.norm(g)) if np.all(np.isfinite(g)) else 0.0
    if step is not None:
        d = np.asarray(step[:2], dtype=float)
        label = (f"-gradient (norm {norm:.2g}) to the lowest loss on its line in the grid: {step[2]:.6g}, "
                 f"{np.linalg.norm(d):.3g} away")
    elif norm > 0:
        d = -g / norm * (u[-1] - u[0]) / 5
        label = f"direction of -gradient (norm {norm:.2g}; length not to scale)"
    else:
        d = None
    if d is not None:
        ax.annotate("", xy=(point[0] + d[0], point[1] + d[1]), xytext=(point[0], point[1]),
                    arrowprops={"arrowstyle": "-|>", "color": "red", "lw": 2, "mutation_scale": 18,
                                "shrinkA": 0, "shrinkB": 0})
        ax.plot([], [], color="red", label=label)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(7, steps=NICE_STEPS))
    ax.set(xlabel=labels[0], ylabel=labels[1], title="contours", aspect="equal")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize="small", ncols=1, frameon=False)
    if title:
        fit_suptitle(figure, title)
    return figure


def _levels(shown):
    """Contour levels at nice steps across the finite losses (30 or so), or 30 matplotlib-chosen ones."""
    from matplotlib.ticker import MaxNLocator
    finite = shown[np.isfinite(shown)]
    if finite.size == 0 or finite.min() == finite.max():
        return 30
    return MaxNLocator(nbins=30, steps=NICE_STEPS).tick_values(finite.min(), finite.max())
