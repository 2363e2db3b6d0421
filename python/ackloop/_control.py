"""The control port's client (SPEC 9): one command line out, one ``ok ...``
or ``error: ...`` line back."""

from __future__ import annotations

import socket
import threading
from typing import IO, Callable, Optional

from ._error import Error

__all__ = ["ControlPort"]

#: Longest answer read (a ``stats`` answer is about 200 bytes).
_MAX_ANSWER = 65536


class ControlPort:
    """Commands to one program's control port.

    Commands share one connection, one at a time (it is opened at the first
    command, and afresh after a command that failed, whose answer may still
    come). ``state()`` says how the program is, for error messages.
    """

    def __init__(self, address: tuple[str, int], state: Callable[[], str]) -> None:
        self.address = address
        self._state = state
        self._lock = threading.Lock()
        self._closed = False
        self._socket: Optional[socket.socket] = None
        self._answers: Optional[IO[bytes]] = None

    def ask(self, line: str, timeout: float, *, alone: bool = False) -> str:
        """Sends ``line``; the answer after ``ok`` (``""`` for a bare ``ok``).

        ``alone`` sends it on a connection of its own, so that a command
        that waits (``received``) does not hold up other threads'.

        Raises:
            Error: the server's text after ``error:``; or the port was
                closed, could not be reached, or did not answer in time.
        """
        if "\n" in line or "\r" in line:
            raise Error(f"a control command is one line: {line!r}")
        if alone:
            self._check_open()
            with self._connect(timeout) as conn, conn.makefile("rb") as answers:
                answer = self._exchange(conn, answers, line, timeout)
        else:
            with self._lock:
                self._check_open()
                if self._socket is None:
                    self._socket = self._connect(timeout)
                    self._answers = self._socket.makefile("rb")
                assert self._answers is not None
                try:
                    answer = self._exchange(self._socket, self._answers, line, timeout)
                except Error:
                    self._disconnect()
                    raise
        text = answer.decode("utf-8", errors="replace").rstrip("\r\n")
        if text == "ok" or text.startswith("ok "):
            return text[3:]
        if text.startswith("error: "):
            raise Error(text[len("error: ") :])
        raise Error(f"control command {line!r}: unexpected answer {text!r}")

    def close(self, why: str) -> None:
        """Closes the connection; later commands raise ``Error(why)``."""
        with self._lock:
            self._closed_why = why
            self._closed = True
            self._disconnect()

    def _check_open(self) -> None:
        if self._closed:
            raise Error(self._closed_why)

    def _connect(self, timeout: float) -> socket.socket:
        try:
            return socket.create_connection(self.address, timeout=timeout)
        except OSError as e:
            raise Error(f"cannot reach the control port {self.address}: {e} ({self._state()})") from e

    def _exchange(self, conn: socket.socket, answers: IO[bytes], line: str, timeout: float) -> bytes:
        """One command out, its one answer line back."""
        try:
            conn.settimeout(timeout)
            conn.sendall(line.encode("utf-8") + b"\n")
            answer = answers.readline(_MAX_ANSWER)
        except OSError as e:
            raise Error(f"control command {line!r}: {e} ({self._state()})") from e
        if not answer.endswith(b"\n"):
            raise Error(f"control command {line!r}: the connection closed ({self._state()})")
        return answer

    def _disconnect(self) -> None:
        if self._answers is not None:
            self._answers.close()
            self._answers = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
