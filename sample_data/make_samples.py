"""Regenerate the sample data sets (deterministic): python sample_data/make_samples.py"""

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def one_d(rng: np.random.Generator) -> np.ndarray:
    """The tutorial's 1-D example: three clusters of 100 points each."""
    parts = [rng.normal(-5.0, 1.0, 100), rng.normal(0.0, 0.6, 100), rng.normal(4.0, 1.5, 100)]
    return np.concatenate(parts)


def blobs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Four stretched (ellipsoidal) 2-D blobs of 250 points each, and their true labels."""
    centres = np.array([[0.0, 0.0], [8.0, 3.0], [-6.0, 7.0], [3.0, -7.0]])
    shapes = [
        np.array([[3.0, 0.0], [1.5, 0.5]]),
        np.array([[0.4, 0.0], [-1.2, 2.0]]),
        np.array([[2.0, 1.5], [0.0, 0.6]]),
        np.array([[1.0, -0.8], [0.3, 0.4]]),
    ]
    x = np.concatenate(
        [rng.normal(size=(250, 2)) @ a + c for a, c in zip(shapes, centres, strict=True)]
    )
    return x, np.repeat(np.arange(4), 250)


def zero_inflated(rng: np.random.Generator) -> np.ndarray:
    """A measured column and a rounded one that is exactly 0 in 40 % of rows: a component can
    sit on the zeros with no spread, and its likelihood (and BIC) spikes."""
    x1 = rng.normal(0.0, 1.0, 600)
    x2 = np.where(rng.random(600) < 0.4, 0.0, np.round(rng.normal(3.0, 1.0, 600), 1))
    return np.column_stack([x1, x2])


def with_gaps(x: np.ndarray, rng: np.random.Generator, fraction: float = 0.15) -> list[str]:
    """Rows of x as CSV with a fraction of the cells left empty at random (missing
    completely at random), each row keeping one value."""
    mask = rng.random(x.shape) < fraction
    mask[mask.all(axis=1), 0] = False
    return [
        ",".join("" if gap else f"{v:.6f}" for v, gap in zip(row, gaps, strict=True)) + "\n"
        for row, gaps in zip(x, mask, strict=True)
    ]


def counted(x: np.ndarray) -> list[str]:
    """Rows of x rounded to whole numbers, each distinct point once with how many rows it
    stands for (aggregated data: fit it with --weights count)."""
    points, counts = np.unique(np.round(x), axis=0, return_counts=True)
    return [f"{a:.0f},{b:.0f},{c}\n" for (a, b), c in zip(points, counts, strict=True)]


def with_outliers(x: np.ndarray, rng: np.random.Generator, share: float = 0.1) -> np.ndarray:
    """x with share · len(x) rows drawn uniformly in its bounding box widened by a quarter of
    its range on every side, appended after its rows (the last rows are the outliers)."""
    low, high = x.min(axis=0), x.max(axis=0)
    pad = 0.25 * (high - low)
    return np.concatenate([x, rng.uniform(low - pad, high + pad, (int(share * len(x)), 2))])


def main() -> None:
    rng = np.random.default_rng(20261125)
    x1 = one_d(rng)
    (HERE / "tutorial_1d.csv").write_text(
        "x\n" + "".join(f"{v:.6f}\n" for v in x1), encoding="utf-8"
    )
    x2, labels = blobs(rng)
    (HERE / "blobs_2d.csv").write_text(
        "x,y\n" + "".join(f"{a:.6f},{b:.6f}\n" for a, b in x2), encoding="utf-8"
    )
    (HERE / "blobs_2d_labels.csv").write_text(
        "label\n" + "".join(f"{v}\n" for v in labels), encoding="utf-8"
    )
    x3 = zero_inflated(np.random.default_rng(0))
    (HERE / "zero_inflated.csv").write_text(
        "level,dose\n" + "".join(f"{a:.4f},{b:.1f}\n" for a, b in x3), encoding="utf-8"
    )
    rows = [f"p{i:04d},{a:.4f},{b:.4f}\n" for i, (a, b) in enumerate(x2[::5])]
    (HERE / "points_with_id.csv").write_text("id,x,y\n" + "".join(rows), encoding="utf-8")
    gaps = with_gaps(x2, np.random.default_rng(7))
    (HERE / "blobs_2d_gaps.csv").write_text("x,y\n" + "".join(gaps), encoding="utf-8")
    counts = counted(x2)
    (HERE / "blobs_2d_counts.csv").write_text("x,y,count\n" + "".join(counts), encoding="utf-8")
    noisy = with_outliers(x2, np.random.default_rng(13))
    (HERE / "blobs_2d_outliers.csv").write_text(
        "x,y\n" + "".join(f"{a:.6f},{b:.6f}\n" for a, b in noisy), encoding="utf-8"
    )


if __name__ == "__main__":
    main()
