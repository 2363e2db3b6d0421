"""The pytest plugin, in a pytester run: a failing test's report carries
each peer's journal and stderr tails; peers end whatever the test did."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FAILING = """
import socket

def test_fails_on_purpose(ackloop):
    peer = ackloop(mode="line", udp=False)
    other = ackloop(echo=True, tcp=False, journal=False)
    with open({pids!r}, "w") as f:
        f.write(f"{{peer.pid}} {{other.pid}}")
    with socket.create_connection(peer.tcp, timeout=10) as s:
        s.sendall(b"the line to find in the report\\n")
        assert s.recv(64) == b"Received\\n"
    raise AssertionError("failing on purpose")
"""


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_failing_test_reports_the_journal_and_stderr_tails(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    pytester.makepyfile(FAILING.format(pids=str(pids)))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "ackloop journal" in out and "ackloop stderr" in out
    result.stdout.fnmatch_lines([
        "*ackloop journal*",
        "peer 1 (pid *; tcp 127.0.0.1:*, control 127.0.0.1:*): the last 2 entries",
        "*tcp 1.1 *in*b'the line to find in the report\\n'",
        "*tcp 1.1 *out*b'Received\\n'",
        "peer 2 (pid *): no journal (started with journal=False)",
        "*ackloop stderr*",
        "peer 1 *",
        "*serving tcp 127.0.0.1:* (line mode), udp off*",
    ])
    # The peers the failed test left running were stopped.
    for pid in pids.read_text().split():
        assert gone(int(pid))


def test_a_passing_test_stops_its_peers_and_reports_nothing(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    pytester.makepyfile(f"""
def test_passes(ackloop):
    peer = ackloop()
    assert peer.stats()["accepted"] == 0
    open({str(pids)!r}, "w").write(str(peer.pid))
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=1)
    assert "ackloop journal" not in result.stdout.str()
    assert gone(int(pids.read_text()))


def test_a_peer_that_crashed_fails_the_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
import os, signal

def test_kills_its_peer(ackloop):
    peer = ackloop()
    os.kill(peer.pid, signal.SIGKILL)
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ackloop did not stop cleanly*", "*status -9*"])
