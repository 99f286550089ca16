"""Fixtures shared by the sidecar's tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def tree(tmp_path: Path):
    """A real tree of files, directories and symlinks, and an fd of its root (the paths
    sidecar.resolve and the compiled stop loop resolve, tests/sidecar/test_resolve.py and
    test_stoploop.py)."""
    root = tmp_path.resolve()
    (root / "sub").mkdir()
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    (root / "elsewhere").mkdir()
    (root / "link").symlink_to(root / "elsewhere")
    (root / "fl").symlink_to("a.txt")
    (root / "dangling").symlink_to("made-by-creat")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    yield root, fd
    os.close(fd)
