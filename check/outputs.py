"""The run's outputs: one tree, written to S3 and/or a local directory.

    runs/<run-id>/status.json                       the request, counts, each image's outcome
                                                    and error, durations, the Security Hub summary
    runs/<run-id>/status.html                       the same for a person (check/statuspage.py),
                                                    with what changed since the previous run
    runs/latest.json (latest-shard-I-of-N.json)     {"run_id": the last run}: the previous run
    runs/<run-id>/images/sha256-<hex>/results.json  normalized findings of that digest and
                                                    the repositories it was found in (scanned
                                                    digests; a cache hit writes none)
    runs/<run-id>/images/sha256-<hex>/sbom.cdx.json the image's packages, CycloneDX 1.5
                                                    (check/sbom.py; QScanner's own if written)
    runs/<run-id>/images/sha256-<hex>/raw/<file>    the scanner's own reports, untouched

In S3 the tree sits under `CONTAINERSCAN_PREFIX` in `CONTAINERSCAN_BUCKET`, every object
encrypted server-side (SSE-S3 AES256, or SSE-KMS with `CONTAINERSCAN_KMS_KEY_ID`). With
`--output-dir DIR` the same tree is written under DIR. A failed write is logged and counted,
never fatal: the findings are already in Security Hub.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from check.cache import sse_params
from securityhub.aws import error_code
from securityhub.logs import fields, get_logger

log = get_logger("check.outputs")

# Raw reports larger than this are not copied (a scanner that printed gigabytes); the
# status says so. S3 itself takes 5 GB in one PUT.
RAW_FILE_MAX = 256 << 20
LATEST = "runs/latest.json"


def image_dir(run_id: str, digest: str) -> str:
    return f"runs/{run_id}/images/{digest.replace(':', '-')}"


class RunOutputs:
    """Writes relative keys to every configured destination."""

    def __init__(
        self,
        *,
        s3: Any | None = None,
        bucket: str | None = None,
        prefix: str = "",
        kms_key_id: str | None = None,
        local_dir: Path | None = None,
    ) -> None:
        self.s3 = s3 if bucket else None
        self.bucket = bucket
        self.prefix = prefix
        self.kms_key_id = kms_key_id
        self.local_dir = local_dir
        self.errors: list[str] = []
        self.written = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.s3 is not None or self.local_dir is not None

    def locations(self, run_id: str) -> list[str]:
        out = []
        if self.s3 is not None:
            out.append(f"s3://{self.bucket}/{self.prefix}runs/{run_id}/")
        if self.local_dir is not None:
            out.append(str(self.local_dir / "runs" / run_id) + "/")
        return out

    def write_json(self, key: str, doc: Any) -> None:
        data = json.dumps(doc, indent=2, default=str, ensure_ascii=False).encode()
        self.write_bytes(key, data, "application/json")

    def write_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        if self.local_dir is not None:
            path = self.local_dir / key
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                self._count()
            except OSError as exc:
                self._error(f"{path}: {exc}")
        if self.s3 is not None:
            params: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": self.prefix + key,
                "Body": data,
                "ContentType": content_type,
            }
            params.update(sse_params(self.kms_key_id))
            try:
                self.s3.put_object(**params)
                self._count()
            except (ClientError, BotoCoreError) as exc:
                self._error(f"s3://{self.bucket}/{self.prefix}{key}: {error_code(exc)}")

    def write_file(self, key: str, path: Path) -> None:
        try:
            size = path.stat().st_size
            if size > RAW_FILE_MAX:
                self._error(
                    f"{path.name}: {size} bytes, over the {RAW_FILE_MAX} byte cap; not kept"
                )
                return
            data = path.read_bytes()
        except OSError as exc:
            self._error(f"{path}: {exc}")
            return
        content_type = "application/json" if path.suffix == ".json" else "application/octet-stream"
        self.write_bytes(key, data, content_type)

    def read_json(self, key: str) -> Any | None:
        """A document this tree holds (the local directory first, else S3); None if absent
        or unreadable (an unreadable one is counted as an output error)."""
        data: bytes | None = None
        if self.local_dir is not None and (self.local_dir / key).is_file():
            try:
                data = (self.local_dir / key).read_bytes()
            except OSError as exc:
                self._error(f"{self.local_dir / key}: {exc}")
        elif self.s3 is not None:
            try:
                data = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
            except (ClientError, BotoCoreError) as exc:
                if error_code(exc) not in ("NoSuchKey", "404"):
                    self._error(f"s3://{self.bucket}/{self.prefix}{key}: {error_code(exc)}")
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError as exc:
            self._error(f"{key}: not JSON ({exc})")
            return None

    def write_status_page(self, status: dict[str, Any]) -> None:
        """`runs/<id>/status.html`, compared with the previous run of the same shard, and the
        pointer to this run for the next one."""
        from check.statuspage import STATUS_PAGE, render

        run_id = str(status["run_id"])
        shard = str((status.get("request") or {}).get("shard") or "")
        pointer = f"runs/latest-shard-{shard.replace('/', '-of-')}.json" if shard else LATEST
        latest = self.read_json(pointer)
        previous = None
        if isinstance(latest, dict) and latest.get("run_id") not in (None, run_id):
            found = self.read_json(f"runs/{latest['run_id']}/status.json")
            previous = found if isinstance(found, dict) else None
        page = render(status, previous).encode()
        self.write_bytes(f"runs/{run_id}/{STATUS_PAGE}", page, "text/html; charset=utf-8")
        self.write_json(pointer, {"run_id": run_id})

    def write_sbom(self, base: str, raw_files: Any, *, image_name: str, digest: str,
                   tool_version: str) -> None:
        """`<base>/sbom.cdx.json` from the scan's raw files, when they describe packages."""
        from check.sbom import MEDIA_TYPE, SBOM_FILE, SbomError, sbom_from_raw_files

        try:
            sbom = sbom_from_raw_files(raw_files, image_name=image_name, digest=digest,
                                       tool_version=tool_version)
        except (OSError, ValueError, TypeError, SbomError) as exc:
            self._error(f"{base}/{SBOM_FILE}: {exc}")
            return
        if sbom is not None:
            self.write_bytes(f"{base}/{SBOM_FILE}", sbom, MEDIA_TYPE)

    def _count(self) -> None:
        with self._lock:
            self.written += 1

    def _error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)
        log.warning("output not written", extra=fields(error=text))
