"""Training curves and the cost surface as PNG files (matplotlib, Agg, no pyplot state)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import SpecError
from .files import write_file

PLOT_FIX = "pip install 'nnderive[plot]' (the plot extra: matplotlib)"



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
    """Write a PNG of the train and test loss per epoch, beside the test accuracy (when there is one)
    and the sharpness with its stability threshold (when training measured it: metrics["sharpness"])."""
    rows = metrics["epochs"]
    epochs = [r["epoch"] for r in rows]
    has_accuracy = any(r["test_accuracy"] is not None for r in rows)
    sharpness = metrics.get("sharpness")
    panels = 1 + has_accuracy + (sharpness is not None)
    figure = new_figure("--plot", figsize=(0.5 + 5.25 * panels, 4.2), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    ax = axes[0]
    ax.plot(epochs, [r["train_loss"] for r in rows], "o-", ms=3, label="train")
    if any(r["test_loss"] is not None for r in rows):
        ax.plot(epochs, [r["test_loss"] for r in rows], "s-", ms=3, label="test")
    ax.set(xlabel="epoch", ylabel="loss (batch mean)", yscale="log", title="loss")
    from matplotlib.ticker import FuncFormatter  # importable: _figure succeeded
    for set_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        set_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 0.2, not 2 x 10^-1
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if has_accuracy:
        ax = axes[1]
        acc = [r["test_accuracy"] for r in rows]
        ax.plot(epochs, acc, "o-", ms=3, color="C2")
        ax.set(xlabel="epoch", ylabel="test accuracy", title=f"test accuracy (last {acc[-1]:.3f})")
        ax.grid(True, alpha=0.3)
    if sharpness is not None:
        _plot_sharpness(axes[-1], [0] + epochs, [sharpness["initial"]] + [r["sharpness"] for r in rows], sharpness)
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        figure.suptitle(title)
    write_file(Path(path), lambda f: figure.savefig(f, format="png", dpi=110))


def _plot_sharpness(ax, epochs, values, about) -> None:
    """The sharpness per epoch (epoch 0: the starting point), with the optimizer's stability threshold."""
    shown = [np.nan if value is None else value for value in values]
    ax.plot(epochs, shown, "o-", ms=3, color="C3", label="top Hessian eigenvalue")
    if about.get("threshold") is not None:
        ax.axhline(about["threshold"], color="k", ls="--", lw=1,
                   label=f"{about['threshold_formula']} = {about['threshold']:.4g} (stability threshold)")
    last = next((v for v in reversed(values) if v is not None), None)
    ax.set(xlabel="epoch", ylabel="sharpness",
           title=f"sharpness, {about['examples']} training examples"
                 + ("" if last is None else f" (last {last:.4g})"))
    ax.grid(True, alpha=0.3)
    ax.legend()


def plot_surface(u, v, losses, labels, point, gradient, path, title: str = "") -> None:
    """Write a PNG of the cost surface: a 3-D view beside a contour map with the current point.

    point: (u0, v0, loss0), the current values and loss; gradient: (dL/du, dL/dv) there,
    drawn as the step gradient descent would take (-gradient).
    """
    figure = new_figure("surface", figsize=(12, 5), layout="constrained")
    U, V = np.meshgrid(u, v)
    shown = np.where(np.isfinite(losses), losses, np.nan)
    from matplotlib.ticker import MaxNLocator  # importable: _figure succeeded
    ax3 = figure.add_subplot(1, 2, 1, projection="3d", computed_zorder=False)  # keep the point above the surface
    ax3.plot_surface(U, V, shown, cmap="viridis", rstride=1, cstride=1, linewidth=0, antialiased=True, alpha=0.9)
    ax3.scatter([point[0]], [point[1]], [point[2]], color="red", s=40, depthshade=False, zorder=5,
                label="current point")
    ax3.set(xlabel=labels[0], ylabel=labels[1], title="cost surface")
    ax3.set_zlabel("loss", labelpad=12)
    for axis in (ax3.xaxis, ax3.yaxis, ax3.zaxis):
        axis.set_major_locator(MaxNLocator(5))
    ax3.legend(loc="upper left")
    ax = figure.add_subplot(1, 2, 2)
    filled = ax.contourf(U, V, shown, levels=30, cmap="viridis")
    ax.contour(U, V, shown, levels=15, colors="white", linewidths=0.5, alpha=0.6)
    figure.colorbar(filled, ax=ax, label="loss")
    ax.plot(point[0], point[1], "o", color="red", label=f"current point (loss {point[2]:.4g})")
    g = np.asarray(gradient, dtype=float)
    if np.all(np.isfinite(g)) and np.linalg.norm(g) > 0:
        d = -g / np.linalg.norm(g) * (u[-1] - u[0]) / 5  # a fixed length: the direction is what counts
        ax.annotate("", xy=(point[0] + d[0], point[1] + d[1]), xytext=(point[0], point[1]),
                    arrowprops={"arrowstyle": "-|>", "color": "red", "lw": 2, "mutation_scale": 18})
        ax.plot([], [], color="red", label="-gradient (steepest descent)")
    ax.set(xlabel=labels[0], ylabel=labels[1], title="contours", aspect="equal")
    ax.legend(loc="upper right", fontsize="small")
    if title:
        figure.suptitle(title)
    write_file(Path(path), lambda f: figure.savefig(f, format="png", dpi=100))
