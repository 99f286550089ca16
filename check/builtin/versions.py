"""Version orderings of the package ecosystems the built-in scanner matches.

Each ordering is a `compare(a, b) -> int` (negative, zero, positive) that follows the
ecosystem's own rules, because advisories state ranges in those terms:

- dpkg: Debian Policy 5.6.12 (`[epoch:]upstream[-revision]`, `~` sorts before everything,
  letters before other characters), as `dpkg --compare-versions` implements it.
- apk: apk-tools' `version.c` (`1.2.3a_rc1_p2-r4`: numbers, one letter, suffixes where
  `_alpha < _beta < _pre < _rc < (none) < _cvs < _svn < _git < _hg < _p`, then `-rN`).
- PEP 440: the canonical public-version grammar and ordering (epochs, pre, post, dev,
  local), as `packaging.version` implements it; implemented here to avoid the dependency.
- SemVer 2.0.0 (npm and OSV's SEMVER ranges), with a leading `v` and missing minor/patch
  tolerated the way npm's `semver.coerce` reads real-world package.json files.

A version an ordering cannot read raises `VersionError`; callers treat such a package as
unmatched rather than guessing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

Compare = Callable[[str, str], int]


class VersionError(ValueError):
    """A version string does not follow its ecosystem's grammar."""


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


# ------------------------------------------------------------------------------------ dpkg


def _dpkg_order(char: str) -> int:
    if char.isdigit():
        return 0
    if char.isalpha():
        return ord(char)
    if char == "~":
        return -1
    return ord(char) + 256


def _dpkg_verrevcmp(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _dpkg_order(a[i]) if i < len(a) else 0
            bc = _dpkg_order(b[j]) if j < len(b) else 0
            if ac != bc:
                return _sign(ac - bc)
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return _sign(first_diff)
    return 0


_DPKG_UPSTREAM = re.compile(r"^[A-Za-z0-9.+~:-]+$")
_DPKG_REVISION = re.compile(r"^[A-Za-z0-9.+~]*$")


def parse_dpkg(version: str) -> tuple[int, str, str]:
    """Split `[epoch:]upstream[-revision]`; the revision is after the last hyphen."""
    text = version.strip()
    epoch = 0
    if ":" in text:
        head, _, text = text.partition(":")
        if not head.isdigit():
            raise VersionError(f"not a dpkg version (bad epoch): {version!r}")
        epoch = int(head)
    upstream, dash, revision = text.rpartition("-")
    if not dash:
        upstream, revision = text, ""
    if not _DPKG_UPSTREAM.match(upstream) or not _DPKG_REVISION.match(revision):
        raise VersionError(f"not a dpkg version: {version!r}")
    return epoch, upstream, revision


def compare_dpkg(a: str, b: str) -> int:
    ea, ua, ra = parse_dpkg(a)
    eb, ub, rb = parse_dpkg(b)
    if ea != eb:
        return _sign(ea - eb)
    return _dpkg_verrevcmp(ua, ub) or _dpkg_verrevcmp(ra, rb)


# ------------------------------------------------------------------------------------- apk

_APK_SUFFIXES = {
    "alpha": 0,
    "beta": 1,
    "pre": 2,
    "rc": 3,
    "cvs": 5,
    "svn": 6,
    "git": 7,
    "hg": 8,
    "p": 9,
}
_APK_NO_SUFFIX = 4
_APK = re.compile(
    r"^(\d+(?:\.\d+)*)([a-z]?)((?:_(?:alpha|beta|pre|rc|cvs|svn|git|hg|p)\d*)*)(?:-r(\d+))?$"
)
_APK_SUFFIX = re.compile(r"_([a-z]+)(\d*)")


def _apk_key(version: str) -> tuple[Any, ...]:
    match = _APK.match(version.strip())
    if not match:
        raise VersionError(f"not an apk version: {version!r}")
    numbers, letter, suffixes, revision = match.groups()
    suffix_key = [
        (_APK_SUFFIXES[name], int(num or 0)) for name, num in _APK_SUFFIX.findall(suffixes)
    ]
    suffix_key.append((_APK_NO_SUFFIX, 0))
    return (
        tuple(int(n) for n in numbers.split(".")),
        letter,
        tuple(suffix_key),
        int(revision or 0),
    )


def compare_apk(a: str, b: str) -> int:
    ka, kb = _apk_key(a), _apk_key(b)
    return (ka > kb) - (ka < kb)


# ---------------------------------------------------------------------------------- PEP 440

# The grammar of PEP 440 appendix B, as packaging.version.VERSION_PATTERN spells it.
_PEP440 = re.compile(
    r"""^\s*v?
    (?:(?P<epoch>[0-9]+)!)?
    (?P<release>[0-9]+(?:\.[0-9]+)*)
    (?P<pre>[-_\.]?(?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)[-_\.]?(?P<pre_n>[0-9]+)?)?
    (?P<post>(?:-(?P<post_n1>[0-9]+))|(?:[-_\.]?(?P<post_l>post|rev|r)[-_\.]?(?P<post_n2>[0-9]+)?))?
    (?P<dev>[-_\.]?(?P<dev_l>dev)[-_\.]?(?P<dev_n>[0-9]+)?)?
    (?:\+(?P<local>[a-z0-9]+(?:[-_\.][a-z0-9]+)*))?
    \s*$""",
    re.VERBOSE | re.IGNORECASE,
)
# Pre-release labels by rank: a < b < rc (c, pre and preview are spellings of rc).
_PRE_LABELS = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "pre": 2, "preview": 2, "rc": 2}
_INF = float("inf")
_NEG_INF = float("-inf")


@functools.lru_cache(maxsize=65536)
def _pep440_key(version: str) -> tuple[Any, ...]:
    match = _PEP440.match(version)
    if not match:
        raise VersionError(f"not a PEP 440 version: {version!r}")
    release = tuple(int(n) for n in match["release"].split("."))
    while len(release) > 1 and release[-1] == 0:  # 1.0 == 1.0.0
        release = release[:-1]
    pre: tuple[Any, ...]
    if match["pre_l"]:
        pre = (_PRE_LABELS[match["pre_l"].lower()], int(match["pre_n"] or 0))
    elif not match["post"] and match["dev_l"]:
        pre = (_NEG_INF,)  # 1.0.dev0 sorts before 1.0a0
    else:
        pre = (_INF,)
    if match["post"]:
        post: tuple[Any, ...] = (int(match["post_n1"] or match["post_n2"] or 0),)
    else:
        post = (_NEG_INF,)
    dev: tuple[Any, ...] = (int(match["dev_n"] or 0),) if match["dev_l"] else (_INF,)
    if match["local"]:
        local: tuple[Any, ...] = tuple(
            (int(part), "") if part.isdigit() else (_NEG_INF, part.lower())
            for part in re.split(r"[-_.]", match["local"])
        )
    else:
        local = ((_NEG_INF, ""),)
    return (int(match["epoch"] or 0), release, pre, post, dev, local)


def compare_pep440(a: str, b: str) -> int:
    ka, kb = _pep440_key(a), _pep440_key(b)
    return (ka > kb) - (ka < kb)


# ---------------------------------------------------------------------------------- SemVer

_SEMVER = re.compile(
    r"^\s*[v=]?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?\s*$"
)


def _semver_key(version: str) -> tuple[Any, ...]:
    match = _SEMVER.match(version)
    if not match:
        raise VersionError(f"not a semantic version: {version!r}")
    major, minor, patch, pre = match.groups()
    core = (int(major), int(minor or 0), int(patch or 0))
    if pre is None:
        return (core, 1, ())
    # Numeric identifiers sort before alphanumeric ones and compare as numbers.
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (core, 0, ids)


def compare_semver(a: str, b: str) -> int:
    ka, kb = _semver_key(a), _semver_key(b)
    return (ka > kb) - (ka < kb)


# -------------------------------------------------------------------------------- registry

# OSV ecosystem names (the part before any ":release" suffix) and package managers.
ORDERINGS: dict[str, Compare] = {
    "Debian": compare_dpkg,
    "Ubuntu": compare_dpkg,
    "dpkg": compare_dpkg,
    "Alpine": compare_apk,
    "apk": compare_apk,
    "PyPI": compare_pep440,
    "pip": compare_pep440,
    "npm": compare_semver,
    "SEMVER": compare_semver,
}


def ordering(ecosystem: str) -> Compare:
    """The compare function for an OSV ecosystem (`Debian:12` -> dpkg) or a range type."""
    base = ecosystem.split(":", 1)[0]
    try:
        return ORDERINGS[base]
    except KeyError:
        raise VersionError(f"no version ordering for ecosystem {ecosystem!r}") from None


def sort_key(ecosystem: str) -> Callable[[str], Any]:
    return functools.cmp_to_key(ordering(ecosystem))
