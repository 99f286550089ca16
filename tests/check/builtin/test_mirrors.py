"""CONTAINERSCAN_REGISTRY_MIRRORS: ECR references pulled from a real registry on loopback."""

from __future__ import annotations

import pytest

from check.builtin.registry import RegistryClient
from check.builtin.scanner import MIRRORS_ENV, BuiltinScanner, parse_mirrors
from check.quickstart.sampleimages import Blobs, build_blobs, push_image
from check.scanner import RegistryAuth, ScanTarget
from securityhub.errors import ConfigurationError, ImageError
from securityhub.findings import EcrImage, SecretFinding, VulnerabilityFinding
from tests.check.builtin import samples

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def test_parse_mirrors_entries() -> None:
    mirrors = parse_mirrors(
        f" {ECR}=http://127.0.0.1:5000 , registry.example.com:8443=https://cache.example.com/hub/ ,"
        "ghcr.io=http://[::1]:5001,quay.io=http://localhost")
    assert set(mirrors) == {ECR, "registry.example.com:8443", "ghcr.io", "quay.io"}
    local = mirrors[ECR]
    assert (local.scheme, local.netloc, local.prefix, local.insecure) == (
        "http", "127.0.0.1:5000", "", True)
    cache = mirrors["registry.example.com:8443"]
    assert (cache.scheme, cache.netloc, cache.prefix, cache.insecure) == (
        "https", "cache.example.com", "hub", False)
    assert mirrors["ghcr.io"].netloc == "[::1]:5001"
    assert parse_mirrors("") == {} and parse_mirrors(" , ") == {}


@pytest.mark.parametrize(("text", "words"), [
    (f"{ECR}=http://mirror.example.com", "loopback"),
    (f"{ECR}=http://127.0.0.2:5000", "loopback"),
    (f"{ECR}=http://localhost.example.com:5000", "loopback"),
    (f"{ECR}", "host=url"),
    ("=https://mirror.example.com", "host=url"),
    ("bad host=https://mirror.example.com", "host=url"),
    (f"{ECR}=ftp://mirror.example.com", "http(s) URL"),
    (f"{ECR}=https://user:pw@mirror.example.com", "without credentials"),
    (f"{ECR}=https://mirror.example.com/?token=x", "query"),
    (f"{ECR}=https://a.example.com,{ECR}=https://b.example.com", "two mirrors"),
])
def test_parse_mirrors_rejects(text: str, words: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_mirrors(text)
    assert words in str(raised.value)
    assert MIRRORS_ENV in str(raised.value)


def test_scanner_reads_the_environment_and_fails_early_on_a_bad_value() -> None:
    scanner = BuiltinScanner(environ={MIRRORS_ENV: f"{ECR}=https://mirror.example.com/ecr"})
    assert scanner.mirrors[ECR].prefix == "ecr"
    with pytest.raises(ConfigurationError):
        BuiltinScanner(environ={MIRRORS_ENV: f"{ECR}=http://mirror.example.com"})


@pytest.fixture(scope="module")
def debian_blobs() -> Blobs:
    return build_blobs(samples.debian_layers())


def _target(repository: str, digest: str, auth: RegistryAuth | None = None,
            scan_types: tuple[str, ...] = ("pkg", "secret")) -> ScanTarget:
    image = EcrImage("123456789012", "us-east-1", repository, digest, ("1.0",))
    return ScanTarget(image=image, scan_types=scan_types, auth=auth)


@pytest.mark.parametrize("prefix", ["", "ecr-cache"])
def test_ecr_reference_pulled_from_the_mirror(registry, debian_blobs, advisories, tmp_path,
                                              prefix: str) -> None:
    mirrored = f"{prefix}/team/app" if prefix else "team/app"
    digest = push_image(RegistryClient(registry.host), mirrored, "1.0", debian_blobs)
    url = f"http://{registry.host}/{prefix}" if prefix else f"http://{registry.host}"
    scanner = BuiltinScanner(vuln_db=advisories, environ={MIRRORS_ENV: f"{ECR}={url}"})
    target = _target("team/app", digest)
    assert target.image.reference == f"{ECR}/team/app@{digest}"

    result = scanner.scan(target, tmp_path, timeout=60)

    vulns = {f.vulnerability_id for f in result.findings if isinstance(f, VulnerabilityFinding)}
    assert vulns == set(samples.JINJA2_EXPECTED) | set(samples.WERKZEUG_EXPECTED)
    assert any(isinstance(f, SecretFinding) for f in result.findings)
    # The findings belong to the ECR image, not to the mirror.
    assert {f.resource.reference for f in result.findings} == {target.image.reference}


def test_mirror_without_the_pinned_digest_fails_for_that_image(registry, debian_blobs,
                                                              tmp_path) -> None:
    push_image(RegistryClient(registry.host), "team/other", "1.0", debian_blobs)
    scanner = BuiltinScanner(environ={MIRRORS_ENV: f"{ECR}=http://{registry.host}"})
    missing = "sha256:" + "0" * 64
    with pytest.raises(ImageError) as raised:
        scanner.scan(_target("team/other", missing, scan_types=("secret",)), tmp_path, timeout=30)
    assert "404" in str(raised.value)


def test_ecr_credentials_never_travel_to_a_plain_http_mirror(auth_registry, debian_blobs,
                                                            tmp_path) -> None:
    owner = RegistryClient(auth_registry.host,
                           RegistryAuth(auth_registry.username, auth_registry.password))
    digest = push_image(owner, "team/app", "1.0", debian_blobs)
    scanner = BuiltinScanner(environ={MIRRORS_ENV: f"{ECR}=http://{auth_registry.host}"})
    # Even the right credentials stay home: the mirror is plain http.
    auth = RegistryAuth(auth_registry.username, auth_registry.password)
    with pytest.raises(ImageError) as raised:
        scanner.scan(_target("team/app", digest, auth, ("secret",)), tmp_path, timeout=30)
    assert "requires credentials" in str(raised.value)
