"""CycloneDX 1.5 SBOMs of scanned images (`check/sbom.py`), validated against CycloneDX's
own JSON schema (bom-1.5.schema.json, as cyclonedx-python-lib ships it), and read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from check import sbom
from check.builtin.inventory import InstalledPackage, Inventory, OsInfo
from check.builtin.scanner import BuiltinScanner
from check.cli import cli
from check.quickstart.data import advisories_dir
from check.quickstart.sampleimages import web_image, worker_image, write_oci_layout


def assert_valid(doc: dict | str) -> dict:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
    assert error is None, error
    parsed = json.loads(text)
    assert parsed["bomFormat"] == "CycloneDX" and parsed["specVersion"] == "1.5"
    return parsed


def layout(tmp_path: Path, image) -> Path:
    return write_oci_layout(tmp_path / image.repository.replace("/", "-"),
                            [(image.blobs, "linux/amd64")])


def key(inventory: Inventory) -> tuple:
    return inventory.os, sorted(inventory.packages, key=lambda p: (p.name, p.version, p.file_path))


@pytest.mark.parametrize("image", [worker_image, web_image], ids=["alpine", "debian"])
def test_the_sbom_of_a_real_inventory_validates_and_reads_back(tmp_path, image) -> None:
    sample = image()
    inventory = BuiltinScanner(vuln_db=advisories_dir()).inventory(
        f"oci-layout:{layout(tmp_path, sample)}")
    assert len(inventory.packages) >= 3
    doc = assert_valid(sbom.sbom_document(inventory, image_name=sample.repository,
                                          digest=sample.digest, tool_version="1.0"))
    assert doc["metadata"]["component"]["type"] == "container"
    assert doc["metadata"]["component"]["version"] == sample.digest
    assert key(sbom.inventory_from_sbom(doc)) == key(inventory)
    purls = {c.get("purl") for c in doc["components"]}
    if image is worker_image:
        assert "pkg:apk/alpine/musl@1.1.22-r2?arch=x86_64&distro=alpine-3.10.2" in purls
        assert "pkg:pypi/requests@2.22.0" in purls
    else:
        assert "pkg:pypi/jinja2@2.10" in purls and "pkg:pypi/werkzeug@2.3.6" in purls
        assert any(str(p).startswith("pkg:deb/debian/") for p in purls)
    [os_component] = [c for c in doc["components"] if c["type"] == "operating-system"]
    assert os_component["name"] == inventory.os.id


def test_purls_follow_the_purl_types() -> None:
    debian = OsInfo(id="debian", version_id="12")
    assert sbom.package_url(InstalledPackage("libssl3", "3.0.15-1~deb12u1", "dpkg", "f",
                                             architecture="amd64"), debian) == (
        "pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64&distro=debian-12")
    assert sbom.package_url(InstalledPackage("Foo_Bar", "1.0", "pip", "f"), None) == (
        "pkg:pypi/foo-bar@1.0")
    assert sbom.package_url(InstalledPackage("@babel/core", "7.0.0", "npm", "f"), None) == (
        "pkg:npm/%40babel/core@7.0.0")
    inventory = Inventory(os=None, packages=(InstalledPackage("@babel/core", "7.0.0", "npm",
                                                              "node_modules/@babel/core"),))
    doc = assert_valid(sbom.sbom_document(inventory, image_name="app", digest="sha256:" + "1" * 64))
    assert sbom.inventory_from_sbom(doc).packages == inventory.packages


def test_another_tools_sbom_reads_from_purls_alone() -> None:
    doc = {"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1, "components": [
        {"type": "operating-system", "name": "alpine", "version": "3.10.2"},
        {"type": "library", "name": "musl", "version": "1.1.22-r2",
         "purl": "pkg:apk/alpine/musl@1.1.22-r2?arch=x86_64"},
        {"type": "library", "name": "core", "version": "7.0.0", "purl": "pkg:npm/%40babel/core@7.0.0"},
        {"type": "file", "name": "README"},
    ]}
    inventory = sbom.inventory_from_sbom(assert_valid(doc))
    assert inventory.os == OsInfo(id="alpine", version_id="3.10.2")
    assert [(p.name, p.version, p.package_manager, p.architecture) for p in inventory.packages] == [
        ("musl", "1.1.22-r2", "apk", "x86_64"), ("@babel/core", "7.0.0", "npm", None)]


@pytest.mark.parametrize(("doc", "where"), [
    ({"bomFormat": "SPDX"}, "not a CycloneDX document"),
    ({"bomFormat": "CycloneDX", "components": {}}, "components is not a list"),
    ({"bomFormat": "CycloneDX", "components": [{"type": "library", "purl": "nope"}]},
     "components[0].purl"),
])  # fmt: skip
def test_unreadable_sboms_say_where(doc: dict, where: str) -> None:
    with pytest.raises(sbom.SbomError, match=where.replace("[", r"\[").replace("]", r"\]")):
        sbom.inventory_from_sbom(doc, "s3://b/k")


def test_scan_image_output_cyclonedx_and_output_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CONTAINERSCAN_VULN_DB", str(advisories_dir()))
    sample = worker_image()
    ref = f"oci-layout:{layout(tmp_path, sample)}"
    result = CliRunner().invoke(cli, ["--log-level", "ERROR", "scan-image", ref,
                                      "--output", "cyclonedx"])
    assert result.exit_code == 0, result.output
    printed = assert_valid(result.stdout)
    assert printed["metadata"]["component"]["version"] == sample.digest
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["--log-level", "ERROR", "scan-image", ref,
                                      "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    [stored] = out.glob("runs/*/images/sha256-*/sbom.cdx.json")
    assert key(sbom.inventory_from_sbom(assert_valid(stored.read_text()))) == key(
        sbom.inventory_from_sbom(printed))


def test_qscanners_own_sbom_is_kept_instead(tmp_path) -> None:
    raw = tmp_path / "api-sha256_0123456789ab.cyclonedx.json"
    raw.write_text('{"bomFormat": "CycloneDX", "specVersion": "1.5"}')
    inventory = tmp_path / sbom.BUILTIN_INVENTORY_FILE
    inventory.write_text(json.dumps({"os": None, "packages": []}))
    kept = sbom.sbom_from_raw_files([inventory, raw], image_name="x", digest="sha256:" + "2" * 64)
    assert kept == raw.read_bytes()
    assert sbom.sbom_from_raw_files([tmp_path / "other.json"], image_name="x", digest="d") is None

