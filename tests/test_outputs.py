"""Outputs onto things that are not regular files: character devices, named pipes and this
process's own descriptors are written into, never replaced (issue 11, items 1 and 13).

Every device and pipe here is made in a temporary folder (mknod / mkfifo); the system's own
/dev entries are never touched.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOBS = ROOT / "sample_data" / "blobs_2d.csv"
NULL_DEVICE = os.makedev(1, 3)  # the numbers of /dev/null on Linux
FULL_DEVICE = os.makedev(1, 7)  # and of /dev/full (every write fails with ENOSPC)


def gmm(*args: object, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess:
    """The real gmm process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "gmmcli", *map(str, args)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=300,
        check=False,
    )


def make_device(path: Path, numbers: int) -> Path:
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, numbers)
    except PermissionError:
        pytest.skip("making a device node needs root")
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "blobs.json"
    assert gmm("fit", BLOBS, "-k", "4", "-q", "-o", path).returncode == 0
    return path


def commands(model: Path, target: Path) -> dict[str, list[object]]:
    """Every command that writes a file, with its output option pointed at ``target``."""
    return {
        "fit": ["fit", BLOBS, "-k", "2", "-q", "-o", target],
        "select -o": ["select", BLOBS, "-k", "1-2", "--covariance", "diag", "-q", "-o", target],
        "select --table": [
            "select",
            BLOBS,
            "-k",
            "1-2",
            "--covariance",
            "diag",
            "-q",
            "-o",
            target.parent / "chosen.json",
            "--table",
            target,
        ],
        "predict": ["predict", model, BLOBS, "-o", target],
        "predict stream": ["predict", model, BLOBS, "--engine", "stream", "-o", target],
        "loglik": ["loglik", model, BLOBS, "-o", target],
        "loglik --per-sample": ["loglik", model, BLOBS, "--per-sample", "-o", target],
        "sample": ["sample", model, "-n", "50", "-o", target],
        "plot": ["plot", model, BLOBS, "-o", target],
    }


COMMANDS = list(commands(Path("m"), Path("t")))


def test_the_list_covers_every_command_with_an_output():
    import inspect

    from gmmcli.cli import app

    writers = set()
    for info in app.registered_commands:
        parameters = inspect.signature(info.callback).parameters
        if "output" in parameters or "table" in parameters:
            writers.add(info.name or info.callback.__name__)
    assert writers == {c.split()[0] for c in COMMANDS}


@pytest.mark.parametrize("command", COMMANDS)
def test_writing_onto_a_character_device_writes_into_it(tmp_path, model, command):
    if command == "plot":
        pytest.importorskip("matplotlib")
    device = make_device(tmp_path / "null", NULL_DEVICE)
    before = os.stat(device)
    done = gmm(*commands(model, device)[command])
    assert done.returncode == 0, done.stderr.decode()
    after = os.stat(device)
    assert stat.S_ISCHR(after.st_mode), "the device node was replaced by a regular file"
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    leftovers = {p.name for p in tmp_path.iterdir()} - {"null", "chosen.json"}
    assert leftovers == set()  # no temporary file left beside it


@pytest.mark.parametrize("command", COMMANDS)
def test_writing_into_a_named_pipe_reaches_its_reader(tmp_path, model, command):
    if command == "plot":
        pytest.importorskip("matplotlib")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []

    def reader() -> None:
        with open(fifo, "rb") as handle:  # blocks until gmm opens the pipe for writing
            received.append(handle.read())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    done = gmm(*commands(model, fifo)[command])
    thread.join(timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert not thread.is_alive(), "the reader never saw the end of the output"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    body = received[0]
    if command == "plot":
        assert body.startswith(b"\x89PNG")
    elif command in ("fit", "select -o"):
        assert json.loads(body)["format"] == "gmmcli-model"
    else:
        lines = body.decode().splitlines()
        first, rows = {
            "select --table": ("n_components,covariance_type", 3),
            "predict": ("label,prob_0", 1001),
            "predict stream": ("label,prob_0", 1001),
            "loglik": ("log_likelihood\t", 6),
            "loglik --per-sample": ("log_density", 1001),
            "sample": ("x,y,component", 51),
        }[command]
        assert lines[0].startswith(first)
        assert len(lines) == rows


def test_the_model_written_into_a_pipe_is_the_one_written_to_a_file(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    thread = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    thread.start()
    assert gmm("fit", BLOBS, "-k", "3", "-q", "-o", fifo).returncode == 0
    thread.join(timeout=60)
    assert gmm("fit", BLOBS, "-k", "3", "-q", "-o", tmp_path / "m.json").returncode == 0
    assert received == [(tmp_path / "m.json").read_bytes()]


def test_a_full_device_is_one_line_and_exit_2(tmp_path):
    device = make_device(tmp_path / "full", FULL_DEVICE)
    done = gmm("fit", BLOBS, "-k", "2", "-q", "-o", device)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert err.splitlines() == [f"gmm: error: {device}: cannot write: No space left on device"]
    assert stat.S_ISCHR(os.stat(device).st_mode)


def test_stdout_onto_a_full_device_is_one_line_and_exit_2(tmp_path):
    device = make_device(tmp_path / "full", FULL_DEVICE)
    with open(device, "wb") as full:
        done = gmm("sample", BLOBS.parent / "missing.json", stdout=full)  # a bad input first
        assert done.returncode == 2
        with open(tmp_path / "m.json", "wb") as sink:
            assert gmm("fit", BLOBS, "-k", "2", "-q", stdout=sink).returncode == 0
        done = gmm("sample", tmp_path / "m.json", "-n", "10", stdout=full)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert err.splitlines() == [
        "gmm: error: cannot write to standard output: No space left on device"
    ]


def test_dev_stdout_into_a_redirected_file_appends_and_keeps_the_file(tmp_path):
    log = tmp_path / "log.txt"
    log.write_bytes(b"earlier line\n")
    inode = os.stat(log).st_ino
    with open(log, "ab") as sink:
        done = gmm("fit", BLOBS, "-k", "2", "-q", "-o", "/dev/stdout", stdout=sink)
    assert done.returncode == 0, done.stderr.decode()
    assert os.stat(log).st_ino == inode, "the redirected file was replaced"
    head, body = log.read_bytes().split(b"\n", 1)
    assert head == b"earlier line"
    assert json.loads(body)["n_components"] == 2


def test_dev_stdout_into_a_pipe(tmp_path):
    done = gmm("fit", BLOBS, "-k", "2", "-q", "-o", "/dev/stdout")
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["n_components"] == 2


def test_a_symlink_to_a_device_writes_into_the_device(tmp_path):
    device = make_device(tmp_path / "null", NULL_DEVICE)
    link = tmp_path / "link"
    link.symlink_to(device)
    done = gmm("fit", BLOBS, "-k", "2", "-q", "-o", link)
    assert done.returncode == 0, done.stderr.decode()
    assert link.is_symlink() and stat.S_ISCHR(os.stat(device).st_mode)


def test_regular_files_are_still_replaced_atomically(tmp_path):
    target = tmp_path / "m.json"
    target.write_text("old")
    inode = os.stat(target).st_ino
    done = gmm("fit", BLOBS, "-k", "2", "-q", "-o", target)
    assert done.returncode == 0, done.stderr.decode()
    assert os.stat(target).st_ino != inode  # renamed into place, not written over
    assert json.loads(target.read_text())["n_components"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


@pytest.mark.parametrize(
    ("redirect", "args", "line"),
    [
        ("<&-", ["fit", "-", "-k", "2"], "cannot read standard input: it is closed"),
        (
            ">&-",
            ["fit", str(BLOBS), "-k", "2", "-q"],
            "cannot write to standard output: it is closed",
        ),
    ],
)
def test_a_closed_standard_stream_is_one_line(redirect, args, line):
    command = " ".join([sys.executable, "-m", "gmmcli", *args]) + f" {redirect}"
    done = subprocess.run(["bash", "-c", command], capture_output=True, timeout=120, check=False)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert len(err.splitlines()) == 1 and err.startswith(f"gmm: error: {line}"), err
