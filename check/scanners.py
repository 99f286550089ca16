"""The scanner registry: a name (`--scanner NAME`) -> the factory that builds it.

Entries are import strings, so naming a scanner imports only that scanner's module, and a
scanner still being written (or not installed) fails with a clear message only when it is
asked for. Each factory takes keyword options (`make_scanner(name, config)` passes
`config` as keywords) and reads its defaults from the environment when called, never at
import time.

The default scanner is QScanner when it is configured (QSCANNER_PATH, or `qscanner` on
PATH), otherwise the built-in one.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from typing import Any

from check.scanner import Scanner
from securityhub.errors import ConfigurationError

# name -> "module:attribute[.attribute]" of a factory taking keyword options.
SCANNERS: dict[str, str] = {
    "qscanner": "check.qscanner:QScanner.from_config",
    "trivy": "check.external:TrivyScanner.from_config",
    "grype": "check.external:GrypeScanner.from_config",
    "builtin": "check.builtin.scanner:BuiltinScanner",
}
AUTO = "auto"


def scanner_names() -> tuple[str, ...]:
    return tuple(sorted(SCANNERS))


def default_scanner_name(environ: Mapping[str, str] | None = None) -> str:
    """`qscanner` when a QScanner binary is configured, else `builtin`."""
    from check.qscanner import is_configured

    env = os.environ if environ is None else environ
    return "qscanner" if is_configured(env) else "builtin"


def resolve_factory(import_string: str) -> Callable[..., Any]:
    """Import `module:attr.attr` and return the attribute."""
    module_name, _, attr_path = import_string.partition(":")
    module = importlib.import_module(module_name)
    target: Any = module
    for attr in attr_path.split("."):
        target = getattr(target, attr)
    if not callable(target):
        raise TypeError(f"{import_string} is not callable")
    return target


def make_scanner(
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Scanner:
    """Build the scanner `name` (None or "auto": the default) with `config` as keywords.

    Unknown names and scanners that cannot be loaded raise ConfigurationError (exit 2).
    """
    chosen = default_scanner_name(environ) if name in (None, "", AUTO) else str(name)
    if chosen not in SCANNERS:
        raise ConfigurationError(
            f"unknown scanner {chosen!r}", f"use one of {', '.join(scanner_names())}"
        )
    import_string = SCANNERS[chosen]
    try:
        factory = resolve_factory(import_string)
    except ModuleNotFoundError as exc:
        if exc.name and import_string.startswith(exc.name):
            raise ConfigurationError(
                f"the {chosen} scanner is not available in this installation ({exc.name})",
                f"use one of {', '.join(n for n in scanner_names() if n != chosen)}",
            ) from None
        raise
    except AttributeError as exc:
        raise ConfigurationError(f"the {chosen} scanner is not available: {exc}") from None
    options = dict(config or {})
    if environ is not None and chosen != "builtin":
        options.setdefault("environ", environ)
    scanner: Scanner = factory(**options)
    return scanner
