"""Missing cells by EM (--missing em) against dropping the rows and against mean imputation.

    python bench/missing_data.py            # accuracy: the README's table
    python bench/missing_data.py --cost     # time per EM iteration, complete vs 20 % missing

Accuracy: a clustered table (2000 rows × 6 columns, 3 clusters with full covariances) is
fitted complete, then with 10, 20 and 30 % of its cells removed at random (missing
completely at random; a row keeps at least one cell); each way of handling the holes is
fitted from the same options (k = 3, full, 5 restarts, seed 0), its components matched to
the complete-data fit's, and compared with it: the largest distance between matched means in
the columns' standard deviations, the mean relative Frobenius distance between matched
covariances, and the adjusted Rand index of the labels against the complete-data fit's
labels, over every row (rows that --missing drop leaves unlabelled count as one more group)
and over the rows each method labels. Averages over five random masks.

Cost: time per EM iteration from the same start (gmm's bench_em.py data: n = 200,000,
d = 16, k = 8, full), complete and with 20 % of cells removed, medians of repeats, as
(time of 1 + N iterations − time of 1) / N; on one thread (CPU time) and on all cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FRACTIONS = (0.1, 0.2, 0.3)
MASKS = 5


def clustered(n: int = 2000, d: int = 6, k: int = 3, seed: int = 0) -> np.ndarray:
    """k clusters with random orientations and scales, centres ~N(0, 3²) per column."""
    rng = np.random.default_rng(seed)
    parts = []
    for size in np.diff(np.linspace(0, n, k + 1).astype(int)):
        rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
        scales = rng.uniform(0.5, 1.5, d)
        parts.append(rng.normal(size=(size, d)) * scales @ rotation + rng.normal(size=d) * 3.0)
    x = np.concatenate(parts)
    return x[rng.permutation(n)]


def holed(x: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """x with ``fraction`` of its cells set to NaN at random, each row keeping one cell."""
    rng = np.random.default_rng(seed)
    mask = rng.random(x.shape) < fraction
    empty = mask.all(axis=1)
    mask[empty, rng.integers(x.shape[1], size=int(empty.sum()))] = False
    y = x.copy()
    y[mask] = np.nan
    return y


def fitted(x: np.ndarray):
    from gmmcli import GaussianMixture

    return GaussianMixture(3, covariance_type="full", n_init=5, seed=0).fit(x)


def adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    """The adjusted Rand index of two labellings (Hubert & Arabie)."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)

    def pairs(v: np.ndarray) -> float:
        return float((v * (v - 1) / 2).sum())

    index, rows, cols = pairs(table), pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = rows * cols / pairs(np.array([len(a)]))
    return (index - expected) / (0.5 * (rows + cols) - expected)


def distances(model, reference, scale: np.ndarray) -> tuple[float, float]:
    """(largest matched mean distance in the columns' standard deviations, mean relative
    Frobenius distance of the matched covariances)."""
    means, ref_means = model.means_ / scale, reference.means_ / scale
    cost = np.linalg.norm(means[:, None] - ref_means[None], axis=2)
    rows, cols = linear_sum_assignment(cost)
    mean_gap = float(np.abs(means[rows] - ref_means[cols]).max())
    cov, ref = model.covariances_[rows], reference.covariances_[cols]
    gaps = np.linalg.norm(cov - ref, axis=(1, 2)) / np.linalg.norm(ref, axis=(1, 2))
    return mean_gap, float(gaps.mean())


def accuracy() -> str:
    x = clustered()
    reference = fitted(x)
    ref_labels = reference.predict(x)
    scale = x.std(axis=0)
    lines = [
        "| cells removed | method | mean distance (σ) | covariance distance | ARI, all rows "
        "| ARI, rows labelled | rows labelled |",
        "|---|---|---|---|---|---|---|",
    ]
    for fraction in FRACTIONS:
        results: dict[str, list[tuple[float, float, float, float, float]]] = {}
        for mask_seed in range(MASKS):
            y = holed(x, fraction, 100 + mask_seed)
            complete = ~np.isnan(y).any(axis=1)
            em = fitted(y)
            drop = fitted(y[complete])
            imputed = np.where(np.isnan(y), np.nanmean(y, axis=0), y)
            mean = fitted(imputed)
            drop_labels = np.full(len(y), -1)
            drop_labels[complete] = drop.predict(y[complete])
            for name, model, labels in [
                ("em", em, em.predict(y)),
                ("drop", drop, drop_labels),
                ("mean imputation", mean, mean.predict(imputed)),
            ]:
                mean_gap, cov_gap = distances(model, reference, scale)
                ari = adjusted_rand(labels, ref_labels)
                seen = labels >= 0
                ari_seen = adjusted_rand(labels[seen], ref_labels[seen])
                results.setdefault(name, []).append(
                    (mean_gap, cov_gap, ari, ari_seen, float(seen.mean()))
                )
        for name, values in results.items():
            m, c, a, b, share = (statistics.fmean(col) for col in zip(*values, strict=True))
            method = f"`--missing {name}`" if name != "mean imputation" else name
            lines.append(
                f"| {fraction:.0%} | {method} | {m:.3f} | {c:.3f} | {a:.3f} | {b:.3f} "
                f"| {share:.0%} |"
            )
    return "\n".join(lines)


def per_iteration(fit, n_iter: int, repeats: int) -> float:
    """Median over repeats of (t(1 + N) − t(1)) / N."""
    samples = []
    for _ in range(repeats):
        one = fit(1)
        many = fit(1 + n_iter)
        samples.append(max(many - one, 0.0) / n_iter)
    return statistics.median(samples)


def cost(n: int, repeats: int) -> str:
    from bench_em import blobs

    from gmmcli import GaussianMixture

    d, k = 16, 8
    x = blobs(n, d, k)
    y = holed(x, 0.2, 1)
    start = GaussianMixture(k, max_iter=0, seed=1).fit(x)

    def fit(data: np.ndarray, threads: int | None, clock):
        def run(iterations: int) -> float:
            model = GaussianMixture(
                k,
                tol=0.0,
                max_iter=iterations,
                weights_init=start.weights_,
                means_init=start.means_,
                covariances_init=start.covariances_,
                threads=threads,
            )
            t0 = clock()
            model.fit(data)
            return clock() - t0

        return run

    lines = [
        f"n = {n:,}, d = {d}, k = {k}, full; 20 % of cells missing at random "
        f"({np.isnan(y).any(axis=1).mean():.1%} of rows); median of {repeats}",
        "",
        "| threads | complete (ms) | 20 % missing (ms) | ratio |",
        "|---|---|---|---|",
    ]
    for threads, clock, label in [
        (1, time.process_time, "1 (CPU time)"),
        (None, time.perf_counter, "all (wall)"),
    ]:
        complete = per_iteration(fit(x, threads, clock), 3, repeats)
        missing = per_iteration(fit(y, threads, clock), 3, repeats)
        lines.append(
            f"| {label} | {complete * 1e3:.1f} | {missing * 1e3:.1f} | {missing / complete:.2f}× |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cost", action="store_true", help="time per iteration instead")
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(cost(args.n, args.repeats) if args.cost else accuracy())


if __name__ == "__main__":
    main()
