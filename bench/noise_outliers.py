"""The noise component (--noise) on clustered data with uniform outliers: the README's table.

    python bench/noise_outliers.py

Data: k stretched Gaussian blobs (250 rows each, random orientations and scales σ in
0.4–1.2, centres ~N(0, 5²) per column, drawn again until every two are 6 apart), d = 2 and
d = 5, plus 10 % as many rows again of outliers drawn
uniformly in the blobs' bounding box widened by 25 % of its range on every side. Each table
is fitted as ``gmm fit -k K --n-init 5`` would (full covariances, seed 0), with and without
``--noise``. Reported, as means over ten data seeds:

- outlier recall and precision: of the true outliers, the share labelled −1; of the rows
  labelled −1, the share that are true outliers (only with --noise: without it no row is);
- the adjusted Rand index of the inliers' labels against their true blobs, with and without
  --noise (an inlier labelled −1 counts as a group of its own, so wrongly discarded inliers
  lower it);
- the largest distance between a fitted mean and its blob's true mean, matched, in the
  blob's own standard deviations (outliers pull the means and inflate the covariances
  without a noise component).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gmmcli.engine.mixture import GaussianMixture

SEEDS = range(10)
SHARE = 0.10  # outliers, as a share of the inliers
SEPARATION = 6.0  # the least distance between two blobs' centres (their σ are 0.4–1.2)
WIDEN = 0.25  # the outliers' box: the inliers' box widened by this share of its range


def data(d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (shuffled), their true labels (−1 for outliers) and the blobs' true means."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(k, d)) * 5.0
    while min(np.linalg.norm(a - b) for i, a in enumerate(means) for b in means[:i]) < SEPARATION:
        means = rng.normal(size=(k, d)) * 5.0  # blobs, not one smear: redrawn until apart
    parts = []
    for c in range(k):
        rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
        scales = rng.uniform(0.4, 1.2, d)
        parts.append(rng.normal(size=(250, d)) * scales @ rotation + means[c])
    inliers = np.concatenate(parts)
    low, high = inliers.min(axis=0), inliers.max(axis=0)
    pad = WIDEN * (high - low)
    outliers = rng.uniform(low - pad, high + pad, (int(SHARE * len(inliers)), d))
    x = np.concatenate([inliers, outliers])
    truth = np.concatenate([np.repeat(np.arange(k), 250), np.full(len(outliers), -1)])
    order = rng.permutation(len(x))
    return x[order], truth[order], means


def mean_error(model: GaussianMixture, x: np.ndarray, truth: np.ndarray) -> float:
    """The largest distance between a fitted mean and its matched blob's true mean (the
    inliers' sample mean), in the blob's standard deviation along that difference."""
    k = model.means_.shape[0]
    blobs = [x[truth == c] for c in range(k)]
    centres = np.array([b.mean(axis=0) for b in blobs])
    cost = np.linalg.norm(model.means_[:, None, :] - centres[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    worst = 0.0
    for r, c in zip(rows, cols, strict=True):
        diff = model.means_[r] - centres[c]
        spread = np.sqrt(diff @ np.cov(blobs[c].T) @ diff) / max(np.linalg.norm(diff), 1e-300)
        worst = max(worst, float(np.linalg.norm(diff) / spread))
    return worst


def run(d: int, k: int, seed: int) -> dict[str, float]:
    x, truth, _ = data(d, k, seed)
    inlier = truth >= 0
    plain = GaussianMixture(k, n_init=5, seed=0).fit(x)
    noisy = GaussianMixture(k, n_init=5, seed=0, noise=True).fit(x)
    flagged = noisy.predict(x) == -1
    outlier = ~inlier
    return {
        "recall": float((flagged & outlier).sum() / outlier.sum()),
        "precision": float((flagged & outlier).sum() / max(flagged.sum(), 1)),
        "ari_plain": adjusted_rand_score(truth[inlier], plain.predict(x)[inlier]),
        "ari_noise": adjusted_rand_score(truth[inlier], noisy.predict(x)[inlier]),
        "mean_plain": mean_error(plain, x, truth),
        "mean_noise": mean_error(noisy, x, truth),
        "noise_weight": noisy.noise_weight_,
        "true_share": float(outlier.mean()),
    }


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print(
        "| d | k | outlier recall | outlier precision | noise weight (true share) "
        "| inliers' ARI, no noise | inliers' ARI, --noise "
        "| worst mean error (σ), no noise | with --noise |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for d, k in [(2, 4), (5, 4)]:
        runs = [run(d, k, seed) for seed in SEEDS]
        mean = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
        print(
            f"| {d} | {k} | {mean['recall']:.3f} | {mean['precision']:.3f} "
            f"| {mean['noise_weight']:.3f} ({mean['true_share']:.3f}) "
            f"| {mean['ari_plain']:.3f} | {mean['ari_noise']:.3f} "
            f"| {mean['mean_plain']:.3f} | {mean['mean_noise']:.3f} |"
        )


if __name__ == "__main__":
    main()
