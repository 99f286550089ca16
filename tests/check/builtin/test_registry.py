"""Pull from a real distribution registry (Debian's docker-registry) on loopback."""

from __future__ import annotations

import json

import pytest

from check.builtin import scan_reference
from check.image import OCI_INDEX, OCI_MANIFEST, read_image
from check.inventory import wants
from check.registry import ImageReference, RegistryClient, RegistrySource
from check.scanner import RegistryAuth
from securityhub.errors import ImageError
from securityhub.findings import SecretFinding, VulnerabilityFinding
from tests.check.builtin import samples
from tests.check.builtin.images import Blobs, Layer, build_blobs


def push(client: RegistryClient, repository: str, tag: str, blobs: Blobs) -> str:
    for data in (blobs.config, *blobs.layers):
        client.push_blob(repository, data)
    return client.push_manifest(repository, tag, blobs.manifest, OCI_MANIFEST)


@pytest.fixture(scope="module")
def debian_blobs() -> Blobs:
    return build_blobs(samples.debian_layers())


def test_scan_by_tag_and_by_digest(registry, debian_blobs, advisories, tmp_path):
    client = RegistryClient(registry.host)
    digest = push(client, "team/app", "1.0", debian_blobs)
    assert digest == debian_blobs.manifest_digest

    result = scan_reference(f"{registry.host}/team/app:1.0", vuln_db=advisories,
                            workdir=tmp_path / "tag")
    vulns = {f.vulnerability_id for f in result.findings if isinstance(f, VulnerabilityFinding)}
    assert vulns == set(samples.JINJA2_EXPECTED) | set(samples.WERKZEUG_EXPECTED)
    secrets = {(f.rule_id, f.file_path) for f in result.findings
               if isinstance(f, SecretFinding)}
    assert ("aws-access-key-id", "/app/config/.env") in secrets
    resource = result.findings[0].resource
    assert resource.reference == f"{registry.host}/team/app@{digest}"

    pinned = scan_reference(f"{registry.host}/team/app@{digest}", vuln_db=advisories,
                            workdir=tmp_path / "digest")
    assert {f.identity() for f in pinned.findings} == {f.identity() for f in result.findings}


def test_image_index_selects_the_platform(registry):
    client = RegistryClient(registry.host)
    amd = build_blobs([Layer().file("etc/os-release", "ID=debian\nVERSION_ID=12\n").bytes()])
    arm = build_blobs([Layer().file("etc/os-release", "ID=alpine\n").bytes()], "arm64")
    entries = []
    for blobs, arch in ((amd, "amd64"), (arm, "arm64")):
        digest = push(client, "multi", f"only-{arch}", blobs)
        entries.append({"mediaType": OCI_MANIFEST, "digest": digest,
                        "size": len(blobs.manifest),
                        "platform": {"os": "linux", "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": entries}).encode()
    client.push_manifest("multi", "latest", index, OCI_INDEX)

    for platform, expected, blobs in (("linux/amd64", b"ID=debian", amd),
                                      ("linux/arm64", b"ID=alpine", arm)):
        source = RegistrySource(ImageReference.parse(f"{registry.host}/multi:latest"),
                                platform=platform)
        files = read_image(source, wants)
        assert files.files["etc/os-release"][1].startswith(expected)
        assert files.digest == blobs.manifest_digest


def test_basic_auth(auth_registry, debian_blobs, advisories, tmp_path):
    auth = RegistryAuth(auth_registry.username or "", auth_registry.password or "")
    push(RegistryClient(auth_registry.host, auth), "private/app", "1", debian_blobs)

    result = scan_reference(f"{auth_registry.host}/private/app:1", vuln_db=advisories,
                            auth=auth, workdir=tmp_path, scan_types=("pkg",))
    assert {f.vulnerability_id for f in result.findings} >= set(samples.JINJA2_EXPECTED)

    with pytest.raises(ImageError, match="requires credentials"):
        scan_reference(f"{auth_registry.host}/private/app:1", vuln_db=advisories,
                       workdir=tmp_path)
    with pytest.raises(ImageError, match="refused the credentials") as caught:
        scan_reference(f"{auth_registry.host}/private/app:1", vuln_db=advisories,
                       auth=RegistryAuth("scanner", "wrong-password"), workdir=tmp_path)
    assert "wrong-password" not in str(caught.value)


def test_unknown_image_and_unreachable_registry(registry, tmp_path, advisories):
    with pytest.raises(ImageError, match="HTTP 404"):
        scan_reference(f"{registry.host}/nothing/here:1", vuln_db=advisories,
                       workdir=tmp_path)
    with pytest.raises(ImageError, match="cannot reach registry"):
        scan_reference("127.0.0.1:9/x:1", vuln_db=advisories, workdir=tmp_path)


@pytest.mark.parametrize(("text", "expected"), [
    ("alpine", ("registry-1.docker.io", "library/alpine", None, None)),
    ("alpine:3.19", ("registry-1.docker.io", "library/alpine", "3.19", None)),
    ("localhost:5000/a/b:t", ("localhost:5000", "a/b", "t", None)),
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/app@sha256:" + "0" * 64,
     ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "app", None, "sha256:" + "0" * 64)),
])
def test_reference_parsing(text, expected):
    ref = ImageReference.parse(text)
    assert (ref.host, ref.repository, ref.tag, ref.digest) == expected


def test_bad_reference():
    with pytest.raises(ImageError, match="not an image reference"):
        ImageReference.parse("Registry.example/UPPER:tag")


def test_bearer_token_auth(token_registry, debian_blobs, tmp_path, advisories):
    auth = RegistryAuth(token_registry.username or "", token_registry.password or "")
    client = RegistryClient(token_registry.host, auth)
    push(client, "tok/app", "1", debian_blobs)
    assert client._tokens  # the push went through the token service

    result = scan_reference(f"{token_registry.host}/tok/app:1", vuln_db=advisories, auth=auth,
                            workdir=tmp_path, scan_types=("pkg",))
    assert {f.vulnerability_id for f in result.findings} >= set(samples.WERKZEUG_EXPECTED)

    with pytest.raises(ImageError, match="token service refused the credentials"):
        scan_reference(f"{token_registry.host}/tok/app:1", vuln_db=advisories,
                       auth=RegistryAuth("robot", "nope"), workdir=tmp_path)
