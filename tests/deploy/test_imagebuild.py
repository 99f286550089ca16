"""The image tool, up to the Docker engine boundary (a real SDK against a loopback Engine API)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws

from release import imagebuild
from securityhub.errors import ConfigurationError
from tests.deploy.docker_api import DockerApiServer, FakeDockerEngine

ROOT = imagebuild.ROOT


@pytest.fixture
def qscanner(tmp_path: Path) -> Path:
    binary = tmp_path / "qscanner-4.8.0"
    binary.write_bytes(b"\x7fELF stand-in for the QScanner binary\n")
    binary.chmod(0o644)  # the context gives it 0555 whatever the source mode
    return binary


@pytest.fixture
def server() -> Iterator[DockerApiServer]:
    with DockerApiServer() as running:
        yield running


def _members(context: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(context), mode="r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def _read(context: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(context), mode="r:gz") as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


# ------------------------------------------------------------------------ build context


def test_check_context_holds_sources_dockerfile_and_qscanner(qscanner: Path) -> None:
    context = imagebuild.build_context(ROOT, imagebuild.IMAGES["check"], qscanner)
    members = _members(context)
    assert "docker/Dockerfile.check" in members
    assert {"setup.cfg", "pyproject.toml", "README.md", "check/cli.py",
            "securityhub/findings.py", "sidecar/events.py", "docker/constraints.txt"} <= set(members)
    binary = members[imagebuild.QSCANNER_CONTEXT_PATH]
    assert binary.mode == 0o555
    assert _read(context, imagebuild.QSCANNER_CONTEXT_PATH) == qscanner.read_bytes()
    # The allow-list keeps out tests, git metadata, notes and caches.
    assert not [n for n in members if n.startswith(("tests/", ".git/", "cloudformation/", "release/"))]
    assert not [n for n in members if "__pycache__" in n or n.endswith(".pyc")]
    assert "docker/README.md" not in members
    assert all(m.uid == 0 and m.mtime == 0 for m in members.values())


def test_context_is_reproducible(qscanner: Path) -> None:
    spec = imagebuild.IMAGES["check"]
    first = imagebuild.build_context(ROOT, spec, qscanner)
    second = imagebuild.build_context(ROOT, spec, qscanner)
    assert _members(first).keys() == _members(second).keys()
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as a:
        digest_a = hashlib.sha256(b"".join(a.extractfile(m).read() for m in a if m.isfile())).hexdigest()  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(second), mode="r:gz") as b:
        digest_b = hashlib.sha256(b"".join(b.extractfile(m).read() for m in b if m.isfile())).hexdigest()  # type: ignore[union-attr]
    assert digest_a == digest_b


def test_sidecar_context_has_no_qscanner_and_has_the_entrypoint() -> None:
    context = imagebuild.build_context(ROOT, imagebuild.IMAGES["sidecar"])
    members = _members(context)
    assert "docker/Dockerfile.sidecar" in members
    assert "docker/sidecar-entrypoint.sh" in members
    assert imagebuild.QSCANNER_CONTEXT_PATH not in members


def test_check_context_without_qscanner_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="QScanner"):
        imagebuild.build_context(ROOT, imagebuild.IMAGES["check"], None)


# ------------------------------------------------------------------------------ engine


def test_build_sends_the_context_and_arguments(server: DockerApiServer, qscanner: Path) -> None:
    spec = imagebuild.IMAGES["check"]
    context = imagebuild.build_context(ROOT, spec, qscanner)
    client = imagebuild.docker_client(server.url)
    result = imagebuild.build_image(
        client, context, spec, "containerscan/check:abc123",
        buildargs={"QSCANNER_SHA256": "f" * 64},
    )
    (build,) = server.engine.find("/build")
    assert build.body == context  # exactly the bytes we built, gzip-encoded
    assert build.headers["Content-Type"] == "application/tar"
    assert build.headers.get("Content-Encoding") == "gzip"
    assert build.query["dockerfile"] == ["docker/Dockerfile.check"]
    assert build.query["t"] == ["containerscan/check:abc123"]
    assert build.query["platform"] == ["linux/amd64"]
    assert json.loads(build.query["buildargs"][0]) == {"QSCANNER_SHA256": "f" * 64}
    assert build.query["pull"] == ["True"] or build.query["pull"] == ["1"]
    assert result.image_id == server.engine.tags["containerscan/check:abc123"]
    assert any("Successfully built" in line for line in result.log)


def test_build_error_is_reported(qscanner: Path) -> None:
    engine = FakeDockerEngine(build_error="COPY failed: file not found: docker/qscanner/qscanner")
    with DockerApiServer(engine) as server:
        spec = imagebuild.IMAGES["check"]
        client = imagebuild.docker_client(server.url)
        with pytest.raises(imagebuild.ImageBuildError, match="COPY failed"):
            imagebuild.build_image(client, imagebuild.build_context(ROOT, spec, qscanner), spec, "x:y")


@mock_aws
def test_ecr_credentials_decode_the_authorization_token() -> None:
    ecr = boto3.client("ecr", region_name="us-east-1")
    login = imagebuild.ecr_credentials(ecr)
    assert login.username == "AWS"
    assert login.password and login.password not in repr(login)
    assert login.registry.endswith(".dkr.ecr.us-east-1.amazonaws.com")
    assert not login.registry.startswith("https://")


def test_login_and_push_return_the_digest(server: DockerApiServer, qscanner: Path) -> None:
    spec = imagebuild.IMAGES["sidecar"]
    client = imagebuild.docker_client(server.url)
    built = imagebuild.build_image(client, imagebuild.build_context(ROOT, spec), spec, "local:1")
    login = imagebuild.RegistryLogin("123456789012.dkr.ecr.us-east-1.amazonaws.com", "AWS", "s3cr3t-pw")
    imagebuild.docker_login(client, login)
    uri = imagebuild.repository_uri(login.registry, "containerscan/sidecar")
    digest = imagebuild.push_image(client, built.image_id, uri, "v1", login)
    assert digest.startswith("sha256:")
    (auth,) = server.engine.find("/auth")
    sent = json.loads(auth.body)
    assert sent["username"] == "AWS" and sent["password"] == "s3cr3t-pw"
    assert sent["serveraddress"] == f"https://{login.registry}"
    (push,) = server.engine.find("/push")
    assert push.path == f"/images/{uri}/push"
    header = push.headers["X-Registry-Auth"]
    assert json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["password"] == "s3cr3t-pw"
    assert server.engine.tags[f"{uri}:v1"] == built.image_id


def test_refused_login_is_an_error(qscanner: Path) -> None:
    with DockerApiServer(FakeDockerEngine(login_status=401)) as server:
        client = imagebuild.docker_client(server.url)
        login = imagebuild.RegistryLogin("r.example", "AWS", "pw-123456")
        with pytest.raises(imagebuild.ImageBuildError, match="login"):
            imagebuild.docker_login(client, login)


@pytest.mark.parametrize("tag", ["", ".hidden", "-x", "a" * 129, "v1 2", "v1;rm"])
def test_bad_tags_are_refused(tag: str) -> None:
    with pytest.raises(ConfigurationError):
        imagebuild.validate_tag(tag)


# --------------------------------------------------------------------------------- CLI


# moto also patches `requests` (which the Docker SDK uses): let loopback calls through.
LOOPBACK = {"core": {"passthrough": {"urls": [r"http://127\.0\.0\.1:\d+/.*"]}}}


@mock_aws(config=LOOPBACK)
def test_cli_builds_logs_in_pushes_and_never_logs_the_password(
    server: DockerApiServer, qscanner: Path
) -> None:
    sha = hashlib.sha256(qscanner.read_bytes()).hexdigest()
    boto3.client("ecr", region_name="us-east-1").create_repository(repositoryName="containerscan/check")
    result = CliRunner().invoke(imagebuild.main, [
        "build", "check", "--tag", "git-abc123", "--qscanner", str(qscanner),
        "--qscanner-sha256", sha, "--push", "--region", "us-east-1",
        "--docker-host", server.url,
    ])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["image"].endswith("/containerscan/check@" + out["image"].rsplit("@", 1)[1])
    assert out["image"].split("@")[1].startswith("sha256:")
    (build,) = server.engine.find("/build")
    assert json.loads(build.query["buildargs"][0])["QSCANNER_SHA256"] == sha
    (auth,) = server.engine.find("/auth")
    password = json.loads(auth.body)["password"]
    assert password not in result.output
    assert password not in (result.stderr if result.stderr_bytes is not None else "")


def test_cli_refuses_a_qscanner_with_the_wrong_checksum(server: DockerApiServer, qscanner: Path) -> None:
    result = CliRunner().invoke(imagebuild.main, [
        "build", "check", "--tag", "t1", "--qscanner", str(qscanner),
        "--qscanner-sha256", "0" * 64, "--docker-host", server.url,
    ])
    assert result.exit_code == 2
    assert "SHA-256" in result.output
    assert server.engine.requests == []  # nothing reached the engine


# ------------------------------------------------------------------------------ promote


def _manifest(layer: str) -> str:
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2,
                   "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1,
                    "digest": "sha256:" + hashlib.sha256(layer.encode()).hexdigest()}],
    })


@mock_aws
def test_promote_retags_the_same_digest() -> None:
    ecr = boto3.client("ecr", region_name="us-east-1")
    ecr.create_repository(repositoryName="containerscan/check")
    pushed = ecr.put_image(repositoryName="containerscan/check", imageManifest=_manifest("a"),
                           imageTag="git-abc123")
    digest = pushed["image"]["imageId"]["imageDigest"]
    ecr.put_image(repositoryName="containerscan/check", imageManifest=_manifest("b"), imageTag="other")
    imagebuild.promote(ecr, "containerscan/check", digest, "prod")
    images = ecr.describe_images(repositoryName="containerscan/check", imageIds=[{"imageTag": "prod"}])
    assert images["imageDetails"][0]["imageDigest"] == digest
    assert set(images["imageDetails"][0]["imageTags"]) == {"git-abc123", "prod"}


@mock_aws
def test_promote_unknown_digest_is_refused() -> None:
    ecr = boto3.client("ecr", region_name="us-east-1")
    ecr.create_repository(repositoryName="containerscan/check")
    with pytest.raises(ConfigurationError, match="does not exist"):
        imagebuild.promote(ecr, "containerscan/check", "sha256:" + "0" * 64, "prod")


# ---------------------------------------------------------------------- launcher package


def _standin_python(tmp_path: Path, fail: bool = False) -> Path:
    """A `python` whose `-m pip` records its arguments and lays out a package like pip."""
    log = tmp_path / "pip-calls.jsonl"
    script = tmp_path / "python-standin"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, os, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        + ("sys.exit('ERROR: No matching distribution found for rpds-py')\n" if fail else "")
        + "args = sys.argv[1:]\n"
        "if args[:3] == ['-m', 'pip', 'wheel']:\n"
        "    wheels = args[args.index('--wheel-dir') + 1]\n"
        "    os.makedirs(wheels, exist_ok=True)\n"
        "    open(os.path.join(wheels, 'containerscan-0.1.0-py3-none-any.whl'), 'w').write('')\n"
        "if args[:3] == ['-m', 'pip', 'install']:\n"
        "    target = args[args.index('--target') + 1]\n"
        "    for rel, mode in (('check/launcher.py', 0o644), ('check/__init__.py', 0o644),\n"
        "                      ('bin/jp.py', 0o755), ('check/__pycache__/x.pyc', 0o644)):\n"
        "        path = os.path.join(target, rel)\n"
        "        os.makedirs(os.path.dirname(path), exist_ok=True)\n"
        "        open(path, 'w').write('# ' + rel + '\\n')\n"
        "        os.chmod(path, mode)\n"
    )
    script.chmod(0o755)
    return script


def test_launcher_package_is_built_for_the_lambda_runtime(tmp_path: Path) -> None:
    import zipfile

    python = _standin_python(tmp_path)
    first, second = tmp_path / "a" / "launcher.zip", tmp_path / "b" / "launcher.zip"
    imagebuild.build_launcher_package(first, str(python))
    imagebuild.build_launcher_package(second, str(python))
    assert first.read_bytes() == second.read_bytes()  # reproducible
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        modes = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
    assert names == sorted(names)
    assert "check/launcher.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert modes["bin/jp.py"] == 0o755 and modes["check/launcher.py"] == 0o644
    calls = [json.loads(line) for line in (tmp_path / "pip-calls.jsonl").read_text().splitlines()]
    install = next(c for c in calls if c[:3] == ["-m", "pip", "install"])
    assert install[install.index("--python-version") + 1] == "3.12"
    assert install[install.index("--platform") + 1] == "manylinux2014_x86_64"
    assert "--only-binary=:all:" in install
    assert install[install.index("--constraint") + 1].endswith("docker/constraints.txt")
    assert install[-1].endswith("/containerscan-0.1.0-py3-none-any.whl")  # the file, not a name


def test_launcher_package_reports_pip_failures(tmp_path: Path) -> None:
    with pytest.raises(imagebuild.ImageBuildError, match="rpds-py"):
        imagebuild.build_launcher_package(tmp_path / "l.zip", str(_standin_python(tmp_path, fail=True)))
    assert not (tmp_path / "l.zip").exists()


@pytest.mark.slow
def test_the_launcher_wheel_is_pure_python(tmp_path: Path) -> None:
    """The real pip and setuptools: the sidecar's compiled stop loop stays out of the
    launcher's wheel (Lambda runs another Python on another platform), so it is py3-none-any."""
    import os
    import subprocess
    import sys
    import zipfile

    wheels = tmp_path / "wheels"
    command = imagebuild.launcher_wheel_command(sys.executable, imagebuild.ROOT, wheels)
    env = {**os.environ, **imagebuild.PURE_WHEEL_ENV}
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("containerscan-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "sidecar/stoploop/__init__.py" in names
    assert not [n for n in names if n.endswith(".so")]
