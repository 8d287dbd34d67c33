"""Pictures of a fitted mixture as an image file: component densities over a histogram (1-D),
points with 1σ and 2σ ellipses (2-D, a chosen pair, or a pair grid), or the EM convergence curve.

matplotlib is an optional extra, imported only when a picture is drawn (Agg, no GUI, no pyplot).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .describe import ellipse
from .errors import GmmError
from .files import STDIO, write_output

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = ("png", "svg", "pdf")
MAX_GRID_COLUMNS = 6
MAX_SCATTER_POINTS = 20_000
MAX_BINS = 100
DENSITY_POINTS = 1000
SINGLE_SIZE = (7.0, 6.0)
CELL_SIZE = 2.2
DPI = 100
LEGEND_LIMIT = 10
GREY = (0.55, 0.55, 0.55, 1.0)
# Dates and random ids left out of PDF and SVG files, so the same model gives the same bytes.
METADATA = {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


class Scene(NamedTuple):
    """What a picture shows: the model, the points (or None) and one colour per component."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    names: Sequence[str]
    data: np.ndarray | None
    labels: np.ndarray | None
    colours: np.ndarray


def render(
    out: str,
    weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    names: list[str],
    data: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    *,
    x: str | None = None,
    y: str | None = None,
    history: list[float] | None = None,
    convergence: bool = False,
) -> None:
    """Draw the mixture (or, with ``convergence``, its log-likelihood history) into ``out``.

    The picture depends on the columns shown: one gives densities over a histogram, two give
    points and ellipses, three to six give a pair grid; ``x`` and ``y`` pick two of many.
    ``covariances`` are full (k, d, d) matrices in the data's units whatever the model's type.
    """
    fmt = output_format(out)
    weights, means, covariances = _check_model(weights, means, covariances, names)
    data, labels = _check_data(data, labels, means.shape[1])
    if convergence:
        if not history:
            raise GmmError(
                f"{out}: the model holds no log-likelihood history (was it written by gmm fit?)"
            )
        _require_matplotlib()
        figure = _new_figure(SINGLE_SIZE)
        _draw_convergence(figure.add_subplot(), np.asarray(history, dtype=float))
        _save(figure, out, fmt)
        return

    columns = choose_columns(out, names, x, y)
    _require_matplotlib()
    scene = Scene(weights, means, covariances, names, data, labels, _palette(len(weights)))
    if len(columns) == 1:
        figure = _new_figure(SINGLE_SIZE)
        _draw_one_column(figure, scene)
    elif len(columns) == 2:
        figure = _new_figure(SINGLE_SIZE)
        _draw_two_columns(figure, scene, columns)
    else:
        figure = _new_figure((CELL_SIZE * len(columns), CELL_SIZE * len(columns)))
        _draw_pair_grid(figure, scene, columns)
    _save(figure, out, fmt)


def ellipse_axes(cov2: np.ndarray, n_sigma: float) -> tuple[float, float, float]:
    """Width, height and angle (degrees, in [0, 180)) of the n·σ ellipse of a 2×2 covariance,
    as matplotlib's Ellipse wants them: full lengths 2n√λ₁ ≥ 2n√λ₂ along the eigenvectors
    (the axes and angle come from ``describe.ellipse``)."""
    shape = ellipse(np.asarray(cov2, dtype=float))
    major, minor = shape["semi_axes"]
    return 2.0 * n_sigma * major, 2.0 * n_sigma * minor, shape["angle_degrees"] % 180.0


def output_format(out: str) -> str:
    """The image format named by the extension of ``out`` (png without one, and for stdout)."""
    extension = os.path.splitext(out)[1].lower().lstrip(".")
    if out == STDIO or not extension:
        return "png"
    if extension not in FORMATS:
        supported = ", ".join(f".{name}" for name in FORMATS)
        raise GmmError(f"{out}: cannot draw a '.{extension}' file; use one of {supported}")
    return extension


def choose_columns(out: str, names: Sequence[str], x: str | None, y: str | None) -> list[int]:
    """Indices of the columns to show: [x, y] if chosen, else all of them (at most six)."""
    if x is None and y is None:
        if len(names) > MAX_GRID_COLUMNS:
            raise GmmError(
                f"{out}: {len(names)} columns are too many for a pair grid; "
                "choose two with --x and --y"
            )
        return list(range(len(names)))
    if x is None or y is None:
        given, missing = ("--x", "--y") if y is None else ("--y", "--x")
        raise GmmError(f"{out}: {given} needs {missing} too (choose two columns)")
    if x == y:
        raise GmmError(f"{out}: --x and --y are both '{x}'; choose two different columns")
    return [_column_index(out, names, option, name) for option, name in (("--x", x), ("--y", y))]


def _column_index(out: str, names: Sequence[str], option: str, name: str) -> int:
    if name not in names:
        listed = ", ".join(f"'{column}'" for column in names)
        raise GmmError(f"{out}: {option} '{name}' is not a column of the model (columns: {listed})")
    return list(names).index(name)


def _check_model(
    weights: np.ndarray, means: np.ndarray, covariances: np.ndarray, names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parameters as float arrays, with shapes (k,), (k, d), (k, d, d) and d names."""
    weights = np.asarray(weights, dtype=float)
    means = np.asarray(means, dtype=float)
    covariances = np.asarray(covariances, dtype=float)
    k = weights.shape[0] if weights.ndim == 1 else -1
    d = len(names)
    if k < 1 or means.shape != (k, d) or covariances.shape != (k, d, d) or d < 1:
        raise ValueError(
            f"render needs weights (k,), means (k, d), covariances (k, d, d) and d names; got "
            f"{weights.shape}, {means.shape}, {covariances.shape} and {d} names"
        )
    return weights, means, covariances


def _check_data(
    data: np.ndarray | None, labels: np.ndarray | None, d: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The points as an (n, d) float array and their labels as (n,) integers (or None)."""
    if data is None:
        return None, None
    data = np.asarray(data, dtype=float)
    if data.ndim != 2 or data.shape[1] != d:
        raise ValueError(f"render needs data of shape (n, {d}); got {data.shape}")
    if labels is None:
        return data, None
    labels = np.asarray(labels)
    if labels.shape != (data.shape[0],):
        raise ValueError(f"render needs {data.shape[0]} labels; got shape {labels.shape}")
    return data, labels.astype(np.int64)


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise GmmError("plotting needs matplotlib: pip install 'gmmcli[plot]'") from None


def _new_figure(size: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, out: str, fmt: str) -> None:
    """Render into memory, then write the file atomically (or to stdout for '-')."""
    from matplotlib import rc_context

    buffer = io.BytesIO()
    with rc_context({"svg.hashsalt": "gmmcli"}):
        figure.savefig(buffer, format=fmt, dpi=DPI, metadata=METADATA[fmt])
    write_output(out, buffer.getvalue())


def _palette(k: int) -> np.ndarray:
    """One RGBA colour per component from a qualitative colormap (tab10, or tab20 beyond ten)."""
    from matplotlib import colormaps

    colours = colormaps["tab10" if k <= 10 else "tab20"].colors
    return np.array([(*colours[i % len(colours)], 1.0) for i in range(k)])


def _title(k: int) -> str:
    return f"Gaussian mixture, {k} component{'' if k == 1 else 's'}"


def _draw_one_column(figure: Figure, scene: Scene) -> None:
    axes = figure.add_subplot()
    points = None if scene.data is None else scene.data[:, 0]
    _draw_densities(axes, scene, 0, points, legend=True)
    axes.set_xlabel(scene.names[0])
    axes.set_ylabel("density")
    axes.set_title(f"{_title(len(scene.weights))}: {scene.names[0]}")


def _draw_two_columns(figure: Figure, scene: Scene, columns: list[int]) -> None:
    axes = figure.add_subplot()
    _draw_pair(axes, scene, columns, point_size=6.0, marker_size=80.0)
    x_name, y_name = (scene.names[j] for j in columns)
    axes.set_xlabel(x_name)
    axes.set_ylabel(y_name)
    axes.set_title(f"{_title(len(scene.weights))}: {y_name} against {x_name}")
    if len(scene.weights) <= LEGEND_LIMIT:
        _ellipse_legend(axes)


def _ellipse_legend(axes: Axes) -> None:
    """The components' mean markers, and what the solid and dashed lines are."""
    from matplotlib.lines import Line2D

    handles, labels = axes.get_legend_handles_labels()
    for style, label in (("-", "1σ ellipse"), ("--", "2σ ellipse")):
        handles.append(Line2D([], [], color="0.3", linestyle=style, linewidth=1.6))
        labels.append(label)
    axes.legend(handles, labels, fontsize="small")


def _draw_pair_grid(figure: Figure, scene: Scene, columns: list[int]) -> None:
    """Row r, column c shows column c across and column r up; the diagonal shows densities."""
    p = len(columns)
    grid = figure.subplots(p, p, squeeze=False, sharex="col")
    for r, row_column in enumerate(columns):
        for c, col_column in enumerate(columns):
            axes = grid[r, c]
            if r == c:
                points = None if scene.data is None else scene.data[:, col_column]
                _draw_densities(axes, scene, col_column, points)
            else:
                _draw_pair(axes, scene, [col_column, row_column], point_size=2.0, marker_size=30.0)
            axes.tick_params(labelsize="x-small")
            if r == p - 1:
                axes.set_xlabel(scene.names[col_column], fontsize="small")
            if c == 0:
                axes.set_ylabel(scene.names[row_column], fontsize="small")
    title = _title(len(scene.weights))
    figure.suptitle(f"{title}: 1σ and 2σ ellipses, densities on the diagonal")


def _draw_pair(
    axes: Axes, scene: Scene, pair: list[int], point_size: float, marker_size: float
) -> None:
    """The points on two columns (those with both cells: the others have no place there),
    coloured by the label of the whole row, and each component's marginal ellipses."""
    if scene.data is not None:
        points = scene.data[:, pair]
        seen = ~np.isnan(points).any(axis=1)
        labels = None if scene.labels is None else scene.labels[seen]
        _draw_points(axes, points[seen], labels, scene.colours, point_size)
    means, covariances = _marginal(scene.means, scene.covariances, pair)
    _draw_ellipses(axes, means, covariances, scene.colours, marker_size)


def _marginal(
    means: np.ndarray, covariances: np.ndarray, columns: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Each component's mean sub-vector and covariance sub-matrix on ``columns``."""
    return means[:, columns], covariances[:, columns][:, :, columns]


def _draw_densities(
    axes: Axes, scene: Scene, column: int, points: np.ndarray | None, *, legend: bool = False
) -> None:
    """A density histogram of ``points`` (all of them), the mixture Σ_k π_k N(x | μ_k, σ_k²) on
    ``column`` as a thick dark line and each weighted component π_k N(x | μ_k, σ_k²) over it."""
    weights, colours = scene.weights, scene.colours
    if points is not None:  # a row missing this cell has no place on its axis
        points = points[~np.isnan(points)]
    means, variances = scene.means[:, column], scene.covariances[:, column, column]
    sigmas = np.sqrt(np.clip(variances, np.finfo(float).tiny, None))
    grid = _density_grid(points, means, sigmas)
    if points is not None and points.size:
        axes.hist(
            points,
            bins=_histogram_bins(points, float(sigmas.min())),
            density=True,
            color="0.82",
            edgecolor="white",
            linewidth=0.3,
        )
    z = (grid[None, :] - means[:, None]) / sigmas[:, None]
    components = weights[:, None] * np.exp(-0.5 * z**2) / (sigmas[:, None] * math.sqrt(2 * math.pi))
    axes.plot(grid, components.sum(axis=0), color="0.15", linewidth=3.0, label="mixture")
    for k, density in enumerate(components):
        label = f"component {k} (π = {weights[k]:.3g})"
        axes.plot(grid, density, color=colours[k], linewidth=1.5, label=label)
    axes.set_xlim(grid[0], grid[-1])
    axes.set_ylim(bottom=0.0)
    if legend and len(weights) <= LEGEND_LIMIT:
        axes.legend(loc="best", fontsize="small")


def _histogram_bins(points: np.ndarray, narrowest_sigma: float) -> int:
    """numpy's 'auto' number of bins, or more so that a bin is no wider than the narrowest
    component's σ (a wide bin flattens a narrow peak), at most MAX_BINS."""
    auto = len(np.histogram_bin_edges(points, bins="auto")) - 1
    span = float(points.max() - points.min())
    by_sigma = math.ceil(span / narrowest_sigma) if narrowest_sigma > 0 else MAX_BINS
    return max(1, min(MAX_BINS, max(auto, by_sigma)))


def _density_grid(points: np.ndarray | None, means: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Evenly spaced x values covering the points and μ ± 4σ of every component."""
    low = float(np.min(means - 4 * sigmas))
    high = float(np.max(means + 4 * sigmas))
    if points is not None and points.size:
        low, high = min(low, float(points.min())), max(high, float(points.max()))
    if not high > low:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, DENSITY_POINTS)


def _draw_points(
    axes: Axes, points: np.ndarray, labels: np.ndarray | None, colours: np.ndarray, size: float
) -> None:
    """A scatter of at most MAX_SCATTER_POINTS points (every m-th), coloured by label."""
    step = max(1, math.ceil(len(points) / MAX_SCATTER_POINTS))
    shown = points[::step]
    if labels is None:
        point_colours = np.tile(GREY, (len(shown), 1))
    else:
        shown_labels = labels[::step]
        known = (shown_labels >= 0) & (shown_labels < len(colours))
        point_colours = np.tile(GREY, (len(shown), 1))
        point_colours[known] = colours[shown_labels[known]]
    axes.scatter(
        shown[:, 0], shown[:, 1], s=size, c=point_colours, alpha=0.5, linewidths=0, rasterized=True
    )


def _draw_ellipses(
    axes: Axes, means: np.ndarray, covariances: np.ndarray, colours: np.ndarray, marker_size: float
) -> None:
    """Each component's mean as a cross and its 1σ (solid) and 2σ (dashed) ellipses."""
    from matplotlib.patches import Ellipse

    for k, (mean, covariance) in enumerate(zip(means, covariances, strict=True)):
        for n_sigma, style in ((1.0, "-"), (2.0, "--")):
            width, height, angle = ellipse_axes(covariance, n_sigma)
            ellipse = Ellipse(
                (float(mean[0]), float(mean[1])),
                width,
                height,
                angle=angle,
                fill=False,
                edgecolor=colours[k],
                linewidth=1.6,
                linestyle=style,
            )
            axes.add_patch(ellipse)
        axes.scatter(
            [mean[0]],
            [mean[1]],
            marker="X",
            s=marker_size,
            color=colours[k],
            edgecolors="black",
            linewidths=0.8,
            zorder=3,
            label=f"component {k}",
        )
    axes.autoscale_view()


def _draw_convergence(axes: Axes, history: np.ndarray) -> None:
    """The mean log-likelihood per row after each EM iteration (0 is the starting point)."""
    from matplotlib.ticker import MaxNLocator

    iterations = np.arange(len(history))
    axes.plot(iterations, history, marker="o", markersize=4, linewidth=1.5, color="tab:blue")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("iteration")
    axes.set_ylabel("mean log-likelihood per row")
    axes.grid(True, alpha=0.3)
    done = len(history) - 1
    axes.set_title(f"EM convergence: {done} iteration{'' if done == 1 else 's'}")


def _model_name(record: dict) -> str:
    """A grid cell's line: its covariance model, "+noise" with a noise component."""
    return record["covariance_type"] + ("+noise" if record.get("noise") else "")


def render_criterion(out: str, records: Sequence[dict], criterion: str, chosen: dict) -> None:
    """The criterion against k, one line per covariance model (mclust's ``plot(BIC)``, in
    gmm's lower-is-better sign); degenerate cells are left out of the lines, and ``chosen``
    (select's choice) is ringed."""
    _require_matplotlib()
    fmt = output_format(out)
    figure = _new_figure((7.0, 4.5))
    axes = figure.add_subplot()
    models = list(dict.fromkeys(_model_name(r) for r in records))
    colours = _palette(len(models))
    healthy = [r for r in records if not r["degenerate"]]
    for colour, model in zip(colours, models, strict=True):
        points = sorted(
            (r["n_components"], r[criterion]) for r in healthy if _model_name(r) == model
        )
        if points:
            ks, values = zip(*points, strict=True)
            axes.plot(
                ks, values, marker="o", markersize=4, linewidth=1.2, color=colour, label=model
            )
    axes.scatter([chosen["n_components"]], [chosen[criterion]], s=160, facecolors="none",
                 edgecolors="black", linewidths=1.2, zorder=4)  # fmt: skip
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("number of components k")
    axes.set_ylabel(f"{criterion.upper()} (lower is better)")
    axes.grid(True, alpha=0.3)
    axes.legend(ncols=2 if len(models) > 7 else 1, fontsize="small", frameon=False)
    axes.set_title(f"model selection by {criterion.upper()}")
    _save(figure, out, fmt)
