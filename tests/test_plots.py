"""Plots: every panel, title and label inside the figure, readable tick labels, a labelled log axis, and a
cost-surface arrow that ends at the lowest loss along -gradient."""
import math
import struct

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from derive.plots import (CURVES_DPI, MAX_LOG_TICKS, SURFACE_DPI, _value_axis, curves_figure, new_figure,  # noqa: E402
                          plot_curves, plot_surface, surface_figure)
from derive.surface import line_minimum, loss_surface  # noqa: E402

LONG_TITLE = "tiny_regression (2 -> 6 (tanh) -> 1 (identity), loss mse): adam, lr 0.001, batch 32"


@pytest.fixture(scope="module", autouse=True)
def _matplotlib(matplotlib_config):
    yield matplotlib_config


# ---------------------------------------------------------------- the checks, and a planted failure for each


def outside(figure, margin: float = 1.0) -> list[str]:
    """What is drawn outside the figure (less `margin` pixels): every axes' tight box (its ticks, labels,
    title, legend; colorbars are axes too) and the figure's title, by the renderer."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    room = figure.bbox.padded(-margin)
    boxes = [(f"axes {i} ({ax.get_title() or ax.get_label()})", ax.get_tightbbox(renderer))
             for i, ax in enumerate(figure.axes)]
    if figure._suptitle is not None:
        boxes.append(("title", figure._suptitle.get_window_extent(renderer)))
    return [name for name, box in boxes
            if box.x0 < room.x0 or box.y0 < room.y0 or box.x1 > room.x1 or box.y1 > room.y1]


def shown_labels(axis):
    """The tick labels an axis draws: those of ticks inside its view, with text."""
    lo, hi = sorted(axis.get_view_interval())
    span = hi - lo
    return [tick.label1 for tick, at in zip(axis.get_major_ticks(), axis.get_majorticklocs())
            if lo - 1e-9 * span <= at <= hi + 1e-9 * span and tick.label1.get_text()]


def crowded(figure, gap: float = 2.0) -> list[str]:
    """Neighbouring tick labels of a 2-D axis closer than `gap` pixels (or overlapping)."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    found = []
    for ax in figure.axes:
        if ax.name == "3d":
            continue
        for axis, lo, hi in ((ax.xaxis, "x0", "x1"), (ax.yaxis, "y0", "y1")):
            boxes = sorted((label.get_window_extent(renderer) for label in shown_labels(axis)),
                           key=lambda box: getattr(box, lo))
            found += [f"{ax.get_title()}: {axis.axis_name} labels" for a, b in zip(boxes, boxes[1:])
                      if getattr(b, lo) - getattr(a, hi) < gap]
    return found


def is_nice(values) -> bool:
    """Evenly spaced at 1, 2 or 5 times a power of ten."""
    steps = np.diff(values)
    if len(values) < 2 or not np.allclose(steps, steps[0], rtol=1e-6):
        return False
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
    return any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 5, 10))


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_the_checks_catch_what_they_look_for():
    figure = new_figure("test", figsize=(4, 3), layout="constrained")
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1])
    figure.suptitle(LONG_TITLE)                     # not fitted: wider than 4 inches
    assert outside(figure) == ["title"]
    from matplotlib.ticker import MaxNLocator
    ax.yaxis.set_major_locator(MaxNLocator(nbins=60))
    assert crowded(figure)
    assert is_nice([0.35, 0.4, 0.45]) and is_nice([2, 4, 6]) and not is_nice([0.345, 0.36, 0.375])
    assert not is_nice([0.1, 0.2, 0.4])


# ---------------------------------------------------------------- training curves


def rows(n=12, accuracy=True, error=None, test=True, start=2.0):
    out = []
    for e in range(1, n + 1):
        row = {"epoch": e, "train_loss": start * 0.8 ** e, "test_loss": start * 0.82 ** e if test else None,
               "test_accuracy": (0.9 + 0.005 * e if accuracy else None) if test else None}
        if error:
            row[f"test_{error}"] = 0.9 * 0.9 ** e
        out.append(row)
    return out


CURVES = {
    "classification": ({"epochs": rows()}, 2),
    "regression": ({"epochs": rows(accuracy=False, error="rmse")}, 2),
    "regression, mae": ({"epochs": rows(accuracy=False, error="mae")}, 2),
    "no test set": ({"epochs": rows(test=False)}, 1),
    "sharpness": ({"epochs": [{**r, "sharpness": 2 + r["epoch"] / 10} for r in rows()],
                   "sharpness": {"initial": 2.0, "examples": 100, "threshold": 2.0, "threshold_formula": "2/lr"}}, 3),
}


@pytest.mark.parametrize("kind", sorted(CURVES))
def test_curves_fit_their_figure(kind, tmp_path):
    metrics, panels = CURVES[kind]
    figure = curves_figure(metrics, LONG_TITLE)
    assert len(figure.axes) == panels
    assert outside(figure, margin=2) == [] and crowded(figure) == []
    # The PNG is the figure at its dpi, and the title (wrapped if it must be) says all of it.
    plot_curves(metrics, tmp_path / "c.png", LONG_TITLE)
    assert np.all(np.abs(np.array(png_size(tmp_path / "c.png")) - figure.get_size_inches() * CURVES_DPI) < 1)
    assert " ".join(figure._suptitle.get_text().split()) == LONG_TITLE
    loss = figure.axes[0]
    assert loss.get_yscale() == "log" and "log scale" in loss.get_ylabel()


def test_one_panel_wraps_its_title_and_two_panels_do_not():
    assert "\n" in curves_figure(CURVES["no test set"][0], LONG_TITLE)._suptitle.get_text()
    assert "\n" not in curves_figure(CURVES["classification"][0], LONG_TITLE)._suptitle.get_text()


def test_regression_panel_shows_the_error():
    figure = curves_figure(CURVES["regression"][0])
    assert figure.axes[1].get_title().startswith("test RMSE (last ")
    assert "accuracy" not in " ".join(ax.get_title() + ax.get_ylabel() for ax in figure.axes)


@pytest.mark.parametrize("lo, hi", [(0.22, 0.41), (0.34, 1.9), (0.3, 0.3), (1e-4, 3.0), (0.5, 0.5), (1e-12, 1e3),
                                    (0.69, 0.83), (3e5, 2e8)])
def test_log_axis_labels_at_least_two_ticks_around_the_data(lo, hi):
    figure = new_figure("test", figsize=(5, 4), layout="constrained")
    ax = figure.subplots()
    values = list(np.geomspace(lo, hi, 9))
    ax.plot(range(9), values)
    _value_axis(ax, values, "loss")
    figure.canvas.draw()
    bottom, top = ax.get_ylim()
    assert bottom <= lo and hi <= top and bottom < top
    labels = [float(label.get_text()) for label in shown_labels(ax.yaxis)]
    assert 2 <= len(labels) <= MAX_LOG_TICKS + 1, labels
    assert ax.get_ylabel() == "loss, log scale" and crowded(figure) == []


def test_log_axis_turns_linear_for_a_zero_loss():
    figure = new_figure("test", figsize=(5, 4))
    ax = figure.subplots()
    _value_axis(ax, [0.5, 0.1, 0.0], "loss")
    assert ax.get_yscale() == "linear" and ax.get_ylabel() == "loss"


# ---------------------------------------------------------------- the cost surface


class Quadratic:
    """A stand-in for a generated module: loss (a - 1)^2 + 10 (b + 0.5)^2 in w = (a, b), Hessian diag(2, 20)."""
    H = np.diag([2.0, 20.0])

    @staticmethod
    def loss(params, x, y):
        a, b = params["w"]
        return (a - 1) ** 2 + 10 * (b + 0.5) ** 2

    @staticmethod
    def gradient(params):
        a, b = params["w"]
        return np.array([2 * (a - 1), 20 * (b + 0.5)])


ELEMENTS = [("w", (0,)), ("w", (1,))]


def test_line_minimum_is_the_exact_line_search_step():
    params = {"w": np.array([0.0, 0.0])}
    g = Quadratic.gradient(params)
    du, dv, loss = line_minimum(Quadratic, params, None, None, ELEMENTS, g, span=2.0)
    # On a quadratic, the minimum along -g is t = g.g / g'Hg (Cauchy's step).
    expected = -g * (g @ g) / (g @ Quadratic.H @ g)
    np.testing.assert_allclose([du, dv], expected, rtol=1e-6)
    assert loss == pytest.approx(Quadratic.loss({"w": expected}, None, None), rel=1e-9)
    assert loss < Quadratic.loss(params, None, None)
    # The old arrow, a fifth of the grid along -g, ran past that minimum to a higher loss.
    old = -g / np.linalg.norm(g) * (2 * 2.0) / 5
    assert Quadratic.loss({"w": old}, None, None) > loss
    assert params["w"].tolist() == [0.0, 0.0]          # the caller's parameters are not moved


def test_line_minimum_stops_at_the_grid_edge_and_needs_a_gradient():
    params = {"w": np.array([0.0, 0.0])}
    g = Quadratic.gradient(params)
    du, dv, _ = line_minimum(Quadratic, params, None, None, ELEMENTS, g, span=0.01)
    assert max(abs(du), abs(dv)) == pytest.approx(0.01, rel=1e-6)          # on the edge, still downhill
    assert line_minimum(Quadratic, params, None, None, ELEMENTS, (0.0, 0.0), span=1.0) is None
    assert line_minimum(Quadratic, params, None, None, ELEMENTS, (np.nan, 1.0), span=1.0) is None


def quadratic_surface(span=1.5, steps=21):
    params = {"w": np.array([0.2, 0.1])}
    u, v, losses = loss_surface(Quadratic, params, None, None, ELEMENTS, span, steps)
    g = Quadratic.gradient(params)
    step = line_minimum(Quadratic, params, None, None, ELEMENTS, g, span)
    point = (0.2, 0.1, Quadratic.loss(params, None, None))
    return u, v, losses, point, g, step


@pytest.mark.parametrize("with_step", [True, False])
def test_surface_fits_its_figure_with_nice_colorbar_ticks(with_step, tmp_path):
    u, v, losses, point, g, step = quadratic_surface()
    step = step if with_step else None
    title = "quadratic: training loss over w[0] and w[1] around init_params(seed=0), the rest fixed"
    figure = surface_figure(u, v, losses, ["w[0]", "w[1]"], point, g, title, step)
    assert outside(figure, margin=2) == []
    plot_surface(u, v, losses, ["w[0]", "w[1]"], point, g, tmp_path / "s.png", title, step)
    assert np.all(np.abs(np.array(png_size(tmp_path / "s.png")) - figure.get_size_inches() * SURFACE_DPI) < 1)
    colorbar = figure.axes[-1]
    ticks = [t for t in colorbar.get_yticks() if losses.min() <= t <= losses.max()]
    assert is_nice(ticks) and colorbar.get_ylabel() == "loss"
    legend = " ".join(t.get_text() for t in figure.axes[1].get_legend().get_texts())
    if with_step:
        assert "to the lowest loss on its line" in legend and f"{step[2]:.6g}" in legend
    else:
        assert "not to scale" in legend
    arrow = [child for child in figure.axes[1].texts if getattr(child, "arrow_patch", None) is not None]
    assert len(arrow) == 1
    end = np.array(arrow[0].xy) - point[:2]
    np.testing.assert_allclose(end, step[:2] if with_step else -g / np.linalg.norm(g) * (u[-1] - u[0]) / 5)
