"""Relative paths resolved the cheap way (issue 15): a readlink of the start directory and
one no-symlink openat2 when the path meets no symlink, the full O_PATH walk otherwise. Both
must give the same answer: checked here on real files against the full walk (which
`same_root=False` forces for a relative path), with this process as the "tracee"."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import resolve as rs

CASES = [
    # (raw, follow, expected relative to the tree, or an absolute answer)
    ("a.txt", True, "a.txt"),
    ("new.txt", True, "new.txt"),
    ("sub/b.txt", True, "sub/b.txt"),
    ("sub/../a.txt", True, "a.txt"),
    ("./sub//b.txt", True, "sub/b.txt"),
    ("missing/x", True, "missing/x"),
    ("link/x", True, "elsewhere/x"),
    ("fl", True, "a.txt"),
    ("fl", False, "fl"),
    ("dangling", True, "made-by-creat"),
    ("sub", True, "sub"),
    ("sub/", True, "sub"),
    ("./sub/./", False, "sub"),
    (".", True, ""),
    # Single names not followed (unlinkat, O_CREAT|O_EXCL): no openat2 needed.
    ("link", False, "link"),
    ("dangling", False, "dangling"),
    ("a.txt", False, "a.txt"),
    ("new.txt", False, "new.txt"),
    (".", False, ""),
    ("..", False, ".."),
    ("link/x", False, "elsewhere/x"),
]


@pytest.mark.parametrize(("raw", "follow", "expected"), CASES)
def test_the_cheap_way_agrees_with_the_full_walk(
    tree: tuple[Path, int], raw: str, follow: bool, expected: str
) -> None:
    root, fd = tree
    pid, tid = os.getpid(), threading.get_native_id()
    want = os.path.normpath(root / expected) if expected else str(root)
    fast = rs.resolve(pid, tid, fd, raw, follow)
    full = rs.resolve(pid, tid, fd, raw, follow, same_root=False)
    assert fast == full == want


def test_only_symlink_free_paths_take_the_cheap_way(tree: tuple[Path, int]) -> None:
    root, fd = tree
    pid, tid = os.getpid(), threading.get_native_id()
    assert rs._relative_plain(pid, tid, fd, "sub/b.txt") == str(root / "sub/b.txt")
    assert rs._relative_plain(pid, tid, fd, "new.txt") == str(root / "new.txt")
    assert rs._relative_plain(pid, tid, fd, "link/x") is None  # a symlink on the way
    assert rs._relative_plain(pid, tid, fd, "fl") is None  # a final symlink
    assert rs._relative_plain(pid, tid, fd, "fl", follow=False) == str(root / "fl")
    assert rs._relative_plain(pid, tid, fd, "link/x", follow=False) is None


def test_a_deleted_start_directory_is_left_to_the_full_walk(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    fd = os.open(gone, os.O_RDONLY | os.O_DIRECTORY)
    try:
        gone.rmdir()
        pid, tid = os.getpid(), threading.get_native_id()
        assert rs._relative_plain(pid, tid, fd, "x") is None
        assert rs.resolve(pid, tid, fd, "x") == rs.resolve(pid, tid, fd, "x", same_root=False)
    finally:
        os.close(fd)


def test_relative_to_the_thread_cwd(tree: tuple[Path, int], monkeypatch) -> None:
    root, _ = tree
    monkeypatch.chdir(root / "sub")
    pid, tid = os.getpid(), threading.get_native_id()
    assert rs.resolve(pid, tid, None, "b.txt") == str(root / "sub" / "b.txt")
    assert rs.resolve(pid, tid, None, "../link/y") == str(root / "elsewhere" / "y")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parts=st.lists(
        st.sampled_from(["a.txt", "sub", "b.txt", "link", "fl", "dangling", "..", ".", "x", ""]),
        min_size=1,
        max_size=4,
    ),
    follow=st.booleans(),
    from_dirfd=st.booleans(),
)
def test_any_relative_path_resolves_as_the_full_walk(
    tree: tuple[Path, int], monkeypatch, parts: list[str], follow: bool, from_dirfd: bool
) -> None:
    root, fd = tree
    monkeypatch.chdir(root / "sub")
    raw = "/".join(parts)
    if not raw or raw.startswith("/"):
        return
    pid, tid = os.getpid(), threading.get_native_id()
    dirfd = fd if from_dirfd else None
    fast = rs.resolve(pid, tid, dirfd, raw, follow)
    assert fast == rs.resolve(pid, tid, dirfd, raw, follow, same_root=False)
