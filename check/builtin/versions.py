"""Version orderings of the package ecosystems the built-in scanner matches.

Each ordering is a `compare(a, b) -> int` (negative, zero, positive) that follows the
ecosystem's own rules, because advisories state ranges in those terms:

- dpkg: Debian Policy 5.6.12 (`[epoch:]upstream[-revision]`, `~` sorts before everything,
  letters before other characters), as `dpkg --compare-versions` implements it.
- apk: apk-tools' `version.c`, 2.x and 3.x rules (`1.2.3a_rc1_p2~cafe-r4`: numbers, one
  letter, suffixes where `_alpha < _beta < _pre < _rc < (none) < _cvs < _svn < _git < _hg
  < _p`, a commit hash, then `-rN`).
- PEP 440: `packaging.version`, the implementation pip itself uses.
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

from packaging.version import InvalidVersion, Version

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
    elif not revision:
        raise VersionError(f"not a dpkg version (empty revision): {version!r}")
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
#
# Two faithful ports of apk-tools' `src/version.c`: the 2.x rules (branch 2.14-stable; every
# Alpine release up to 3.22 ships apk 2.x, and secdb's fix strings are written for it) and the
# 3.x rules (master: `~commit` hashes, leading-zero components compared as strings). apk never
# fails a comparison; what its `apk_version_validate` rejects is refused here instead, so a
# string apk itself would not accept never becomes a range boundary.

# apk 3 tokens, in the order the comparison ranks them ("a later token type sorts first").
_V3_INITIAL, _V3_DIGIT, _V3_LETTER, _V3_SUFFIX, _V3_SUFFIX_NO, _V3_HASH, _V3_REVISION, \
    _V3_END, _V3_INVALID = range(9)
# apk 3 suffix ranks; NONE (5) is "no suffix": alpha < beta < pre < rc < none < cvs < ... < p.
_V3_SUFFIXES = {"alpha": 1, "beta": 2, "pre": 3, "rc": 4, "cvs": 6, "svn": 7, "git": 8,
                "hg": 9, "p": 10}
_V3_SUFFIX_NONE = 5
_DIGITS = frozenset("0123456789")
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
_HEX = frozenset("0123456789abcdef")

_ApkToken = tuple[int, str, int, int]  # (token type, text, number, suffix rank)


def _span(text: str, pos: int, allowed: frozenset[str]) -> int:
    end = pos
    while end < len(text) and text[end] in allowed:
        end += 1
    return end


@functools.lru_cache(maxsize=65536)
def _apk3_tokens(version: str) -> tuple[_ApkToken, ...]:
    """apk 3's tokens of `version`, ending with an END or an INVALID token."""
    tokens: list[_ApkToken] = []
    end = _span(version, 0, _DIGITS)
    if end == 0:
        return ((_V3_INVALID, "", 0, 0),)
    tokens.append((_V3_INITIAL, version[:end], int(version[:end]), 0))
    pos, token = end, _V3_INITIAL
    while True:
        if pos >= len(version):
            tokens.append((_V3_END, "", 0, 0))
            return tuple(tokens)
        char = version[pos]
        if char in _LOWER and token <= _V3_DIGIT:
            token = _V3_LETTER
            tokens.append((token, char, 0, 0))
            pos += 1
            continue
        if (char == "." and token <= _V3_DIGIT) or (char in _DIGITS and token == _V3_SUFFIX):
            token = _V3_DIGIT if char == "." else _V3_SUFFIX_NO
            pos += char == "."
            end = _span(version, pos, _DIGITS)
            if end > pos:
                tokens.append((token, version[pos:end], int(version[pos:end]), 0))
                pos = end
                continue
        elif char == "_" and token <= _V3_SUFFIX_NO:
            end = _span(version, pos + 1, _LOWER)
            rank = _V3_SUFFIXES.get(version[pos + 1:end])
            if rank is not None:
                token = _V3_SUFFIX
                tokens.append((token, version[pos + 1:end], 0, rank))
                pos = end
                continue
        elif char == "~" and token < _V3_HASH:
            end = _span(version, pos + 1, _HEX)
            if end > pos + 1:
                token = _V3_HASH
                tokens.append((token, version[pos + 1:end], 0, 0))
                pos = end
                continue
        elif char == "-" and token < _V3_REVISION and version.startswith("-r", pos):
            end = _span(version, pos + 2, _DIGITS)
            if end > pos + 2:
                token = _V3_REVISION
                tokens.append((token, version[pos + 2:end], int(version[pos + 2:end]), 0))
                pos = end
                continue
        tokens.append((_V3_INVALID, "", 0, 0))
        return tuple(tokens)


def validate_apk3(version: str) -> bool:
    """apk 3's `apk_version_validate`."""
    return _apk3_tokens(version)[-1][0] == _V3_END


def _apk3_token_cmp(a: _ApkToken, b: _ApkToken) -> int:
    kind = a[0]
    if kind == _V3_DIGIT and (a[1][0] == "0" or b[1][0] == "0"):
        return (a[1] > b[1]) - (a[1] < b[1])  # leading zero: string order, as Gentoo does
    if kind in (_V3_INITIAL, _V3_DIGIT, _V3_SUFFIX_NO, _V3_REVISION):
        return _sign(a[2] - b[2])
    if kind == _V3_LETTER:
        return (a[1] > b[1]) - (a[1] < b[1])
    if kind == _V3_SUFFIX:
        return _sign(a[3] - b[3])
    return (a[1] > b[1]) - (a[1] < b[1])  # a commit hash: string order


def compare_apk3(a: str, b: str) -> int:
    """apk 3's `apk_version_compare` (never fails, like apk's)."""
    ta, tb = _apk3_tokens(a), _apk3_tokens(b)
    i = 0  # both tuples end with a terminal token, so the walk stops inside them
    while ta[i][0] == tb[i][0] and ta[i][0] < _V3_END:
        result = _apk3_token_cmp(ta[i], tb[i])
        if result:
            return result
        i += 1
    x, y = ta[i], tb[i]
    if x[0] == y[0]:
        return 0
    if x[0] == _V3_SUFFIX and x[3] < _V3_SUFFIX_NONE:
        return -1
    if y[0] == _V3_SUFFIX and y[3] < _V3_SUFFIX_NONE:
        return 1
    return -1 if x[0] > y[0] else 1


# apk 2 tokens (branch 2.14-stable), with its own numbering.
_V2_INVALID, _V2_DIGIT_OR_ZERO, _V2_DIGIT, _V2_LETTER, _V2_SUFFIX, _V2_SUFFIX_NO, \
    _V2_REVISION, _V2_END = range(-1, 7)
_V2_PRE = ("alpha", "beta", "pre", "rc")
_V2_POST = ("cvs", "svn", "git", "hg", "p")


def _apk2_next_token(kind: int, text: str, pos: int) -> tuple[int, int]:
    new = _V2_INVALID
    if pos >= len(text):
        new = _V2_END
    elif kind in (_V2_DIGIT, _V2_DIGIT_OR_ZERO) and text[pos] in _LOWER:
        new = _V2_LETTER
    elif kind == _V2_LETTER and text[pos] in _DIGITS:
        new = _V2_DIGIT
    elif kind == _V2_SUFFIX and text[pos] in _DIGITS:
        new = _V2_SUFFIX_NO
    else:
        char = text[pos]
        if char == ".":
            new = _V2_DIGIT_OR_ZERO
        elif char == "_":
            new = _V2_SUFFIX
        elif char == "-":
            if pos + 1 < len(text) and text[pos + 1] == "r":
                new = _V2_REVISION
                pos += 1
        pos += 1
    if new < kind and not ((new == _V2_DIGIT_OR_ZERO and kind == _V2_DIGIT)
                           or (new == _V2_SUFFIX and kind == _V2_SUFFIX_NO)
                           or (new == _V2_DIGIT and kind == _V2_LETTER)):
        new = _V2_INVALID
    return new, pos


def _apk2_get_token(kind: int, text: str, pos: int) -> tuple[int, int, int]:
    """(value, next token type, position): apk 2's `get_token`."""
    if pos >= len(text):
        return 0, _V2_END, pos
    length, value, following = 0, 0, _V2_INVALID
    if kind == _V2_DIGIT_OR_ZERO and text[pos] == "0":
        while pos + length + 1 < len(text) and text[pos + length + 1] == "0":
            length += 1
        following, value = _V2_DIGIT, -length  # leading zeros: more of them sorts lower
    elif kind in (_V2_DIGIT_OR_ZERO, _V2_DIGIT, _V2_SUFFIX_NO, _V2_REVISION):
        length = _span(text, pos, _DIGITS) - pos
        if length >= 18:
            return -1, _V2_INVALID, pos
        value = int(text[pos:pos + length] or 0)
    elif kind == _V2_LETTER:
        value, length = ord(text[pos]), 1
    elif kind == _V2_SUFFIX:
        for rank, name in enumerate(_V2_PRE):
            if text.startswith(name, pos):
                value, length = rank - len(_V2_PRE), len(name)
                break
        else:
            for rank, name in enumerate(_V2_POST):
                if text.startswith(name, pos):
                    value, length = rank, len(name)
                    break
            else:
                return -1, _V2_INVALID, pos
    else:
        return -1, _V2_INVALID, pos
    pos += length
    if pos >= len(text):
        return value, _V2_END, pos
    if following != _V2_INVALID:
        return value, following, pos
    kind, pos = _apk2_next_token(kind, text, pos)
    return value, kind, pos


def validate_apk2(version: str) -> bool:
    """apk 2's `apk_version_validate`."""
    kind, pos = _V2_DIGIT, 0
    while kind not in (_V2_END, _V2_INVALID):
        _, kind, pos = _apk2_get_token(kind, version, pos)
    return kind == _V2_END


def compare_apk2(a: str, b: str) -> int:
    """apk 2's `apk_version_compare_blob` (never fails, like apk's)."""
    ak = bk = _V2_DIGIT
    av = bv = 0
    ap = bp = 0
    while ak == bk and ak not in (_V2_END, _V2_INVALID) and av == bv:
        av, ak, ap = _apk2_get_token(ak, a, ap)
        bv, bk, bp = _apk2_get_token(bk, b, bp)
    if av != bv:
        return -1 if av < bv else 1
    if ak == bk:
        return 0
    # Equal so far: the longer one is greater, unless what follows is a pre-release suffix.
    if ak == _V2_SUFFIX and _apk2_get_token(ak, a, ap)[0] < 0:
        return -1
    if bk == _V2_SUFFIX and _apk2_get_token(bk, b, bp)[0] < 0:
        return 1
    if ak > bk:
        return -1
    if bk > ak:
        return 1
    return 0


def compare_apk(a: str, b: str) -> int:
    """apk's order: apk 3's rules when both versions are valid for it, else apk 2's.

    A version neither apk accepts (`2.7.16-33`, `4.10-1-r1`) raises VersionError.
    """
    a, b = a.strip(), b.strip()
    if validate_apk3(a) and validate_apk3(b):
        return compare_apk3(a, b)
    if a and b and validate_apk2(a) and validate_apk2(b):
        return compare_apk2(a, b)
    bad = b if validate_apk3(a) or (a and validate_apk2(a)) else a
    raise VersionError(f"not an apk version: {bad!r}")


# ---------------------------------------------------------------------------------- PEP 440


@functools.lru_cache(maxsize=65536)
def _pep440(version: str) -> Version:
    try:
        return Version(version)
    except InvalidVersion:
        raise VersionError(f"not a PEP 440 version: {version!r}") from None


def compare_pep440(a: str, b: str) -> int:
    """PEP 440's order, as `packaging.version` implements it (pip's own ordering)."""
    va, vb = _pep440(a), _pep440(b)
    return (va > vb) - (va < vb)


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
