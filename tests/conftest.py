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


def pytest_addoption(parser):
    parser.addoption(
        "--by-component",
        action="store_true",
        help="run the full kernel's models component by component (engine/bycomponent.py) "
        "whatever d and k, in this process",
    )


@pytest.fixture(autouse=True)
def _kernel_by_component(request, monkeypatch):
    """With --by-component, every test runs the full and family models through the kernel
    component by component (worker processes keep the default rule)."""
    if request.config.getoption("--by-component"):
        from gmmcli.engine import bycomponent

        monkeypatch.setattr(bycomponent, "chosen", lambda strategy, d, k: strategy.pairwise)
