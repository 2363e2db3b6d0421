"""Drives a toxiproxy API through toxiproxy-python (PyPI), a client no one
here wrote: every route it offers and every toxic type. Usage:
drive.py HOST PORT PREFIX. Prints one line per step; exits non-zero on the
first failure."""
import sys

from toxiproxy import Toxiproxy
from toxiproxy.exceptions import NotFound, ProxyExists, InvalidToxic

host, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
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
print("done", flush=True)
