"""Logging for every containerscan process.

JSON lines when stderr is not a terminal (ECS sends them to CloudWatch through awslogs, where
they can be queried field by field), readable lines on a terminal. Structured fields travel
in `extra=fields(...)`. A redacting filter replaces every registered secret (the Qualys
token, registry passwords, AWS secret keys from the environment) with `***` in messages,
arguments and fields, so no secret is ever logged, whoever wrote the log call.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

ROOT_LOGGER = "containerscan"
MASK = "***"
# Environment variables whose values are secrets wherever they appear.
SECRET_ENV_VARS = (
    "QUALYS_ACCESS_TOKEN",
    "QUALYS_TOKEN",
    "QUALYS_CLIENT_SECRET",
    "QSCANNER_REGISTRY_PASSWORD",
    "QSCANNER_REGISTRY_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "CONTAINERSCAN_REGISTRY_PASSWORD",
)
# Secrets shorter than this are not registered: masking "a" everywhere would garble logs
# without protecting anything.
MIN_SECRET_LENGTH = 6
_BEARER = re.compile(
    r"(?i)(bearer\s+|authorization[\"']?\s*[:=]\s*[\"']?(?:basic\s+)?)[\w.~+/=-]{8,}"
)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask `value` in every log line from now on."""
    global _pattern
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def register_secrets_from_env(environ: Mapping[str, str] | None = None) -> None:
    env = os.environ if environ is None else environ
    for name in SECRET_ENV_VARS:
        register_secret(env.get(name))


def redact(text: str) -> str:
    """Return `text` with every registered secret and bearer credential masked."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return _BEARER.sub(lambda m: m.group(1) + MASK, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v) for v in value]
    return value


def fields(**values: Any) -> dict[str, Any]:
    """Structured fields for a log call: `log.info("scanned", extra=fields(digest=d))`."""
    return {"fields": values}


class RedactingFilter(logging.Filter):
    """Renders the message once, masks secrets in it and in the structured fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        data = getattr(record, "fields", None)
        if data:
            record.fields = _redact_value(data)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data = getattr(record, "fields", None)
        if data:
            for key, value in data.items():
                doc.setdefault(key, value)
        if record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, default=str, ensure_ascii=False)


class TerminalFormatter(logging.Formatter):
    """`12:00:01 INFO  message  key=value ...` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        line = f"{when} {record.levelname:<7} {record.getMessage()}"
        data = getattr(record, "fields", None)
        if data:
            line += "  " + " ".join(f"{k}={_short(v)}" for k, v in data.items())
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def configure(
    level: str | int = "INFO",
    stream: TextIO | None = None,
    json_lines: bool | None = None,
    secrets: Iterable[str] = (),
) -> logging.Logger:
    """Set up the `containerscan` logger; safe to call more than once."""
    out = stream if stream is not None else sys.stderr
    if json_lines is None:
        json_lines = not (hasattr(out, "isatty") and out.isatty())
    register_secrets_from_env()
    for secret in secrets:
        register_secret(secret)
    logger = logging.getLogger(ROOT_LOGGER)
    logger.setLevel(level if isinstance(level, int) else level.upper())
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if json_lines else TerminalFormatter())
    logger.addHandler(handler)
    return logger


def get_logger(name: str) -> logging.Logger:
    """A child of the `containerscan` logger (`check.sweep` -> `containerscan.check.sweep`)."""
    return logging.getLogger(f"{ROOT_LOGGER}.{name}")
