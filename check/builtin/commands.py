"""`containerscan db`: manage the built-in scanner's advisory database.

`db update` downloads the per-ecosystem archives OSV publishes
(`https://osv-vulnerabilities.storage.googleapis.com/<ecosystem>/all.zip`, listed in
OSV's data documentation) into `<vuln-db>/osv/<ecosystem>.zip`; the scanner reads them in
place. Each download goes to a temporary file that replaces the old archive only once it
is complete and opens as a zip, so an interrupted update leaves the previous data usable.
`db info` shows what the database holds.

Only click and the standard library are imported at the top (the CLI's lazy-loading rule).
"""

from __future__ import annotations

import click

DEFAULT_ECOSYSTEMS = ("PyPI", "npm", "Debian", "Ubuntu", "Alpine")
OSV_BASE_URL = "https://osv-vulnerabilities.storage.googleapis.com"
DOWNLOAD_TIMEOUT = 120.0
CHUNK = 1024 * 1024


def download_archives(target: str, ecosystems: tuple[str, ...], base_url: str = OSV_BASE_URL,
                      timeout: float = DOWNLOAD_TIMEOUT) -> list[tuple[str, int]]:
    """Fetch `<base_url>/<ecosystem>/all.zip` for each ecosystem; (path, bytes) written."""
    import os
    import tempfile
    import urllib.error
    import urllib.parse
    import urllib.request
    import zipfile
    from pathlib import Path

    from check.builtin.advisories import AdvisoryDownloadError
    from securityhub.logs import fields, get_logger

    log = get_logger("check.builtin.commands")
    scheme = urllib.parse.urlsplit(base_url).scheme
    if scheme not in ("https", "http"):
        raise AdvisoryDownloadError(f"unsupported download URL {base_url!r}",
                                    "use an http(s) URL")
    directory = Path(target).expanduser() / "osv"
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for ecosystem in ecosystems:
        url = f"{base_url.rstrip('/')}/{urllib.parse.quote(ecosystem)}/all.zip"
        final = directory / f"{ecosystem}.zip"
        handle, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{ecosystem}.",
                                             suffix=".part")
        size = 0
        try:
            with os.fdopen(handle, "wb") as out, \
                    urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    size += len(chunk)
            if not zipfile.is_zipfile(temp_name):
                raise AdvisoryDownloadError(f"{url} did not return a zip archive",
                                            "check the URL; the download was discarded")
            os.replace(temp_name, final)
        except urllib.error.HTTPError as exc:
            raise AdvisoryDownloadError(f"cannot download {url}: HTTP {exc.code}",
                                        "check the ecosystem name (OSV spells them "
                                        "PyPI, npm, Debian, Alpine, ...)") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdvisoryDownloadError(
                f"network error while downloading {url}: {reason}",
                "this machine seems to be offline; run `containerscan db update` where the "
                "network is reachable and copy the directory, or point --vuln-db at "
                "existing OSV data") from None
        finally:
            if os.path.exists(temp_name):
                os.unlink(temp_name)
        log.info("advisory archive downloaded",
                 extra=fields(ecosystem=ecosystem, path=str(final), bytes=size))
        written.append((str(final), size))
    return written


@click.group("db")
def db() -> None:
    """Manage the built-in scanner's advisory database (OSV records, Alpine secdb)."""


_VULN_DB = click.option(
    "--vuln-db", "vuln_db", envvar="CONTAINERSCAN_VULN_DB", type=click.Path(file_okay=False),
    help="Advisory database directory [env CONTAINERSCAN_VULN_DB; default "
         "~/.cache/containerscan/vulndb].",
)


@db.command("update")
@_VULN_DB
@click.option("--ecosystem", "ecosystems", multiple=True,
              help="OSV ecosystem to fetch (repeatable) "
                   f"[default: {', '.join(DEFAULT_ECOSYSTEMS)}].")
@click.option("--base-url", default=OSV_BASE_URL, show_default=True,
              help="Where OSV's per-ecosystem all.zip archives are served.")
@click.option("--kev-url", envvar="CONTAINERSCAN_KEV_URL", default=None,
              help="CISA's KEV JSON feed [default: cisa.gov].")
@click.option("--epss-url", envvar="CONTAINERSCAN_EPSS_URL", default=None,
              help="FIRST's EPSS scores, gzip CSV [default: FIRST's current file].")
def update(vuln_db: str | None, ecosystems: tuple[str, ...], base_url: str,
           kev_url: str | None, epss_url: str | None) -> None:
    """Download OSV's advisory archives, CISA KEV and FIRST EPSS (needs network access)."""
    from check.builtin.advisories import default_location

    target = vuln_db or default_location()
    for path, size in download_archives(target, ecosystems or DEFAULT_ECOSYSTEMS, base_url):
        click.echo(f"{path}  {size} bytes")
    _save_index(target)
    from check.exploits import update_command  # issue 10: exploit signals (KEV, EPSS)

    update_command(target, kev_url, epss_url, click.echo)


def _save_index(target: str) -> None:
    from pathlib import Path

    from check.builtin.advisories import AdvisoryDatabase

    database = AdvisoryDatabase(Path(target).expanduser())
    path = database.save_index()
    database.close()
    click.echo(f"index: {path} ({database.records_indexed} records)")


@db.command("index")
@_VULN_DB
def index(vuln_db: str | None) -> None:
    """Index the advisory files once, so that scans start without reading every record.

    `db update` does this itself; run it after adding files by hand. The index is ignored
    as soon as any file of the database changes.
    """
    from check.builtin.advisories import default_location

    _save_index(vuln_db or default_location())


@db.command("info")
@_VULN_DB
def info(vuln_db: str | None) -> None:
    """Show where the advisory database is and how many records it indexes."""
    from check.builtin.advisories import AdvisoryDatabase

    database = AdvisoryDatabase.from_config(vuln_db)
    index = database.index()
    click.echo(f"database: {database.root}")
    click.echo(f"records:  {database.records_indexed}")
    click.echo(f"names:    {len(index)}")
    click.echo(f"version:  {database.fingerprint()}")
