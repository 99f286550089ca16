"""Text for a terminal: every value escaped, tables whose cells never break a line.

What is printed comes from images and Security Hub: file names, package names, titles. A
file name may hold a newline (a forged table row), an escape sequence (`ESC ] 52` writes the
clipboard, `ESC [ 2 J` clears the screen) or a bidirectional override that shows text in
another order than it is. `printable` escapes them the way Python's repr does, so what the
terminal shows is what the data holds, on one line.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Characters that reorder or break lines without being control characters (category Cc):
# the bidirectional embeddings, overrides and isolates ("Trojan Source", CVE-2021-42574) and
# the Unicode line and paragraph separators.
_INVISIBLE = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    if char in _INVISIBLE or unicodedata.category(char) == "Cc":
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


def printable(value: Any) -> str:
    """`str(value)` with backslashes, control characters and line or order breakers escaped."""
    text = str(value)
    if text.isprintable() and "\\" not in text:
        return text  # the common case, without a per-character walk
    return "".join(_escape(char) for char in text)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain text table: a header of the column names, then one line per row."""
    cells = [[printable(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    out = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in out)
