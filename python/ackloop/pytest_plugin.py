"""The pytest plugin, registered by the package (entry point ``pytest11``).

The fixture ``ackloop`` is a factory of :class:`ackloop.Peer`::

    def test_retries(ackloop):
        peer = ackloop(faults=["udp:drop,first=1"], seed=7)
        assert my_client.ping(peer.udp) == "Received"

Every peer it started is stopped when the test ends, whatever the test did.
Peers it starts keep a journal unless told ``journal=False``. When a test
fails, its report gains the sections ``ackloop journal`` and ``ackloop
stderr``: each peer's last journal entries and last log lines.
"""

from __future__ import annotations

from typing import Any, Generator

import pytest

from ._error import Error
from ._peer import Peer

__all__ = ["PeerFactory", "ackloop"]

#: Journal entries and stderr lines a failure report shows per peer.
JOURNAL_TAIL = 20
STDERR_TAIL = 30

_PEERS = pytest.StashKey[list[Peer]]()


class PeerFactory:
    """What the ``ackloop`` fixture gives a test: call it to start a peer.

    ``ackloop(**options)`` takes :class:`ackloop.Peer`'s keyword arguments
    and returns the running peer; ``journal`` defaults to ``True`` here, so
    a failure report can show what the peer saw.
    """

    def __init__(self) -> None:
        #: The peers started so far, in order.
        self.peers: list[Peer] = []

    def __call__(self, **options: Any) -> Peer:
        """Starts a :class:`ackloop.Peer` with these options."""
        options.setdefault("journal", True)
        peer = Peer(**options)
        self.peers.append(peer)
        return peer

    def stop_all(self) -> list[str]:
        """Stops every peer (and removes its files); the errors, one line
        each, of those that did not exit cleanly."""
        errors: list[str] = []
        for number, peer in enumerate(self.peers, 1):
            try:
                peer.stop()
            except Error as e:
                errors.append(f"peer {number} (pid {peer.pid}): {e}")
            finally:
                peer.close()
        return errors


@pytest.fixture
def ackloop(request: pytest.FixtureRequest) -> Generator[PeerFactory, None, None]:
    """A factory of ackloop peers: ``peer = ackloop(mode="line", ...)``.

    The peers are stopped at the end of the test; a peer that exits with a
    non-zero status fails the teardown. A failing test's report shows each
    peer's journal tail and stderr tail.
    """
    factory = PeerFactory()
    request.node.stash[_PEERS] = factory.peers
    try:
        yield factory
    finally:
        errors = factory.stop_all()
    if errors:
        pytest.fail("ackloop did not stop cleanly:\n" + "\n".join(errors), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Adds the peers' journal and stderr tails to a failed test's report."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    peers = item.stash.get(_PEERS, None)
    if not peers or not report.failed or call.when == "teardown":
        return
    report.sections.append(("ackloop journal", _journals(peers)))
    report.sections.append(("ackloop stderr", _stderrs(peers)))


def _heading(number: int, peer: Peer) -> str:
    where = ", ".join(f"{name} {h}:{p}" for name, (h, p) in peer.addresses.items())
    return f"peer {number} (pid {peer.pid}; {where})"


def _journals(peers: list[Peer]) -> str:
    parts = []
    for number, peer in enumerate(peers, 1):
        parts.append(f"{_heading(number, peer)}: {_journal_tail(peer)}")
    return "\n".join(parts)


def _journal_tail(peer: Peer) -> str:
    if peer.journal_path is None:
        return "no journal (started with journal=False)"
    try:
        entries = peer.journal(last=JOURNAL_TAIL)
    except Exception as e:  # a report must never fail
        return f"journal unreadable: {e}"
    if not entries:
        return "the journal is empty"
    lines = [f"the last {len(entries)} entries"] + [_entry_line(e) for e in entries]
    return "\n  ".join(lines)


def _entry_line(entry: dict[str, Any]) -> str:
    """``t_ms proto conn.msg dir data`` and the faults applied, on one line."""
    where = entry.get("proto", "?")
    if "conn" in entry:
        where += f" {entry['conn']}.{entry.get('msg', '?')}"
    else:
        where += f" #{entry.get('msg', '?')}"
    line = f"{entry.get('t_ms', '?'):>7} ms {where:<12} {entry.get('dir', '?'):<4} {entry['data']!r}"
    if entry.get("fault"):
        line += f" fault={','.join(map(str, entry['fault']))}"
    if entry.get("endpoint"):
        line += f" endpoint={entry['endpoint']}"
    return line


def _stderrs(peers: list[Peer]) -> str:
    parts = []
    for number, peer in enumerate(peers, 1):
        lines = peer.stderr(STDERR_TAIL)
        body = "\n  ".join(lines) if lines else "(nothing)"
        parts.append(f"{_heading(number, peer)}:\n  {body}")
    return "\n".join(parts)

