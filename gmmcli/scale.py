"""``--engine dask`` and ``--engine stream``: fit, predict and loglik without reading the data
into memory at once.

- dask: without ``--scheduler``, a LocalCluster of worker processes on 127.0.0.1 (one per
  core, one thread each), closed at the end; with it, an existing cluster. The input (a glob
  of CSV files, Parquet files or a folder) is read by dask.dataframe on the workers and kept
  there for the fit (``engine.distributed.DaskSource``).
- stream: one CSV read in blocks on every pass (``engine.sources.BlockSource``), so memory
  holds one block and the initialisation sample, whatever the file's size.

Errors become one line (``GmmError``): bad input exit 2; a cluster that cannot be reached or
that loses the work, exit 1. dask is imported only here, and only for --engine dask.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from gmmcli import dataset, files
from gmmcli.data import (
    Table,
    TableOptions,
    all_weights_zero,
    check_float32,
    prediction_columns,
    scored_rows,
)
from gmmcli.errors import GmmError
from gmmcli.limits import FLOAT32_MAX_DEVIATION, FLOAT32_MIN_SPREAD
from gmmcli.tableoptions import PREDICT_COLUMNS, PredictColumns, RowCounts

ENGINES = ("memory", "dask", "stream")
CONNECT_TIMEOUT = 10  # seconds to reach an existing scheduler


def few_malloc_arenas(arenas: int = 2) -> None:
    """Keep the address space near the memory in use (for `prlimit --as` / `ulimit -v`).

    glibc gives each thread that allocates its own 64 MiB malloc arena (address space, not
    memory), and pyarrow's jemalloc reserves more: with numpy's, BLAS's and pyarrow's threads
    that passed 1 GiB while the data in use was a few hundred MiB. Two arenas (as
    MALLOC_ARENA_MAX=2) and pyarrow on the system allocator cost nothing measurable here.
    Called before any thread allocates.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is not None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).mallopt(-8, arenas)  # M_ARENA_MAX
    with contextlib.suppress(ImportError, AttributeError):
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())


# -- the cluster -----------------------------------------------------------------------------
@contextlib.contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Start the local cluster's processes with SIGINT ignored (a new Python process keeps an
    ignored SIGINT ignored): Ctrl-C in a terminal reaches the whole process group, and only
    gmm itself should answer it — with one line — and then close the cluster."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGINT, previous or signal.default_int_handler)


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None = None) -> Iterator[Any]:
    """A Dask client: of a new LocalCluster (loopback only, closed on exit), or connected to
    ``scheduler`` (given up after CONNECT_TIMEOUT seconds)."""
    for name in ("distributed", "tornado", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module="distributed")
    from distributed import Client, LocalCluster

    if scheduler is None:
        n = workers or max(1, os.cpu_count() or 1)
        try:
            with _workers_ignore_ctrl_c():
                cluster = LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",  # the scheduler's HTTP routes: loopback
                    silence_logs=logging.CRITICAL,
                )
        except Exception as error:
            raise GmmError(f"cannot start a local Dask cluster: {_reason(error)}", 1) from None
        client = Client(cluster)
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.close()
            with contextlib.suppress(Exception):
                cluster.close()
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        raise GmmError(f"--scheduler {scheduler}: cannot connect ({_reason(error)})") from None
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextlib.contextmanager
def cluster_errors(
    inputs: dataset.Inputs, layout: dataset.Layout, table: TableOptions
) -> Iterator[None]:
    """Dask's failures as one line: bad input (for CSV, found again in the files by the
    stream engine's reader, so that the message names the line as the other engines do), or
    the cluster losing the work."""
    from distributed.scheduler import KilledWorker

    from .engine.distributed import ClusterError

    try:
        yield
    except dataset.PartitionError as error:
        found = None
        if inputs.kind == "csv":
            found = dataset.find_error(inputs, layout, table)
        raise GmmError(found or error.message) from None
    except GmmError:
        raise
    except (KilledWorker, ClusterError) as error:
        raise GmmError(f"the Dask cluster lost the work: {_reason(error)}", 1) from None
    except (ValueError, TypeError) as error:  # e.g. pandas failing to parse a partition
        found = None
        if inputs.kind == "csv":
            found = dataset.find_error(inputs, layout, table)
        if found is not None:
            raise GmmError(found) from None
        if inputs.kind == "csv" and _parse_failure(error):
            raise GmmError(f"{inputs.display}: {_reason(error)}") from None
        raise
    except OSError as error:  # connections closed for good
        raise GmmError(f"the Dask cluster failed: {_reason(error)}", 1) from None


def _parse_failure(error: BaseException) -> bool:
    import pandas as pd

    text = str(error)
    return isinstance(error, pd.errors.ParserError) or any(
        part in text for part in ("could not convert", "Unable to parse", "invalid literal")
    )


def open_input(
    engine: str, data: str, table: TableOptions
) -> tuple[dataset.Inputs, dataset.Layout]:
    """The files and feature columns of DATA (checked before any cluster starts)."""
    if engine == "stream":
        few_malloc_arenas()  # before any thread allocates (pyarrow reads the head with some)
    inputs = dataset.resolve(data, engine, table.encoding)
    if engine == "stream" and inputs.kind != "csv":
        raise GmmError(f"{data}: --engine stream reads CSV; use --engine dask for Parquet")
    if inputs.kind == "parquet":
        table.check_parquet(data)
    return inputs, dataset.layout(inputs, table)


# -- loading on the cluster ------------------------------------------------------------------
def load_partitions(
    client: Any,
    inputs: dataset.Inputs,
    layout: dataset.Layout,
    table: TableOptions,
) -> tuple[list[Any], int, RowCounts]:
    """Read and check every partition on the workers, keeping it there; returns the futures
    (of ``dataset.Loaded``), the number of rows, and what reading did with the rows."""
    import dask

    from .engine.distributed import wait_result

    if inputs.kind == "csv":
        options = table.reading(layout.names)
        parts = [
            dask.delayed(dataset.range_values)(part, options)
            for part in dataset.byte_ranges(inputs)
        ]
    else:
        frame = dataset.parquet_frame(inputs, layout)
        parts = [
            dask.delayed(dataset.frame_values)(part, layout, table.missing, inputs.display)
            for part in frame.to_delayed()
        ]
    futures = client.compute(parts)
    sizes = [client.submit(_sizes, f, pure=False) for f in futures]
    counts = [wait_result(client, s) for s in sizes]
    n_rows = sum(c[0] for c in counts)
    if n_rows == 0:
        raise GmmError(f"{inputs.display}: no data rows")
    if not any(c[2] for c in counts):
        raise GmmError(all_weights_zero(inputs.display, table.weights or ""))
    return futures, n_rows, sum((c[1] for c in counts), RowCounts())


def _sizes(loaded: dataset.Loaded) -> tuple[int, RowCounts, bool]:
    """A partition's rows, what reading did with them, and whether one weighs more than 0."""
    weighed = loaded.weights is None or bool(loaded.weights.any())
    return int(loaded.x.shape[0]), loaded.counts, weighed


# -- fit -------------------------------------------------------------------------------------
def _stderr_warning(message: str) -> None:
    sys.stderr.write(f"gmm: warning: {message}\n")


def fit(
    engine: str,
    model: Any,
    inputs: dataset.Inputs,
    layout: dataset.Layout,
    table: TableOptions,
    *,
    scheduler: str | None,
    threads: int | None,
    announce: Callable[[int | None], None],
    spill: bool = True,
    warn: Callable[[str], None] | None = None,
) -> RowCounts:
    """Fit ``model`` (an unfitted ``GaussianMixture`` holding the options) over the input;
    returns what reading did with the rows. With ``spill`` the stream engine parses the CSV
    once (``dataset.SpilledBlocks``); ``warn`` tells people when that was not possible.
    ``announce(n_rows)`` is called once the rows are
    counted (None: not known before the first pass)."""
    from .engine.stats import default_threads, single_threaded_blas

    if model.standardize or model.scaling is not None:
        raise GmmError(f"--standardize is not available with --engine {engine} yet")
    if engine == "stream":
        from .engine.sources import BlockSource

        csv = dataset.CsvBlocks(inputs, layout, table)
        # parsed once, spilled to a temporary file (TMPDIR), read back on later passes
        if model.dtype == "float32":
            check_float32(csv.tables)  # two passes, before the fit's
        # with --weights each block carries them as a last column (spilled with the rows)
        width = len(layout.names) + csv.weighted
        blocks = dataset.SpilledBlocks(csv, width) if spill else csv
        source = BlockSource(
            blocks,
            len(layout.names),
            threads or default_threads(),
            seed=model.seed,
            weighted=csv.weighted,
        )
        announce(None)
        try:
            with single_threaded_blas():
                model.fit_source(source)
        except ValueError as error:
            raise GmmError(f"{inputs.display}: {error}") from None
        finally:
            if isinstance(blocks, dataset.SpilledBlocks):
                blocks.close()
        if isinstance(blocks, dataset.SpilledBlocks) and blocks.spill_failed:
            (warn or _stderr_warning)("no room to spill the parsed rows: every pass read the CSV")
        return csv.counts
    from .engine.distributed import DaskSource

    errors = cluster_errors(inputs, layout, table)
    with dask_client(scheduler) as client, errors:
        parts, n_rows, counts = load_partitions(client, inputs, layout, table)
        if model.dtype == "float32":
            _check_float32_parts(client, parts, inputs, layout, table)
        if n_rows < model.n_components:
            raise GmmError(
                f"{inputs.display}: {n_rows} rows are fewer than the "
                f"{model.n_components} components"
            )
        announce(n_rows)
        source = DaskSource(client, parts, len(layout.names), seed=model.seed)
        try:
            model.fit_source(source)
        except ValueError as error:  # e.g. NumericalRangeError: the data, not the cluster
            raise GmmError(f"{inputs.display}: {error}") from None
        finally:
            source.release()
    return counts


def _check_float32_parts(
    client: Any,
    parts: list[Any],
    inputs: dataset.Inputs,
    layout: dataset.Layout,
    table: TableOptions,
) -> None:
    """``data.check_float32`` over the partitions: the column sums and the deviations from
    the mean computed on the workers; only if the data fails, the check is made again on
    the client to word the message as the other engines do (over the CSV files, which name
    the line; over the partitions for Parquet, which has no lines)."""
    from .engine.distributed import wait_result

    sums = [wait_result(client, client.submit(_part_sum, p, pure=False)) for p in parts]
    n = np.sum([count for count, _ in sums], axis=0)
    if not np.any(n):
        return
    mean = np.sum([total for _, total in sums], axis=0) / np.maximum(n, 1)
    spreads = [wait_result(client, client.submit(_part_spread, p, mean, pure=False)) for p in parts]
    farthest = max(top for top, _ in spreads)
    spread = np.sqrt(np.sum([squares for _, squares in spreads], axis=0) / np.maximum(n, 1))
    narrow = (spread > 0) & (spread < FLOAT32_MIN_SPREAD)
    if farthest < FLOAT32_MAX_DEVIATION and not narrow.any():
        return
    if inputs.kind == "csv":
        check_float32(dataset.CsvBlocks(inputs, layout, table).tables)
    import pandas as pd

    frame = pd.DataFrame(columns=layout.all_names)

    def tables() -> Iterator[Table]:
        for part in parts:
            x = wait_result(client, part).x
            yield Table(x, layout.names, inputs.display, 0, frame, [], table.header)

    check_float32(tables)


def _part_sum(loaded: dataset.Loaded) -> tuple[np.ndarray, np.ndarray]:
    """Each column's count and sum of values (a missing cell counts for nothing)."""
    observed = ~np.isnan(loaded.x)
    return observed.sum(axis=0), np.where(observed, loaded.x, 0.0).sum(axis=0)


def _part_spread(loaded: dataset.Loaded, mean: np.ndarray) -> tuple[float, np.ndarray]:
    """The largest |x - mean| of a partition, and the column sums of (x - mean)²."""
    if not loaded.x.shape[0]:
        return 0.0, np.zeros_like(mean)
    deviation = np.nan_to_num(np.abs(loaded.x - mean), nan=0.0)
    return float(deviation.max()), (deviation**2).sum(axis=0)


# -- predict and loglik ----------------------------------------------------------------------
def _result_frame(
    loaded: dataset.Loaded, inputs: Any, params: Any, what: str, shown: PredictColumns
) -> Any:
    """The output rows of one block (``data.scored_rows``, as the memory engine's): label
    (+ probabilities), or log_density, empty for rows dropped; ``inputs`` (every row of the
    block, all columns) in front for --keep-input."""
    resp, log_density = _scores(loaded, params)
    if what == "loglik":
        return scored_rows({"log_density": log_density}, loaded.kept, inputs)
    noise = params.noise is not None
    return scored_rows(prediction_columns(resp, shown, noise), loaded.kept, inputs)


@dataclass(frozen=True)
class _Scoring:
    """What every partition's scoring task needs (sent to the workers)."""

    layout: dataset.Layout
    table: TableOptions  # how DATA is read
    display: str
    params: Any
    what: str  # "predict", "loglik" or "total"
    shown: PredictColumns
    keep_input: bool
    folder: str | None  # a folder of part files, or None for CSV bytes in row order


def _score_part(frame: Any, job: _Scoring, index: int) -> tuple[Any, RowCounts]:
    """One partition scored on a worker: written as a part file (returns its rows), or
    returned as CSV bytes (with the header for the first), or for loglik totals (sum of
    log densities, rows); with what reading did with its rows (dropped, missing cells)."""
    loaded = dataset.frame_values(frame, job.layout, job.table.missing, job.display)
    if job.what == "total":
        _, log_density = _scores(loaded, job.params)
        return loaded.log_likelihood(log_density), loaded.counts
    inputs = frame.reset_index(drop=True) if job.keep_input else None
    result = _result_frame(loaded, inputs, job.params, job.what, job.shown)
    return _finish_part(result, job, index), loaded.counts


def _score_range(part: dataset.ByteRange, job: _Scoring, index: int) -> tuple[Any, RowCounts]:
    """``_score_part`` for a byte range of a CSV file, read by the input layer's reader."""
    options = job.table.reading(job.layout.names, keep_text=job.keep_input)
    try:
        table = dataset.read_range(part, options)
    except GmmError as error:
        raise dataset.PartitionError(error.message) from None
    loaded = dataset.Loaded.of(table)
    if job.what == "total":
        _, log_density = _scores(loaded, job.params)
        return loaded.log_likelihood(log_density), loaded.counts
    result = _result_frame(loaded, table.text, job.params, job.what, job.shown)
    return _finish_part(result, job, index), loaded.counts


def _finish_part(result: Any, job: _Scoring, index: int) -> Any:
    if job.folder is not None:
        return dataset.write_part(result, job.folder, index)
    return dataset.csv_piece(result, index == 0)


def _scores(loaded: dataset.Loaded, params: Any) -> tuple[np.ndarray, np.ndarray]:
    """One partition's or block's scores, as GaussianMixture computes them (one thread: a
    worker process has one core's share; rows counted within the part, so unnumbered)."""
    from .engine.mixture import score_rows

    return score_rows(loaded.x, params, threads=1, numbered=False)


def score(
    engine: str,
    params: Any,
    inputs: dataset.Inputs,
    layout: dataset.Layout,
    *,
    what: str,
    output: str,
    table: TableOptions,
    scheduler: str | None,
    shown: PredictColumns = PREDICT_COLUMNS,
    keep_input: bool = False,
) -> tuple[tuple[float, int, float | None] | None, RowCounts]:
    """predict ("predict") or per-row log densities ("loglik") written to ``output`` (a
    folder of part files with dask, or CSV in row order), or ("total") the sum of the log
    densities, the number of rows and Σ w (with --weights: the sum is Σ w log p; else
    None); and what reading did with the rows (dropped, kept with missing cells), for the
    notes."""
    folder = None
    if what != "total" and dataset.is_folder_output(output):
        if engine != "dask":
            raise GmmError(f"{output}: a folder of part files needs --engine dask")
        folder = dataset.prepare_folder(output)
    job = _Scoring(layout, table, inputs.display, params, what, shown, keep_input, folder)
    if engine == "stream":
        return _score_stream(job, inputs, output)
    import dask

    from .engine.distributed import wait_result

    errors = cluster_errors(inputs, layout, table)
    with dask_client(scheduler) as client, errors:
        if inputs.kind == "csv":
            ranges = dataset.byte_ranges(inputs)
            tasks = [dask.delayed(_score_range)(part, job, i) for i, part in enumerate(ranges)]
        else:
            frame = dataset.parquet_frame(inputs, layout, all_columns=keep_input)
            parts = frame.to_delayed()
            tasks = [dask.delayed(_score_part)(part, job, i) for i, part in enumerate(parts)]
        futures = client.compute(tasks)
        counts = RowCounts()
        if what == "total":
            parts = [wait_result(client, f) for f in futures]
            counts = sum((part_counts for _, part_counts in parts), counts)
            return _add_totals(totals for totals, _ in parts), counts
        if folder is not None:
            for future in futures:
                counts += wait_result(client, future)[1]
            return None, counts
        writer = files.Output(output)
        ok = False
        try:
            for future in futures:
                piece, part_counts = wait_result(client, future)
                writer.write(piece)
                counts += part_counts
                future.release()
            ok = True
        finally:
            writer.close(ok)
    return None, counts


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout is not None and sys.stdout.isatty()
    except (ValueError, OSError):
        return False


def _check_before_writing(job: _Scoring, inputs: dataset.Inputs) -> None:
    """A pass that reads and checks every block, made before the first row goes to stdout,
    a pipe or a device (which cannot be taken back, unlike a file renamed into place): bad
    input then ends the command with nothing written. It costs one more parse of the file."""
    for _ in dataset.CsvBlocks(inputs, job.layout, job.table).tables():
        pass


def _add_totals(
    parts: Iterable[tuple[float, int, float | None]],
) -> tuple[float, int, float | None]:
    """The blocks' or partitions' (Σ log p, rows, Σ w) added up, in order."""
    total, n, weight = 0.0, 0, None
    for part_total, part_n, part_weight in parts:
        total += part_total
        n += part_n
        if part_weight is not None:
            weight = (weight or 0.0) + part_weight
    return total, n, weight


def _score_stream(
    job: _Scoring, inputs: dataset.Inputs, output: str
) -> tuple[tuple[float, int, float | None] | None, RowCounts]:
    """``score`` over the blocks of CSV input, in row order."""
    params, what = job.params, job.what
    blocks = dataset.CsvBlocks(inputs, job.layout, job.table, keep_text=job.keep_input)
    counts = RowCounts()
    if what == "total":
        parts = []
        for loaded in blocks.loaded():
            parts.append(loaded.log_likelihood(_scores(loaded, params)[1]))
            counts += loaded.counts
        totals = _add_totals(parts)
        if totals[1] == 0:
            raise GmmError(f"{inputs.display}: no data rows")
        return totals, counts
    writer = files.Output(output)
    ok = False
    try:
        if not writer.is_atomic and not (output == files.STDIO and _stdout_is_terminal()):
            _check_before_writing(job, inputs)
        first = True
        for table in blocks.tables(every=True):
            loaded = dataset.Loaded.of(table)
            result = _result_frame(loaded, table.text, params, what, job.shown)
            del table
            writer.write(dataset.csv_piece(result, first))
            counts += loaded.counts
            first = False
        ok = True
    finally:
        writer.close(ok)
    return None, counts
