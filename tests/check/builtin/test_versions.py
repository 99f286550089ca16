"""Version orderings against the orderings each ecosystem documents."""

from __future__ import annotations

import functools
import itertools
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from check.builtin.versions import (
    VersionError,
    compare_apk,
    compare_dpkg,
    compare_pep440,
    compare_semver,
    ordering,
)


def _sorted(compare, versions):
    return sorted(versions, key=functools.cmp_to_key(compare))


def test_dpkg_order_follows_debian_policy():
    # Debian Policy 5.6.12: ~ before everything, even the end; epochs dominate.
    expected = ["1.0~~", "1.0~~a", "1.0~", "1.0", "1.0-1", "1.0-1ubuntu1", "1.0-2", "1.0a",
                "1.0+b1", "1.2", "1.10", "1:0.1"]
    assert _sorted(compare_dpkg, list(reversed(expected))) == expected
    if shutil.which("dpkg"):  # the reference implementation agrees, pair by pair
        for low, high in itertools.pairwise(expected):
            assert subprocess.run(["dpkg", "--compare-versions", low, "lt", high]).returncode == 0
    assert compare_dpkg("2.36-9+deb12u4", "2.36-9+deb12u10") < 0
    assert compare_dpkg("1.0-0", "1.0") == 0


def test_apk_order_follows_apk_tools():
    expected = ["1.0_alpha1", "1.0_beta", "1.0_pre2", "1.0_rc1", "1.0", "1.0-r1", "1.0_p1",
                "1.0a", "1.0.1", "1.2", "1.10"]
    assert _sorted(compare_apk, list(reversed(expected))) == expected
    assert compare_apk("1.1.1d-r0", "1.1.1d-r3") < 0
    assert compare_apk("1.1.1g-r0", "1.1.1d-r3") > 0


def test_pep440_order_follows_the_specification():
    # PEP 440, "Summary of permitted suffixes and relative ordering".
    expected = ["1.0.dev456", "1.0a1", "1.0a2.dev456", "1.0a12.dev456", "1.0a12",
                "1.0b1.dev456", "1.0b2", "1.0b2.post345.dev456", "1.0b2.post345",
                "1.0rc1.dev456", "1.0rc1", "1.0", "1.0+abc.5", "1.0+abc.7", "1.0+5",
                "1.0.post456.dev34", "1.0.post456", "1.1.dev1", "1!0.1"]
    assert _sorted(compare_pep440, list(reversed(expected))) == expected
    assert compare_pep440("1.0", "1.0.0") == 0
    assert compare_pep440("2.0RC1", "2.0rc1") == 0
    assert compare_pep440("2.7.2", "2.10") < 0


def test_semver_order_follows_the_specification():
    # SemVer 2.0.0, item 11.
    expected = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
                "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "2.0.0", "2.1.0",
                "2.1.1"]
    assert _sorted(compare_semver, list(reversed(expected))) == expected
    assert compare_semver("v1.2.3", "1.2.3+build.7") == 0


@pytest.mark.parametrize(("compare", "bad"), [
    (compare_dpkg, "a:1.0"), (compare_apk, "1.0-beta"), (compare_pep440, "not-a-version"),
    (compare_semver, "1.x.y"),
])
def test_unreadable_versions_raise(compare, bad):
    with pytest.raises(VersionError):
        compare(bad, "1.0")


def test_ordering_by_ecosystem_name():
    assert ordering("Debian:12") is compare_dpkg
    assert ordering("Alpine:v3.11") is compare_apk
    assert ordering("PyPI") is compare_pep440
    with pytest.raises(VersionError):
        ordering("Maven")


_dotted = st.lists(st.integers(min_value=0, max_value=999), min_size=1, max_size=4).map(
    lambda parts: ".".join(map(str, parts)))


@given(_dotted, _dotted)
def test_plain_dotted_versions_agree_across_orderings(a, b):
    """For plain numeric versions every ordering is the numeric tuple order."""
    def pad(v):
        parts = [int(p) for p in v.split(".")]
        return parts + [0] * (4 - len(parts))

    expected = (pad(a) > pad(b)) - (pad(a) < pad(b))
    assert compare_pep440(a, b) == expected
    assert (compare_dpkg(a, b) > 0) - (compare_dpkg(a, b) < 0) == (
        (tuple(map(int, a.split("."))) > tuple(map(int, b.split("."))))
        - (tuple(map(int, a.split("."))) < tuple(map(int, b.split(".")))))
