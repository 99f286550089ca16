"""Ownership and package databases found however the image links them.

Real content: Debian bookworm's python3-urllib3 package (tests/data/debian-python3-urllib3:
its PKG-INFO, its file list as dpkg records it, its control fields), the PyPA records of
urllib3 and the Alpine secdb, shipped in check/quickstart/advisories.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from check.builtin.inventory import InstalledPackage, build_inventory, resolve_path
from check.builtin.scanner import scan_reference
from tests.check.builtin import samples
from tests.check.builtin.images import Layer, build_blobs, write_oci_layout

DATA = Path(__file__).resolve().parents[2] / "data" / "debian-python3-urllib3"
DEBIAN_12 = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
DIST = "usr/lib/python3/dist-packages/urllib3-1.26.12.egg-info/PKG-INFO"
URLLIB3_CVES = {"CVE-2023-43804", "CVE-2023-45803"}  # fixed by Debian in deb12u1/u2


def _scan(tmp_path: Path, advisories: Path, *layers: Layer, types=("pkg",)):
    write_oci_layout(tmp_path / "img", [(build_blobs([layer.bytes() for layer in layers]),
                                         "linux/amd64")])
    return scan_reference(f"oci-layout:{tmp_path / 'img'}", vuln_db=advisories,
                          workdir=tmp_path / "work", scan_types=types)


def _cves(result) -> set[str]:
    return {f.vulnerability_id for f in result.findings if f.kind == "vulnerability"}


def _debian_layer() -> Layer:
    return (Layer().file("etc/os-release", DEBIAN_12)
            .file("var/lib/dpkg/status", (DATA / "status").read_bytes() + b"\n")
            .file("var/lib/dpkg/info/python3-urllib3.list",
                  (DATA / "python3-urllib3.list").read_bytes())
            .file(DIST, (DATA / "PKG-INFO").read_bytes()))


def test_a_python_package_installed_by_dpkg_is_judged_by_debian_only(tmp_path, advisories):
    result = _scan(tmp_path, advisories, _debian_layer())
    assert not URLLIB3_CVES & _cves(result)
    # The same real metadata installed by pip (no OS package owns it) is upstream's.
    pip = Layer().file("etc/os-release", DEBIAN_12).file(
        "usr/local/lib/python3.11/site-packages/urllib3-1.26.12.dist-info/METADATA",
        (DATA / "PKG-INFO").read_bytes())
    assert URLLIB3_CVES <= _cves(_scan(tmp_path / "pip", advisories, pip))


def test_the_inventory_says_who_owns_which_file():
    files = {  # the inventory is pure: the same real files, without an image
        "etc/os-release": (None, DEBIAN_12.encode()),
        "var/lib/dpkg/status": (None, (DATA / "status").read_bytes()),
        "var/lib/dpkg/info/python3-urllib3.list": (None,
                                                   (DATA / "python3-urllib3.list").read_bytes()),
        DIST: (None, (DATA / "PKG-INFO").read_bytes()),
    }
    inventory = build_inventory(files)
    debian = next(p for p in inventory.packages if p.package_manager == "dpkg")
    python = next(p for p in inventory.packages if p.package_manager == "pip")
    assert (debian.name, debian.source_name) == ("python3-urllib3", "python-urllib3")
    assert python.name == "urllib3" and python.os_package == "dpkg:python3-urllib3"
    owner = inventory.owner_of("/usr/lib/python3/dist-packages/urllib3/connectionpool.py")
    assert owner is debian
    assert inventory.owner_of("usr/bin/nothing") is None
    assert "usr/lib/python3/dist-packages/urllib3/__init__.py" in debian.files
    listed = {p["name"]: p["os_package"] for p in inventory.to_json()["packages"]}
    assert listed == {"python3-urllib3": None, "urllib3": "dpkg:python3-urllib3"}
    assert InstalledPackage(**inventory.to_json()["packages"][0]).name == "urllib3"


def test_apk_file_lists_own_python_packages():
    installed = ("P:py3-six\nV:1.12.0-r0\nA:x86_64\no:py-six\n"
                 "F:usr/lib/python3.8/site-packages/six-1.12.0.dist-info\nR:METADATA\nR:RECORD\n"
                 "F:usr/lib/python3.8/site-packages\nR:six.py\n\n")
    files = {
        "etc/os-release": (None, samples.ALPINE_OS_RELEASE.encode()),
        "lib/apk/db/installed": (None, installed.encode()),
        "usr/lib/python3.8/site-packages/six-1.12.0.dist-info/METADATA":
            (None, b"Metadata-Version: 2.1\nName: six\nVersion: 1.12.0\n"),
    }
    inventory = build_inventory(files)
    six = next(p for p in inventory.packages if p.package_manager == "pip")
    assert six.os_package == "apk:py3-six"
    assert inventory.owner_of("usr/lib/python3.8/site-packages/six.py").name == "py3-six"


@pytest.mark.parametrize("link", ["symlink", "hardlink", "absolute-symlink"])
def test_an_apk_database_behind_a_link_is_found(tmp_path, advisories, link):
    # Alpine 3.19+ keeps the database in usr/lib/apk/db, with lib/apk/db a link to it.
    layer = (Layer().file("etc/os-release", samples.ALPINE_OS_RELEASE)
             .file("usr/lib/apk/db/installed", samples.APK_INSTALLED))
    if link == "symlink":
        layer.symlink("lib/apk/db", "../../usr/lib/apk/db")
    elif link == "absolute-symlink":
        layer.symlink("lib/apk/db", "/usr/lib/apk/db")
    else:
        layer.hardlink("lib/apk/db/installed", "usr/lib/apk/db/installed")
    result = _scan(tmp_path, advisories, layer)
    assert set(samples.ALPINE_OPENSSL_EXPECTED) | set(samples.ALPINE_BUSYBOX_EXPECTED) \
        <= _cves(result)
    assert not any("not found" in note for note in result.notes)


def test_a_link_out_of_the_root_resolves_inside_it():
    links = {"lib/apk/db": "../../../../usr/lib/apk/db", "a": "b", "b": "a"}
    assert resolve_path("lib/apk/db/installed", links) == "usr/lib/apk/db/installed"
    assert resolve_path("a/x", links) is None  # a loop
    assert resolve_path("etc/../etc/./os-release", {}) == "etc/os-release"


def test_an_os_without_its_package_database_is_noted(tmp_path, advisories):
    result = _scan(tmp_path, advisories,
                   Layer().file("etc/os-release", samples.ALPINE_OS_RELEASE)
                   .file("lib/apk/db/other", "x"))
    assert any("apk package database (/lib/apk/db/installed) was not found" in note
               for note in result.notes)


def test_egg_directories_are_inventoried():
    files = {"usr/lib/python3/site-packages/jinja2-2.7.1-py3.11.egg/EGG-INFO/PKG-INFO":
             (None, b"Metadata-Version: 1.1\nName: Jinja2\nVersion: 2.7.1\n")}
    assert [(p.name, p.version) for p in build_inventory(files).packages] == [("Jinja2", "2.7.1")]


def test_python_records_and_node_directories_own_their_files():
    site = "usr/local/lib/python3.11/site-packages"
    # A RECORD as pip writes it: paths relative to site-packages, scripts climbing to bin.
    record = "pip/__init__.py,sha256=x,1\npip/_internal/main.py,sha256=y,2\n" \
             "../../../bin/pip,sha256=z,3\npip-24.0.dist-info/RECORD,,\n"
    files = {
        f"{site}/pip-24.0.dist-info/METADATA": (None, b"Metadata-Version: 2.1\nName: pip\n"
                                                      b"Version: 24.0\n"),
        f"{site}/pip-24.0.dist-info/RECORD": (None, record.encode()),
        "app/node_modules/left-pad/package.json": (None, b'{"name":"left-pad","version":"1.3.0"}'),
        "app/node_modules/left-pad/node_modules/@s/inner/package.json":
            (None, b'{"name":"@s/inner","version":"1.0.0"}'),
    }
    inventory = build_inventory(files)
    assert inventory.owner_of(f"/{site}/pip/_internal/main.py").name == "pip"
    assert inventory.owner_of("usr/local/bin/pip").name == "pip"  # ../../../bin/pip
    assert inventory.owner_of("app/node_modules/left-pad/index.js").name == "left-pad"
    assert inventory.owner_of(
        "app/node_modules/left-pad/node_modules/@s/inner/lib/x.js").name == "@s/inner"
    assert inventory.owner_of("app/server.js") is None


def test_the_os_package_wins_over_a_record_that_names_the_same_file():
    record = "urllib3/__init__.py,,\n"
    files = {
        "etc/os-release": (None, DEBIAN_12.encode()),
        "var/lib/dpkg/status": (None, (DATA / "status").read_bytes()),
        "var/lib/dpkg/info/python3-urllib3.list": (None,
                                                   (DATA / "python3-urllib3.list").read_bytes()),
        "usr/lib/python3/dist-packages/urllib3-1.26.12.dist-info/METADATA":
            (None, (DATA / "PKG-INFO").read_bytes()),
        "usr/lib/python3/dist-packages/urllib3-1.26.12.dist-info/RECORD": (None, record.encode()),
    }
    owner = build_inventory(files).owner_of("usr/lib/python3/dist-packages/urllib3/__init__.py")
    assert (owner.package_manager, owner.name) == ("dpkg", "python3-urllib3")


def test_distroless_md5sums_own_their_files():
    # distroless writes one stanza per package in status.d, and its md5sums beside it.
    files = {
        "var/lib/dpkg/status.d/libssl3": (None, b"Package: libssl3\nVersion: 3.0.11-1~deb12u2\n"
                                                b"Architecture: amd64\nSource: openssl\n"),
        "var/lib/dpkg/status.d/libssl3.md5sums":
            (None, b"0123456789abcdef0123456789abcdef  usr/lib/x86_64-linux-gnu/libssl.so.3\n"),
    }
    inventory = build_inventory(files)
    assert [p.name for p in inventory.packages] == ["libssl3"]
    assert inventory.owner_of("/usr/lib/x86_64-linux-gnu/libssl.so.3").name == "libssl3"
