"""Faults: interrupted and terminated fits leave no partial output and end in one line."""

from __future__ import annotations

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
