"""Where the repository's own copy of real advisory records lives (see its README)."""

from __future__ import annotations

from pathlib import Path


def advisories_dir() -> Path:
    """The shipped PyPA OSV and Alpine secdb records: `pypa-osv/` and `alpine-secdb/`."""
    return Path(__file__).resolve().parent / "advisories"
