"""The package inventory of every scanned digest, kept in S3 for re-evaluation and joins.

A digest's inventory (its OS, every installed package with the file that recorded it and,
when the scanner lists them, the files each package owns) does not change: the image is
content-addressed. Kept once per digest, it lets a sweep

- re-match the packages against an advisory database that changed since (`check.reevaluate`):
  new CVEs reach Security Hub without pulling the image again;
- tell which package owns a file a running process loaded (`check.loaded`).

Object: `<prefix>inventories/<digest with ':' as '-'>.json.gz`, gzip JSON:

    {"format": 1, "digest": "sha256:...", "scanner": "builtin", "code_version": "1.0",
     "matched_with": "<scanner version of the last match>", "scan_types": ["pkg", "secret"],
     "inventory": {"os": {...} | null, "packages": [{name, version, package_manager,
                   file_path, layer, source_name, source_version, architecture,
                   files?: [paths]}]},
     "secrets": [serialized SecretFindings of the scan (check.serialize), never a value]}

Written with the run outputs' encryption (SSE-S3 or the stack's KMS key). A missing or
unreadable object is a miss (the image is scanned as before), never an error of the run.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from check.cache import sse_params
from securityhub.aws import error_code
from securityhub.logs import fields, get_logger

log = get_logger("check.inventories")

INVENTORY_FORMAT = 1


@dataclass(frozen=True)
class StoredInventory:
    digest: str
    scanner: str
    code_version: str  # the scanner's code, without its advisory database
    matched_with: str  # the full scanner version (database included) of the last match
    scan_types: tuple[str, ...]
    inventory: Mapping[str, Any]  # {"os": ..., "packages": [...]}
    secrets: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": INVENTORY_FORMAT,
            "digest": self.digest,
            "scanner": self.scanner,
            "code_version": self.code_version,
            "matched_with": self.matched_with,
            "scan_types": list(self.scan_types),
            "inventory": dict(self.inventory),
            "secrets": [dict(s) for s in self.secrets],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> StoredInventory:
        if doc.get("format") != INVENTORY_FORMAT:
            raise ValueError(f"inventory format {doc.get('format')!r}, expected {INVENTORY_FORMAT}")
        inventory = doc["inventory"]
        if not isinstance(inventory, Mapping) or not isinstance(inventory.get("packages"), list):
            raise ValueError("inventory.packages is not a list")
        return cls(
            digest=str(doc["digest"]),
            scanner=str(doc["scanner"]),
            code_version=str(doc["code_version"]),
            matched_with=str(doc["matched_with"]),
            scan_types=tuple(str(t) for t in doc.get("scan_types", ())),
            inventory=inventory,
            secrets=tuple(doc.get("secrets", ())),
        )


def encode(stored: StoredInventory) -> bytes:
    text = json.dumps(stored.to_json(), separators=(",", ":"), sort_keys=True)
    return gzip.compress(text.encode("utf-8"), mtime=0)


def decode(data: bytes, where: str) -> StoredInventory:
    try:
        return StoredInventory.from_json(json.loads(gzip.decompress(data)))
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{where}: not a stored inventory: {exc}") from None


class InventoryStore:
    """Stored inventories in the run-outputs bucket (see the module doc)."""

    def __init__(
        self, s3: Any, bucket: str, prefix: str = "containerscan/", kms_key_id: str | None = None
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.kms_key_id = kms_key_id

    def key(self, digest: str) -> str:
        return f"{self.prefix}inventories/{digest.replace(':', '-')}.json.gz"

    def get(self, digest: str) -> StoredInventory | None:
        key = self.key(digest)
        try:
            data = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) not in ("NoSuchKey", "404", "NotFound"):
                log.warning(
                    "stored inventory unreadable", extra=fields(key=key, error=error_code(exc))
                )
            return None
        try:
            return decode(data, f"s3://{self.bucket}/{key}")
        except ValueError as exc:
            log.warning("stored inventory ignored", extra=fields(key=key, error=str(exc)))
            return None

    def put(self, stored: StoredInventory) -> bool:
        key = self.key(stored.digest)
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=encode(stored),
                ContentType="application/json",
                ContentEncoding="gzip",
                **sse_params(self.kms_key_id),
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning("inventory not stored", extra=fields(key=key, error=error_code(exc)))
            return False
        return True
