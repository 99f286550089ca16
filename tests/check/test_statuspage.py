"""The run's page, status.html: written beside status.json, compared with the previous run,
self-contained, and rendered by a real browser (Debian's headless Chromium)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws

from check.cli import cli
from check.statuspage import render
from tests.check.ecrfixtures import put_image

REGION = "us-east-1"
CHROMIUM = "chromium-headless-shell"  # Debian's package of the same name
needs_chromium = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"{CHROMIUM} is not installed (apt-get install {CHROMIUM}, or sh scripts/system-deps.sh "
           "as root)")


class Page(HTMLParser):
    """The text of each table cell by row, the headings, and every attribute that loads."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.headings: list[str] = []
        self.loads: list[tuple[str, str]] = []
        self.scripts = 0
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None
        self._text: list[str] = []
        self.feed(html)
        self.text = "".join(self._text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.loads += [(k, v or "") for k, v in attrs if k in ("src", "href", "srcset")]
        self.scripts += tag == "script"
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("h1", "h2"):
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag in ("h1", "h2") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data: str) -> None:
        self._text.append(data)
        for part in (self._cell, self._heading):
            if part is not None:
                part.append(data)

    def row(self, first: str) -> list[str]:
        return next(r for r in self.rows if r and r[0] == first)


STATUS = {
    "run_id": "20261206T020000Z-2b2b2b2b", "status": "partial", "exit_code": 3,
    "duration_s": 12.5, "started_at": "2026-12-06T02:00:00+00:00",
    "scanner": {"name": "builtin", "version": "1.0"},
    "counts": {"images": 3, "unique_digests": 3, "scanned": 2, "cached": 0, "failed": 1,
               "findings": 7, "new_findings": 2, "severities": {"CRITICAL": 2, "MEDIUM": 5}},
    "security_hub": {"123456789012/us-east-1": {"created": 2, "archived": 4}},
    "images": [
        {"repository": "shop/web", "digest": "sha256:" + "a" * 64, "outcome": "scanned",
         "findings": 5, "new_findings": 2, "severities": {"CRITICAL": 2, "MEDIUM": 3}},
        {"repository": "shop/worker", "digest": "sha256:" + "c" * 64, "outcome": "scanned",
         "findings": 2, "severities": {"MEDIUM": 2}},
        {"repository": "shop/<script>alert(1)</script>", "digest": "sha256:" + "d" * 64,
         "outcome": "failed", "error": "pull denied: <img src=x onerror=alert(1)>"},
    ],
}
PREVIOUS = {
    "run_id": "20261205T020000Z-1a1a1a1a",
    "images": [
        {"repository": "shop/web", "digest": "sha256:" + "a" * 64, "findings": 3},
        {"repository": "shop/worker", "digest": "sha256:" + "b" * 64, "findings": 6},
    ],
}  # fmt: skip


def test_the_page_shows_the_runs_numbers_and_the_changes() -> None:
    page = Page(render(STATUS, PREVIOUS))
    assert page.row("CRITICAL") == ["CRITICAL", "2"] and page.row("MEDIUM") == ["MEDIUM", "5"]
    assert page.row("shop/web")[:5] == ["shop/web", "1", "5", "2", "0"]
    assert page.row("123456789012/us-east-1") == ["123456789012/us-east-1", "4"]
    # Compared with the previous run: shop/worker went from 6 findings to 2, its old image gone.
    assert ["shop/worker", "6", "2"] in page.rows
    assert ["shop/worker", "sha256:bbbbbbbbbbbb", "6"] in page.rows
    assert ["shop/<script>alert(1)</script>", "sha256:dddddddddddd",
            "pull denied: <img src=x onerror=alert(1)>"] in page.rows  # the failed image, why
    assert page.scripts == 0 and page.loads == [], "escaped, and nothing loads from outside"
    assert "Failed images" in page.headings and "New since the previous run" in page.headings


@pytest.fixture
def sweeps(env: str, tmp_path: Path):
    """Two CLI sweeps with --output-dir against moto; the second after the image changed."""
    out = tmp_path / "out"
    ecr = boto3.client("ecr", region_name=REGION)
    runs = [sweep(out)]
    ecr.batch_delete_image(repositoryName="payments/api", imageIds=[{"imageDigest": env}])
    put_image(ecr, "payments/api", "api-2", "1.5")
    runs.append(sweep(out))
    return out, runs


def sweep(out: Path) -> dict:
    result = CliRunner().invoke(cli, ["--log-level", "ERROR", "sweep", "--output", "json",
                                      "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    report: dict = json.loads(result.stdout)
    return report


def test_each_sweep_writes_its_page_compared_with_the_previous(sweeps) -> None:
    out, (first, second) = sweeps
    one = Page((out / "runs" / first["run_id"] / "status.html").read_text())
    assert one.row("CRITICAL") == ["CRITICAL", "1"]
    assert "compared with run" not in (out / "runs" / first["run_id"] / "status.html").read_text()
    two = Page((out / "runs" / second["run_id"] / "status.html").read_text())
    assert f"compared with run {first['run_id']}" in two.text
    assert two.row("CRITICAL") == ["CRITICAL", "0"]
    assert ["payments/api", "1", "0"] in two.rows  # findings before, now
    assert json.loads((out / "runs" / "latest.json").read_text()) == {"run_id": second["run_id"]}


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHROMIUM, "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--allow-file-access-from-files", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
@needs_chromium
def test_chromium_renders_the_page_with_the_runs_numbers(sweeps, tmp_path) -> None:
    out, (_, second) = sweeps
    page = out / "runs" / second["run_id"] / "status.html"
    dom = chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = Page(dom.stdout)
    status = json.loads((page.parent / "status.json").read_text())
    counts = status["counts"]
    assert rendered.row("images")  # the header row of the counts table
    assert [str(counts[k]) for k in ("images", "unique_digests", "scanned", "cached", "failed",
                                     "findings", "new_findings")] in rendered.rows
    assert rendered.headings[0] == f"containerscan run {status['run_id']}"
    shot = tmp_path / "status.png"
    taken = chromium(f"--screenshot={shot}", "--window-size=1200,900", page.as_uri())
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (1200, 900)


def test_get_scans_links_the_page(monkeypatch) -> None:
    """GET /scans/{runId} answers with a signed link to the run's status.html."""
    from check.launcher import Launcher, LauncherConfig

    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="cs-results")
        env = {"CONTAINERSCAN_BUCKET": "cs-results", "CONTAINERSCAN_TABLE": "cs-ledger",
               "CONTAINERSCAN_CLUSTER": "cs", "CONTAINERSCAN_TASK_DEFINITION": "cs-check",
               "CONTAINERSCAN_SUBNETS": "subnet-1", "CONTAINERSCAN_SECURITY_GROUPS": "sg-1"}
        launcher = Launcher(LauncherConfig.from_env(env), ecs=boto3.client("ecs", region_name=REGION),
                            s3=s3, cache=None, sleep=lambda _: None)
        run_id = "20261206T020000Z-2b2b2b2b"
        prefix = launcher._key(run_id, "")
        s3.put_object(Bucket="cs-results", Key=prefix + "launch.json",
                      Body=json.dumps({"shards": [{"shard": "1/1", "run_id": run_id}]}))
        s3.put_object(Bucket="cs-results", Key=prefix + "status.json", Body=json.dumps(STATUS))
        code, body = launcher.status(run_id)
    assert code == 200
    link = body["statusPage"]
    assert f"{prefix}status.html" in link and "Signature=" in link and "Expires=" in link
