"""Issue 11's reliability items that are not about output devices (see test_outputs.py) or
signals (test_faults.py), each through the real gmm process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOBS = ROOT / "sample_data" / "blobs_2d.csv"
GMM = [sys.executable, "-m", "gmmcli"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.json"
    subprocess.run([*GMM, "fit", str(BLOBS), "-k", "4", "-q", "-o", str(path)], check=True)
    return path


def test_sample_streams_any_number_of_rows(model):
    """-n 1e11 used to end in MemoryError: rows are drawn and written a block at a time, so
    a reader that stops after three lines ends gmm quietly at once."""
    command = [*GMM, "sample", str(model), "-n", "100000000000", "--seed", "3"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        lines = [process.stdout.readline() for _ in range(3)]
        process.stdout.close()  # the reader goes away, as `| head -3` does
        err = process.stderr.read()
        status = process.wait(timeout=60)
    assert (status, err) == (0, b"")
    assert lines[0] == b"x,y,component\n"
    # the first block is the first block of any draw of more than one block, same seed
    fewer = subprocess.run(
        [*GMM, "sample", str(model), "-n", "70000", "--seed", "3"], capture_output=True, check=True
    )
    assert fewer.stdout.decode().splitlines()[:3] == [line.decode().strip() for line in lines]


def test_sample_blocks_join_to_the_same_rows_as_one_draw(model):
    from gmmcli import load_model

    mixture = load_model(str(model))
    x, labels = mixture.sample(150_000, seed=11)
    blocks = list(mixture.sample_blocks(150_000, seed=11, block=65536))
    assert [len(b[0]) for b in blocks] == [65536, 65536, 18928]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in blocks]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), labels)
    # and the rows follow the mixture: component shares near the weights
    shares = np.bincount(labels, minlength=4) / labels.size
    np.testing.assert_allclose(shares, mixture.weights_, atol=0.01)


def test_sample_to_a_file_is_a_csv_of_every_row(model, tmp_path):
    out = tmp_path / "rows.csv"
    subprocess.run(
        [*GMM, "sample", str(model), "-n", "70000", "-o", str(out)], check=True, timeout=120
    )
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["x", "y", "component"] and len(frame) == 70000


def test_version():
    done = subprocess.run([*GMM, "--version"], capture_output=True, check=False)
    from gmmcli import __version__

    assert (done.returncode, done.stdout.decode(), done.stderr) == (0, f"gmm {__version__}\n", b"")


@pytest.mark.parametrize("spelling", [["-t"], ["--tabs"], ["-d", "\\t"], ["-d", "tab"]])
def test_tab_separated_tables(tmp_path, spelling):
    """-t/--tabs, or -d given the two characters \\t a shell passes, or the word tab."""
    frame = pd.read_csv(BLOBS)
    tsv = tmp_path / "blobs.tsv"
    frame.to_csv(tsv, sep="\t", index=False)
    args = ["fit", "-k", "4", "-q"]
    by_tab = subprocess.run([*GMM, *args, str(tsv), *spelling], capture_output=True, check=False)
    by_comma = subprocess.run([*GMM, *args, str(BLOBS)], capture_output=True, check=False)
    assert by_tab.returncode == 0, by_tab.stderr.decode()
    assert by_tab.stdout == by_comma.stdout  # the same model, byte for byte


def test_covariance_names_are_case_insensitive(tmp_path):
    lower = subprocess.run([*GMM, "fit", str(BLOBS), "-k", "2", "--covariance", "diag", "-q"],
                           capture_output=True, check=True)  # fmt: skip
    upper = subprocess.run([*GMM, "fit", str(BLOBS), "-k", "2", "--covariance", "DIAG", "-q"],
                           capture_output=True, check=True)  # fmt: skip
    assert upper.stdout == lower.stdout and b'"covariance_type": "diag"' in upper.stdout
    bad = subprocess.run([*GMM, "fit", str(BLOBS), "-k", "2", "--covariance", "dig"],
                         capture_output=True, check=False)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.decode() == (
        "gmm: error: --covariance 'dig': use one of full, tied, diag, spherical, EII, EEI, VEI, "
        "EVI, VEE, EVE, VVE, EEV, VEV, EVV\n"
    )


@pytest.mark.parametrize("engine", ["memory", "stream"])
def test_fit_labels_writes_what_predict_writes_for_the_new_model(tmp_path, engine):
    model, labels = tmp_path / "m.json", tmp_path / "labels.csv"
    args = ["fit", str(BLOBS), "-k", "4", "-q", "-o", str(model), "--engine", engine]
    done = subprocess.run([*GMM, *args, "--labels", str(labels)], capture_output=True)
    assert (done.returncode, done.stderr) == (0, b"")
    predicted = subprocess.run([*GMM, "predict", str(model), str(BLOBS)], capture_output=True)
    assert labels.read_bytes() == predicted.stdout
    assert len(labels.read_text().splitlines()) == 1001
    same = subprocess.run([*GMM, *args, "--labels", str(model)], capture_output=True)
    assert same.returncode == 2
    assert (
        same.stderr.decode()
        == f"gmm: error: --labels {model}: -o writes the model to that file too\n"
    )


def test_shell_completion_completes_commands_and_options():
    import os

    env = {**os.environ, "_GMM_COMPLETE": "complete_bash"}
    words = {"gmm fi": ("1", "fit"), "gmm fit --cov": ("2", "--covariance")}
    for line, (cword, expected) in words.items():
        env.update(COMP_WORDS=line, COMP_CWORD=cword)
        done = subprocess.run(GMM, capture_output=True, env=env, check=False)
        assert (done.returncode, done.stdout.decode().split()) == (0, [expected])
