"""Tests for gmmcli.plot: real images for every kind of picture, every refused request, and the
ellipse geometry."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.image import imread

from gmmcli import plot
from gmmcli.errors import GmmError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def mixture(d: int, k: int = 3, n: int = 600, seed: int = 0):
    """A random k-component mixture in d columns and n points drawn from it, with labels."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(k, 5.0))
    means = rng.normal(scale=6.0, size=(k, d)) + 100.0
    factors = rng.normal(size=(k, d, d)) * 0.8
    covariances = factors @ factors.transpose(0, 2, 1) + 0.3 * np.eye(d)
    labels = rng.choice(k, size=n, p=weights)
    data = np.stack([rng.multivariate_normal(means[j], covariances[j]) for j in labels])
    names = [f"c{j + 1}" for j in range(d)]
    return weights, means, covariances, names, data, labels


def check_png(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The file is a real, non-blank PNG of about ``size`` (width, height) pixels."""
    raw = path.read_bytes()
    assert raw.startswith(PNG_SIGNATURE)
    assert len(raw) > 5_000
    image = imread(str(path))
    height, width = image.shape[:2]
    assert abs(width - size[0]) <= 0.1 * size[0]
    assert abs(height - size[1]) <= 0.1 * size[1]
    rgb = image[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05
    assert len(np.unique((rgb * 255).round().astype(np.uint8), axis=0)) > 20
    return image


def test_one_column_histogram_and_densities(tmp_path: Path) -> None:
    weights, means, covariances, names, data, labels = mixture(1)
    out = tmp_path / "one.png"
    plot.render(str(out), weights, means, covariances, names, data, labels)
    check_png(out, (700, 600))


def test_two_columns_scatter_and_ellipses(tmp_path: Path) -> None:
    weights, means, covariances, names, data, labels = mixture(2, k=4)
    out = tmp_path / "two.png"
    plot.render(str(out), weights, means, covariances, names, data, labels)
    check_png(out, (700, 600))


def test_chosen_pair_of_three_columns(tmp_path: Path) -> None:
    weights, means, covariances, names, data, labels = mixture(3)
    out = tmp_path / "pair.png"
    plot.render(str(out), weights, means, covariances, names, data, labels, x="c3", y="c1")
    check_png(out, (700, 600))


def test_pair_grid_of_four_columns(tmp_path: Path) -> None:
    weights, means, covariances, names, data, labels = mixture(4)
    out = tmp_path / "grid.png"
    plot.render(str(out), weights, means, covariances, names, data, labels)
    check_png(out, (880, 880))


def test_convergence_curve(tmp_path: Path) -> None:
    weights, means, covariances, names, _, _ = mixture(2)
    history = [-4.44, -4.32, -4.24, -4.2275, -4.2268, -4.22680]
    out = tmp_path / "convergence.png"
    plot.render(str(out), weights, means, covariances, names, history=history, convergence=True)
    check_png(out, (700, 600))


@pytest.mark.parametrize("d", [1, 2, 3])
def test_model_only(tmp_path: Path, d: int) -> None:
    weights, means, covariances, names, _, _ = mixture(d)
    out = tmp_path / f"model{d}.png"
    plot.render(str(out), weights, means, covariances, names)
    check_png(out, (700, 600) if d < 3 else (660, 660))


def test_points_without_labels_and_many_rows(tmp_path: Path) -> None:
    weights, means, covariances, names, data, _ = mixture(2, n=200)
    many = np.tile(data, (150, 1))  # 30,000 rows: the scatter is thinned to every 2nd point
    out = tmp_path / "grey.png"
    plot.render(str(out), weights, means, covariances, names, many)
    check_png(out, (700, 600))


@pytest.mark.parametrize("extension", ["svg", "pdf"])
def test_other_formats_are_reproducible(tmp_path: Path, extension: str) -> None:
    weights, means, covariances, names, data, labels = mixture(2, n=100)
    first, second = tmp_path / f"a.{extension}", tmp_path / f"b.{extension}"
    for out in (first, second):
        plot.render(str(out), weights, means, covariances, names, data, labels)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes().startswith(b"%PDF" if extension == "pdf" else b"<?xml")


def test_an_existing_file_is_replaced(tmp_path: Path) -> None:
    weights, means, covariances, names, data, labels = mixture(1)
    out = tmp_path / "old.png"
    out.write_bytes(b"old")
    plot.render(str(out), weights, means, covariances, names, data, labels)
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    assert [p.name for p in tmp_path.iterdir()] == ["old.png"]


def refused(out: str, d: int = 2, **options) -> GmmError:
    weights, means, covariances, names, data, labels = mixture(d, n=50)
    with pytest.raises(GmmError) as caught:
        plot.render(out, weights, means, covariances, names, data, labels, **options)
    assert caught.value.status == 2
    assert not os.path.exists(out)
    return caught.value


def test_seven_columns_need_a_pair(tmp_path: Path) -> None:
    out = str(tmp_path / "seven.png")
    error = refused(out, d=7)
    assert str(error) == (
        f"{out}: 7 columns are too many for a pair grid; choose two with --x and --y"
    )


def test_seven_columns_with_a_pair_are_drawn(tmp_path: Path) -> None:
    weights, means, covariances, names, data, labels = mixture(7)
    out = tmp_path / "seven.png"
    plot.render(str(out), weights, means, covariances, names, data, labels, x="c7", y="c2")
    check_png(out, (700, 600))


def test_unknown_column(tmp_path: Path) -> None:
    out = str(tmp_path / "unknown.png")
    message = str(refused(out, d=3, x="nope", y="c1"))
    assert message.startswith(out)
    assert "'nope'" in message and "--x" in message
    assert "'c1', 'c2', 'c3'" in message


@pytest.mark.parametrize(("x", "y", "given"), [("c1", None, "--x"), (None, "c2", "--y")])
def test_only_one_of_x_and_y(tmp_path: Path, x: str | None, y: str | None, given: str) -> None:
    out = str(tmp_path / "half.png")
    message = str(refused(out, d=3, x=x, y=y))
    assert message.startswith(f"{out}: {given} needs")


def test_same_column_twice(tmp_path: Path) -> None:
    out = str(tmp_path / "same.png")
    message = str(refused(out, d=3, x="c2", y="c2"))
    assert message.startswith(out) and "'c2'" in message


@pytest.mark.parametrize("history", [None, []])
def test_convergence_without_history(tmp_path: Path, history: list[float] | None) -> None:
    out = str(tmp_path / "conv.png")
    error = refused(out, convergence=True, history=history)
    assert str(error) == (
        f"{out}: the model holds no log-likelihood history (was it written by gmm fit?)"
    )


def test_unknown_extension(tmp_path: Path) -> None:
    out = str(tmp_path / "picture.bmp")
    message = str(refused(out))
    assert message.startswith(out)
    assert "'.bmp'" in message and ".png" in message and ".svg" in message and ".pdf" in message


def test_missing_folder(tmp_path: Path) -> None:
    out = str(tmp_path / "no" / "such" / "picture.png")
    message = str(refused(out))
    assert message.startswith(out) and "does not exist" in message


def test_shapes_that_do_not_fit_are_a_programming_error(tmp_path: Path) -> None:
    weights, means, covariances, names, data, _ = mixture(2)
    with pytest.raises(ValueError):
        plot.render(str(tmp_path / "x.png"), weights, means, covariances, ["only"], data)
    with pytest.raises(ValueError):
        plot.render(str(tmp_path / "x.png"), weights, means, covariances, names, data[:, :1])


def test_missing_matplotlib_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    weights, means, covariances, names, data, labels = mixture(2, n=50)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "none.png"
    with pytest.raises(GmmError) as caught:
        plot.render(str(out), weights, means, covariances, names, data, labels)
    assert str(caught.value) == "plotting needs matplotlib: pip install 'gmmcli[plot]'"
    assert caught.value.status == 2
    assert not out.exists()


def test_importing_the_module_does_not_import_matplotlib() -> None:
    code = "import sys, gmmcli.plot; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_ellipse_axes_of_a_diagonal_covariance() -> None:
    width, height, angle = plot.ellipse_axes(np.diag([9.0, 4.0]), 2.0)
    assert width == pytest.approx(2 * 2 * 3.0)
    assert height == pytest.approx(2 * 2 * 2.0)
    assert angle == pytest.approx(0.0, abs=1e-9) or angle == pytest.approx(180.0)

    width, height, angle = plot.ellipse_axes(np.diag([1.0, 16.0]), 1.0)
    assert (width, height) == (pytest.approx(8.0), pytest.approx(2.0))
    assert angle == pytest.approx(90.0)


@pytest.mark.parametrize("degrees", [30.0, 120.0, 75.0])
def test_ellipse_axes_of_a_rotated_covariance(degrees: float) -> None:
    theta = math.radians(degrees)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    covariance = rotation @ np.diag([25.0, 1.0]) @ rotation.T
    width, height, angle = plot.ellipse_axes(covariance, 1.0)
    assert width == pytest.approx(10.0)
    assert height == pytest.approx(2.0)
    assert angle == pytest.approx(degrees)
    # A point on the ellipse's major axis end is exactly 1σ away: (p − μ)ᵀ Σ⁻¹ (p − μ) = 1.
    end = np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))]) * width / 2
    assert end @ np.linalg.solve(covariance, end) == pytest.approx(1.0)
