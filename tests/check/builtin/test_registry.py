"""Pull from a real distribution registry (Debian's docker-registry) on loopback."""

from __future__ import annotations

import json

import pytest

from check.builtin.image import OCI_INDEX, OCI_MANIFEST, read_image
from check.builtin.inventory import wants
from check.builtin.registry import ImageReference, RegistryClient, RegistrySource
from check.builtin.scanner import scan_reference
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


class _Hostile:
    """A registry that serves whatever the test puts in `routes` (path -> (type, body))."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        routes: dict[str, tuple[str, bytes]] = {}
        self.routes = routes
        self.basic: str | None = None  # the exact Authorization header required, if any
        self.redirect_blobs_to: str | None = None  # "http://host:port" of blob storage
        seen: list[tuple[str, str | None]] = []
        self.seen = seen
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                return None

            def do_GET(self):
                seen.append((self.path, self.headers.get("Authorization")))
                if outer.basic and self.headers.get("Authorization") != outer.basic:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="hostile"')
                    self.end_headers()
                    return
                if outer.redirect_blobs_to and "/blobs/" in self.path:
                    self.send_response(307)
                    self.send_header("Location", outer.redirect_blobs_to + self.path +
                                     "?X-Amz-Signature=deadbeef")
                    self.end_headers()
                    return
                if self.path.split("?")[0] in routes:
                    self.path = self.path.split("?")[0]
                if self.path not in routes:
                    self.send_response(404)
                    self.end_headers()
                    return
                content_type, body = routes[self.path]
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, repo: str, tag: str, blobs: Blobs, layer_override: bytes | None = None,
              manifest_override: bytes | None = None) -> None:
        self.routes[f"/v2/{repo}/manifests/{tag}"] = (OCI_MANIFEST,
                                                      manifest_override or blobs.manifest)
        for digest, data in blobs.all().items():
            self.routes[f"/v2/{repo}/blobs/{digest}"] = ("application/octet-stream", data)
        if layer_override is not None:
            from tests.check.builtin.images import sha256

            digest = sha256(blobs.layers[0])
            self.routes[f"/v2/{repo}/blobs/{digest}"] = ("application/octet-stream",
                                                         layer_override)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile():
    server = _Hostile()
    yield server
    server.close()


def test_registry_serving_a_tampered_layer_is_caught(hostile):
    import gzip

    blobs = build_blobs([Layer().file("etc/os-release", "ID=debian\n").bytes()])
    evil = gzip.compress(Layer().file("etc/os-release", "ID=evil\n").bytes())
    hostile.serve("app", "1", blobs, layer_override=evil)
    source = RegistrySource(ImageReference.parse(f"{hostile.host}/app:1"))
    with pytest.raises(ImageError, match=r"layer 0 .* does not match its digest"):
        read_image(source, wants)


def test_registry_serving_a_truncated_manifest_is_caught(hostile):
    blobs = build_blobs([Layer().file("etc/os-release", "ID=debian\n").bytes()])
    hostile.serve("app", "1", blobs, manifest_override=blobs.manifest[:40])
    with pytest.raises(ImageError, match=r"manifest in .*app:1 is not valid JSON"):
        read_image(RegistrySource(ImageReference.parse(f"{hostile.host}/app:1")), wants)
    # Pinned by digest, the same bytes fail the digest check first.
    hostile.serve("app", blobs.manifest_digest, blobs, manifest_override=blobs.manifest[:40])
    pinned = ImageReference.parse(f"{hostile.host}/app@{blobs.manifest_digest}")
    with pytest.raises(ImageError, match=r"does not match its digest"):
        read_image(RegistrySource(pinned), wants)


def test_blob_redirects_to_storage_drop_the_credentials(tmp_path):
    """As ECR does: blobs redirect to presigned storage URLs, which must not see the password."""
    import base64

    registry, storage = _Hostile(), _Hostile()
    try:
        blobs = build_blobs([Layer().file("etc/os-release", "ID=debian\n").bytes()])
        registry.serve("app", "1", blobs)
        storage.serve("app", "1", blobs)
        registry.basic = "Basic " + base64.b64encode(b"AWS:ecr-password-123").decode()
        registry.redirect_blobs_to = f"http://{storage.host}"
        source = RegistrySource(ImageReference.parse(f"{registry.host}/app:1"),
                                RegistryAuth("AWS", "ecr-password-123"))
        files = read_image(source, wants)
        assert files.files["etc/os-release"][1] == b"ID=debian\n"
        assert storage.seen and all(auth is None for _, auth in storage.seen)
        assert any(auth == registry.basic for _, auth in registry.seen)
    finally:
        registry.close()
        storage.close()
