"""ackloop for Python: start the ``ackloop`` test peer from a test, drive it,
read back what it saw (SPEC 15).

::

    import socket, ackloop

    with ackloop.Peer(mode="line", faults=["tcp:delay=100"], seed=7) as peer:
        with socket.create_connection(peer.tcp) as s:
            s.sendall(b"hello\\n")
            assert s.recv(64) == b"Received\\n"

The package is the standard library only; the program comes in the same
wheel (``pip install ackloop``). Under pytest the fixture ``ackloop`` (a
factory of peers, stopped at the end of each test) is registered
automatically: see :mod:`ackloop.pytest_plugin`.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from ._binary import find_binary
from ._error import Error
from ._peer import Peer
from ._text import escape

__all__ = ["Error", "Peer", "escape", "find_binary", "__version__"]

try:
    __version__: str = _metadata.version("ackloop")
    """The installed distribution's version (the program's own, from Cargo.toml)."""
except _metadata.PackageNotFoundError:  # run from a source tree
    __version__ = "0+unknown"
