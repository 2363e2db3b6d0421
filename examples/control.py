#!/usr/bin/env python3
"""Live control from any language: a test that makes ackloop's UDP replies
drop, checks that its client sees timeouts, then recovers.

Python's standard library only. Build the server first, then run:

    cargo build --release
    python3 examples/control.py              # or: python3 examples/control.py path/to/ackloop

It starts `ackloop --control 127.0.0.1:0` on free ports, reads the three
address lines it prints (tcp, udp, control), and speaks the control
protocol: one command line out, one `ok ...` or `error: ...` line back.
"""

import socket
import subprocess
import sys

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/ackloop"
server = subprocess.Popen(
    [binary, "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0",
     "--control", "127.0.0.1:0", "--log-level", "warn"],
    stdout=subprocess.PIPE, text=True)


def address(line):
    name, addr = line.split()
    host, port = addr.rsplit(":", 1)
    return name, (host, int(port))


try:
    addrs = dict(address(server.stdout.readline()) for _ in range(3))
    control = socket.create_connection(addrs["control"], timeout=10)
    answers = control.makefile("r")

    def ask(command):
        control.sendall((command + "\n").encode())
        return answers.readline().rstrip("\n")

    def ping(timeout):
        """The client under test: one UDP request, the reply or None."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(timeout)
            udp.sendto(b"Hello, Server", addrs["udp"])
            try:
                return udp.recv(64).decode()
            except socket.timeout:
                return None

    assert ping(5) == "Received", "healthy at first"
    print("healthy:    reply", repr(ping(5)))

    assert ask("fault udp:drop") == "ok"
    assert ping(0.3) is None, "dropped replies mean timeouts"
    print("udp:drop:   the client times out")

    assert ask("clear") == "ok"
    assert ping(5) == "Received", "recovered after clear"
    print("cleared:    reply", repr(ping(5)))

    # Five pings were sent (two healthy, one dropped, two after clear).
    assert ask("received 5 5") == "ok 5", "every ping arrived, dropped or not"
    print("stats:     ", ask("stats"))
finally:
    server.terminate()
    server.wait(10)
