"""Draining the program's stdout and stderr in threads, keeping bounded
tails, so the program never blocks on a full pipe however much it logs."""

from __future__ import annotations

import collections
import threading
from typing import IO, Callable

__all__ = ["PipeTail"]

#: Longest line kept; the rest of a longer line is dropped.
MAX_LINE = 8192


class PipeTail:
    """Reads ``stream`` line by line until its end, in a daemon thread.

    Keeps the first ``head`` lines and the last ``tail`` lines, each cut at
    :data:`MAX_LINE` bytes, decoded as UTF-8 (bad bytes replaced).
    """

    def __init__(self, stream: IO[bytes], *, head: int = 0, tail: int = 200) -> None:
        self._stream = stream
        self._head: list[str] = []
        self._head_len = head
        self._tail: collections.deque[str] = collections.deque(maxlen=tail)
        self._ended = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="ackloop-pipe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        in_long_line = False
        try:
            while True:
                raw = self._stream.readline(MAX_LINE)
                if not raw:
                    break
                complete = raw.endswith(b"\n")
                if not in_long_line:
                    self._add(raw.rstrip(b"\r\n").decode("utf-8", errors="replace"))
                in_long_line = not complete
        except (OSError, ValueError):
            pass  # the pipe was closed under us: the end
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def _add(self, line: str) -> None:
        with self._changed:
            if len(self._head) < self._head_len:
                self._head.append(line)
            self._tail.append(line)
            self._changed.notify_all()

    def wait_for(self, ready: Callable[[list[str]], bool], timeout: float) -> bool:
        """Waits until ``ready(head lines)`` is true or the stream ended;
        whether it is true. At most ``timeout`` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: self._ended or ready(self._head), timeout)
            return ready(self._head)

    @property
    def ended(self) -> bool:
        """Whether the stream has ended (the program closed it or exited)."""
        with self._changed:
            return self._ended

    def head(self) -> list[str]:
        """The first lines read (as many as asked for at creation)."""
        with self._changed:
            return list(self._head)

    def tail(self, lines: int | None = None) -> list[str]:
        """The last ``lines`` lines read (all that are kept when ``None``)."""
        with self._changed:
            kept = list(self._tail)
        return kept if lines is None else kept[-lines:] if lines > 0 else []

    def join(self, timeout: float) -> None:
        """Waits (at most ``timeout`` seconds) for the stream's end."""
        self._thread.join(timeout)
