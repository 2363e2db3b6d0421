"""``python -m ackloop ARGS``: runs the ``ackloop`` program with ARGS.

The same program as ``ackloop ARGS`` from the environment's ``bin``
(found as :func:`ackloop.find_binary` finds it), with its exit status.
"""

from __future__ import annotations

import os
import subprocess
import sys

from ._binary import find_binary
from ._error import Error


def main() -> int:
    """Runs the program in this process's place (Unix) or as a child
    (Windows); its exit status. 2 with a message when it is not found."""
    try:
        program = find_binary()
    except Error as e:
        print(f"ackloop: {e}", file=sys.stderr)
        return 2
    argv = [program, *sys.argv[1:]]
    if sys.platform == "win32":
        return subprocess.run(argv).returncode
    os.execv(program, argv)  # does not return


if __name__ == "__main__":
    sys.exit(main())
