"""The quick start's sample images: real files in, the hand-verified findings out."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from check.builtin.scanner import scan_reference
from check.quickstart import sampleimages
from check.quickstart.sampleimages import (
    FAKE_AWS_KEY_ID,
    FAKE_AWS_SECRET,
    SampleImageError,
    trimmed_dpkg_status,
    web_image,
    worker_image,
    write_oci_layout,
)
from securityhub.findings import SecretFinding, VulnerabilityFinding
from tests.check.builtin.conftest import advisories_root

STATUS = """Package: adduser
Status: install ok installed
Version: 3.134

Package: libssl3
Status: install ok installed
Version: 3.0.11-1~deb12u2
Description: Secure Sockets Layer toolkit - shared libraries
 This package is part of the OpenSSL project.

Package: zlib1g
Status: install ok installed
Version: 1:1.2.13.dfsg-1
"""

# Read by hand in the shared data (see the module docstring of check.quickstart.sampleimages).
WEB_VULNERABILITIES = {"CVE-2019-10906": "2.10.1", "CVE-2020-28493": "2.11.3",
                       "CVE-2023-46136": "2.3.8"}
WORKER_VULNERABILITIES = {"CVE-2019-1547": "1.1.1d-r0", "CVE-2019-1549": "1.1.1d-r0",
                          "CVE-2019-1563": "1.1.1d-r0", "CVE-2019-14697": "1.1.22-r3",
                          "CVE-2023-32681": "2.31.0"}


def test_trimmed_dpkg_status_keeps_whole_stanzas_in_order() -> None:
    out = trimmed_dpkg_status(STATUS, keep=("zlib1g", "libssl3", "missing"))
    assert out.startswith("Package: libssl3\n")
    assert " This package is part of the OpenSSL project.\n\nPackage: zlib1g\n" in out
    assert "adduser" not in out
    assert trimmed_dpkg_status(STATUS, keep=("missing",)) == ""


def test_host_files_missing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SampleImageError, match="os-release"):
        web_image(root=tmp_path)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text("ID=debian\n")
    with pytest.raises(SampleImageError, match="not Debian-based"):
        web_image(root=tmp_path)


def test_unknown_distribution_metadata_is_a_clear_error() -> None:
    with pytest.raises(SampleImageError, match="not installed"):
        sampleimages.real_metadata("no-such-distribution-here", "1.0")


def _files(blobs: sampleimages.Blobs) -> dict[str, bytes]:
    out = {}
    for layer in blobs.layers:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member)
                out[member.name] = handle.read() if handle else b""
    return out


def test_images_are_reproducible_and_the_fix_changes_the_digest() -> None:
    assert web_image().digest == web_image().digest
    assert worker_image().digest == worker_image().digest
    assert worker_image(fixed=True).digest != worker_image().digest
    manifest = json.loads(worker_image().blobs.manifest)
    assert manifest["mediaType"] == sampleimages.OCI_MANIFEST
    files = _files(worker_image(fixed=True).blobs)
    assert b"V:1.1.1d-r0" in files["lib/apk/db/installed"]
    assert "usr/lib/python3.7/site-packages/requests-2.31.0.dist-info/METADATA" in files


def test_web_image_holds_real_files() -> None:
    files = _files(web_image().blobs)
    assert files["usr/lib/os-release"] == sampleimages.host_os_release()
    status = files["var/lib/dpkg/status"].decode()
    host = Path("/var/lib/dpkg/status").read_text(errors="replace")
    stanzas = status.split("\n\n")
    assert len(stanzas) >= 3 and all(s.strip() in host for s in stanzas)
    metadata = files[f"{sampleimages.SITE}/Jinja2-2.10.dist-info/METADATA"].decode()
    assert "\nVersion: 2.10\n" in metadata and "Name: Jinja2" in metadata
    env = files["app/config/.env"].decode()
    assert FAKE_AWS_KEY_ID in env and FAKE_AWS_SECRET in env


@pytest.fixture(scope="module")
def advisories() -> Path:
    root = advisories_root()
    if not (root / "pypa-osv").is_dir() or not (root / "alpine-secdb").is_dir():
        pytest.fail(f"advisory data not found at {root}; the repository ships it in "
                    "check/quickstart/advisories")
    return root


@pytest.mark.parametrize(("image", "expected", "secrets"), [
    (web_image, WEB_VULNERABILITIES, {"aws-access-key-id", "aws-secret-access-key"}),
    (worker_image, WORKER_VULNERABILITIES, set()),
    (lambda: worker_image(fixed=True), {}, set()),
])
def test_findings_match_the_hand_verified_expectations(image, expected, secrets, advisories,
                                                       tmp_path) -> None:
    sample = image()
    layout = write_oci_layout(tmp_path / "layout", [(sample.blobs, "linux/amd64")])
    result = scan_reference(f"oci-layout:{layout}", vuln_db=advisories)
    fixed = {f.vulnerability_id: {p.fixed_version for p in f.packages}
             for f in result.findings if isinstance(f, VulnerabilityFinding)}
    assert fixed == {cve: {version} for cve, version in expected.items()}
    found = {f.rule_id for f in result.findings if isinstance(f, SecretFinding)}
    assert found == secrets
