"""``Peer``: one ``ackloop`` process, started, driven and stopped (SPEC 15)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping, Optional, Sequence, Union

from ._binary import find_binary
from ._control import ControlPort
from ._error import Error
from ._options import Address, PathName, Switch, command_line, expected_sockets
from ._pipes import PipeTail
from ._text import Text, escape, journal_entry, parse_stats, parse_summary

__all__ = ["Peer"]

#: Seconds a control command may take (``received`` adds its own wait).
_COMMAND_TIMEOUT = 30.0


class Peer:
    """An ``ackloop`` program running as a test peer, on free ports.

    ``Peer()`` starts the program on 127.0.0.1 port 0 with TCP, UDP and a
    control port, waits until it prints its addresses, and connects to the
    control port. Use it as a context manager, or call :meth:`stop`::

        with ackloop.Peer(mode="line", faults=["tcp:delay=100"], seed=7) as peer:
            with socket.create_connection(peer.tcp) as s:
                s.sendall(b"hello\\n")
                assert s.recv(64) == b"Received\\n"
            assert peer.stats()["messages"] == 1

    Keyword arguments map to the command line (``ackloop --help``):

    Args:
        mode: ``"once"`` or ``"line"`` (``--mode``).
        reply: the reply text (``--reply``), as the bytes to send: it is
            escaped for the program, so ``"OK\\r"`` sends a carriage return.
        rules: scripted replies, each a ``--rule`` spec in ackloop's own
            syntax (``r"exact:QUIT => 221 bye\\r"``: escapes are ackloop's).
        faults: ``--fault`` specs, as ``["udp:drop,p=0.3"]``.
        upstream: ``--upstream`` for a relay, ``"tcp:127.0.0.1:5432"`` (or a
            list, one per protocol).
        journal: ``True`` keeps a journal in a temporary file (read it with
            :meth:`journal`; removed when the peer is closed); a path keeps
            it there (appended, not removed).
        seed: ``--seed`` of the faults' random choices.
        greeting: sent first on every TCP connection (``--greeting``), as
            the bytes to send (escaped for the program, like ``reply``).
        echo: send every message back (``--echo``).
        script: a ``--script`` file of control commands run at start-up.
        tcp, udp: ``True`` (127.0.0.1 port 0), ``False`` (off) or an
            address such as ``"127.0.0.1:8000"``.
        control: ``True`` (127.0.0.1 port 0), ``False`` (no control port:
            no control methods) or a loopback address.
        max_connections, idle_timeout, max_line, connect_timeout,
            flow_timeout, max_flows: the options of the same name
            (timeouts in whole seconds).
        log_level: ``--log-level`` (``off`` ... ``trace``); left unset, the
            program logs at ``info`` (or ``RUST_LOG``), which includes the
            summary line :meth:`stop` reads.
        args: more command-line words, as ``["--reuse-port"]``.
        binary: the program to run; by default :func:`ackloop.find_binary`.
        env: the program's environment (default: this process's).
        start_timeout: seconds to wait for the address lines.

    Raises:
        Error: the program was not found, exited at start (a bad option:
            the message is its stderr) or did not print its addresses in
            ``start_timeout`` seconds.
    """

    def __init__(
        self,
        *,
        mode: Optional[str] = None,
        reply: Optional[Text] = None,
        rules: Union[str, Sequence[str], None] = None,
        faults: Union[str, Sequence[str], None] = None,
        upstream: Union[str, Sequence[str], None] = None,
        journal: Union[bool, PathName] = False,
        seed: Optional[int] = None,
        greeting: Optional[Text] = None,
        echo: bool = False,
        script: Optional[PathName] = None,
        tcp: Switch = True,
        udp: Switch = True,
        control: Switch = True,
        max_connections: Optional[int] = None,
        idle_timeout: Optional[int] = None,
        max_line: Optional[int] = None,
        connect_timeout: Optional[int] = None,
        flow_timeout: Optional[int] = None,
        max_flows: Optional[int] = None,
        log_level: Optional[str] = None,
        args: Sequence[str] = (),
        binary: Optional[PathName] = None,
        env: Optional[Mapping[str, str]] = None,
        start_timeout: float = 30.0,
    ) -> None:
        self._tempdir: Optional[str] = None
        self._journal_path: Optional[Path] = None
        if journal is True:
            self._tempdir = tempfile.mkdtemp(prefix="ackloop-")
            self._journal_path = Path(self._tempdir, "journal.jsonl")
        elif journal is not False:
            self._journal_path = Path(os.fspath(journal))
        try:
            arguments = command_line(
                tcp=tcp, udp=udp, control=control, mode=mode, reply=reply,
                rules=rules, faults=faults, upstream=upstream,
                journal=None if self._journal_path is None else str(self._journal_path),
                seed=seed, greeting=greeting, echo=echo, script=script,
                max_connections=max_connections, idle_timeout=idle_timeout,
                max_line=max_line, connect_timeout=connect_timeout,
                flow_timeout=flow_timeout, max_flows=max_flows,
                log_level=log_level, args=args,
            )
            program = os.fspath(binary) if binary is not None else find_binary()
            #: The command line the program was started with.
            self.argv: list[str] = [program, *arguments]
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=None if env is None else dict(env),
            )
        except (Error, OSError) as e:
            _remove(self._tempdir)
            raise e if isinstance(e, Error) else Error(f"cannot run ackloop: {e}") from e
        assert self._process.stdout is not None and self._process.stderr is not None
        self._stdout = PipeTail(self._process.stdout, head=16, tail=16)
        self._stderr = PipeTail(self._process.stderr, tail=200)
        # Whatever happens to this object, the process and its files go.
        self._finalizer = weakref.finalize(
            self, _end, self._process, (self._stdout, self._stderr), self._tempdir
        )
        self._stop_lock = threading.Lock()
        self._control: Optional[ControlPort] = None
        self._stopped = False
        self._result: Optional[dict[str, int]] = None
        self._stop_error: Optional[Error] = None
        try:
            self.addresses: dict[str, Address] = self._await_addresses(
                expected_sockets(arguments), start_timeout
            )
        except BaseException:
            self._finalizer()
            raise
        if "control" in self.addresses:
            self._control = ControlPort(self.addresses["control"], self._state)

    # -- start --------------------------------------------------------------

    def _await_addresses(self, names: list[str], timeout: float) -> dict[str, Address]:
        """The address lines, once every one in ``names`` was printed."""

        def parsed(lines: list[str]) -> dict[str, Address]:
            found: dict[str, Address] = {}
            for line in lines:
                name, _, addr = line.partition(" ")
                host, _, port = addr.rpartition(":")
                if name in names and port.isdigit():
                    found[name] = (host.strip("[]"), int(port))
            return found

        if self._stdout.wait_for(lambda lines: len(parsed(lines)) == len(names), timeout):
            return parsed(self._stdout.head())
        if self._stdout.ended:
            status = self._wait_exit(10.0)
            self._stderr.join(10.0)
            stderr = "\n".join(self._stderr.tail()).strip()
            raise Error(
                stderr or f"ackloop exited at start with status {status} and no message",
                stderr=stderr,
            )
        raise Error(
            f"ackloop did not print its addresses ({', '.join(names)}) within {timeout} s",
            stderr="\n".join(self._stderr.tail()),
        )

    def _wait_exit(self, timeout: float) -> Optional[int]:
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    # -- addresses and state ------------------------------------------------

    def _address(self, name: str) -> Address:
        try:
            return self.addresses[name]
        except KeyError:
            raise Error(f"this peer has no {name} socket (it was started without one)") from None

    @property
    def tcp(self) -> Address:
        """The TCP address, ``(host, port)``; :class:`Error` if TCP is off."""
        return self._address("tcp")

    @property
    def udp(self) -> Address:
        """The UDP address, ``(host, port)``; :class:`Error` if UDP is off."""
        return self._address("udp")

    @property
    def control_address(self) -> Optional[Address]:
        """The control port's address, or ``None`` without one."""
        return self.addresses.get("control")

    @property
    def pid(self) -> int:
        """The program's process id."""
        return self._process.pid

    @property
    def running(self) -> bool:
        """Whether the program is still running."""
        return self._process.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        """The program's exit status once it ended (negative: the signal
        that killed it), else ``None``."""
        return self._process.poll()

    @property
    def journal_path(self) -> Optional[str]:
        """The journal file, or ``None`` when the peer keeps no journal."""
        return None if self._journal_path is None else str(self._journal_path)

    def __repr__(self) -> str:
        where = " ".join(f"{name} {h}:{p}" for name, (h, p) in self.addresses.items())
        state = "running" if self.running else f"exited {self.returncode}"
        return f"<ackloop.Peer pid {self.pid} {where} {state}>"

    # -- control ------------------------------------------------------------

    def command(self, line: str, *, timeout: float = _COMMAND_TIMEOUT) -> str:
        """Sends one control command (SPEC 9) and returns its answer after
        ``ok`` (``""`` for a bare ``ok``).

        Raises:
            Error: the server answered ``error: ...`` (the message is its
                text), the peer has no control port or is stopped, or the
                answer did not come within ``timeout`` seconds.
        """
        return self._ask(line, timeout=timeout)

    def _ask(
        self,
        line: str,
        *,
        timeout: float = _COMMAND_TIMEOUT,
        endpoint: Optional[str] = None,
        alone: bool = False,
    ) -> str:
        """The control port's answer to ``line`` (see :class:`ControlPort`).
        ``endpoint``: SPEC 14's ``@NAME COMMAND``, for when endpoints exist."""
        if self._control is None:
            raise Error("this peer has no control port (it was started with control=False)")
        if endpoint is not None:
            line = f"@{endpoint} {line}"
        return self._control.ask(line, timeout, alone=alone)

    def _state(self) -> str:
        status = self._process.poll()
        return "ackloop is running" if status is None else f"ackloop exited with status {status}"

    def fault(self, spec: str) -> None:
        """Adds a fault (``fault SPEC``, SPEC 8 syntax: ``"udp:drop,p=0.5"``)."""
        self._ask(f"fault {spec}")

    def clear(self) -> None:
        """Removes every fault (``clear``)."""
        self._ask("clear")

    def rule(self, spec: str) -> None:
        """Appends a scripted reply rule (``rule SPEC``, SPEC 12 syntax)."""
        self._ask(f"rule {spec}")

    def clear_rules(self) -> None:
        """Removes every rule (``rules clear``)."""
        self._ask("rules clear")

    def reply(self, text: Text) -> None:
        """The reply text from now on (``reply``), as the bytes to send."""
        self._ask(f"reply {escape(text)}")

    def greeting(self, text: Optional[Text]) -> None:
        """The greeting for TCP connections accepted from now on, as the
        bytes to send; ``None`` or empty: none."""
        self._ask(f"greeting {escape(text)}" if text else "greeting")

    def push(self, text: Text) -> None:
        """Sends ``text`` (plus ``\\n`` in line mode) to every open TCP data
        connection now (``push``)."""
        self._ask(f"push {escape(text)}")

    def refuse(self) -> None:
        """Closes the TCP listener: new clients are refused (``refuse``)."""
        self._ask("refuse")

    def accept(self) -> None:
        """Listens again on the same TCP address (``accept``)."""
        self._ask("accept")

    def stats(self) -> dict[str, int]:
        """The counters now (``stats``): ``accepted``, ``rejected``,
        ``open``, ``messages``, ``datagrams``, ``bytes_in``, ``bytes_out``,
        ``dropped``, ``upstream_failed``, ``up_bytes_in``, ``up_bytes_out``,
        ``faults``."""
        return parse_stats(self._ask("stats"))

    def wait_received(self, count: int, timeout: float = 10.0) -> bool:
        """Whether ``count`` messages in all (TCP messages and datagrams since
        the start) arrived within ``timeout`` seconds (``received``)."""
        secs = f"{max(0.0, timeout):.3f}"
        try:
            self._ask(f"received {count} {secs}", timeout=timeout + _COMMAND_TIMEOUT, alone=True)
        except Error as e:
            if str(e).startswith("timeout after"):
                return False
            raise
        return True

    # -- journal and logs ---------------------------------------------------

    def journal(self, last: Optional[int] = None) -> list[dict[str, Any]]:
        """The journal's entries so far (SPEC 13), oldest first: each line's
        object as a dict, plus ``data``, its bytes. ``last``: only the last
        so many.

        Everything the peer did before this call is in it: while the peer
        runs, a control round trip first makes sure the program wrote out
        what it had.

        Raises:
            Error: the peer keeps no journal (start it with
                ``journal=True``), or it was removed when the peer closed.
        """
        path = self._journal_path
        if path is None:
            raise Error("this peer keeps no journal: start it with journal=True")
        if self._tempdir is not None and not os.path.isdir(self._tempdir):
            raise Error("the journal was removed when the peer closed: read it before")
        if not self._stopped and self.control_address is not None and self.running:
            try:
                self._ask("stats", timeout=10.0)
            except Error:
                pass  # read what is there
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise Error(f"cannot read the journal {path}: {e}") from e
        lines = data.split(b"\n")[:-1]  # the last one is not complete yet
        if last is not None:
            lines = lines[-last:] if last > 0 else []
        return [journal_entry(line.decode("utf-8")) for line in lines if line.strip()]

    def stderr(self, lines: Optional[int] = None) -> list[str]:
        """The last lines the program wrote on stderr (its log), at most the
        200 last; ``lines``: only the last so many."""
        return self._stderr.tail(lines)

    # -- stop ---------------------------------------------------------------

    def stop(self, timeout: float = 30.0) -> dict[str, int]:
        """Ends the program (SIGTERM) and returns its final counters.

        The dict has the keys of :meth:`stats`, from the summary line the
        program logs at exit, or the last ``stats`` answer when the summary
        was not logged (``log_level="warn"``). Calling it again returns the
        same (or raises the same error).

        Raises:
            Error: the program exited with a non-zero status (or died of a
                signal), or did not exit within ``timeout`` seconds (it is
                then killed).
        """
        with self._stop_lock:
            if not self._stopped:
                last: Optional[dict[str, int]] = None
                if self._control is not None:
                    if self.running:
                        try:
                            last = parse_stats(self._ask("stats", timeout=10.0))
                        except Error:
                            pass
                    self._control.close(
                        f"this peer is stopped (pid {self.pid}): no control command after stop()"
                    )
                self._stopped = True
                self._result, self._stop_error = self._terminate(timeout, last)
        if self._stop_error is not None:
            raise self._stop_error
        return dict(self._result or {})

    def _terminate(
        self, timeout: float, last: Optional[dict[str, int]]
    ) -> tuple[dict[str, int], Optional[Error]]:
        status = self._process.poll()
        killed = False
        if status is None:
            self._process.terminate()
            status = self._wait_exit(timeout)
            if status is None:
                self._process.kill()
                status = self._wait_exit(10.0)
                killed = True
        deadline = time.monotonic() + 10.0
        for pipe in (self._stdout, self._stderr):
            pipe.join(max(0.0, deadline - time.monotonic()))
        tail = self._stderr.tail()
        result = parse_summary(tail) or last or {}
        stderr = "\n".join(tail[-20:])
        if killed:
            return result, Error(f"ackloop did not exit within {timeout} s of SIGTERM: killed", stderr=stderr)
        if status != 0:
            return result, Error(f"ackloop exited with status {status}; its stderr ended:\n{stderr}", stderr=stderr)
        return result, None

    def close(self) -> None:
        """Stops the program if it runs (ignoring its exit status) and
        removes the temporary journal. What :meth:`__exit__` does."""
        try:
            self.stop()
        except Error:
            pass
        finally:
            self._finalizer()

    def __enter__(self) -> Peer:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        """Stops the program and removes the temporary journal. A non-zero
        exit raises :class:`Error`, unless the block is already raising."""
        try:
            if exc is None:
                self.stop()
        finally:
            self.close()


def _end(
    process: subprocess.Popen[bytes], readers: tuple[PipeTail, ...], tempdir: Optional[str]
) -> None:
    """Kills the process if it still runs, closes its pipes and removes its
    files: the last word, also when a ``Peer`` is collected or the
    interpreter exits."""
    if process.poll() is None:
        process.kill()
        try:
            process.wait(10.0)
        except subprocess.TimeoutExpired:
            pass
    for reader in readers:
        reader.join(5.0)  # the program is gone: the pipe ends
    for reader, pipe in zip(readers, (process.stdout, process.stderr)):
        # Closing a pipe a reader still reads would wait for it: only ended ones.
        if pipe is not None and reader.ended:
            pipe.close()
    _remove(tempdir)


def _remove(tempdir: Optional[str]) -> None:
    if tempdir is not None:
        shutil.rmtree(tempdir, ignore_errors=True)
