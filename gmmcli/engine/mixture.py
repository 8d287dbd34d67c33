"""The Python API: ``GaussianMixture`` with scikit-learn's estimator shape over the engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from .convergence import MAX_ITER, stopping_rule
from .covariance import get_strategy
from .em import Collapse, Duplicate, EMOptions, Event, FitResult, RestartResult, fit, fit_source
from .init import StartCache
from .missing import has_missing, rows_of
from .params import MixtureParams, NumericalRangeError, covariance_shape
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
    n_samples: int,
    responsibilities: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """(BIC, AIC, ICL), lower is better (scikit-learn's sign):
    BIC = −2 log L + p ln n, AIC = −2 log L + 2p, and ICL = BIC − 2 Σ_i log max_k r_ik (the
    classification's entropy added, as mclust's ``icl()``; NaN without ``responsibilities``).
    """
    bic = -2.0 * log_likelihood + n_parameters * float(np.log(n_samples))
    aic = -2.0 * log_likelihood + 2.0 * n_parameters
    icl = float("nan")
    if responsibilities is not None:
        with np.errstate(divide="ignore"):
            icl = bic - 2.0 * float(np.log(responsibilities.max(axis=1)).sum())
    return bic, aic, icl


def n_parameters(covariance_type: str, n_components: int, n_features: int) -> int:
    """Free parameters: k − 1 weights, k·d means, and the covariances of the type."""
    k, d = n_components, n_features
    return k - 1 + k * d + get_strategy(covariance_type).n_parameters(k, d)


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

    n_samples: int
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

    @property
    def mean_log_likelihood(self) -> float:
        return self.log_likelihood / self.n_samples


class GaussianMixture:
    """A Gaussian mixture fitted by EM, in the log domain, chunk by chunk.

    Parameters match scikit-learn's ``GaussianMixture`` where they exist. ``init`` is one of
    "kmeans++", "hc" (mclust's hierarchical tree for the first restart, k-means++ for the
    others), "random", "random-from-data"; ``weights_init``/``means_init``/
    ``covariances_init`` (all three together) give a warm start instead. ``seed`` fixes every
    random choice: the same data and seed give the same model. ``callback`` receives the
    engine's events (iterations, re-seeds, restarts) as they happen. ``start_cache``
    (``engine.init.StartCache``) shares start partitions with other fits of the same rows and
    seed, as the cells of a model selection grid do; by default each fit has its own.

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
        self.params_: MixtureParams | None = None

    def __getstate__(self) -> dict:
        """Pickled without ``start_cache``: it serves this process's fits (a select worker's
        whole grid), is no part of the model, and grows with every cell."""
        state = self.__dict__.copy()
        state["start_cache"] = None
        return state

    # -- fitting -------------------------------------------------------------------------
    def _options(self) -> EMOptions:
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
        )
        return start

    def fit(self, X: np.ndarray) -> GaussianMixture:
        """Estimate the parameters by EM (n_init restarts, the best kept).

        With ``standardize``, each column is centred and scaled (by its mean and standard
        deviation, or by ``scaling=(center, scale)``) before fitting; the scaling is kept in
        the parameters, and every log-likelihood reported is in the data's original units.
        """
        x = _as_2d(X)
        center, scale = self._scaling(x)
        observed = (~np.isnan(x)).sum(axis=0) if has_missing(x) else None
        if scale is not None:
            x = (x - center) / scale
        start = self._start(x.shape[1])
        result = fit(x, self._options(), start, self.callback, self.start_cache)
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

    def _scaling(self, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.scaling is not None:
            center, scale = (np.asarray(v, dtype=np.float64) for v in self.scaling)
            return center, scale
        if not self.standardize:
            return None, None
        if has_missing(x):  # the observed cells of each column
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
            jacobian = -float(observed @ np.log(scale)) / result.n_samples
        self.result_ = result
        self.params_ = replace(best.params, center=center, scale=scale)
        self.n_iter_ = best.n_iter
        self.converged_ = best.converged
        self.log_likelihood_ = best.log_likelihood + result.n_samples * jacobian
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
        bic, aic, _ = information_criteria(ll, p, n)
        notices: list[Notice] = []
        if not self.converged_ and self.max_iter > 0:
            last = abs(history[-1] - history[-2]) if len(history) > 1 else float("nan")
            distance = stopping_rule(self.tol, self.dtype).distance(history)
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
        the same rows.
        """
        params = self._fitted()
        rng = np.random.default_rng(seed)
        lowers = [np.linalg.cholesky(cov) for cov in params.full_covariances()]
        for start in range(0, n_samples, block):
            size = min(block, n_samples - start)
            labels = rng.choice(params.n_components, size=size, p=params.weights)
            x = np.empty((size, params.n_features))
            for c, lower in enumerate(lowers):
                rows = np.flatnonzero(labels == c)
                x[rows] = params.means[c] + rng.standard_normal((rows.size, x.shape[1])) @ lower.T
            if params.center is not None and params.scale is not None:
                # drawn in the model's own units, then scaled: the covariance in the data's
                # units (× scale²) can underflow where the rows themselves do not
                x = params.center + params.scale * x
            yield x, labels

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, k) membership probabilities r_ik."""
        return self._log_parts(X)[0]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The component with the highest responsibility for each row."""
        return self.predict_proba(X).argmax(axis=1)

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """log p(x_i) = logsumexp_k (log π_k + log N(x_i | μ_k, Σ_k)) per row."""
        return self._log_parts(X)[1]

    def score(self, X: np.ndarray) -> float:
        """Mean log-likelihood per row."""
        return float(self.score_samples(X).mean())

    def n_parameters(self) -> int:
        params = self._fitted()
        return n_parameters(params.covariance_type, params.n_components, params.n_features)

    def bic(self, X: np.ndarray) -> float:
        """−2 log L + p ln n (lower is better)."""
        x = _as_2d(X)
        return information_criteria(
            float(self.score_samples(x).sum()), self.n_parameters(), x.shape[0]
        )[0]

    def aic(self, X: np.ndarray) -> float:
        """−2 log L + 2 p (lower is better)."""
        x = _as_2d(X)
        return information_criteria(
            float(self.score_samples(x).sum()), self.n_parameters(), x.shape[0]
        )[1]


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
    """(n, k) responsibilities and (n,) log densities of the rows of x, chunk by chunk, in
    float64 and in the data's units, whatever the scaling the model was fitted in.

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
    model = prepare(params, get_strategy(params.covariance_type), shift)
    resp = np.empty((x.shape[0], params.n_components))
    log_density = np.empty(x.shape[0])
    size = chunk_size or default_chunk_size(
        params.n_components, params.n_features, params.covariance_type
    )
    rows = rows_of(np.ascontiguousarray(x, dtype=np.float64), shift)

    def part(span: slice) -> None:
        chunk = make_chunk(rows, span, model.strategy)
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
