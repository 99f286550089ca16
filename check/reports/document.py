"""Reading scanner JSON with errors that say where: the file and the JSON path.

Every parser walks its report through `Node`s. A missing key or a value of the wrong type
becomes a `ReportParseError` such as
`report.sarif.json: runs[0].results[3].properties: missing 'vulnerableSoftware'`, never a
KeyError or TypeError. Keys the parsers do not know are ignored (scanners add fields in
minor versions); values they cannot interpret are errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from securityhub.errors import ReportParseError

_TYPE_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _describe(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


class ReportFieldError(ReportParseError):
    """A field of a report is missing or unreadable; `source` and `path` say which."""

    def __init__(self, source: str, path: str, problem: str) -> None:
        super().__init__(f"{source}: {path or '(top level)'}: {problem}")
        self.source = source
        self.path = path
        self.problem = problem


def load_json(data: bytes | str, source: str) -> Node:
    """Parse a whole report; truncated or invalid JSON names the line and column."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise ReportParseError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise ReportParseError(f"{source}: empty report")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportParseError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise ReportParseError(f"{source}: JSON nested too deeply") from None
    return Node(value, source, "")


@dataclass(frozen=True)
class Node:
    """A JSON value with the place it came from."""

    value: Any
    source: str
    path: str

    # ------------------------------------------------------------------ navigation
    def _child_path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def error(self, problem: str) -> ReportFieldError:
        return ReportFieldError(self.source, self.path, problem)

    def _object(self) -> dict[str, Any]:
        if not isinstance(self.value, dict):
            raise self.error(f"expected an object, got {_describe(self.value)}")
        return self.value

    def has(self, key: str) -> bool:
        return isinstance(self.value, dict) and self.value.get(key) is not None

    def get(self, key: str) -> Node:
        """The member `key`; missing (or null) is an error."""
        obj = self._object()
        if obj.get(key) is None:
            raise self.error(f"missing {key!r}")
        return Node(obj[key], self.source, self._child_path(key))

    def opt(self, *keys: str) -> Node | None:
        """The first of `keys` present and not null, or None (alternate spellings)."""
        obj = self._object()
        for key in keys:
            if obj.get(key) is not None:
                return Node(obj[key], self.source, self._child_path(key))
        return None

    def first(self, *keys: str) -> Node:
        """Like `opt`, but one of the keys must be present."""
        node = self.opt(*keys)
        if node is None:
            raise self.error("missing " + " or ".join(repr(k) for k in keys))
        return node

    def items(self) -> Iterator[Node]:
        """The elements of an array."""
        if not isinstance(self.value, list):
            raise self.error(f"expected an array, got {_describe(self.value)}")
        for index, value in enumerate(self.value):
            yield Node(value, self.source, self._child_path(index))

    def members(self) -> Iterator[tuple[str, Node]]:
        """The (key, value) pairs of an object."""
        for key, value in self._object().items():
            yield key, Node(value, self.source, self._child_path(key))

    # ------------------------------------------------------------------- scalars
    def string(self) -> str:
        if not isinstance(self.value, str):
            raise self.error(f"expected a string, got {_describe(self.value)}")
        return self.value

    def text(self) -> str:
        """A string, or a number written as text (QIDs come both ways)."""
        if isinstance(self.value, bool) or not isinstance(self.value, str | int):
            raise self.error(f"expected a string or an integer, got {_describe(self.value)}")
        return str(self.value)

    def integer(self) -> int:
        value = self.value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"expected an integer, got {_describe(value)}")
        return value

    def number(self) -> float:
        value = self.value
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise self.error(f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(f"expected a number, got {_describe(value)}")
        return float(value)

    def strings(self) -> tuple[str, ...]:
        """An array of strings."""
        return tuple(item.string() for item in self.items())

    def timestamp(self) -> datetime:
        """An RFC 3339 timestamp (`Z` accepted)."""
        text = self.string()
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise self.error(f"expected an RFC 3339 timestamp, got {text!r}") from None


def opt_str(node: Node, *keys: str) -> str | None:
    """An optional string member; empty strings count as absent."""
    child = node.opt(*keys)
    if child is None:
        return None
    return child.text() or None
