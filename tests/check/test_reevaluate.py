"""Re-evaluation without rescanning: a new advisory reaches Security Hub without a pull.

The built-in scanner sweeps an image held by a real registry on loopback (the ECR host's
mirror) and moto's ECR; its inventory is kept in S3. A real advisory record (PyPA's
PYSEC-2023-74, requests < 2.31.0) is then added to the database and the registry is STOPPED:
the second sweep reports CVE-2023-32681 for the same digest, which it could only do from the
stored inventory, and no image is scanned.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest

from check.inventories import InventoryStore
from check.quickstart.data import advisories_dir
from check.quickstart.sampleimages import push_image, worker_image
from tests.check import test_sweep
from tests.check.test_sweep import BUCKET, REGION, active_findings, run

aws = test_sweep.aws  # the moto world of the sweep tests (a fixture, found by name)
NEW_RECORD = Path("pypa-osv") / "vulns" / "requests" / "PYSEC-2023-74.yaml"


def _database(root: Path, *, with_new: bool) -> Path:
    """Real records: Alpine 3.10's secdb and PyPA's requests advisories (one held back)."""
    source = advisories_dir()
    (root / "alpine-secdb" / "v3.10").mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "alpine-secdb" / "v3.10" / "main.yaml", root / "alpine-secdb" / "v3.10")
    requests = root / "pypa-osv" / "vulns" / "requests"
    requests.mkdir(parents=True, exist_ok=True)
    for record in (source / "pypa-osv" / "vulns" / "requests").glob("*.yaml"):
        if with_new or record.name != NEW_RECORD.name:
            shutil.copy(record, requests)
    return root


def _cves(findings: dict[str, dict[str, Any]], digest: str) -> set[str]:
    return {
        f["Vulnerabilities"][0]["Id"]
        for f in findings.values()
        if f.get("Vulnerabilities") and f["Resources"][0]["Id"].endswith(digest)
    }


@pytest.mark.slow
def test_a_new_advisory_reaches_the_hub_for_a_cached_digest_without_a_pull(
    aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from check.builtin.registry import RegistryClient
    from tests.check.builtin.conftest import _start_registry

    database = _database(tmp_path / "db", with_new=False)
    monkeypatch.setenv("CONTAINERSCAN_VULN_DB", str(database))
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="shop/worker")
    image = worker_image()
    host = f"{test_sweep.HUB}.dkr.ecr.{REGION}.amazonaws.com"
    (tmp_path / "registry").mkdir()
    served = _start_registry(tmp_path / "registry")
    registry = next(served)
    monkeypatch.setenv("CONTAINERSCAN_REGISTRY_MIRRORS", f"{host}=http://{registry}")
    digest = push_image(RegistryClient(registry), image.repository, image.tag, image.blobs)
    ecr.put_image(repositoryName=image.repository, imageManifest=image.blobs.manifest.decode(),
                  imageManifestMediaType=image.blobs.media_type, imageDigest=digest,
                  imageTag=image.tag)  # fmt: skip
    doc = {"repositories": ["shop/*"], "regions": [REGION], "scanner": "builtin"}

    first = run(tmp_path, doc)
    assert first.exit_code == 0, first.as_dict()["errors"]
    assert first.as_dict()["counts"]["scanned"] == 1
    before = _cves(active_findings(), digest)
    assert before and "CVE-2023-32681" not in before
    stored = InventoryStore(boto3.client("s3", region_name=REGION), BUCKET).get(digest)
    assert stored is not None and any(
        p["name"] == "requests" for p in stored.inventory["packages"]
    )

    # The database gains a record; the registry goes away: a pull would now fail.
    _database(database, with_new=True)
    next(served, None)  # stops the registry
    second = run(tmp_path, doc)
    report = second.as_dict()
    assert second.exit_code == 0, report["errors"]
    assert report["counts"]["scanned"] == 0 and report["counts"]["rematched"] == 1
    after = _cves(active_findings(), digest)
    assert after == before | {"CVE-2023-32681"}
    hub = report["security_hub"][f"{test_sweep.HUB}/{REGION}"]
    assert hub["created"] == 1 and hub["archived"] == 0, hub

    # Once re-matched, the result is cached under the new database: a third night is quiet.
    third = run(tmp_path, doc)
    assert third.as_dict()["counts"]["cached"] == 1
    assert third.as_dict()["counts"]["rematched"] == 0
