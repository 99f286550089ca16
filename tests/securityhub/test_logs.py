from __future__ import annotations

import io
import json
import logging

from securityhub import logs


def _capture(json_lines: bool) -> tuple[io.StringIO, logging.Logger]:
    stream = io.StringIO()
    logs.configure("DEBUG", stream=stream, json_lines=json_lines)
    return stream, logs.get_logger("test")


def test_json_lines_carry_fields(monkeypatch) -> None:
    stream, log = _capture(json_lines=True)
    log.info("image scanned", extra=logs.fields(digest="sha256:abc", seconds=1.5))
    doc = json.loads(stream.getvalue().splitlines()[-1])
    assert doc["message"] == "image scanned"
    assert doc["digest"] == "sha256:abc"
    assert doc["seconds"] == 1.5
    assert doc["level"] == "INFO"
    assert doc["logger"] == "containerscan.test"


def test_secrets_from_environment_are_masked_everywhere(monkeypatch) -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.qualys-token-value"
    monkeypatch.setenv("QUALYS_ACCESS_TOKEN", token)
    stream, log = _capture(json_lines=True)
    log.info("token is %s", token, extra=logs.fields(env={"QUALYS_ACCESS_TOKEN": token}))
    try:
        raise RuntimeError(f"auth failed with {token}")
    except RuntimeError:
        log.exception("scanner failed")
    text = stream.getvalue()
    assert token not in text
    assert text.count(logs.MASK) >= 3


def test_bearer_headers_are_masked() -> None:
    stream, log = _capture(json_lines=False)
    log.warning("POST failed, headers={'Authorization': 'Bearer abcdefghijkLMNOP123'}")
    assert "abcdefghijkLMNOP123" not in stream.getvalue()


def test_terminal_format_is_readable() -> None:
    stream, log = _capture(json_lines=False)
    log.info("sweep done", extra=logs.fields(images=3))
    line = stream.getvalue().strip()
    assert "INFO" in line and "sweep done" in line and "images=3" in line
