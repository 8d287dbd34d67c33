"""README.md: its set-up commands are the ones CI runs, and its examples print what gmm prints.

Every fenced block (plain ```) whose first line starts with ``$ `` is an example: each ``$ …``
line is run with bash, in order, in a temporary folder holding a copy of ``sample_data/``
(so ``-o model.json`` leaves nothing in the repository, and later examples read the model
the first one wrote), with the virtual environment's ``bin`` first on PATH and a fixed
terminal width, and its stdout and stderr together must equal the lines under it.

Only what legitimately varies is normalised: trailing spaces at the end of a line (rich pads
its lines; Markdown editors strip them), and the ``time ms`` column of the convergence
table (replaced, at the same width, by ``~``). The files the "Errors" examples name
(``holes.csv``, ``semi.csv``) are written into the folder with the content the README
describes.

To regenerate the examples after a change to what gmm prints::

    .venv/bin/python tests/test_readme.py --update
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the virtual environment's bin, where `gmm` is installed
COLUMNS = "100"  # the terminal width the README's tables were printed at

# the files the "Errors and exit codes" examples read, as the README describes them
EXAMPLE_FILES = {
    "holes.csv": "x,y\n1.0,2.0\n3.0,\n5.0,6.0\n",  # an empty cell: line 3, column 'y'
    "semi.csv": "x;y\n1.0;2.0\n3.0;4.0\n",  # separated by semicolons
}


def setup_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(r"```sh\n(.+?)\n```", text)[:2]


def test_readme_opens_with_the_two_setup_commands():
    install_and_run, install_and_test = setup_commands()
    assert "pip install ." in install_and_run and "gmm fit sample_data/" in install_and_run
    assert "pip install '.[test]'" in install_and_test and "pytest" in install_and_test


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert setup_commands()[1] in ci


# -- the examples ------------------------------------------------------------------------------
@dataclass
class Example:
    command: str  # what follows "$ "
    expected: list[str]  # the lines under it, up to the next "$ " line or the block's end
    line: int  # where the command is in README.md (1-based)


BLOCK = re.compile(r"^```\n(\$ .*?)^```$", re.MULTILINE | re.DOTALL)


def examples(text: str) -> list[Example]:
    found: list[Example] = []
    for block in BLOCK.finditer(text):
        first = text.count("\n", 0, block.start(1)) + 1
        for offset, line in enumerate(block.group(1).splitlines()):
            if line.startswith("$ "):
                found.append(Example(line[2:], [], first + offset))
            else:
                found[-1].expected.append(line)
    return found


EXAMPLES = examples(README.read_text(encoding="utf-8"))


def normalise(lines: list[str]) -> list[str]:
    """Trailing spaces dropped; the convergence table's `time ms` cells made all alike."""
    result: list[str] = []
    time_cell: int | None = None
    for line in lines:
        line = line.rstrip()
        if line.startswith("┃") and "time ms" in line:
            time_cell = [cell.strip() for cell in line.split("┃")].index("time ms")
        elif line.startswith("└"):
            time_cell = None
        elif time_cell is not None and line.startswith("│"):
            cells = line.split("│")
            width = len(cells[time_cell])
            cells[time_cell] = " " + "~".rjust(width - 2) + " "
            line = "│".join(cells)
        result.append(line)
    while result and not result[-1]:
        result.pop()
    return result


def prepare(folder: Path) -> None:
    shutil.copytree(ROOT / "sample_data", folder / "sample_data")
    for name, content in EXAMPLE_FILES.items():
        (folder / name).write_text(content, encoding="utf-8")


def run_example(command: str, folder: Path) -> list[str]:
    """The example's stdout and stderr, interleaved as a terminal shows them."""
    env = {key: value for key, value in os.environ.items() if "COLOR" not in key}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", COLUMNS=COLUMNS, TERM="dumb")
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # every process of a pipeline: stderr as well
        text=True,
        timeout=120,
        check=False,
    )
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[int, list[str]]:
    """Every example run once, in the README's order (later ones read model.json)."""
    assert (BIN / "gmm").exists(), f"no gmm in {BIN}: run the tests with the venv's python"
    folder = tmp_path_factory.mktemp("readme")
    prepare(folder)
    return {example.line: run_example(example.command, folder) for example in EXAMPLES}


def test_the_readme_has_its_examples():
    commands = [example.command.split()[:2] for example in EXAMPLES]
    for command in ["fit", "predict", "loglik", "select", "sample"]:
        assert ["gmm", command] in commands, commands
    assert all(example.expected for example in EXAMPLES), EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: f"line{e.line}:{e.command[:40]}")
def test_readme_example_prints_what_the_readme_shows(outputs, example):
    got = normalise(outputs[example.line])
    assert got == normalise(example.expected), (
        f"README.md line {example.line}: `{example.command}` prints\n"
        + "\n".join(outputs[example.line])
        + "\n(regenerate with: .venv/bin/python tests/test_readme.py --update)"
    )


def update_readme() -> None:
    """Rewrite every example's output in README.md with what gmm prints now."""
    import tempfile

    text = README.read_text(encoding="utf-8")
    lines = text.split("\n")
    with tempfile.TemporaryDirectory() as folder:
        prepare(Path(folder))
        # from the last example up, so the line numbers of the earlier ones stay right
        runs = [(e, run_example(e.command, Path(folder))) for e in examples(text)]
    for example, got in reversed(runs):
        start = example.line  # index of the first line under the command
        lines[start : start + len(example.expected)] = [line.rstrip() for line in got]
    README.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        update_readme()
    else:
        sys.exit("usage: python tests/test_readme.py --update")
