"""ackloop's text formats: the escapes of TEXT values (SPEC 12), the
``stats`` answer and the summary line (SPEC 1, 9), journal lines (SPEC 13).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Union

__all__ = ["escape", "parse_stats", "parse_summary", "journal_entry"]

#: Text or bytes: a ``str`` is sent as its UTF-8 bytes.
Text = Union[str, bytes]

_SIMPLE = {ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def escape(text: Text) -> str:
    """``text`` written with ackloop's escapes, as ``--reply``, ``--greeting``
    and the control commands ``reply``, ``greeting`` and ``push`` take it.

    A backslash becomes ``\\\\``, a newline ``\\n``, carriage return ``\\r``,
    tab ``\\t``; other control bytes and bytes that are not UTF-8 become
    ``\\xHH``. So ``escape("220 hi\\r\\n")`` is ``'220 hi\\\\r\\\\n'``, and
    the server sends back exactly the bytes given. Use it to build a rule
    spec from raw bytes: ``f"exact:{escape(b'\\x00')} => ok"``.
    """
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    out: list[str] = []
    decoded = data.decode("utf-8", errors="surrogateescape")
    for char in decoded:
        code = ord(char)
        if code in _SIMPLE:
            out.append(_SIMPLE[code])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        else:
            out.append(char)
    return "".join(out)


def parse_stats(answer: str) -> dict[str, int]:
    """The ``stats`` answer (``accepted=1 rejected=0 ...``) as a dict."""
    stats: dict[str, int] = {}
    for field in answer.split():
        key, sep, value = field.partition("=")
        if sep and value.isdigit():
            stats[key] = int(value)
    return stats


_SUMMARY_MARK = "ackloop stopped: "
#: The summary's names, as the ``stats`` answer names them.
_SUMMARY_KEYS = {"replies_dropped": "dropped", "journal_lines_lost": "journal_lost"}


def parse_summary(stderr_lines: list[str]) -> dict[str, int] | None:
    """The counters of the last summary line among ``stderr_lines``.

    The line is ``... ackloop stopped: accepted 1, rejected 0, ..., replies
    dropped 0, faults 2 (drop 2)``; the keys are those of :func:`parse_stats`
    (``replies dropped`` is ``dropped``). ``None`` when no such line was
    logged (``--log-level warn``).
    """
    for line in reversed(stderr_lines):
        at = line.find(_SUMMARY_MARK)
        if at < 0:
            continue
        counters = re.sub(r"\s*\([^)]*\)", "", line[at + len(_SUMMARY_MARK) :])
        summary: dict[str, int] = {}
        for part in counters.split(","):
            name, _, value = part.strip().rpartition(" ")
            if name and value.isdigit():
                key = name.replace(" ", "_")
                summary[_SUMMARY_KEYS.get(key, key)] = int(value)
        return summary
    return None


def journal_entry(line: str) -> dict[str, Any]:
    """One journal line (SPEC 13) as a dict, plus ``data``: its bytes
    (``text`` encoded as UTF-8, or ``b64`` decoded)."""
    entry: dict[str, Any] = json.loads(line)
    if "b64" in entry:
        entry["data"] = base64.b64decode(entry["b64"])
    else:
        entry["data"] = str(entry.get("text", "")).encode("utf-8")
    return entry
