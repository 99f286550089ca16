"""Hostile bytes against the built-in scanner's parsers: they accept or name the problem.

Targets: the tar reader (real tars mutated: bit flips, truncation, spliced headers), apk
and dpkg version strings, the secret scanner on random bytes and mutated credential files,
and the dpkg/apk databases. The only acceptable failures are the documented ones
(TarFormatError, VersionError); anything else is a traceback reaching a user.
"""

from __future__ import annotations

import functools
import io
import tarfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from check.builtin.inventory import build_inventory, parse_apk_installed, parse_dpkg_status
from check.builtin.secrets import scan_bytes
from check.builtin.tarstream import TarFormatError, TarReader
from check.builtin.versions import VersionError, compare_apk, compare_dpkg, compare_pep440
from tests.check.builtin import samples
from tests.check.builtin.images import Layer

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.lru_cache(maxsize=1)
def _seed_tar() -> bytes:
    layer = Layer().file("etc/os-release", samples.ALPINE_OS_RELEASE)
    layer.file("lib/apk/db/installed", samples.APK_INSTALLED)
    layer.symlink("lib/apk/db2", "../../usr/lib/apk/db")
    layer.file("d" * 120 + "/long-name.txt", "pax path\n")  # a pax header
    return layer.bytes()


def _walk(data: bytes) -> int:
    reader, count = TarReader(io.BytesIO(data).read), 0
    while (member := reader.next()) is not None:
        if member.isfile() and member.size < 1 << 20:
            reader.read_data()
        count += 1
    return count


@FUZZ
@given(st.data())
def test_mutated_tars_are_read_or_refused_by_name(data: st.DataObject) -> None:
    raw = bytearray(_seed_tar())
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        _walk(bytes(raw[:cut]))
    except TarFormatError as exc:
        assert str(exc)


def test_the_seed_tar_is_valid() -> None:
    assert _walk(_seed_tar()) == len(tarfile.open(fileobj=io.BytesIO(_seed_tar())).getmembers())


_VERSION_TEXT = st.text(alphabet="0123456789.-_~:+abcdefprgitvz", max_size=24) | st.text(max_size=12)


@FUZZ
@given(_VERSION_TEXT, _VERSION_TEXT)
def test_version_orderings_answer_or_raise_version_error(a: str, b: str) -> None:
    for compare in (compare_apk, compare_dpkg, compare_pep440):
        try:
            result = compare(a, b)
        except VersionError:
            continue
        assert result in (-1, 0, 1)
        assert compare(b, a) == -result or compare is compare_apk  # apk 2/3 mix at edges


@FUZZ
@given(st.binary(max_size=4096), st.sampled_from(["app/.env", "x.json", ".npmrc", "a.pem"]))
def test_the_secret_scanner_takes_any_bytes(data: bytes, path: str) -> None:
    for hit in scan_bytes(path, b"password = " + data + b"\nAKIA" + data[:16]):
        assert hit.line >= 1 and set(hit.masked[hit.rule.shown_prefix:]) <= {"*"}


@FUZZ
@given(st.text(max_size=2000))
def test_package_databases_take_any_text(text: str) -> None:
    parse_dpkg_status(text, "var/lib/dpkg/status", None)
    parse_apk_installed(text, "lib/apk/db/installed", None)
    build_inventory({"var/lib/dpkg/status": (None, text.encode("utf-8", "surrogatepass")),
                     "var/lib/dpkg/info/x.list": (None, text.encode("utf-8", "surrogatepass")),
                     "usr/lib/python3/dist-packages/x-1.dist-info/RECORD":
                         (None, text.encode("utf-8", "surrogatepass"))})
