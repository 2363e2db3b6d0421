"""ackloop.Peer itself: start, control, journal, stop, and their edge cases."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pytest

import ackloop


def gone(pid: int) -> bool:
    """Whether no process has this id any more (a reaped child)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_installed_program_is_the_one_beside_the_interpreter() -> None:
    scripts = Path(sysconfig.get_path("scripts"))
    assert Path(ackloop.find_binary()) == scripts / "ackloop"
    assert "site-packages" in ackloop.__file__ or "dist-packages" in ackloop.__file__
    version = subprocess.run(
        [sys.executable, "-m", "ackloop", "--version"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    assert version.stdout.strip() == f"ackloop {ackloop.__version__}"


def test_ackloop_bin_then_path_when_not_installed(tmp_path: Path) -> None:
    # A bare interpreter's view: run the lookup with the scripts directory
    # out of the way, through a copy of the module in a fresh process.
    script = (
        "import sys, sysconfig, ackloop._binary as b\n"
        "b._scripts_dirs = lambda: []\n"
        "try:\n    print(b.find_binary())\n"
        "except Exception as e:\n    print('error', e)\n"
    )
    env = {**os.environ, "ACKLOOP_BIN": ackloop.find_binary()}
    found = subprocess.run([sys.executable, "-c", script], env=env,
                           capture_output=True, text=True, timeout=30)
    assert found.stdout.strip() == ackloop.find_binary()
    env = {k: v for k, v in os.environ.items() if k != "ACKLOOP_BIN"}
    env["PATH"] = str(tmp_path)
    missing = subprocess.run([sys.executable, "-c", script], env=env,
                             capture_output=True, text=True, timeout=30)
    assert missing.stdout.startswith("error the ackloop program was not found")
    assert "ACKLOOP_BIN" in missing.stdout


def test_a_bad_option_raises_with_the_programs_message() -> None:
    with pytest.raises(ackloop.Error, match="--mode") as info:
        ackloop.Peer(mode="bogus")
    assert "bogus" in str(info.value)
    with pytest.raises(ackloop.Error, match="--frobnicate"):
        ackloop.Peer(args=["--frobnicate"])
    with pytest.raises(ackloop.Error, match="--fault"):
        ackloop.Peer(faults=["tcp:drop"])  # drop is UDP's


def test_a_peer_answers_and_counts() -> None:
    with ackloop.Peer(mode="line", reply="pong") as peer:
        with socket.create_connection(peer.tcp, timeout=10) as s:
            s.sendall(b"ping\n")
            assert s.recv(64) == b"pong\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(10)
            u.sendto(b"ping", peer.udp)
            assert u.recv(64) == b"pong"
        assert peer.wait_received(2, timeout=10)
        stats = peer.stats()
        assert (stats["messages"], stats["datagrams"]) == (1, 1)
        summary = peer.stop()
    assert summary["messages"] == 1 and summary["datagrams"] == 1
    assert summary["bytes_in"] == 9 and summary["dropped"] == 0


def test_control_commands_change_the_running_peer() -> None:
    with ackloop.Peer(mode="line", udp=False) as peer:
        peer.reply("first\r")
        peer.greeting(b"hello \\ \x00\r\n")  # raw bytes, escaped on the way
        peer.rule(r"exact:quit => bye\r")
        # (The file closes too, or the socket would stay open.)
        with socket.create_connection(peer.tcp, timeout=10) as s, s.makefile("rb") as f:
            assert f.readline() == b"hello \\ \x00\r\n"
            s.sendall(b"x\n")
            assert f.readline() == b"first\r\n"
            s.sendall(b"quit\n")
            assert f.readline() == b"bye\r\n"
            peer.push("news")
            assert f.readline() == b"news\n"
            peer.clear_rules()
            peer.fault("tcp:close")
            s.sendall(b"quit\n")
            assert f.readline() == b""
        peer.clear()
        peer.greeting(None)
        peer.refuse()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(peer.tcp, timeout=10)
        peer.accept()
        socket.create_connection(peer.tcp, timeout=10).close()
        with pytest.raises(ackloop.Error, match="unknown kind|kind"):
            peer.fault("tcp:explode")
        with pytest.raises(ackloop.Error, match="unknown command"):
            peer.command("frobnicate")
        with pytest.raises(ackloop.Error, match="no udp socket"):
            peer.udp


def test_wait_received_says_false_after_its_timeout() -> None:
    with ackloop.Peer() as peer:
        assert peer.wait_received(0, timeout=1)
        assert not peer.wait_received(1, timeout=0.2)


def test_a_waiting_wait_received_does_not_hold_up_other_commands() -> None:
    with ackloop.Peer() as peer:
        waited: list[bool] = []
        waiter = threading.Thread(target=lambda: waited.append(peer.wait_received(1, timeout=60)))
        waiter.start()
        assert peer.stats()["datagrams"] == 0  # answered while the other waits
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(b"one", peer.udp)
        waiter.join(60)
        assert waited == [True]


def test_the_journal_reads_back_bytes_text_or_not() -> None:
    with ackloop.Peer(journal=True, echo=True, tcp=False) as peer:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(10)
            for payload in (b"plain", b"\xff\xfe"):
                u.sendto(payload, peer.udp)
                assert u.recv(64) == payload
        entries = peer.journal()
        assert [(e["dir"], e["data"]) for e in entries] == [
            ("in", b"plain"), ("out", b"plain"), ("in", b"\xff\xfe"), ("out", b"\xff\xfe"),
        ]
        assert "b64" in entries[2] and entries[0]["proto"] == "udp"
        path = peer.journal_path
        assert path is not None and os.path.exists(path)
        peer.stop()
        assert len(peer.journal(last=1)) == 1  # still readable until closed
    assert not os.path.exists(path)
    with pytest.raises(ackloop.Error, match="removed"):
        peer.journal()


def test_stop_twice_returns_the_same() -> None:
    peer = ackloop.Peer()
    first = peer.stop()
    assert peer.stop() == first
    assert not peer.running and peer.returncode == 0
    peer.close()


def test_a_control_command_after_stop_raises() -> None:
    peer = ackloop.Peer()
    peer.stop()
    with pytest.raises(ackloop.Error, match="stopped"):
        peer.stats()
    with pytest.raises(ackloop.Error, match="stopped"):
        peer.fault("udp:drop")
    peer.close()


def test_a_peer_left_open_when_the_block_raises_is_stopped() -> None:
    with pytest.raises(RuntimeError):
        with ackloop.Peer() as peer:
            pid = peer.pid
            raise RuntimeError("the test failed")
    assert gone(pid) and peer.returncode == 0


def test_a_forgotten_peer_is_killed_when_collected() -> None:
    peer = ackloop.Peer(journal=True)
    pid, path = peer.pid, peer.journal_path
    del peer
    import gc
    gc.collect()
    assert gone(pid)
    assert path is not None and not os.path.exists(path)


def test_two_peers_in_one_test_one_relaying_to_the_other() -> None:
    with ackloop.Peer(reply="from the back", udp=False) as back:
        host, port = back.tcp
        with ackloop.Peer(upstream=f"tcp:{host}:{port}", udp=False) as front:
            assert front.tcp != back.tcp
            with socket.create_connection(front.tcp, timeout=10) as s:
                s.sendall(b"hi")
                assert s.recv(64) == b"from the back"
            assert front.stats()["up_bytes_in"] == len(b"from the back")
        assert back.stats()["accepted"] == 1


def test_stop_raises_when_the_program_did_not_exit_cleanly() -> None:
    peer = ackloop.Peer()
    os.kill(peer.pid, signal.SIGKILL)
    with pytest.raises(ackloop.Error, match="status -9"):
        peer.stop()
    with pytest.raises(ackloop.Error, match="status -9"):
        peer.stop()  # the same again
    peer.close()


def test_the_summary_or_the_last_stats_without_it() -> None:
    peer = ackloop.Peer(log_level="warn")
    with socket.create_connection(peer.tcp, timeout=10) as s:
        s.sendall(b"x")
        assert s.recv(64) == b"Received"
    assert peer.stop()["accepted"] == 1  # the last stats answer
    assert peer.stderr() == []
    peer.close()


def test_no_control_port_means_no_control_methods() -> None:
    with ackloop.Peer(control=False) as peer:
        assert peer.control_address is None
        with pytest.raises(ackloop.Error, match="no control port"):
            peer.stats()
        with socket.create_connection(peer.tcp, timeout=10) as s:
            s.sendall(b"x")
            assert s.recv(64) == b"Received"
        assert peer.stop()["accepted"] == 1  # from the summary line


def test_escape_writes_what_the_program_unescapes() -> None:
    assert ackloop.escape("a\\b\r\n\t") == "a\\\\b\\r\\n\\t"
    assert ackloop.escape(b"\x00\xff\x7f") == "\\x00\\xff\\x7f"
    assert ackloop.escape("é") == "é"


def test_a_chatty_program_never_blocks_on_its_stderr() -> None:
    # At trace level each datagram logs about 85 bytes: 250 KB, far more than a
    # pipe holds (64 KiB). The drain keeps the program serving, and keeps
    # only a bounded tail.
    with ackloop.Peer(tcp=False, log_level="trace") as peer:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(10)
            for n in range(3000):
                u.sendto(b"x" * 64, peer.udp)
                assert u.recv(64) == b"Received", n
        assert peer.stats()["datagrams"] == 3000
        assert len(peer.stderr()) == 200
    assert peer.returncode == 0
