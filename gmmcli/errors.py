"""The one user-facing error type: a message for people and the exit status it maps to."""

from __future__ import annotations


class GmmError(Exception):
    """A problem with the user's input, arguments or environment.

    The CLI prints it as ``gmm: error: <message>`` on stderr and exits with ``status``
    (2: bad input or usage). The message is one line and names the file, and the row and
    column where there is one.
    """

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message
