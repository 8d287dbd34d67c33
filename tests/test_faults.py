"""Faults: interrupted and terminated fits leave no partial output and end in one line."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def long_data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(50_000, 6)) + 4 * c for c in range(4)])
    path = tmp_path_factory.mktemp("faults") / "data.csv"
    np.savetxt(path, x, delimiter=",", fmt="%.5f", header="a,b,c,d,e,f", comments="")
    return path


@pytest.mark.parametrize(
    ("signum", "status", "word"),
    [
        (signal.SIGINT, 130, "interrupted"),
        (signal.SIGTERM, 143, "terminated"),
    ],
)
def test_a_signal_during_a_fit_leaves_the_old_output_alone(
    long_data, tmp_path, signum, status, word
):
    output = tmp_path / "model.json"
    output.write_text("the previous model\n")
    command = [
        sys.executable,
        "-m",
        "gmmcli",
        "fit",
        str(long_data),
        "-k",
        "8",
        "--tol",
        "0",
        "--max-iter",
        "1000",
        "--n-init",
        "50",
        "-q",
        "-o",
        str(output),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(3.0)  # past start-up and reading: inside the iterations
    assert process.poll() is None, "the fit ended before the signal"
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == status
    assert out == b""
    assert err.decode().strip() == f"gmm: error: {word}"
    assert output.read_text() == "the previous model\n"
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]  # no temporary file left


def _select_command(data: Path, output: Path) -> list[str]:
    """A grid long enough to be interrupted while its worker processes fit cells."""
    return [
        sys.executable, "-m", "gmmcli", "select", str(data), "-k", "1-8", "--n-init", "20",
        "--tol", "0", "--max-iter", "1000", "--jobs", "2", "-q", "-o", str(output),
    ]  # fmt: skip


def _children(pid: int) -> list[int]:
    listing = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in listing.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(
    ("how", "status", "line"),
    [
        ("ctrl-c", 130, "gmm: error: interrupted"),
        ("sigterm", 143, "gmm: error: terminated"),
        ("worker killed", 1, "gmm: error: a worker process died (out of memory?)"),
    ],
)
def test_select_stops_with_its_workers(long_data, tmp_path, how, status, line):
    output = tmp_path / "model.json"
    process = subprocess.Popen(
        _select_command(long_data, output),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a shell job has
    )
    try:
        _interrupt_and_check(process, how, status, line)
        assert list(tmp_path.iterdir()) == []
    finally:  # whatever happened, leave nothing running (after the checks above)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _interrupt_and_check(process: subprocess.Popen, how: str, status: int, line: str) -> None:
    deadline = time.monotonic() + 60
    while len(_children(process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # the workers are fitting cells now
    workers = _children(process.pid)
    assert len(workers) >= 2 and process.poll() is None
    if how == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)  # a terminal sends it to the whole group
    elif how == "sigterm":
        process.send_signal(signal.SIGTERM)
    else:
        os.kill(workers[0], signal.SIGKILL)  # as the OOM killer does
    out, err = process.communicate(timeout=30)  # not the minutes the grid would take
    assert (process.returncode, out, err.decode().splitlines()) == (status, b"", [line])
    time.sleep(0.5)
    assert [w for w in workers if _alive(w)] == []  # no orphaned worker
