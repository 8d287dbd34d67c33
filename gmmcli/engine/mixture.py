"""The Python API: ``GaussianMixture`` with scikit-learn's estimator shape over the engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .convergence import MAX_ITER, stopping_rule
from .covariance import get_strategy
from .em import Collapse, Duplicate, EMOptions, Event, FitResult, RestartResult, fit, fit_source
from .init import StartCache
from .missing import has_missing, rows_of
from .params import MixtureParams, Noise, NumericalRangeError, covariance_shape
from .sources import Source
from .stats import (
    default_chunk_size,
    default_threads,
    estep_chunk,
    make_chunk,
    map_chunks,
    prepare,
    single_threaded_blas,
)


def information_criteria(
    log_likelihood: float,
    n_parameters: int,
    n_samples: float,
    responsibilities: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """(BIC, AIC, ICL), lower is better (scikit-learn's sign):
    BIC = −2 log L + p ln n, AIC = −2 log L + 2p, and ICL = BIC − 2 Σ_i log max_k r_ik (the
    classification's entropy added, as mclust's ``icl()``; NaN without ``responsibilities``;
    with a noise component its column counts among the k, as in mclust).
    With frequency weights, log L = Σ w_i log p(x_i), n (``n_samples``) is Σ w_i and the ICL's
    sum is Σ_i w_i log max_k r_ik (``sample_weight``): as if each row were repeated w_i times.
    """
    bic = -2.0 * log_likelihood + n_parameters * float(np.log(n_samples))
    aic = -2.0 * log_likelihood + 2.0 * n_parameters
    icl = float("nan")
    if responsibilities is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log(responsibilities.max(axis=1))
            if sample_weight is not None:
                logs = np.where(sample_weight > 0, sample_weight * logs, 0.0)
            icl = bic - 2.0 * float(logs.sum())
    return bic, aic, icl


def check_sample_weight(sample_weight: np.ndarray | None, n: int) -> np.ndarray | None:
    """Frequency weights as float64 (n,), or None: ValueError for another shape, a NaN, an
    infinite or negative weight (naming its row, 0-based) or weights that are all 0."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"sample_weight[{i}] is {float(w[i])!r}: a weight must be a finite number, 0 or more"
        )
    if not w.any():
        raise ValueError("every sample_weight is 0: there is nothing to fit")
    return np.ascontiguousarray(w)


def n_parameters(
    covariance_type: str, n_components: int, n_features: int, noise: Noise | None = None
) -> int:
    """Free parameters: k − 1 weights, k·d means, and the covariances of the type; with a
    noise component, mclust's count (``nMclustParams(noise = TRUE)``): 2 more, its weight
    and its volume estimated from the data, or 1 more when the volume was given."""
    k, d = n_components, n_features
    p = k - 1 + k * d + get_strategy(covariance_type).n_parameters(k, d)
    if noise is not None:
        p += 1 if noise.volume_given else 2
    return p


@dataclass(frozen=True)
class NotConverged:
    """The fit stopped at ``max_iter`` before its stopping rule was met: with ``tol`` None
    (the default rule) ``distance`` per row still from the estimated limit (inf: unknown,
    the steps were still growing); with ``tol``, the last change per row still above it."""

    max_iter: int
    last_change: float
    tol: float | None
    distance: float


@dataclass(frozen=True)
class ConstantColumn:
    """A column constant in the data: reg_covar is its only variance."""

    column: int
    reg_covar: float


@dataclass(frozen=True)
class Degenerate:
    """The chosen restart holds collapsed components (``every_restart``: so did all)."""

    every_restart: bool
    collapses: tuple[Collapse, ...]


@dataclass(frozen=True)
class IdenticalComponents:
    """The chosen restart holds copies of components (``every_restart``: so did all): the
    mixture has fewer distinct components than asked for."""

    every_restart: bool
    duplicates: tuple[Duplicate, ...]


Notice = NotConverged | ConstantColumn | Degenerate | IdenticalComponents


@dataclass(frozen=True)
class FitSummary:
    """How a fit went: the chosen restart's numbers, every restart, and what people must be
    told (``notices``). Log-likelihoods are in the data's units (with a standardization's
    Jacobian)."""

    n_samples: int  # rows
    n_iter: int
    converged: bool
    log_likelihood: float
    log_likelihood_history: tuple[float, ...]  # mean per row, entry t = after t M-steps
    n_parameters: int
    bic: float
    aic: float
    options: EMOptions
    warm_start: bool
    best_restart: int
    restarts: tuple[RestartResult, ...]
    collapsed: tuple[Collapse, ...]
    notices: tuple[Notice, ...]
    weight_total: float | None = None  # Σ w of a weighted fit (its n in BIC); None: unweighted

    @property
    def n_effective(self) -> float:
        """n of the BIC and of the mean: Σ w for a weighted fit, else the rows."""
        return self.n_samples if self.weight_total is None else self.weight_total

    @property
    def mean_log_likelihood(self) -> float:
        return self.log_likelihood / self.n_effective


class GaussianMixture:
    """A Gaussian mixture fitted by EM, in the log domain, chunk by chunk.

    Parameters match scikit-learn's ``GaussianMixture`` where they exist. ``init`` is one of
    "kmeans++", "hc" (mclust's hierarchical tree for the first restart, the tree of Ward's
    criterion for the second, k-means++ for the others), "hc-ward" (Ward's tree, then
    k-means++), "random", "random-from-data"; ``weights_init``/``means_init``/
    ``covariances_init`` (all three together) give a warm start instead. ``seed`` fixes every
    random choice: the same data and seed give the same model. ``callback`` receives the
    engine's events (iterations, re-seeds, restarts) as they happen. ``start_cache``
    (``engine.init.StartCache``) shares start partitions with other fits of the same rows and
    seed, as the cells of a model selection grid do; by default each fit has its own.

    ``noise=True`` adds mclust's noise component (``engine.noise``): a uniform density over
    the data's bounding box (or a box of volume ``noise_volume``, in the data's units) with a
    weight of its own fitted by EM (``noise_weight_``); ``weights_`` are then the Gaussians'
    and sum to 1 − ``noise_weight_``. ``predict`` labels −1 the rows the noise explains
    best; ``predict_proba`` keeps its k columns (the Gaussians', summing to 1 − the noise's
    share per row) and ``predict_noise_proba`` gives the noise's (n,). A warm start may
    give the noise's weight and box too (``noise_init``, e.g. a loaded model's); without it
    the noise starts at weight 0.1 over the data's box (``engine.noise``).

    ``tol=None`` (the default) stops EM when the mean log-likelihood per row is within 1e-8
    of the limit it is heading for, as Aitken's acceleration estimates it
    (``engine.convergence``), or after ``max_iter`` (default 1000) iterations; a number is
    scikit-learn's rule: stop when the mean log-likelihood per row changes by less than
    ``tol`` (scikit-learn's defaults are ``tol=1e-3, max_iter=100``).

    ``accelerate=True`` (the default) runs SQUAREM on the sufficient statistics
    (``engine.squarem``): the same fixed point in fewer passes over the rows, the
    log-likelihood never lowered; an iteration is then one pass. ``accelerate=False`` is
    plain EM, step for step scikit-learn's.
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float | None = None,
        reg_covar: float = 1e-6,
        reg_scale: str = "data",
        max_iter: int = MAX_ITER,
        n_init: int = 1,
        init: str = "kmeans++",
        weights_init: np.ndarray | None = None,
        means_init: np.ndarray | None = None,
        covariances_init: np.ndarray | None = None,
        seed: int = 0,
        chunk_size: int | None = None,
        threads: int | None = None,
        dtype: str = "float64",
        standardize: bool = False,
        accelerate: bool = True,
        scaling: tuple[np.ndarray, np.ndarray] | None = None,
        callback: Callable[[Event], None] | None = None,
        start_cache: StartCache | None = None,
        noise: bool = False,
        noise_volume: float | None = None,
        noise_init: Noise | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.reg_scale = reg_scale
        self.max_iter = max_iter
        self.n_init = n_init
        self.init = init
        self.weights_init = weights_init
        self.means_init = means_init
        self.covariances_init = covariances_init
        self.seed = seed
        self.chunk_size = chunk_size
        self.threads = threads
        self.dtype = dtype
        self.standardize = standardize
        self.accelerate = accelerate
        self.scaling = scaling
        self.callback = callback
        self.start_cache = start_cache
        self.noise = noise
        self.noise_volume = noise_volume
        self.noise_init = noise_init
        self.params_: MixtureParams | None = None

    def __getstate__(self) -> dict:
        """Pickled without ``start_cache``: it serves this process's fits (a select worker's
        whole grid), is no part of the model, and grows with every cell."""
        state = self.__dict__.copy()
        state["start_cache"] = None
        return state

    # -- fitting -------------------------------------------------------------------------
    def _options(self, volume_scale: float = 1.0) -> EMOptions:
        """The engine's options; ``volume_scale``: Π scale of a standardization (the engine
        sees the standardized columns, so a given noise volume is divided by it)."""
        volume = self.noise_volume
        if volume is not None and not self.noise:
            raise ValueError("noise_volume needs noise=True")
        if volume is not None and volume_scale != 1.0:
            volume = volume / volume_scale
        return EMOptions(
            n_components=self.n_components,
            covariance_type=self.covariance_type,
            tol=self.tol,
            reg_covar=self.reg_covar,
            reg_scale=self.reg_scale,
            max_iter=self.max_iter,
            n_init=self.n_init,
            init=self.init,
            seed=self.seed,
            chunk_size=self.chunk_size,
            threads=self.threads,
            dtype=self.dtype,
            noise=self.noise,
            noise_volume=volume if self.noise else None,
            accelerate=self.accelerate,
        )

    def _start(self, d: int) -> MixtureParams | None:
        given = [self.weights_init, self.means_init, self.covariances_init]
        if all(v is None for v in given):
            return None
        if any(v is None for v in given):
            raise ValueError("a warm start needs weights_init, means_init and covariances_init")
        k = self.n_components
        start = MixtureParams(
            self.covariance_type,
            np.asarray(self.weights_init, dtype=float).reshape(k),
            np.asarray(self.means_init, dtype=float).reshape(k, d),
            np.asarray(self.covariances_init, dtype=float).reshape(
                covariance_shape(self.covariance_type, k, d)
            ),
            noise=self.noise_init if self.noise else None,
        )
        return start

    def fit(
        self,
        X: np.ndarray,
        sample_weight: np.ndarray | None = None,
        *,
        screened: Sequence[RestartResult] = (),
        polish: bool = True,
    ) -> GaussianMixture:
        """Estimate the parameters by EM (n_init restarts, the best kept).

        With ``standardize``, each column is centred and scaled (by its mean and standard
        deviation, or by ``scaling=(center, scale)``) before fitting; the scaling is kept in
        the parameters, and every log-likelihood reported is in the data's original units.

        ``sample_weight`` (n,): frequency weights, each finite and ≥ 0, not all 0. A row of
        weight w counts as w copies of it (integer weights give the model of the rows
        repeated, from the same start); n in BIC is Σ w. The starts (k-means++, hc, random)
        see each row of positive weight once, unweighted.

        A search in two stages (``engine.select``): ``polish=False`` stops every restart at
        the first-stage rule (``em.FIRST_STAGE_TOL``) and keeps the best as it is; a later
        fit with more restarts takes this one's ``result_.restarts`` as ``screened``
        (carried on, not run again) and continues the best of all to the stopping rule —
        the model one fit with every restart gives.
        """
        x = _as_2d(X)
        weights = check_sample_weight(sample_weight, x.shape[0])
        center, scale = self._scaling(x, weights)
        observed = None
        if has_missing(x):
            present = ~np.isnan(x)
            observed = present.sum(axis=0) if weights is None else weights @ present
        if scale is not None:
            x = (x - center) / scale
        start = self._start(x.shape[1])
        volume_scale = 1.0 if scale is None else float(np.prod(scale))
        options = self._options(volume_scale)
        result = fit(x, options, start, self.callback, self.start_cache, weights, screened, polish)
        self._set_result(result, center, scale, observed)
        return self

    def fit_source(self, source: Source) -> GaussianMixture:
        """Estimate the parameters by EM over any source of rows (``engine.sources``: blocks
        read from a file, Dask partitions), with the same restarts, checks and re-seeding as
        ``fit``. Not with ``standardize`` (it needs the data's scaling before the first pass).
        """
        if self.standardize or self.scaling is not None:
            raise ValueError("standardize is not available for a source of rows")
        start = self._start(source.n_features)
        result = fit_source(source, self._options(), start, self.callback, self.start_cache)
        self._set_result(result, None, None)
        return self

    def _scaling(
        self, x: np.ndarray, weights: np.ndarray | None = None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.scaling is not None:
            center, scale = (np.asarray(v, dtype=np.float64) for v in self.scaling)
            return center, scale
        if not self.standardize:
            return None, None
        if weights is not None:  # weighted, over the observed cells of each column
            present = ~np.isnan(x)
            n = weights @ present
            filled = np.where(present, x, 0.0)
            center = (weights @ filled) / n
            spread = np.where(present, x - center, 0.0)
            scale = np.sqrt((weights @ (spread * spread)) / n)
        elif has_missing(x):  # the observed cells of each column
            with np.errstate(all="ignore"):
                center, scale = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
        else:
            center = x.mean(axis=0)
            scale = x.std(axis=0)
        scale[~(scale > 0) | ~np.isfinite(scale)] = 1.0  # a constant column stays as it is
        return center, scale

    def fit_predict(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).predict(X)

    def _set_result(
        self,
        result: FitResult,
        center: np.ndarray | None,
        scale: np.ndarray | None,
        observed: np.ndarray | None = None,
    ) -> None:
        """Keep the fit; ``observed`` (d,): each column's observed cells, when some are
        missing (the Jacobian of a standardization counts those alone)."""
        best = result.best
        # densities of x = center + scale·y carry the Jacobian −Σ log scale per row, over
        # the row's observed cells (here as the mean per row)
        jacobian = 0.0
        if scale is not None and observed is None:
            jacobian = -float(np.log(scale).sum())
        elif scale is not None:
            jacobian = -float(observed @ np.log(scale)) / result.n_effective
        self.result_ = result
        self.params_ = replace(best.params, center=center, scale=scale)
        self.n_iter_ = best.n_iter
        self.converged_ = best.converged
        self.log_likelihood_ = best.log_likelihood + result.n_effective * jacobian
        self.lower_bound_ = best.history[-1] + jacobian
        self.log_likelihood_history_ = [v + jacobian for v in best.history]
        self.collapsed_: tuple[Collapse, ...] = best.collapsed
        self.n_samples_ = result.n_samples

    def summary(self) -> FitSummary:
        """How the fit went, in numbers and engine objects (``modelfile`` writes it down,
        ``report`` words it for people)."""
        result = self.result_
        history = self.log_likelihood_history_
        n, p = result.n_samples, self.n_parameters()
        ll = float(self.log_likelihood_)
        bic, aic, _ = information_criteria(ll, p, result.n_effective)
        notices: list[Notice] = []
        if not self.converged_ and self.max_iter > 0:
            last, distance = result.best.distance_left(stopping_rule(self.tol, self.dtype))
            notices.append(NotConverged(self.max_iter, last, self.tol, distance))
        notices.extend(ConstantColumn(j, self.reg_covar) for j in result.flat_columns)
        if self.collapsed_:
            notices.append(Degenerate(result.all_collapsed, self.collapsed_))
        if result.best.duplicates:
            duplicates = tuple(result.best.duplicates)
            notices.append(IdenticalComponents(result.all_duplicated, duplicates))
        return FitSummary(
            n_samples=n,
            n_iter=int(self.n_iter_),
            converged=bool(self.converged_),
            log_likelihood=ll,
            log_likelihood_history=tuple(float(v) for v in history),
            n_parameters=p,
            bic=bic,
            aic=aic,
            options=self._options(),
            warm_start=self.weights_init is not None,
            best_restart=int(result.best.restart),
            restarts=tuple(result.restarts),
            collapsed=tuple(self.collapsed_),
            notices=tuple(notices),
            weight_total=result.weight_total,
        )

    @classmethod
    def from_params(cls, params: MixtureParams) -> GaussianMixture:
        """A fitted mixture from given parameters (e.g. a loaded model file)."""
        model = cls(params.n_components, covariance_type=params.covariance_type)
        model.params_ = params
        return model

    # -- fitted parameters ---------------------------------------------------------------
    def _fitted(self) -> MixtureParams:
        if self.params_ is None:
            raise RuntimeError("this GaussianMixture is not fitted yet; call fit first")
        return self.params_

    @property
    def weights_(self) -> np.ndarray:
        return self._fitted().weights

    @property
    def noise_weight_(self) -> float:
        """The noise component's weight π_0 (0 without one)."""
        noise = self._fitted().noise
        return 0.0 if noise is None else noise.weight

    @property
    def noise_volume_(self) -> float | None:
        """The volume V of the noise component's box, in the data's units (None without)."""
        noise = self._fitted().in_data_units().noise
        return None if noise is None else noise.volume

    @property
    def means_(self) -> np.ndarray:
        return self._fitted().means

    @property
    def covariances_(self) -> np.ndarray:
        return self._fitted().covariances

    @property
    def precisions_cholesky_(self) -> np.ndarray:
        params = self._fitted()
        return get_strategy(params.covariance_type).precision_cholesky(params.covariances)

    # -- using the model -----------------------------------------------------------------
    def _log_parts(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Responsibilities and log densities of every row (``score_rows``)."""
        params = self._fitted()
        x = _as_2d(X)
        if x.shape[1] != params.n_features:
            raise ValueError(f"X has {x.shape[1]} columns; the model has {params.n_features}")
        return score_rows(x, params, self.chunk_size, self.threads or default_threads())

    def sample(self, n_samples: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """n_samples rows drawn from the mixture, and the component each came from (the
        blocks of ``sample_blocks``, joined)."""
        blocks = list(self.sample_blocks(n_samples, seed))
        if not blocks:
            return np.empty((0, self._fitted().n_features)), np.empty(0, dtype=np.int64)
        return np.concatenate([x for x, _ in blocks]), np.concatenate([c for _, c in blocks])

    def sample_blocks(
        self, n_samples: int, seed: int = 0, block: int = 65536
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The rows of ``sample`` in blocks of at most ``block`` rows: memory stays one block
        however many rows are asked for.

        Components are drawn with probabilities π_k, then x = μ_k + L_k z with L_k L_kᵀ = Σ_k
        and z standard normal, from one generator seeded with ``seed``: the same seed gives
        the same rows. With a noise component, a row is noise (label −1) with probability
        π_0, drawn uniformly in its box.
        """
        params = self._fitted()
        rng = np.random.default_rng(seed)
        lowers = [np.linalg.cholesky(cov) for cov in params.full_covariances()]
        noise = params.noise
        for start in range(0, n_samples, block):
            size = min(block, n_samples - start)
            if noise is None:
                labels = rng.choice(params.n_components, size=size, p=params.weights)
            else:
                p = np.append(params.weights, noise.weight)
                labels = rng.choice(params.n_components + 1, size=size, p=p / p.sum())
                labels[labels == params.n_components] = -1
            x = np.empty((size, params.n_features))
            for c, lower in enumerate(lowers):
                rows = np.flatnonzero(labels == c)
                x[rows] = params.means[c] + rng.standard_normal((rows.size, x.shape[1])) @ lower.T
            if noise is not None:
                rows = np.flatnonzero(labels == -1)
                x[rows] = rng.uniform(noise.lower, noise.upper, (rows.size, x.shape[1]))
            if params.center is not None and params.scale is not None:
                # drawn in the model's own units, then scaled: the covariance in the data's
                # units (× scale²) can underflow where the rows themselves do not
                x = params.center + params.scale * x
            yield x, labels

    def responsibilities(self, X: np.ndarray) -> np.ndarray:
        """(n, k) membership probabilities r_ik, or (n, k + 1) with a noise component: the
        Gaussians' columns, then the noise's; every row sums to 1."""
        return self._log_parts(X)[0]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, k) membership probabilities r_ik of the Gaussians (with a noise component
        they sum to 1 − ``predict_noise_proba`` per row)."""
        resp = self.responsibilities(X)
        return resp[:, :-1] if self._fitted().noise is not None else resp

    def predict_noise_proba(self, X: np.ndarray) -> np.ndarray:
        """(n,) the noise component's responsibility for each row (0 without one)."""
        resp = self.responsibilities(X)
        if self._fitted().noise is None:
            return np.zeros(resp.shape[0])
        return resp[:, -1]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The component with the highest responsibility for each row; −1 (scikit-learn's
        label for noise) where the noise component's is highest."""
        return labels_of(self.responsibilities(X), self._fitted().noise is not None)

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """log p(x_i) = logsumexp_k (log π_k + log N(x_i | μ_k, Σ_k)) per row."""
        return self._log_parts(X)[1]

    def score(self, X: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
        """Mean log-likelihood per row; with ``sample_weight``, Σ w log p(x) / Σ w."""
        log_density = self.score_samples(X)
        weights = check_sample_weight(sample_weight, log_density.shape[0])
        if weights is None:
            return float(log_density.mean())
        return _weighted_log_likelihood(log_density, weights) / float(weights.sum())

    def n_parameters(self) -> int:
        params = self._fitted()
        return n_parameters(
            params.covariance_type, params.n_components, params.n_features, params.noise
        )

    def bic(self, X: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
        """−2 log L + p ln n (lower is better); with ``sample_weight``, log L = Σ w log p and
        n = Σ w."""
        return self._criteria(X, sample_weight)[0]

    def aic(self, X: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
        """−2 log L + 2 p (lower is better); with ``sample_weight``, log L = Σ w log p."""
        return self._criteria(X, sample_weight)[1]

    def _criteria(
        self, X: np.ndarray, sample_weight: np.ndarray | None
    ) -> tuple[float, float, float]:
        x = _as_2d(X)
        log_density = self.score_samples(x)
        weights = check_sample_weight(sample_weight, x.shape[0])
        if weights is None:
            return information_criteria(float(log_density.sum()), self.n_parameters(), x.shape[0])
        ll = _weighted_log_likelihood(log_density, weights)
        return information_criteria(ll, self.n_parameters(), float(weights.sum()))


def _weighted_log_likelihood(log_density: np.ndarray, weights: np.ndarray) -> float:
    """Σ w_i log p(x_i), a row of weight 0 adding nothing."""
    return float(np.where(weights > 0, weights * log_density, 0.0).sum())


def labels_of(resp: np.ndarray, noise: bool) -> np.ndarray:
    """Each row's most probable component from its responsibilities (n, k), or (n, k + 1)
    with the noise's last (``noise``): −1 where the noise's is the largest."""
    labels = resp.argmax(axis=1)
    if noise:
        labels[labels == resp.shape[1] - 1] = -1
    return labels


def _as_2d(X: np.ndarray) -> np.ndarray:
    x = np.asarray(X, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"X must be 2-D, got shape {x.shape}")
    with np.errstate(over="ignore"):  # a NaN or an infinity makes the sum not finite (and so
        total = x.sum()  # may an overflow, which the cell-by-cell check below tells apart)
    if np.isfinite(total):
        return np.ascontiguousarray(x)
    infinite = np.isinf(x)
    if infinite.any():
        i, j = (int(v) for v in np.argwhere(infinite)[0])
        raise ValueError(
            f"X contains infinity ({int(infinite.sum())} cell(s); the first at row {i}, "
            f"column {j}: {x[i, j]}); a missing cell is NaN"
        )
    empty = np.flatnonzero(np.isnan(x).all(axis=1))
    if empty.size:
        raise ValueError(
            f"row {int(empty[0])} of X has no value (every cell is NaN; {empty.size} such "
            "row(s)): drop it"
        )
    return np.ascontiguousarray(x)


def score_rows(
    x: np.ndarray,
    params: MixtureParams,
    chunk_size: int | None = None,
    threads: int = 1,
    numbered: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) responsibilities (n, k + 1 with a noise component, its column last) and (n,)
    log densities of the rows of x, chunk by chunk, in float64 and in the data's units,
    whatever the scaling the model was fitted in.

    A standardized model scores (x − center) / scale with its own parameters, less
    Σ log scale over the row's observed cells (the Jacobian): converting the model to the
    data's units instead would round its means to the precision of the centre, which can
    exceed the spread. A row whose log density has no float64 value is a
    NumericalRangeError (naming it when ``numbered``).
    """
    jacobian: float | np.ndarray = 0.0
    if params.center is not None and params.scale is not None:
        logs = np.log(params.scale)
        jacobian = (~np.isnan(x)) @ logs if has_missing(x) else float(logs.sum())
        x = (x - params.center) / params.scale
    shift = params.weights @ params.means
    if params.noise is not None:  # the Gaussians' weights sum to 1 − π_0
        shift = shift / params.weights.sum()
    model = prepare(params, get_strategy(params.covariance_type), shift)
    resp = np.empty((x.shape[0], params.n_components + (params.noise is not None)))
    log_density = np.empty(x.shape[0])
    size = chunk_size or default_chunk_size(
        params.n_components, params.n_features, params.covariance_type
    )
    rows = rows_of(np.ascontiguousarray(x, dtype=np.float64), shift)

    def part(span: slice) -> None:
        chunk = make_chunk(rows, span, model.strategy, params.n_components)
        chunk_resp, log_density[span] = estep_chunk(model, chunk)
        resp[span] = chunk_resp.T

    with single_threaded_blas():
        map_chunks(part, x.shape[0], size, threads)
    if np.any(jacobian):
        log_density -= jacobian
    lost = np.flatnonzero(~np.isfinite(log_density))
    if lost.size:
        which = f"row {lost[0] + 1}" if numbered else "a row"
        raise NumericalRangeError(
            f"{which} lies too far from every component for its log density to be "
            "represented in float64"
        )
    return resp, log_density
