"""``Peer``'s keyword arguments as the program's command line (SPEC 1)."""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

from ._error import Error
from ._text import Text, escape

__all__ = ["Address", "Switch", "command_line", "expected_sockets"]

#: A socket's address: ``True`` is 127.0.0.1 port 0, ``False`` is off, a
#: string is ``HOST:PORT`` as the command line takes it.
Switch = Union[bool, str]
#: ``(host, port)``, as :mod:`socket` takes it.
Address = tuple[str, int]
#: A file name.
PathName = Union[str, "os.PathLike[str]"]

_ANY_PORT = "127.0.0.1:0"


def _switch(option: str, value: Switch) -> list[str]:
    """``--tcp 127.0.0.1:0``, ``--no-tcp`` or ``--tcp ADDR``."""
    if value is True:
        return [f"--{option}", _ANY_PORT]
    if value is False:
        return [f"--no-{option}"] if option in ("tcp", "udp") else []
    if isinstance(value, str) and value:
        return [f"--{option}", value]
    raise Error(f"{option}={value!r}: True, False or an address like '127.0.0.1:0'")


def _number(option: str, value: Optional[int]) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bool) or not isinstance(value, int):
        raise Error(f"{option.replace('-', '_')}={value!r}: a whole number")
    return [f"--{option}", str(value)]


def _specs(option: str, values: Union[str, Sequence[str], None]) -> list[str]:
    """A repeatable option: one string or a sequence of them."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    line: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise Error(f"--{option}: {value!r} is not a string")
        line += [f"--{option}", value]
    return line


def command_line(
    *,
    tcp: Switch,
    udp: Switch,
    control: Switch,
    mode: Optional[str],
    reply: Optional[Text],
    rules: Union[str, Sequence[str], None],
    faults: Union[str, Sequence[str], None],
    upstream: Union[str, Sequence[str], None],
    journal: Optional[str],
    seed: Optional[int],
    greeting: Optional[Text],
    echo: bool,
    script: Optional[PathName],
    max_connections: Optional[int],
    idle_timeout: Optional[int],
    max_line: Optional[int],
    connect_timeout: Optional[int],
    flow_timeout: Optional[int],
    max_flows: Optional[int],
    log_level: Optional[str],
    args: Sequence[str],
) -> list[str]:
    """The arguments (without the program) that ask for these options."""
    line = _switch("tcp", tcp) + _switch("udp", udp) + _switch("control", control)
    if mode is not None:
        line += ["--mode", mode]
    if reply is not None:
        line += ["--reply", escape(reply)]
    if greeting is not None:
        line += ["--greeting", escape(greeting)]
    line += _specs("rule", rules) + _specs("fault", faults) + _specs("upstream", upstream)
    if journal is not None:
        line += ["--journal", journal]
    line += _number("seed", seed)
    if echo:
        line.append("--echo")
    if script is not None:
        line += ["--script", os.fspath(script)]
    line += _number("max-connections", max_connections)
    line += _number("idle-timeout", idle_timeout)
    line += _number("max-line", max_line)
    line += _number("connect-timeout", connect_timeout)
    line += _number("flow-timeout", flow_timeout)
    line += _number("max-flows", max_flows)
    if log_level is not None:
        line += ["--log-level", log_level]
    if isinstance(args, str) or not all(isinstance(a, str) for a in args):
        raise Error(f"args={args!r}: a list of strings, one a command-line word")
    return line + list(args)


def expected_sockets(arguments: Sequence[str]) -> list[str]:
    """The address lines the program prints for ``arguments``, by name, in
    its order: ``tcp``, ``udp``, ``control`` (and ``api``)."""
    on = {"tcp": True, "udp": True, "control": False, "api": False}
    for word in arguments:
        name = word[2:] if word.startswith("--") else ""
        if name in ("tcp", "udp", "control", "api"):
            on[name] = True
        elif name in ("no-tcp", "no-udp"):
            on[name[3:]] = False
    return [name for name in ("tcp", "udp", "control", "api") if on[name]]
