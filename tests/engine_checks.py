"""Shared by the tests of the scaled-out engines (Dask, stream): the data, a common start,
and the check that a fit matches the in-memory engine's."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from gmmcli.engine.covariance import get_strategy
from gmmcli.engine.params import MixtureParams, Noise


def blobs(seed: int = 0, n_per: int = 700, d: int = 3, k: int = 3) -> np.ndarray:
    """k stretched Gaussian blobs, rows shuffled."""
    rng = np.random.default_rng(seed)
    parts = [
        rng.normal(size=(n_per, d)) @ (rng.normal(size=(d, d)) * 0.8 + np.eye(d) * 0.5)
        + 6.0 * rng.normal(size=d)
        for _ in range(k)
    ]
    x = np.concatenate(parts)
    return x[rng.permutation(len(x))]


def start_params(x: np.ndarray, k: int, covariance_type: str) -> MixtureParams:
    """A rough common start: random rows, the data's covariance, uneven weights."""
    rng = np.random.default_rng(3)
    d = x.shape[1]
    cov = np.cov(x.T, bias=True)
    covariances = {
        "full": np.stack([cov] * k),
        "tied": cov,
        "diag": np.stack([np.diag(cov)] * k),
        "spherical": np.full(k, np.diag(cov).mean()),
    }[covariance_type]
    weights = rng.uniform(0.5, 1.5, k)
    return MixtureParams(
        covariance_type,
        weights / weights.sum(),
        x[rng.choice(len(x), k, replace=False)].reshape(k, d),
        covariances,
    )


def relative_error(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def assert_same_fit(ours, reference) -> None:
    """The same iterations, log-likelihood history and parameters to 1e-8 relative."""
    a, b = ours.best, reference.best
    assert a.n_iter == b.n_iter
    assert relative_error(a.history, b.history) < 1e-8
    for name in ["weights", "means", "covariances"]:
        assert relative_error(getattr(a.params, name), getattr(b.params, name)) < 1e-8
    assert ours.n_samples == reference.n_samples


def gmm(*args: object, capsys) -> tuple[int, str, str]:
    """Run gmm in this process through the console script's entry point (``cli.run``):
    its exit status, stdout and stderr (``capsys``: pytest's capture)."""
    from gmmcli.cli import run

    capsys.readouterr()
    status = run([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def gmm_captured(capsys, *args: object) -> tuple[int, str, str]:
    """``gmm`` with the capture first, for tests that call it so."""
    return gmm(*args, capsys=capsys)


def engine_args(engine: str, client) -> list[str]:
    """The flags that run a command on ``engine`` (on ``client``'s cluster for dask)."""
    extra = ["--engine", engine]
    return extra + (["--scheduler", client.scheduler.address] if engine == "dask" else [])


def direct_e_step(x: np.ndarray, params: MixtureParams, weights: np.ndarray):
    """One E-step row by row from the covariances (no factors shared with the kernel): the
    responsibilities times the rows' weights, (n, k), a last column for the noise component
    when there is one, and each row's log density."""
    k, d = params.means.shape
    full = get_strategy(params.covariance_type).to_full(params.covariances, k, d)
    log_joint = np.empty((len(x), k))
    for j in range(k):
        diff = x - params.means[j]
        _, log_det = np.linalg.slogdet(full[j])
        quadratic = np.einsum("ia,ia->i", diff, np.linalg.solve(full[j], diff.T).T)
        log_joint[:, j] = np.log(params.weights[j]) - 0.5 * (
            d * np.log(2 * np.pi) + log_det + quadratic
        )
    if params.noise is not None:
        noise_term = np.log(params.noise.weight) - params.noise.log_ranges.sum()
        log_joint = np.column_stack([log_joint, np.full(len(x), noise_term)])
    log_density = logsumexp(log_joint, axis=1)
    return np.exp(log_joint - log_density[:, None]) * weights[:, None], log_density


def random_model(rng, n, d, k, covariance_type, noise=False, spread=1.0):
    """Rows, their shift and a model with random means and well-conditioned covariances (one,
    for a shared one)."""
    x = rng.normal(size=(n, d)) @ (np.eye(d) + 0.3 * rng.normal(size=(d, d))) + 3.0
    strategy = get_strategy(covariance_type)
    a = rng.normal(size=(k, d, d)) * spread
    cov = a @ np.swapaxes(a, 1, 2) / d + np.eye(d)
    if strategy.shared:
        cov = cov[0]
    weights = rng.uniform(0.5, 1.5, k)
    weights /= weights.sum()
    box = None
    if noise:
        box = Noise(0.1, x.min(axis=0) - 1.0, x.max(axis=0) + 1.0)
        weights *= 0.9
    means = x[rng.choice(n, k)] + rng.normal(size=(k, d))
    params = MixtureParams(strategy.name, weights, means, cov, noise=box)
    return x, x.mean(axis=0), params
