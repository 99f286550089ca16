"""`containerscan scan-image` on local images and a loopback registry, via the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.check.builtin import samples
from tests.check.builtin.conftest import REPO
from tests.check.builtin.images import build_blobs, write_docker_archive


def _run(ref: str, advisories, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERSCAN_VULN_DB": str(advisories),
           "CONTAINERSCAN_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "check", "scan-image", ref, "--scanner", "builtin", *extra],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


def test_docker_archive_json(tmp_path, advisories):
    archive = write_docker_archive(tmp_path / "alpine.tar", samples.alpine_layers())
    done = _run(f"docker-archive:{archive}", advisories, "--output", "json")
    assert done.returncode == 0, done.stderr
    findings = json.loads(done.stdout)["findings"]
    ids = {f.get("vulnerability_id") for f in findings} - {None}
    assert ids == set(samples.ALPINE_OPENSSL_EXPECTED) | set(samples.ALPINE_BUSYBOX_EXPECTED)
    assert "BEGIN PRIVATE KEY" not in done.stdout


def test_registry_reference_table(registry, advisories):
    from check.builtin.registry import RegistryClient
    from tests.check.builtin.test_registry import push

    push(RegistryClient(registry.host), "cli/app", "2", build_blobs(samples.debian_layers()))
    done = _run(f"{registry.host}/cli/app:2", advisories, "--output", "table")
    assert done.returncode == 0, done.stderr
    assert "CVE-2023-46136" in done.stdout and "aws-access-key-id" in done.stdout
    assert samples.FAKE_AWS_KEY_ID not in done.stdout + done.stderr
