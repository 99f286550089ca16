"""Loaded at runtime, end to end: a real workload under the real sidecar, then a sweep.

The sidecar (`containerscan sidecar run`, a subprocess: real ptrace, the real Engine) runs a
Python that imports zlib, in a "task" whose metadata endpoint (on loopback) names the image
digest; it records the executable mappings in DynamoDB (moto's server on loopback). A sweep
of that digest, whose stored inventory holds dpkg's real file lists of zlib1g and libssl3
(tests/data/loaded), then says zlib1g's finding is LoadedAtRuntime=true and libssl3's false.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from check.config import RunConfig
from check.inventories import InventoryStore, StoredInventory
from check.loaded import mappable, owned_files, state
from check.request import parse_request
from check.sweep import build_sweep
from securityhub.aws import SessionFactory
from securityhub.exposure import FALSE, LOADED_AT_RUNTIME, TRUE, UNKNOWN
from securityhub.loaded import LoadedRecord, LoadedTable, canonical
from sidecar.loaded import executable_paths
from tests.check.ecrfixtures import put_image
from tests.check.standin import STANDIN, Scenario, StandinFinding, StandinPackage

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "loaded"
REGION = "us-east-1"
TABLE = "containerscan"
BUCKET = "containerscan-runs"
ACCOUNT = "123456789012"
MINIMAL = str(ROOT / "policies" / "examples" / "minimal-policy.yaml")
LIBZ_LIST = [line for line in (DATA / "zlib1g.list").read_text().splitlines() if line]
SSL_LIST = [line for line in (DATA / "libssl3.list").read_text().splitlines() if line]

ZLIB_FINDING = StandinFinding(
    qid=178906, title="Debian Security Update for zlib (DSA 5218-1)", severity=5,
    cves=("CVE-2022-37434",), packages=(StandinPackage("zlib1g", "1:1.2.11.dfsg-2", "1:1.2.11.dfsg-2+deb11u2"),),
)  # fmt: skip
SSL_FINDING = StandinFinding(
    qid=179063, title="Debian Security Update for openssl (DSA 5343-1)", severity=4,
    cves=("CVE-2023-0286",), packages=(StandinPackage("libssl3", "3.0.7-1", "3.0.8-1"),),
)  # fmt: skip


# ---------------------------------------------------------------------------- pure


def test_executable_mappings_only_and_in_merged_usr_form() -> None:
    maps = "\n".join([
        "55d0c0a00000-55d0c0a21000 r--p 00000000 08:01 1 /usr/bin/python3.11",
        "55d0c0a21000-55d0c0c00000 r-xp 00021000 08:01 1 /usr/bin/python3.11",
        "7f1d2c000000-7f1d2c014000 r-xp 00002000 08:01 2 /lib/x86_64-linux-gnu/libz.so.1.2.13",
        "7f1d2c100000-7f1d2c200000 rw-p 00000000 08:01 3 /usr/share/zoneinfo/UTC",
        "7f1d2c300000-7f1d2c301000 r-xp 00000000 08:01 4 /tmp/my lib.so (deleted)",
        "7ffd5b9f0000-7ffd5b9f2000 r-xp 00000000 00:00 0 [vdso]",
        "7ffd5b9f3000-7ffd5b9f4000 r-xp 00000000 00:00 0",
    ])  # fmt: skip
    assert executable_paths(maps) == {
        "/usr/bin/python3.11",
        "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
        "/tmp/my lib.so",
    }


def _record(paths: set[str], seconds: float, truncated: bool = False) -> LoadedRecord:
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 12, 1, tzinfo=UTC)
    return LoadedRecord(frozenset(paths), start, start + timedelta(seconds=seconds), truncated)


def test_the_three_states() -> None:
    owned = owned_files({"packages": [
        {"name": "zlib1g", "files": LIBZ_LIST},
        {"name": "libssl3", "files": SSL_LIST},
        {"name": "requests", "files": ["usr/lib/python3/dist-packages/requests/api.py"]},
    ]})  # fmt: skip
    libz = canonical("/lib/x86_64-linux-gnu/libz.so.1.2.13")
    assert libz in owned["zlib1g"] and mappable(libz)
    long_run = _record({libz, "/usr/bin/python3.11"}, 7200)
    assert state(["zlib1g"], owned, long_run) == TRUE
    assert state(["libssl3"], owned, long_run) == FALSE
    assert state(["libssl3"], owned, _record({libz}, 60)) == UNKNOWN  # observed too briefly
    assert state(["libssl3"], owned, _record({libz}, 7200, truncated=True)) == UNKNOWN
    assert state(["libssl3"], owned, None) == UNKNOWN  # never ran under a sidecar
    assert state(["requests"], owned, long_run) == UNKNOWN  # pure Python: read, not mapped
    assert state(["libcurl4"], owned, long_run) == UNKNOWN  # no file list
    assert state(["libssl3", "zlib1g"], owned, long_run) == TRUE  # one loaded is enough


# ---------------------------------------------------------------- real ptrace, moto server


def task_metadata(digest: str) -> Any:
    """The ECS task metadata endpoint v4 on loopback, for a task running `digest` as "app"."""
    from tests.sidecar.test_context import serve_metadata

    task = {
        "TaskARN": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/prod/0123456789abcdef",
        "Cluster": "prod",
        "Family": "shop-web",
        "Revision": "3",
        "Containers": [{"Name": "app", "DockerId": "0123456789abcdef-1", "Image": "shop:live",
                        "ImageID": digest}],
    }  # fmt: skip
    return serve_metadata(task, {"Name": "app", "DockerId": "0123456789abcdef-1"})


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    from securityhub import emulator
    from securityhub.ledger import create_table
    from tests.reliability.conftest import _reset

    server = emulator.LocalServer()
    endpoint = server.start()
    _reset(endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("QSCANNER_PATH", str(STANDIN))
    monkeypatch.setenv("QUALYS_POD", "US1")
    monkeypatch.setenv("QUALYS_ACCESS_TOKEN", "standin-token-123456")
    monkeypatch.setenv("QSCANNER_STANDIN_SCENARIO", str(tmp_path / "scenario.json"))
    try:
        create_table(boto3.client("dynamodb", region_name=REGION), TABLE)
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        _reset(endpoint)
        server.stop()
        emulator.uninstall()


def _maps_libz() -> str | None:
    """The libz this machine's Python maps, if zlib1g's list (tests/data) names it."""
    probe = subprocess.run(
        [sys.executable, "-I", "-S", "-c",
         "import zlib; print(open('/proc/self/maps').read())"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    owned = {canonical(p) for p in LIBZ_LIST}
    return next((p for p in executable_paths(probe.stdout) if p in owned), None)


@pytest.mark.ptrace
@pytest.mark.slow
def test_a_workload_loading_libz_makes_zlib1g_loaded_and_libssl_not(
    served: str, tmp_path: Path
) -> None:
    libz = _maps_libz()
    if libz is None:
        pytest.skip("this machine's Python does not map the libz of tests/data/loaded")
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="shop")
    digest = put_image(ecr, "shop", "shop-live", "live")

    # 1. The workload runs under the sidecar, which samples its mappings every 0.2 s.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITORING_", "TRACING_"))}
    workload = [sys.executable, "-I", "-S", "-c", "import zlib, time; time.sleep(2.5)"]
    with task_metadata(digest) as (metadata, _):
        env.update({
            "ECS_CONTAINER_METADATA_URI_V4": metadata, "CONTAINERSCAN_TABLE": TABLE,
            "CONTAINERSCAN_LOADED_INTERVAL": "0.2", "CONTAINERSCAN_HEARTBEAT_SECONDS": "0",
            "CONTAINERSCAN_EVENTS_STDOUT": "0", "AWS_REGION": REGION,
        })  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "check", "sidecar", "run", "--policy", MINIMAL, "--", *workload],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    record = LoadedTable(boto3.client("dynamodb", region_name=REGION), TABLE).record(digest)
    assert record is not None and record.families == ("shop-web",)
    assert libz in record.paths
    assert not any("libssl" in p for p in record.paths)
    assert record.observed_seconds >= 1.0
    assert all(p.startswith("/") and " -c " not in p for p in record.paths)  # paths, no argv

    # 2. The sweep: stand-in findings for both packages, the image's inventory kept in S3
    # with dpkg's file lists (what a built-in scan keeps).
    scenario = Scenario()
    scenario.image(digest, findings=[ZLIB_FINDING, SSL_FINDING])
    scenario.write(Path(os.environ["QSCANNER_STANDIN_SCENARIO"]))
    packages: list[dict[str, Any]] = [
        {"name": "zlib1g", "version": "1:1.2.13.dfsg-1", "package_manager": "dpkg",
         "file_path": "var/lib/dpkg/status", "files": LIBZ_LIST},
        {"name": "libssl3", "version": "3.0.15-1~deb12u1", "package_manager": "dpkg",
         "file_path": "var/lib/dpkg/status", "files": SSL_LIST},
    ]  # fmt: skip
    store = InventoryStore(boto3.client("s3", region_name=REGION), BUCKET)
    assert store.put(StoredInventory(digest, "builtin", "1.0", "1.0+db.test", ("pkg",),
                                     {"os": {"id": "debian"}, "packages": packages}))  # fmt: skip
    config = RunConfig(table=TABLE, bucket=BUCKET, concurrency=2, image_timeout=30,
                       loaded_window=1.0, output_dir=tmp_path / "out")  # fmt: skip
    request = parse_request({"repositories": ["shop"], "regions": [REGION]}, source="test")
    status = build_sweep(request, config, sessions=SessionFactory(default_region=REGION)).run()
    assert status.exit_code == 0, status.as_dict()["errors"]
    hub = boto3.client("securityhub", region_name=REGION)
    findings = hub.get_findings(MaxResults=100)["Findings"]
    loaded = {
        f["Vulnerabilities"][0]["VulnerablePackages"][0]["Name"]: f["ProductFields"][
            LOADED_AT_RUNTIME
        ]
        for f in findings
        if f.get("Vulnerabilities")
    }
    assert loaded == {"zlib1g": TRUE, "libssl3": FALSE}
    # Loaded outranks never loaded, severity aside (securityhub.risk).
    risks = {f["Vulnerabilities"][0]["VulnerablePackages"][0]["Name"]: int(
        f["ProductFields"]["containerscan/Risk"]) for f in findings if f.get("Vulnerabilities")}  # fmt: skip
    assert risks["zlib1g"] > risks["libssl3"]


def test_a_multi_arch_task_records_the_index_and_the_platform_image_finds_it() -> None:
    """ECS names the index digest a multi-arch task runs; the sweep's image is the platform
    image reached through it: its findings use the index's record, its own inventory."""
    from datetime import UTC, datetime, timedelta

    from moto import mock_aws

    from check.loaded import LoadedJoin
    from securityhub.findings import EcrImage, Package, ScannerInfo, Severity, VulnerabilityFinding
    from securityhub.ledger import create_table
    from sidecar.loaded import LoadedRecorder

    index, child, other = ("sha256:" + c * 64 for c in "abc")
    now = datetime.now(UTC)
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_table(dynamodb, TABLE)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        libz = canonical("/lib/x86_64-linux-gnu/libz.so.1.2.13")
        LoadedRecorder(dynamodb, TABLE, "shop-web").write(
            index, {libz}, False, now, now - timedelta(hours=2)
        )
        store = InventoryStore(s3, BUCKET)
        packages = [{"name": "zlib1g", "version": "1", "package_manager": "dpkg",
                     "file_path": "var/lib/dpkg/status", "files": LIBZ_LIST}]  # fmt: skip
        for digest in (child, other):
            store.put(StoredInventory(digest, "builtin", "1.0", "1.0+db.x", ("pkg",),
                                      {"os": None, "packages": packages}))  # fmt: skip
        join = LoadedJoin(LoadedTable(dynamodb, TABLE), store, window_seconds=3600)
        image = EcrImage(ACCOUNT, REGION, "shop", child)
        finding = VulnerabilityFinding(image, "CVE-2022-37434", "zlib", Severity.CRITICAL,
                                       ScannerInfo("test"), packages=(Package("zlib1g", "1"),))  # fmt: skip
        assert join(child, finding, index) == TRUE
        assert join(other, finding) == UNKNOWN  # never ran under a sidecar
