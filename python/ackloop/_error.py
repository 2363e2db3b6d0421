"""The one exception the package raises."""

from __future__ import annotations

__all__ = ["Error"]


class Error(Exception):
    """Something ackloop refused or could not do.

    ``str(error)`` is the reason: the server's own ``error:`` text for a
    control command it refused, the program's stderr for a start that
    failed, or what went wrong (the program not found, stopped, exited
    with a non-zero status).

    Attributes:
        stderr: the tail of the program's stderr when the error concerns
            the process (a failed start or a non-zero exit), else ``""``.
    """

    def __init__(self, message: str, *, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr
