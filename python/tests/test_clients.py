"""Real clients no one here wrote, against peers from the ``ackloop``
fixture: a UDP retry loop, ``http.client`` through the relay, ``smtplib``."""

from __future__ import annotations

import http.client
import http.server
import smtplib
import socket
import threading
from typing import Iterator

import pytest

from ackloop.pytest_plugin import PeerFactory


def ask_with_retries(address: tuple[str, int], request: bytes, tries: int = 20) -> int:
    """A client with a retry loop: sends ``request`` until its echo comes
    back, half a second per try; the number of tries it took."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(0.5)
        for attempt in range(1, tries + 1):
            udp.sendto(request, address)
            try:
                while udp.recv(256) != request:
                    pass  # a late echo of an earlier request: not ours
                return attempt
            except socket.timeout:
                continue
    raise AssertionError(f"{request!r}: no answer in {tries} tries")


def test_a_retry_loop_against_a_seeded_lossy_udp_peer(ackloop: PeerFactory) -> None:
    runs = []
    for _ in range(2):
        peer = ackloop(echo=True, tcp=False, faults=["udp:drop,p=0.5"], seed=1)
        tries = [ask_with_retries(peer.udp, f"request {n}".encode()) for n in range(5)]
        runs.append(tries)
        # Every try that went unanswered is a drop the peer counted.
        assert peer.stats()["faults"] == sum(tries) - len(tries)
        drops = [e for e in peer.journal() if "drop" in e.get("fault", [])]
        assert len(drops) == sum(tries) - len(tries)
    assert runs[0] == runs[1], "the same seed drops the same datagrams"
    assert runs[0] == [1, 2, 3, 2, 1], "seed 1 drops these"


@pytest.fixture
def http_server() -> Iterator[tuple[str, int]]:
    """``http.server`` on a free port, in a thread, answering ``hello``."""

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello from http.server\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # the relay resets connections on purpose

    server = Quiet(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ("127.0.0.1", server.server_address[1])
    server.shutdown()
    server.server_close()


def test_http_client_through_the_relay_with_a_reset_every_second_connection(
    ackloop: PeerFactory, http_server: tuple[str, int]
) -> None:
    host, port = http_server
    relay = ackloop(upstream=f"tcp:{host}:{port}", udp=False, faults=["tcp:reset,every=2"])
    outcomes: list[object] = []
    for _ in range(4):
        conn = http.client.HTTPConnection(*relay.tcp, timeout=10)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            outcomes.append((response.status, response.read()))
        except ConnectionError as e:  # reset by peer (or RemoteDisconnected)
            outcomes.append(f"reset ({type(e).__name__})")
        finally:
            conn.close()
    ok = (200, b"hello from http.server\n")
    assert [o if o == ok else str(o)[:5] for o in outcomes] == [ok, "reset", ok, "reset"], outcomes
    stats = relay.stats()
    assert stats["accepted"] == 4 and stats["faults"] == 2


SMTP_RULES = [
    r"prefix:ehlo => 250 ackloop\r",
    r"prefix:mail FROM: => 250 sender ok\r",
    r"prefix:rcpt TO: => 250 recipient ok\r",
    r"exact:data => 354 end with .\r",
    r"exact:. => 250 queued\r",
    r"exact:QUIT => 221 bye\r",
    "* =>",  # the message's own lines get no reply
]


def test_smtplib_against_a_scripted_smtp_peer(ackloop: PeerFactory) -> None:
    peer = ackloop(mode="line", udp=False, greeting="220 ackloop ESMTP\r\n", rules=SMTP_RULES)
    with smtplib.SMTP(*peer.tcp, local_hostname="client.example", timeout=10) as smtp:
        refused = smtp.sendmail(
            "alice@example.com", ["bob@example.com"], "Subject: hi\r\n\r\nHello, Bob\r\n"
        )
    assert refused == {}
    assert peer.wait_received(9, timeout=10)
    said = [e["data"] for e in peer.journal() if e["dir"] == "in"]
    assert said[0] == b"ehlo client.example\r\n"
    assert b"Hello, Bob\r\n" in said and said[-2:] == [b".\r\n", b"QUIT\r\n"]
    heard = [e["data"] for e in peer.journal() if e["dir"] == "out"]
    assert heard[0] == b"220 ackloop ESMTP\r\n" and heard[-1] == b"221 bye\r\n"
