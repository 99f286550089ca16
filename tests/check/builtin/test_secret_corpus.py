"""Recall and precision of the secret rules on a held-out corpus.

tests/data/secrets/corpus holds files as they sit in images (.env, .npmrc, .pypirc, Docker
config.json, settings modules, CI files, PEM keys...) with planted fake credentials of
every kind the rules cover and some they do not name (a Telegram bot token, a Twilio auth
token), beside look-alikes: documented example values (AWS's, jwt.io's), placeholders,
template variables, code that reads a secret from elsewhere, hashes, commit ids. The
labels (labels.json) list the (file, line) of every planted credential; any other hit is
a false positive.
"""

from __future__ import annotations

import json
from pathlib import Path

from check.builtin.secrets import scan_bytes

DATA = Path(__file__).resolve().parents[2] / "data" / "secrets"
TARGET = 0.90


def test_recall_and_precision_on_the_held_out_corpus() -> None:
    expected = {(s["file"], s["line"]) for s in json.loads(
        (DATA / "labels.json").read_text())["secrets"]}
    root = DATA / "corpus"
    found: set[tuple[str, int]] = set()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        for hit in scan_bytes(relative, path.read_bytes()):
            found.add((relative, hit.line))
    true = found & expected
    recall, precision = len(true) / len(expected), len(true) / max(len(found), 1)
    print(f"secrets: recall {len(true)}/{len(expected)} = {recall:.0%}, "
          f"precision {len(true)}/{len(found)} = {precision:.0%}")
    print("missed:", sorted(expected - found))
    print("false positives:", sorted(found - expected))
    assert len(expected) >= 30
    assert recall >= TARGET and precision >= TARGET
