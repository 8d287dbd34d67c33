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
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from gmmcli import dataset, files
from gmmcli.errors import GmmError

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
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",  # the scheduler's HTTP routes: loopback too
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
    inputs: dataset.Inputs, layout: dataset.Layout, delimiter: str, header: bool
) -> Iterator[None]:
    """Dask's failures as one line: a cell pandas could not parse (located in the files), or
    the cluster losing the work."""
    from distributed.scheduler import KilledWorker

    from .engine.distributed import ClusterError

    try:
        yield
    except GmmError:
        raise
    except (KilledWorker, ClusterError) as error:
        raise GmmError(f"the Dask cluster lost the work: {_reason(error)}", 1) from None
    except (ValueError, TypeError) as error:
        if inputs.kind == "csv" and _parse_failure(error):
            found = dataset.locate_bad_cell(inputs, layout, delimiter, header)
            raise GmmError(found or f"{inputs.display}: {_reason(error)}") from None
        raise
    except OSError as error:  # connections closed for good
        raise GmmError(f"the Dask cluster failed: {_reason(error)}", 1) from None


def _parse_failure(error: BaseException) -> bool:
    import pandas as pd

    text = str(error)
    return isinstance(error, pd.errors.ParserError) or any(
        part in text for part in ("could not convert", "Unable to parse", "invalid literal")
    )


def _layout(
    inputs: dataset.Inputs,
    delimiter: str,
    header: bool,
    columns: list[str] | None,
    missing: str,
    required: list[str] | None,
    n_required: int | None,
) -> dataset.Layout:
    if inputs.kind == "parquet":
        return dataset.parquet_layout(
            inputs, columns=columns, required=required, n_required=n_required
        )
    return dataset.csv_layout(
        inputs,
        delimiter=delimiter,
        header=header,
        columns=columns,
        missing=missing,
        required=required,
        n_required=n_required,
    )


def open_input(
    engine: str,
    data: str,
    *,
    delimiter: str,
    header: bool,
    columns: list[str] | None,
    missing: str,
    required: list[str] | None = None,
    n_required: int | None = None,
) -> tuple[dataset.Inputs, dataset.Layout]:
    """The files and feature columns of DATA (checked before any cluster starts)."""
    if engine == "stream":
        few_malloc_arenas()  # before any thread allocates (pyarrow reads the head with some)
    inputs = dataset.resolve(data)
    if engine == "stream" and inputs.kind != "csv":
        raise GmmError(f"{data}: --engine stream reads CSV; use --engine dask for Parquet")
    if inputs.kind == "parquet" and (delimiter != "," or not header):
        raise GmmError(f"{data}: -d and --no-header apply to CSV, not Parquet")
    layout = _layout(inputs, delimiter, header, columns, missing, required, n_required)
    return inputs, layout


# -- loading on the cluster ------------------------------------------------------------------
def load_partitions(
    client: Any,
    inputs: dataset.Inputs,
    layout: dataset.Layout,
    *,
    delimiter: str,
    header: bool,
    missing: str,
) -> tuple[list[Any], int, int]:
    """Read and check every partition on the workers, keeping it there; returns the futures
    (of ``dataset.Loaded``), the number of rows and of rows dropped."""
    import dask

    from .engine.distributed import wait_result

    frame = dataset.dask_frame(inputs, layout, delimiter=delimiter, header=header)
    parts = [
        dask.delayed(dataset.frame_values)(part, layout.names, missing, inputs.display)
        for part in frame.to_delayed()
    ]
    futures = client.compute(parts)
    sizes = [client.submit(_sizes, f, pure=False) for f in futures]
    counts = [wait_result(client, s) for s in sizes]
    n_rows = sum(c[0] for c in counts)
    n_dropped = sum(c[1] for c in counts)
    if n_rows == 0:
        raise GmmError(f"{inputs.display}: no data rows")
    return futures, n_rows, n_dropped


def _sizes(loaded: dataset.Loaded) -> tuple[int, int]:
    return int(loaded.x.shape[0]), int(loaded.n_dropped)


# -- fit -------------------------------------------------------------------------------------
def _stderr_warning(message: str) -> None:
    sys.stderr.write(f"gmm: warning: {message}\n")


def fit(
    engine: str,
    model: Any,
    inputs: dataset.Inputs,
    layout: dataset.Layout,
    *,
    delimiter: str,
    header: bool,
    missing: str,
    scheduler: str | None,
    threads: int | None,
    announce: Callable[[int | None], None],
    spill: bool = True,
    warn: Callable[[str], None] | None = None,
) -> int:
    """Fit ``model`` (an unfitted ``GaussianMixture`` holding the options) over the input;
    returns the number of rows dropped. With ``spill`` the stream engine parses the CSV
    once (``dataset.SpilledBlocks``); ``warn`` tells people when that was not possible.
    ``announce(n_rows)`` is called once the rows are
    counted (None: not known before the first pass)."""
    from .engine.stats import default_threads, single_threaded_blas

    if model.standardize or model.scaling is not None:
        raise GmmError(f"--standardize is not available with --engine {engine} yet")
    if engine == "stream":
        from .engine.sources import BlockSource

        csv = dataset.CsvBlocks(inputs, layout, delimiter=delimiter, header=header, missing=missing)
        # parsed once, spilled to a temporary file (TMPDIR), read back on later passes
        blocks = dataset.SpilledBlocks(csv, len(layout.names)) if spill else csv
        source = BlockSource(
            blocks, len(layout.names), threads or default_threads(), seed=model.seed
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
        return csv.n_dropped
    from .engine.distributed import DaskSource

    with dask_client(scheduler) as client, cluster_errors(inputs, layout, delimiter, header):
        parts, n_rows, n_dropped = load_partitions(
            client, inputs, layout, delimiter=delimiter, header=header, missing=missing
        )
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
    return n_dropped


# -- predict and loglik ----------------------------------------------------------------------
def _result_frame(
    loaded: dataset.Loaded, inputs: Any, params: Any, what: str, no_proba: bool
) -> Any:
    """The output rows of one block: label (+ probabilities), or log_density; ``inputs``
    (the block's kept rows, all columns) beside them for --keep-input."""
    import pandas as pd

    resp, log_density = _scores(loaded, params)
    if what == "loglik":
        return pd.DataFrame({"log_density": log_density})
    result = pd.DataFrame({"label": resp.argmax(axis=1)})
    if not no_proba:
        for c in range(resp.shape[1]):
            result[f"prob_{c}"] = resp[:, c]
    if inputs is not None:
        clash = [name for name in result.columns if name in inputs.columns]
        result = result.rename(columns={name: f"gmm_{name}" for name in clash})
        result = pd.concat([inputs, result], axis=1)
    return result


def _score_part(
    frame: Any,
    names: list[str],
    missing: str,
    display: str,
    params: Any,
    what: str,
    no_proba: bool,
    keep_input: bool,
    index: int,
    folder: str | None,
    with_header: bool,
) -> Any:
    """One partition scored on a worker: written as a part file (returns its rows), or
    returned as CSV bytes, or for loglik totals (sum of log densities, rows)."""
    loaded = dataset.frame_values(frame, names, missing, display)
    if what == "total":
        _, log_density = _scores(loaded, params)
        return float(log_density.sum()), int(log_density.shape[0])
    inputs = None
    if keep_input:
        kept = np.isfinite(frame[names].to_numpy(dtype=np.float64)).all(axis=1)
        inputs = frame[kept].reset_index(drop=True)
    result = _result_frame(loaded, inputs, params, what, no_proba)
    if folder is not None:
        return dataset.write_part(result, folder, index)
    return dataset.csv_piece(result, with_header)


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
    delimiter: str,
    header: bool,
    missing: str,
    scheduler: str | None,
    no_proba: bool = False,
    keep_input: bool = False,
) -> tuple[float, int] | None:
    """predict ("predict") or per-row log densities ("loglik") written to ``output`` (a
    folder of part files with dask, or CSV in row order), or ("total") the sum of the log
    densities and the number of rows."""
    folder = None
    if what != "total" and dataset.is_folder_output(output):
        if engine != "dask":
            raise GmmError(f"{output}: a folder of part files needs --engine dask")
        folder = dataset.prepare_folder(output)
    if engine == "stream":
        if keep_input:
            raise GmmError("--keep-input is not available with --engine stream")
        return _score_stream(
            params, inputs, layout, what, output, delimiter, header, missing, no_proba
        )
    import dask

    from .engine.distributed import wait_result

    with dask_client(scheduler) as client, cluster_errors(inputs, layout, delimiter, header):
        frame = dataset.dask_frame(
            inputs, layout, delimiter=delimiter, header=header, all_columns=keep_input
        )
        tasks = [
            dask.delayed(_score_part)(
                part,
                layout.names,
                missing,
                inputs.display,
                params,
                what,
                no_proba,
                keep_input,
                i,
                folder,
                i == 0,
            )
            for i, part in enumerate(frame.to_delayed())
        ]
        futures = client.compute(tasks)
        if what == "total":
            totals = [wait_result(client, f) for f in futures]
            return sum(t[0] for t in totals), sum(t[1] for t in totals)
        if folder is not None:
            for future in futures:
                wait_result(client, future)
            return None
        writer = files.Output(output)
        ok = False
        try:
            for future in futures:
                writer.write(wait_result(client, future))
                future.release()
            ok = True
        finally:
            writer.close(ok)
    return None


def _score_stream(
    params: Any,
    inputs: dataset.Inputs,
    layout: dataset.Layout,
    what: str,
    output: str,
    delimiter: str,
    header: bool,
    missing: str,
    no_proba: bool,
) -> tuple[float, int] | None:
    blocks = dataset.CsvBlocks(inputs, layout, delimiter=delimiter, header=header, missing=missing)
    if what == "total":
        total, n = 0.0, 0
        for loaded in blocks.loaded():
            _, log_density = _scores(loaded, params)
            total += float(log_density.sum())
            n += log_density.shape[0]
        if n == 0:
            raise GmmError(f"{inputs.display}: no data rows")
        return total, n
    writer = files.Output(output)
    ok = False
    try:
        first = True
        for loaded in blocks.loaded():
            result = _result_frame(loaded, None, params, what, no_proba)
            writer.write(dataset.csv_piece(result, first))
            first = False
        ok = True
    finally:
        writer.close(ok)
    return None
