"""Reading an input and writing an output the same way for every file type: '-' is
stdin/stdout, errors name the file, regular files are replaced atomically, and devices and
pipes are written into, never replaced."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import tempfile
from typing import BinaryIO

from .errors import GmmError

STDIO = "-"
STDIN_NAME = "<stdin>"


def display_name(path: str) -> str:
    """How messages name an input: the path as given, or <stdin>."""
    return STDIN_NAME if path == STDIO else path


def read_bytes(path: str) -> bytes:
    """The whole input as bytes ('-' is stdin); a one-line GmmError if it cannot be read."""
    if path == STDIO:
        if sys.stdin is None:
            raise GmmError("cannot read standard input: it is closed (give a file instead of '-')")
        stream = getattr(sys.stdin, "buffer", None)
        try:
            return stream.read() if stream is not None else sys.stdin.read().encode("utf-8")
        except OSError as error:
            raise GmmError(f"cannot read standard input: {error.strerror or error}") from None
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
    if sys.stdout is None:
        raise GmmError("cannot write to standard output: it is closed (use -o FILE)")
    buffer = getattr(sys.stdout, "buffer", None)
    try:
        sys.stdout.flush()
        if buffer is None:
            sys.stdout.write(data.decode("utf-8"))
            sys.stdout.flush()
            return
        buffer.write(data)
        buffer.flush()
    except BrokenPipeError:
        raise
    except OSError as error:
        raise GmmError(f"cannot write to standard output: {error.strerror or error}") from None


def write_output(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through :class:`Output` ('-' is stdout)."""
    with Output(path) as out:
        out.write(data)


class Output:
    """The one way gmm writes a result, whatever the destination.

    - ``-``: standard output.
    - A device, a named pipe, a socket, or a name for one of this process's descriptors
      (``/dev/stdout``, ``/dev/fd/N``, ``/proc/self/fd/N``): written into directly, as
      ``cat > path`` would. Renaming a file over them would replace the device node (as root,
      ``-o /dev/null`` would turn /dev/null into a regular file) or leave a pipe's reader
      waiting for ever.
    - A regular file or a new path: written to a temporary file in the same folder and renamed
      over the path by :meth:`commit`, so an interrupted, failed or discarded write leaves no
      half-written file and an existing file untouched. A symlink's target is replaced.

    Use as a context manager (commit on success, discard on an exception), or call
    :meth:`write` and then :meth:`close` with ``ok``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._temp: str | None = None
        self._handle: BinaryIO | None = None
        self._target = path
        if path == STDIO:
            return
        direct = _direct_target(path)
        try:
            if direct is not None:
                self._target = direct
                fd = os.open(direct, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOCTTY", 0))
            else:
                self._target = _resolve(path)
                if os.path.isdir(self._target):
                    raise GmmError(f"{path}: cannot write: it is a directory")
                fd, self._temp = tempfile.mkstemp(
                    dir=_folder_of(self._target),
                    prefix=f".{os.path.basename(self._target)}.",
                    suffix=".tmp",
                )
            try:
                self._handle = os.fdopen(fd, "wb")
            except BaseException:
                os.close(fd)
                raise
            if self._temp is not None:
                _set_mode(self._handle.fileno(), self._target)
        except OSError as exc:
            self.close(False)
            raise _write_error(path, self._target, exc) from exc
        except BaseException:
            self.close(False)
            raise

    @property
    def is_atomic(self) -> bool:
        """Whether the output lands by a rename (a regular file or a new path)."""
        return self._temp is not None

    def write(self, data: bytes) -> None:
        """Append ``data`` to the output."""
        if self._handle is None:
            write_stdout(data)
            return
        try:
            self._handle.write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _write_error(self.path, self._target, exc) from exc

    def close(self, ok: bool) -> None:
        """Finish: with ``ok``, flush and (for a regular file) rename into place; without it,
        remove the temporary file and leave the path as it was."""
        handle, self._handle = self._handle, None
        temp, self._temp = self._temp, None
        try:
            if handle is not None:
                try:
                    if ok:
                        handle.flush()
                        if temp is not None:
                            os.fsync(handle.fileno())
                finally:
                    with contextlib.suppress(OSError):
                        handle.close()
            if ok and temp is not None:
                os.replace(temp, self._target)
                temp = None
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _write_error(self.path, self._target, exc) from exc
        finally:
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp)

    def __enter__(self) -> Output:
        return self

    def __exit__(self, kind: object, value: object, trace: object) -> None:
        self.close(kind is None)


def check_output_path(path: str) -> None:
    """Fail early, before a long computation, if ``path`` could not be written."""
    if path == STDIO:
        return
    direct = _direct_target(path)
    if direct is not None:  # never opened here: a pipe would wait for its reader
        if not os.access(direct, os.W_OK):
            raise GmmError(f"{path}: cannot write: permission denied")
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


_OWN_DESCRIPTOR = re.compile(r"^/(dev/fd|proc/(self|thread-self|\d+)(/task/\d+)?/fd)/\d+$")
_OWN_STREAMS = ("/dev/stdout", "/dev/stderr", "/dev/stdin")


def _direct_target(path: str) -> str | None:
    """The path to open in place if ``path`` is not a regular file (or new): a device, FIFO
    or socket, or a name for one of this process's descriptors; else None."""
    name = path
    for _ in range(40):  # the symlink chain, one link at a time
        absolute = os.path.abspath(name)
        if absolute in _OWN_STREAMS or _OWN_DESCRIPTOR.match(absolute):
            return path
        if not os.path.islink(name):
            break
        link = os.readlink(name)
        name = link if os.path.isabs(link) else os.path.join(os.path.dirname(name), link)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return path


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
