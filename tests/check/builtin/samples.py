"""Sample images made of real files, with expectations verified by hand against the data.

Debian-style image: this machine's own `os-release` and dpkg database, the real core
metadata of the Jinja2 and Werkzeug distributions installed here (with the Version header
set to an old release), npm's real `package.json`, and a planted fake credential.

Expected matches, read in `pypa-osv/vulns/jinja2/*.yaml` and `werkzeug/*.yaml`:
- jinja2 2.7.1: PYSEC-2014-8 (CVE-2014-1402, fixed 2.7.2), PYSEC-2014-82 (CVE-2014-0012,
  fixed 2.7.3), PYSEC-2019-220 (CVE-2016-10745, fixed 2.8.1), PYSEC-2019-217
  (CVE-2019-10906, fixed 2.10.1), PYSEC-2021-66 (CVE-2020-28493, fixed 2.11.3).
- werkzeug 2.3.6: PYSEC-2023-221 (CVE-2023-46136, fixed 2.3.8, CVSS:3.1 .../A:H -> 7.5 HIGH).
  PYSEC-2023-57/58 are fixed in 2.2.3, PYSEC-2022-203 in 2.1.1, the others earlier.

Alpine-style image (Alpine 3.11.3; `alpine-secdb/v3.11/main.yaml`):
- libssl1.1 and libcrypto1.1 1.1.1d-r0 (origin openssl): CVE-2019-1551 (fixed 1.1.1d-r3),
  CVE-2019-1547, CVE-2019-1549, CVE-2019-1563 (fixed 1.1.1d-r1); 1.1.1b-r1 and 1.1.1a-r0
  fixes are older than the installed version.
- busybox 1.30.1-r1: CVE-2019-5747 (fixed 1.30.1-r2); CVE-2018-20679 was fixed in 1.29.3-r10.
- musl 1.1.24-r0: nothing (latest fix 1.1.23-r2).
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

from tests.check.builtin.images import Layer

FAKE_AWS_KEY_ID = "AKIAQX7ZK2LMNOPQRS4T"  # fake: the right shape, no account behind it
FAKE_AWS_SECRET = "q8Yb3Zr0Kx1Nw7Vt5Lm9Pc2Hs4Jd6Fg0Ae3Bi5Ck"
SITE = "usr/lib/python3/dist-packages"

JINJA2_EXPECTED = {
    "CVE-2014-1402": "2.7.2", "CVE-2014-0012": "2.7.3", "CVE-2016-10745": "2.8.1",
    "CVE-2019-10906": "2.10.1", "CVE-2020-28493": "2.11.3",
}
WERKZEUG_EXPECTED = {"CVE-2023-46136": "2.3.8"}
ALPINE_OPENSSL_EXPECTED = {
    "CVE-2019-1551": "1.1.1d-r3", "CVE-2019-1547": "1.1.1d-r1",
    "CVE-2019-1549": "1.1.1d-r1", "CVE-2019-1563": "1.1.1d-r1",
}
ALPINE_BUSYBOX_EXPECTED = {"CVE-2019-5747": "1.30.1-r2"}

ALPINE_OS_RELEASE = """NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.11.3
PRETTY_NAME="Alpine Linux v3.11"
HOME_URL="https://alpinelinux.org/"
BUG_REPORT_URL="https://bugs.alpinelinux.org/"
"""


def _apk_entry(name: str, version: str, origin: str, description: str) -> str:
    return (f"C:Q1{'A' * 26}=\nP:{name}\nV:{version}\nA:x86_64\nS:123456\nI:456789\n"
            f"T:{description}\nU:https://alpinelinux.org\nL:MIT\no:{origin}\n"
            f"m:Natanael Copa <ncopa@alpinelinux.org>\nt:1575000000\nc:0123456789abcdef\n"
            f"F:lib\nR:lib{name}.so\na:0:0:755\nZ:Q1{'B' * 26}=\n\n")


APK_INSTALLED = (
    _apk_entry("musl", "1.1.24-r0", "musl", "the musl c library")
    + _apk_entry("busybox", "1.30.1-r1", "busybox", "Size optimized toolbox")
    + _apk_entry("libcrypto1.1", "1.1.1d-r0", "openssl", "Crypto library from openssl")
    + _apk_entry("libssl1.1", "1.1.1d-r0", "openssl", "SSL shared libraries")
)


def real_metadata(distribution: str, version: str) -> str:
    """The installed distribution's real METADATA, with its Version header replaced."""
    text = importlib.metadata.distribution(distribution).read_text("METADATA") or ""
    assert text, f"{distribution} has no METADATA here"
    return re.sub(r"(?m)^Version: .*$", f"Version: {version}", text, count=1)


def host_file(path: str) -> bytes:
    return Path("/" + path).read_bytes()


def npm_package_json() -> bytes | None:
    path = Path("/usr/lib/node_modules/npm/package.json")
    return path.read_bytes() if path.is_file() else None


def debian_layers() -> list[bytes]:
    base = Layer()
    base.file("usr/lib/os-release", host_file("etc/os-release"))
    base.symlink("etc/os-release", "../usr/lib/os-release")
    base.file("var/lib/dpkg/status", host_file("var/lib/dpkg/status"))
    base.file(f"{SITE}/jinja2-2.7.1.dist-info/METADATA", real_metadata("jinja2", "2.7.1"))
    base.file(f"{SITE}/werkzeug-2.3.6.dist-info/METADATA", real_metadata("werkzeug", "2.3.6"))
    base.file(f"{SITE}/click-7.0.dist-info/METADATA", real_metadata("click", "7.0"))
    npm = npm_package_json()
    if npm is not None:
        base.file("usr/lib/node_modules/npm/package.json", npm)
    app = Layer()
    app.file("app/config/.env",
             f"# deployment settings\nREGION=eu-west-1\nAWS_ACCESS_KEY_ID={FAKE_AWS_KEY_ID}\n"
             f"aws_secret_access_key = {FAKE_AWS_SECRET}\n")
    app.file("app/README.md", "password = \"changeme\"\nSet the token in the environment.\n")
    # The app layer removes click: its metadata must leave the inventory.
    app.whiteout(f"{SITE}/click-7.0.dist-info")
    return [base.bytes(), app.bytes()]


def alpine_layers() -> list[bytes]:
    base = Layer()
    base.file("etc/os-release", ALPINE_OS_RELEASE)
    base.file("lib/apk/db/installed", APK_INSTALLED)
    base.file("etc/ssl/private/server.key",
              "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
              "-----END PRIVATE KEY-----\n")
    return [base.bytes()]
