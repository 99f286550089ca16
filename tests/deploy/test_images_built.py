"""Both images built from their Dockerfiles here, and run as deployed: read-only root, the
image's non-root user. The check image's entrypoint sweeps the AWS emulator on loopback
(init, then sweep: QScanner's stand-in in place of the binary, findings imported into the
emulator's Security Hub, outputs written); the sidecar image's entrypoint runs a workload
under `sidecar run` with a policy handed over as TRACING_POLICY_DOCUMENT, as ECS does.

The base is a debootstrap'd Debian (tests/deploy/buildah.py), given as BASE_IMAGE: the
Dockerfiles' default is the pinned public image this machine cannot pull.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from release import imagebuild
from tests.check.ecrfixtures import put_image
from tests.check.standin import MUSL_CVE_2019_14697, STANDIN, Scenario
from tests.deploy.buildah import Buildah, missing_tools, run_image

REGION = "us-east-1"
CACHE_ENV = "CONTAINERSCAN_IMAGE_TEST_CACHE"  # where the base and the build storage live
DEFAULT_CACHE = Path("/var/tmp/containerscan-image-test")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing_tools()), reason=f"needs {', '.join(missing_tools())} "
                       "(apt-get install buildah debootstrap; scripts/system-deps.sh test)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="buildah's chroot isolation and the mount "
                       "namespace of the run need root"),
]


def context(image: str, tmp: Path, qscanner: Path | None = None) -> Path:
    """The build context the release tool sends (the .dockerignore allow-list), unpacked."""
    data = imagebuild.build_context(imagebuild.ROOT, imagebuild.IMAGES[image], qscanner)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(tmp, filter="data")
    return tmp


@pytest.fixture(scope="module")
def buildah() -> Buildah:
    cache = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    tool = Buildah(cache)
    tool.base_image(cache)
    return tool


@pytest.fixture(scope="module")
def images(buildah: Buildah, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = buildah.base_image(buildah.root)
    check = buildah.build(
        context("check", tmp_path_factory.mktemp("check-context"), STANDIN),
        "docker/Dockerfile.check", "localhost/containerscan-check:test",
        {"BASE_IMAGE": base, "QSCANNER_SHA256": hashlib.sha256(STANDIN.read_bytes()).hexdigest(),
         "QSCANNER_VERSION": "standin"})
    sidecar = buildah.build(
        context("sidecar", tmp_path_factory.mktemp("sidecar-context")),
        "docker/Dockerfile.sidecar", "localhost/containerscan-sidecar:test", {"BASE_IMAGE": base})
    return {"check": check, "sidecar": sidecar}


@pytest.fixture
def mounted(buildah: Buildah, images: dict[str, str]) -> Iterator[dict[str, tuple[Path, dict]]]:
    containers = {}
    try:
        for name, image in images.items():
            container, root = buildah.rootfs(image)
            containers[name] = (container, root, buildah.config(image))
        yield {name: (root, config) for name, (_, root, config) in containers.items()}
    finally:
        for container, _, _ in containers.values():
            buildah("umount", container)
            buildah("rm", container)


def writable_tmp(tmp_path: Path, name: str = "tmp") -> Path:
    tmp = tmp_path / name
    tmp.mkdir()
    tmp.chmod(0o1777)  # the image's user writes here, as into a task's /tmp volume
    return tmp


def test_both_images_run_with_a_read_only_root_as_their_user(mounted, tmp_path) -> None:
    for name, (root, config) in mounted.items():
        assert config["User"] == "10001:10001", name
        probe = run_image(root, {**config, "Entrypoint": ["/bin/sh", "-c"]},
                          writable_tmp(tmp_path, name), command=[
                              "id -u; touch /probe || echo read-only; touch /tmp/ok && echo tmp-writable"])
        assert probe.stdout.split() == ["10001", "read-only", "tmp-writable"], probe.stderr
        assert "Read-only file system" in probe.stderr


def test_the_check_image_sweeps_the_emulator(mounted, tmp_path) -> None:
    from securityhub.emulator import LocalServer

    root, config = mounted["check"]
    assert config["Entrypoint"] == ["containerscan"] and config["Cmd"] == ["sweep"]
    tmp = writable_tmp(tmp_path)
    server = LocalServer()
    endpoint = server.start()
    try:
        clients = {name: boto3.client(name, region_name=REGION, endpoint_url=endpoint,
                                      aws_access_key_id="demo", aws_secret_access_key="demo-key")
                   for name in ("ecr", "securityhub", "s3")}
        clients["ecr"].create_repository(repositoryName="payments/api")
        digest = put_image(clients["ecr"], "payments/api", "api-1", "1.4")
        Scenario().image(digest, findings=[MUSL_CVE_2019_14697]).write(tmp / "scenario.json")
        (tmp / "scenario.json").chmod(0o644)
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "demo",
               "AWS_SECRET_ACCESS_KEY": "demo-key", "AWS_REGION": REGION,
               "CONTAINERSCAN_TABLE": "cs-ledger", "CONTAINERSCAN_BUCKET": "cs-outputs",
               "QUALYS_POD": "US1", "QUALYS_ACCESS_TOKEN": "standin-token-123456",
               "QSCANNER_STANDIN_SCENARIO": "/tmp/scenario.json"}
        init = run_image(root, config, tmp, command=["init", "--enable-security-hub"], env=env)
        assert init.returncode == 0, init.stdout + init.stderr
        swept = run_image(root, config, tmp, env=env, command=[
            "sweep", "--region", REGION, "--output", "json", "--output-dir", "/tmp/out"])
        assert swept.returncode == 0, swept.stdout + swept.stderr[-3000:]
        report = json.loads(swept.stdout)
        assert report["counts"]["scanned"] == 1 and report["counts"]["findings"] == 1
        assert report["scanner"]["name"] == "qscanner"
        found = clients["securityhub"].get_findings()["Findings"]
        assert [f["Resources"][0]["Details"]["AwsEcrContainerImage"]["ImageDigest"]
                for f in found] == [digest]
        run = tmp / "out" / "runs" / report["run_id"]
        assert {"status.json", "status.html"} <= {p.name for p in run.iterdir()}
        assert (run / "images" / digest.replace(":", "-") / "sbom.cdx.json").is_file()
        keys = [o["Key"] for o in clients["s3"].list_objects_v2(Bucket="cs-outputs")["Contents"]]
        assert f"containerscan/runs/{report['run_id']}/status.json" in keys
    finally:
        server.stop()


def test_the_sidecar_image_runs_a_workload_under_its_policy(mounted, tmp_path) -> None:
    root, config = mounted["sidecar"]
    assert config["Entrypoint"] == ["containerscan-entrypoint"]
    policy = (imagebuild.ROOT / "policies" / "examples" / "fim-policy.yaml").read_text()
    result = run_image(root, config, writable_tmp(tmp_path), env={"TRACING_POLICY_DOCUMENT": policy},
                       command=["sidecar", "run", "--", "/bin/sh", "-c",
                                "echo workload-ran; echo x >> /etc/passwd || echo refused"])
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[:2] == ["workload-ran", "refused"]
    [event] = [json.loads(line) for line in lines if line.startswith("{")]
    assert (event["rule"], event["path"], event["severity"]) == (
        "fim:/etc/passwd", "/etc/passwd", "critical")
    assert '"events": 1' in result.stderr  # the monitor's final heartbeat
