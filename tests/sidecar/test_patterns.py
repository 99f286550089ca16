"""Globs compiled for RE2 (sidecar.patterns) match exactly what Python's own fnmatch matches.

fnmatch.translate writes an atomic group between two stars (`/home/*/.ssh/*`), which RE2
refuses: such a FIM path or program name was rejected as "not accepted by RE2". The
translation RE2 gets must accept every glob and agree with `fnmatch.fnmatchcase` on every
path (hypothesis over globs and paths from the same small alphabet)."""

from __future__ import annotations

import fnmatch

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.patterns import compile_glob

GLOB_PARTS = st.sampled_from(["*", "?", "/", "a", ".", "[ab]", "[!a]", "ssh", "*.conf", "[", "]"])
PATH_PARTS = st.sampled_from(["/", "a", "b", ".", "ssh", ".conf", "x", "[", "]", "\n"])


@settings(max_examples=600, deadline=None)
@given(
    glob=st.lists(GLOB_PARTS, min_size=1, max_size=7).map("".join),
    paths=st.lists(st.lists(PATH_PARTS, max_size=8).map("".join), min_size=1, max_size=8),
)
def test_a_glob_matches_what_fnmatch_matches(glob: str, paths: list[str]) -> None:
    compiled = compile_glob(glob)  # never refused
    for path in paths:
        assert bool(compiled.match(path)) == fnmatch.fnmatchcase(path, glob), (glob, path)


def test_globs_with_several_stars_are_accepted() -> None:
    ssh = compile_glob("/home/*/.ssh/*")
    assert ssh.match("/home/alice/.ssh/authorized_keys")
    assert ssh.match("/home/a/b/.ssh/x")  # fnmatch's star crosses slashes
    assert not ssh.match("/home/alice/.ssh")
    conf = compile_glob("/srv/*/conf.d/*.conf")
    assert conf.match("/srv/app/conf.d/site.conf")
    assert not conf.match("/srv/app/conf.d/site.conf.bak")
