"""Terminal output: every cell escaped, no cell breaks a line (`securityhub.terminal`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from securityhub.commands import render_table
from securityhub.terminal import printable, table


def test_printable_escapes_what_a_terminal_would_act_on() -> None:
    assert printable("app/config/.env") == "app/config/.env"
    assert printable("a\nb\r\tc") == "a\\nb\\r\\tc"
    assert printable("\x1b[2J\x1b]52;c;Zm9v\x07") == "\\x1b[2J\\x1b]52;c;Zm9v\\x07"
    assert printable("\x9b31m") == "\\x9b31m"  # the 8-bit CSI
    assert printable("invoice\u202efdp.exe") == "invoice\\u202efdp.exe"
    assert printable("line\u2028break") == "line\\u2028break"
    assert printable("C:\\temp\\n") == "C:\\\\temp\\\\n"  # a real backslash stays distinct
    assert printable("café 日本") == "café 日本"


@given(st.text())
def test_printable_output_is_one_line_without_control_characters(text: str) -> None:
    shown = printable(text)
    assert len(shown.splitlines()) <= 1
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in shown)


@given(st.lists(st.text(), min_size=1, max_size=5))
def test_a_table_has_one_line_per_row(cells: list[str]) -> None:
    rows = [{"a": cell, "b": cell[::-1]} for cell in cells]
    assert len(table(rows, ("a", "b")).split("\n")) == 1 + len(rows)


def test_findings_table_escapes_titles_and_resources() -> None:
    finding = {
        "Id": "containerscan/x",
        "Severity": {"Label": "CRITICAL"},
        "RecordState": "ACTIVE",
        "UpdatedAt": "2026-01-01T00:00:00.000Z",
        "Title": "AWS access key ID in /app/x\n\x1b[2JFAKE ROW",
        "Resources": [{"Type": "AwsEcrContainerImage",
                       "Details": {"AwsEcrContainerImage": {
                           "RepositoryName": "shop/\x1b[31mweb",
                           "ImageDigest": "sha256:" + "a" * 64}}}],
    }
    out = render_table([finding])
    lines = out.split("\n")
    assert len(lines) == 3 and lines[-1] == "1 finding(s)"
    assert "\x1b" not in out
    assert "/app/x\\n\\x1b[2JFAKE ROW" in lines[1]
