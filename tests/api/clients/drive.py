"""Drives a toxiproxy API through toxiproxy-python (PyPI), a client no one
here wrote: every route it offers and every toxic type, then real traffic
through a proxy to ECHO (an echo server) showing each toxic's effect.
Usage: drive.py HOST PORT PREFIX ECHO. Prints one line per step; exits
non-zero on the first failure."""
import socket
import sys
import time

from toxiproxy import Toxiproxy
from toxiproxy.exceptions import NotFound, ProxyExists, InvalidToxic

host, port, prefix, echo = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
server = Toxiproxy()
server.update_api_consumer(host, port)

TYPES = {
    "latency": {"latency": 100, "jitter": 10},
    "bandwidth": {"rate": 64},
    "slow_close": {"delay": 50},
    "timeout": {"timeout": 200},
    "reset_peer": {"timeout": 10},
    "slicer": {"average_size": 8, "size_variation": 2, "delay": 100},
    "limit_data": {"bytes": 1000},
}


def step(what):
    print("ok", what, flush=True)


assert server.running(), "the API answers"
assert server.version(), "a version"
step("version")

name = prefix + "_py"
proxy = server.create(upstream="127.0.0.1:9", name=name, listen="127.0.0.1:0")
assert proxy.name == name and proxy.enabled is True, vars(proxy)
assert not proxy.listen.endswith(":0"), proxy.listen
step("create")
try:
    server.create(upstream="127.0.0.1:9", name=name)
    raise AssertionError("a second proxy of the same name")
except ProxyExists:
    step("duplicate refused")

assert server.get_proxy(name).listen == proxy.listen
assert name in server.proxies()
step("list and get")

for kind, attributes in TYPES.items():
    for stream in ("downstream", "upstream"):
        toxic_name = "%s_%s" % (kind, stream)
        proxy.add_toxic(type=kind, stream=stream, toxicity=0.5, attributes=attributes)
        toxic = proxy.get_toxic(toxic_name)
        assert toxic is not None, toxic_name
        assert toxic.type == kind and toxic.stream == stream, vars(toxic)
        assert toxic.toxicity == 0.5, vars(toxic)
        assert toxic.attributes == attributes, (toxic.attributes, attributes)
        assert proxy.destroy_toxic(toxic_name)
        assert proxy.get_toxic(toxic_name) is None
    step("toxic " + kind)
try:
    proxy.add_toxic(type="no_such_type")
    raise AssertionError("an unknown toxic type")
except InvalidToxic:
    step("unknown type refused")

proxy.add_toxic(type="latency", attributes={"latency": 5})
with proxy.down():
    assert server.get_proxy(name).enabled is False
    step("disabled")
assert server.get_proxy(name).enabled is True
step("enabled again")

assert server.reset()
assert proxy.toxics() == {}, proxy.toxics()
step("reset")

other = prefix + "_py_pop"
made = server.populate([{"name": other, "upstream": "127.0.0.1:10", "listen": "127.0.0.1:0"}])
assert [p.name for p in made] == [other]
step("populate")

for p in (proxy, server.get_proxy(other)):
    assert server.destroy(p)
try:
    proxy.toxics()
    raise AssertionError("a deleted proxy's toxics")
except NotFound:
    step("destroyed")

# ----- traffic: each toxic's effect on a connection opened after it -----

def connect(proxy):
    h, p = proxy.listen.rsplit(":", 1)
    return socket.create_connection((h, int(p)), timeout=10)


def exchange(proxy, data):
    """Sends data, reads it back whole: the seconds it took."""
    with connect(proxy) as s:
        started = time.monotonic()
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = s.recv(65536)
            assert chunk, "closed after %d of %d bytes" % (len(got), len(data))
            got += chunk
        assert got == data
        return time.monotonic() - started


def drain(s):
    """Reads to the end: the bytes, and how it ended (eof or reset)."""
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return got, "eof"
            got += chunk
    except ConnectionResetError:
        return got, "reset"


relay = server.create(upstream=echo, name=prefix + "_py_relay", listen="127.0.0.1:0")
assert exchange(relay, b"ping") < 0.3
step("traffic")

relay.add_toxic(type="latency", attributes={"latency": 300})
assert exchange(relay, b"ping") >= 0.3
relay.destroy_toxic("latency_downstream")
assert exchange(relay, b"ping") < 0.3
step("latency slows, and its removal restores")

relay.add_toxic(type="bandwidth", attributes={"rate": 10})
assert exchange(relay, bytes(5000)) >= 0.3  # 5 KB at 10 KB/s
relay.destroy_toxic("bandwidth_downstream")
step("bandwidth")

relay.add_toxic(type="slicer", attributes={"average_size": 100, "size_variation": 10, "delay": 1000})
exchange(relay, bytes(range(256)) * 20)
relay.destroy_toxic("slicer_downstream")
step("slicer")

relay.add_toxic(type="limit_data", attributes={"bytes": 10})
with connect(relay) as s:
    s.sendall(b"x" * 100)
    got, _ = drain(s)
    assert got == b"x" * 10, got
relay.destroy_toxic("limit_data_downstream")
step("limit_data")

relay.add_toxic(type="reset_peer", attributes={"timeout": 0})
try:
    with connect(relay) as s:
        try:
            s.sendall(b"hello")
        except (ConnectionResetError, BrokenPipeError):
            pass  # the reset was reported to the write (a read then sees EOF)
        else:
            assert drain(s) == (b"", "reset")
except ConnectionResetError:
    pass  # ackloop resets at once, so the connect itself may see it
relay.destroy_toxic("reset_peer_downstream")
step("reset_peer")

relay.add_toxic(type="timeout", attributes={"timeout": 0})
with connect(relay) as s:
    s.sendall(b"hello")
    s.settimeout(0.5)  # nothing may come: this wait is the point
    try:
        assert s.recv(10) == b"", "data passed a timeout toxic"
    except socket.timeout:
        pass
relay.destroy_toxic("timeout_downstream")
step("timeout")

relay.add_toxic(type="slow_close", attributes={"delay": 400})
with connect(relay) as s:
    s.sendall(b"bye")
    assert s.recv(3) == b"bye"
    started = time.monotonic()
    s.shutdown(socket.SHUT_WR)
    assert drain(s) == (b"", "eof")
    assert time.monotonic() - started >= 0.4
step("slow_close")

with relay.down():
    try:
        connect(relay).close()
        raise AssertionError("a disabled proxy accepted a connection")
    except ConnectionRefusedError:
        step("disabled refuses")
assert exchange(relay, b"again") < 0.3
server.destroy(relay)
print("done", flush=True)
