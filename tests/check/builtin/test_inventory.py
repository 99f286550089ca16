"""Inventory parsers on real package databases and metadata."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from check.builtin.inventory import (
    build_inventory,
    parse_apk_installed,
    parse_dpkg_status,
    parse_os_release,
    parse_package_json,
    parse_python_metadata,
    wants,
)
from tests.check.builtin import samples


@pytest.mark.skipif(not shutil.which("dpkg-query") or not Path("/var/lib/dpkg/status").is_file(),
                    reason="needs a Debian system with dpkg-query")
def test_dpkg_status_agrees_with_dpkg_query():
    """This machine's own dpkg database, parsed, lists what dpkg-query lists."""
    status = Path("/var/lib/dpkg/status").read_text()
    parsed = {(p.name, p.version, p.architecture) for p in parse_dpkg_status(status, "s", None)}
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}|${Package}|${Version}|${Architecture}\n"],
        capture_output=True, text=True, check=True).stdout
    expected = {tuple(line.split("|")[1:]) for line in out.splitlines()
                if line.split("|")[0].strip() == "ii"}
    assert parsed == expected
    assert len(parsed) > 50


def test_dpkg_source_field_and_removed_packages():
    text = (
        "Package: libssl3\nStatus: install ok installed\nSource: openssl (3.0.11-1~deb12u2)\n"
        "Version: 3.0.11-1~deb12u2+b1\nArchitecture: amd64\nDescription: x\n more\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\n"
        "Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\n"
    )
    packages = parse_dpkg_status(text, "var/lib/dpkg/status", "sha256:l")
    assert [(p.name, p.version, p.source_name, p.source_version) for p in packages] == [
        ("libssl3", "3.0.11-1~deb12u2+b1", "openssl", "3.0.11-1~deb12u2"),
        ("bash", "5.2.15-2+b2", "bash", "5.2.15-2+b2"),
    ]


def test_distroless_status_d_has_no_status_field():
    files = {"var/lib/dpkg/status.d/base-files": (
        "sha256:a", b"Package: base-files\nVersion: 12.4+deb12u5\nArchitecture: amd64\n")}
    inventory = build_inventory(files)
    assert [(p.name, p.layer) for p in inventory.packages] == [("base-files", "sha256:a")]


def test_apk_installed():
    packages = parse_apk_installed(samples.APK_INSTALLED, "lib/apk/db/installed", "sha256:l")
    assert [(p.name, p.version, p.source_name) for p in packages] == [
        ("musl", "1.1.24-r0", "musl"), ("busybox", "1.30.1-r1", "busybox"),
        ("libcrypto1.1", "1.1.1d-r0", "openssl"), ("libssl1.1", "1.1.1d-r0", "openssl")]
    assert all(p.architecture == "x86_64" for p in packages)


def test_real_python_metadata_is_read():
    text = samples.real_metadata("jinja2", "2.7.1")
    package = parse_python_metadata(text, "x/METADATA", None)
    assert package is not None
    assert (package.name.lower(), package.version) == ("jinja2", "2.7.1")


def test_real_package_json_is_read():
    data = samples.npm_package_json()
    if data is None:
        pytest.skip("npm is not installed here")
    package = parse_package_json(data, "node_modules/npm/package.json", None)
    assert package is not None and package.name == "npm"
    assert parse_package_json(b"{broken", "p", None) is None


def test_os_release():
    info = parse_os_release(Path("/etc/os-release").read_text())
    assert info is not None and info.id and info.pretty_name
    alpine = parse_os_release(samples.ALPINE_OS_RELEASE)
    assert alpine is not None and (alpine.id, alpine.version_id) == ("alpine", "3.11.3")


@pytest.mark.parametrize(("path", "wanted"), [
    ("var/lib/dpkg/status", True), ("var/lib/dpkg/status-old", False),
    ("var/lib/dpkg/status.d/libc6", True), ("var/lib/dpkg/status.d/libc6.md5sums", True),
    ("lib/apk/db/installed", True), ("etc/os-release", True), ("usr/lib/os-release", True),
    ("usr/lib/python3.11/site-packages/requests-2.31.0.dist-info/METADATA", True),
    ("usr/lib/python3.11/site-packages/requests-2.31.0.dist-info/RECORD", False),
    ("usr/lib/python3/dist-packages/six-1.16.0.egg-info/PKG-INFO", True),
    ("app/node_modules/express/package.json", True),
    ("app/node_modules/@babel/core/package.json", True),
    ("app/node_modules/express/lib/package.json", False),
    ("app/node_modules/a/node_modules/b/package.json", True),
    ("app/package.json", False),
])
def test_wanted_paths(path, wanted):
    assert wants(path) is wanted


def test_single_file_egg_info():
    files = {"usr/lib/python3/dist-packages/six-1.16.0.egg-info": (
        "sha256:a", b"Metadata-Version: 1.1\nName: six\nVersion: 1.16.0\n")}
    assert wants("usr/lib/python3/dist-packages/six-1.16.0.egg-info")
    assert [(p.name, p.version) for p in build_inventory(files).packages] == [("six", "1.16.0")]
