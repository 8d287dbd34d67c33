"""Fixtures several test modules share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def client():
    """A local Dask cluster of two one-thread worker processes on 127.0.0.1, one per test
    module (a module may kill a worker), closed when the module ends."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=50,
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()
