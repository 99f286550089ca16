"""Files loaded at runtime, in the check's DynamoDB table: the format both sides share.

The sidecar (`sidecar.loaded`) writes what the traced processes mapped executable; the
sweep (`check.loaded`) reads it to tell whether a vulnerable package was ever loaded.

    pk = "loaded#<image digest>"   sk = "<task family>"
        paths (SS): canonical paths ever mapped executable (deduplicated, bounded)
        first_seen, last_seen (RFC 3339): the observation window, across tasks and restarts
        truncated (BOOL): the sidecar's bound was reached; "never loaded" cannot be claimed
        expires_at (N): TTL, RETENTION_DAYS after the last write
    pk = "loaded-index"            sk = "<image digest>"
        one item per digest with records, so a sweep reads one small partition, then only
        the digests listed there

Only paths are stored: never argv, environment, file contents or anything a process wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from securityhub.asff import parse_timestamp

RECORD_PREFIX = "loaded#"
INDEX_PK = "loaded-index"
RETENTION_DAYS = 90
# Merged /usr (Debian 12, Ubuntu 22.04+, Fedora): /lib is /usr/lib. Package file lists and
# mappings may name either; both sides are compared in the /usr form.
MERGED_USR = ("/lib/", "/lib32/", "/lib64/", "/libx32/", "/bin/", "/sbin/")


def canonical(path: str) -> str:
    """`/lib/x86_64-linux-gnu/libz.so.1` -> `/usr/lib/x86_64-linux-gnu/libz.so.1`."""
    if path.startswith(MERGED_USR):
        return "/usr" + path
    return path


@dataclass(frozen=True)
class LoadedRecord:
    """What sidecars saw one image's processes load, every task family together."""

    paths: frozenset[str]
    first_seen: datetime
    last_seen: datetime
    truncated: bool = False
    families: tuple[str, ...] = ()

    @property
    def observed_seconds(self) -> float:
        return (self.last_seen - self.first_seen).total_seconds()


class LoadedTable:
    """Reads the items above with a DynamoDB client passed in (the sidecar's
    `sidecar.loaded.LoadedRecorder` writes them)."""

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    # -------------------------------------------------------------------- the sweep
    def _query(self, pk: str) -> list[dict[str, Any]]:
        pages = self.client.get_paginator("query").paginate(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": pk}},
        )
        return [item for page in pages for item in page.get("Items", ())]

    def digests(self) -> frozenset[str]:
        """Every digest some sidecar recorded (one Query of the index partition)."""
        return frozenset(item["sk"]["S"] for item in self._query(INDEX_PK))

    def record(self, digest: str) -> LoadedRecord | None:
        """Every family's record of `digest`, merged; None when there is none."""
        items = self._query(RECORD_PREFIX + digest)
        if not items:
            return None
        paths: set[str] = set()
        for item in items:
            paths.update(item.get("paths", {}).get("SS", ()))
        return LoadedRecord(
            frozenset(paths),
            min(parse_timestamp(i["first_seen"]["S"]) for i in items),
            max(parse_timestamp(i["last_seen"]["S"]) for i in items),
            any(i.get("truncated", {}).get("BOOL", False) for i in items),
            tuple(sorted(i["sk"]["S"] for i in items)),
        )
