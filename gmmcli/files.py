"""Reading an input and writing an output the same way for every file type: '-' is
stdin/stdout, errors name the file, and outputs are replaced atomically."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

from .errors import GmmError

STDIO = "-"
STDIN_NAME = "<stdin>"


def display_name(path: str) -> str:
    """How messages name an input: the path as given, or <stdin>."""
    return STDIN_NAME if path == STDIO else path


def read_bytes(path: str) -> bytes:
    """The whole input as bytes ('-' is stdin); a one-line GmmError if it cannot be read."""
    if path == STDIO:
        stream = getattr(sys.stdin, "buffer", None)
        return stream.read() if stream is not None else sys.stdin.read().encode("utf-8")
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise GmmError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise GmmError(f"{path}: is a directory, not a file") from None
    except PermissionError:
        raise GmmError(f"{path}: cannot read: permission denied") from None
    except OSError as error:
        raise GmmError(f"{path}: cannot read: {error.strerror or error}") from None


def write_stdout(data: bytes) -> None:
    """Data to stdout, flushed (BrokenPipeError propagates: the CLI ends quietly)."""
    buffer = getattr(sys.stdout, "buffer", None)
    sys.stdout.flush()
    if buffer is None:
        sys.stdout.write(data.decode("utf-8"))
        sys.stdout.flush()
        return
    buffer.write(data)
    buffer.flush()


def write_output(path: str, data: bytes) -> None:
    """Write ``data`` to stdout ('-') or atomically to ``path``."""
    if path == STDIO:
        write_stdout(data)
    else:
        write_atomic(path, data)


def write_atomic(path: str, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over ``path``.

    A half-written file is never left behind, and on failure (or Ctrl-C) an existing file at
    ``path`` is untouched and the temporary file removed. A symlink's target is replaced.
    """
    target = _resolve(path)
    if os.path.isdir(target):
        raise GmmError(f"{path}: cannot write: it is a directory")
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(
            dir=_folder_of(target), prefix=f".{os.path.basename(target)}.", suffix=".tmp"
        )
        try:
            handle = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise
        with handle:
            _set_mode(handle.fileno(), target)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise _write_error(path, target, exc) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def check_output_path(path: str) -> None:
    """Fail early, before a long computation, if ``path`` could not be written."""
    if path == STDIO:
        return
    target = _resolve(path)
    if os.path.isdir(target):
        raise GmmError(f"{path}: cannot write: it is a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=_folder_of(target), prefix=".gmm-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise _write_error(path, target, exc) from exc


def _resolve(path: str) -> str:
    """Follow a symlink so that the rename replaces its target, not the link."""
    return os.path.realpath(path) if os.path.islink(path) else path


def _folder_of(target: str) -> str:
    return os.path.dirname(os.path.abspath(target))


def _set_mode(fd: int, target: str) -> None:
    """Give the new file the permissions a plain open() would (mkstemp makes it 0600)."""
    if not hasattr(os, "fchmod"):
        return
    try:
        mode = os.stat(target).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.fchmod(fd, mode)


def _write_error(path: str, target: str, exc: OSError) -> GmmError:
    shown = os.path.dirname(path) or "."
    folder = _folder_of(target)
    if not os.path.exists(folder):
        return GmmError(f"{path}: cannot write: folder '{shown}' does not exist")
    if not os.path.isdir(folder):
        return GmmError(f"{path}: cannot write: '{shown}' is not a folder")
    if isinstance(exc, IsADirectoryError) or os.path.isdir(target):
        return GmmError(f"{path}: cannot write: it is a directory")
    if isinstance(exc, PermissionError):
        return GmmError(f"{path}: cannot write: permission denied")
    return GmmError(f"{path}: cannot write: {exc.strerror or exc}")
