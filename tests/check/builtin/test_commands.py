"""`containerscan db`: offline failure, download through a real HTTP server, info."""

from __future__ import annotations

import json
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from check.builtin.advisories import AdvisoryDownloadError
from check.builtin.commands import db


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        return None


@pytest.fixture
def osv_mirror(tmp_path):
    """A local HTTP server laid out like osv-vulnerabilities.storage.googleapis.com."""
    site = tmp_path / "site"
    (site / "PyPI").mkdir(parents=True)
    with zipfile.ZipFile(site / "PyPI" / "all.zip", "w") as archive:
        archive.writestr("PYSEC-0000-1.json", json.dumps({
            "id": "PYSEC-0000-1", "affected": [{"package": {"ecosystem": "PyPI", "name": "demo"},
                                                "ranges": [{"type": "ECOSYSTEM", "events": [
                                                    {"introduced": "0"}, {"fixed": "2.0"}]}]}]}))
    (site / "npm").mkdir()
    (site / "npm" / "all.zip").write_text("<html>not a zip</html>")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_update_offline_fails_with_a_network_error(tmp_path):
    # Port 9 on loopback (discard) is closed here: the same failure as no network at all.
    result = CliRunner().invoke(db, ["update", "--vuln-db", str(tmp_path / "db"),
                                     "--ecosystem", "PyPI", "--base-url", "http://127.0.0.1:9"])
    assert result.exit_code != 0
    assert isinstance(result.exception, AdvisoryDownloadError)
    assert "network error while downloading http://127.0.0.1:9/PyPI/all.zip" in str(
        result.exception)
    assert "offline" in result.exception.remediation
    assert not list((tmp_path / "db" / "osv").iterdir())  # no partial file left behind


def test_update_downloads_archives_the_scanner_reads(tmp_path, osv_mirror):
    target = tmp_path / "db"
    result = CliRunner().invoke(db, ["update", "--vuln-db", str(target), "--ecosystem", "PyPI",
                                     "--base-url", osv_mirror])
    assert result.exit_code == 0, result.output
    assert (target / "osv" / "PyPI.zip").is_file()
    assert (target / ".containerscan-index").is_file()
    assert "index: " in result.output
    info = CliRunner().invoke(db, ["info", "--vuln-db", str(target)])
    assert info.exit_code == 0
    assert "records:  1" in info.output


def test_update_refuses_what_is_not_a_zip(tmp_path, osv_mirror):
    result = CliRunner().invoke(db, ["update", "--vuln-db", str(tmp_path), "--ecosystem", "npm",
                                     "--base-url", osv_mirror])
    assert isinstance(result.exception, AdvisoryDownloadError)
    assert "did not return a zip archive" in str(result.exception)
    assert not (tmp_path / "osv" / "npm.zip").exists()


def test_update_reports_unknown_ecosystems(tmp_path, osv_mirror):
    result = CliRunner().invoke(db, ["update", "--vuln-db", str(tmp_path), "--ecosystem", "Nope",
                                     "--base-url", osv_mirror])
    assert "HTTP 404" in str(result.exception)
