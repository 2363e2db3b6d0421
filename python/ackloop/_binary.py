"""Finding the ``ackloop`` program (SPEC 15).

The wheel installs the program into the environment's scripts directory
(``bin``, or ``Scripts`` on Windows), beside the interpreter; that one is
used first, so a virtual environment's package runs its own program. Then
``$ACKLOOP_BIN`` (a path), then ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from ._error import Error

__all__ = ["find_binary"]

#: The program's file name on this platform.
_NAME = "ackloop" + (sysconfig.get_config_var("EXE") or "")


def _scripts_dirs() -> list[Path]:
    """The directories pip installs programs into, for this interpreter.

    The environment's own scripts directory, then the user scheme's (``pip
    install --user``), then ``bin`` beside ``sys.executable`` (a virtual
    environment whose ``sysconfig`` points elsewhere).
    """
    dirs = [sysconfig.get_path("scripts")]
    if sys.version_info >= (3, 10):
        user_scheme = sysconfig.get_preferred_scheme("user")
    else:
        user_scheme = f"{os.name}_user"
    try:
        dirs.append(sysconfig.get_path("scripts", scheme=user_scheme))
    except KeyError:
        pass
    dirs.append(str(Path(sys.executable).parent))
    seen: list[Path] = []
    for found in dirs:
        if found and Path(found) not in seen:
            seen.append(Path(found))
    return seen


def find_binary() -> str:
    """The path of the ``ackloop`` program this package runs.

    Looked for in this order: the environment's scripts directory (where
    ``pip install`` put it), ``$ACKLOOP_BIN``, then ``PATH``.

    Raises:
        Error: none of them has the program; the message says where it
            looked and how to get one.
    """
    looked: list[str] = []
    for directory in _scripts_dirs():
        candidate = directory / _NAME
        looked.append(str(candidate))
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    from_env = os.environ.get("ACKLOOP_BIN")
    if from_env:
        if Path(from_env).is_file() and os.access(from_env, os.X_OK):
            return from_env
        raise Error(f"$ACKLOOP_BIN is {from_env!r}, which is not an executable file")
    looked.append("$ACKLOOP_BIN (not set)")
    on_path = shutil.which(_NAME)
    if on_path:
        return on_path
    looked.append("PATH")
    raise Error(
        "the ackloop program was not found (looked in "
        + ", ".join(looked)
        + "); install it with `pip install ackloop` (or `pip install .` in a clone), "
        "or set ACKLOOP_BIN to its path"
    )
