"""Repairing the ledger from Security Hub, for when the two drifted.

Drift happens when a run crashed between an import and its ledger write, when someone
imported or archived findings by hand, when the ledger table was lost, or when Security Hub
expired findings (90 days without an update, 30 days archived). Security Hub is the truth
here: `diff()` (pure) compares the findings under a prefix, account and region with the
ledger entries of that account and region, and `Reconciler.run()` applies the result:

- missing: in Security Hub, not in the ledger -> entry written from the finding
- drifted: both, but state, timestamps or content differ -> entry overwritten
- stale: in the ledger, not in Security Hub -> entry deleted (the next run re-creates the
  finding if it is still observed)
- corrupt: a ledger item of this account and region that cannot be read -> rewritten from
  its finding when Security Hub has it (it is then also counted as missing), else deleted
- the ledger's repository directory is rewritten for every repository with a finding in
  Security Hub (a ledger older than the directory, or a lost table, gets it back)

Repairs write unconditionally: Security Hub is the truth, whatever version the item held.

GetFindings is read with PREFIX/EQUALS filters on Id, AwsAccountId and Region, paginated and
rate-limited by the gateway. Listing the ledger's entries of an account and region is the one
place a Scan is used: reconcile is a rare repair, never part of a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from securityhub import asff
from securityhub.correlate import LedgerEntry
from securityhub.gateway import Gateway
from securityhub.ledger import Ledger, LedgerRecord, account_region_of, partition_of, sort_key

PRODUCT_SCOPE = f"{asff.PRODUCT_KEY}/scope"
PRODUCT_KIND = f"{asff.PRODUCT_KEY}/kind"


@dataclass(frozen=True)
class HubFinding:
    """A finding read from Security Hub, as a ledger entry plus its provider content."""

    entry: LedgerEntry
    content: dict[str, Any]


@dataclass
class Difference:
    missing: list[HubFinding] = field(default_factory=list)
    drifted: list[tuple[LedgerEntry, HubFinding]] = field(default_factory=list)
    stale: list[LedgerEntry] = field(default_factory=list)
    matching: int = 0
    foreign: list[str] = field(default_factory=list)  # Ids without a containerscan scope
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # (pk, sk) unreadable items

    def as_dict(self, limit: int = 50) -> dict[str, Any]:
        return {
            "missing": len(self.missing),
            "drifted": len(self.drifted),
            "stale": len(self.stale),
            "matching": self.matching,
            "foreign": len(self.foreign),
            "corrupt": len(self.corrupt),
            "missing_ids": [h.entry.finding_id for h in self.missing[:limit]],
            "drifted_ids": [e.finding_id for e, _ in self.drifted[:limit]],
            "stale_ids": [e.finding_id for e in self.stale[:limit]],
            "corrupt_keys": [f"{pk} {sk}" for pk, sk in self.corrupt[:limit]],
        }


def hub_finding(finding: Mapping[str, Any]) -> HubFinding | None:
    """The ledger view of a GetFindings result; None when it has no containerscan scope."""
    content = asff.provider_content(finding)
    product_fields = content.get("ProductFields") or {}
    scope = product_fields.get(PRODUCT_SCOPE)
    kind = product_fields.get(PRODUCT_KIND)
    if not scope or not kind:
        return None
    created = asff.parse_timestamp(str(content["CreatedAt"]))
    entry = LedgerEntry(
        finding_id=str(content["Id"]),
        scope=str(scope),
        kind=str(kind),
        fingerprint=asff.fingerprint(content),
        created_at=created,
        first_observed_at=asff.parse_timestamp(str(content.get("FirstObservedAt") or created)),
        updated_at=asff.parse_timestamp(str(content["UpdatedAt"])),
        record_state=str(content.get("RecordState", "ACTIVE")),
    )
    return HubFinding(entry, content)


def diff(
    hub: Iterable[Mapping[str, Any]], ledger_entries: Iterable[LedgerEntry], prefix: str
) -> Difference:
    """Compare Security Hub's findings under `prefix` with the ledger's entries."""
    result = Difference()
    seen: dict[str, HubFinding] = {}
    for finding in hub:
        item = hub_finding(finding)
        if item is None:
            result.foreign.append(str(finding.get("Id")))
            continue
        seen[item.entry.finding_id] = item
    known: dict[str, LedgerEntry] = {
        e.finding_id: e for e in ledger_entries if e.finding_id.startswith(prefix)
    }
    for finding_id, item in seen.items():
        entry = known.get(finding_id)
        if entry is None:
            result.missing.append(item)
        elif entry != item.entry:
            result.drifted.append((entry, item))
        else:
            result.matching += 1
    result.stale = [e for fid, e in known.items() if fid not in seen]
    return result


class Reconciler:
    def __init__(self, gateway: Gateway, ledger: Ledger, account_id: str, region: str) -> None:
        self.gateway = gateway
        self.ledger = ledger
        self.account_id = account_id
        self.region = region

    def hub_findings(self, prefix: str) -> list[dict[str, Any]]:
        filters = {
            "Id": [{"Value": prefix, "Comparison": "PREFIX"}],
            "AwsAccountId": [{"Value": self.account_id, "Comparison": "EQUALS"}],
            "Region": [{"Value": self.region, "Comparison": "EQUALS"}],
        }
        return list(self.gateway.get_findings(filters))

    def ledger_entries(self) -> list[LedgerEntry]:
        return [
            entry
            for _pk, entry, account, region in self.ledger.scan_partitions()
            if account == self.account_id and region == self.region
        ]

    def corrupt_items(self) -> list[tuple[str, str]]:
        """(pk, sk) of the unreadable items of this account and region the last Scan met."""
        return sorted(
            key
            for key in self.ledger.corrupt
            if account_region_of(key[0]) == (self.account_id, self.region)
        )

    def run(self, prefix: str, *, dry_run: bool = False) -> Difference:
        hub = self.hub_findings(prefix)
        difference = diff(hub, self.ledger_entries(), prefix)
        difference.corrupt = self.corrupt_items()
        if dry_run:
            return difference
        records = [
            LedgerRecord(item.entry, self.account_id, self.region, item.content)
            for item in [*difference.missing, *(h for _e, h in difference.drifted)]
        ]
        self.ledger.record(records, force=True)
        self.ledger.forget(difference.stale)
        rewritten = {
            (partition_of(r.entry.scope), sort_key(r.entry.scope, r.entry.finding_id))
            for r in records
        }
        self.ledger.forget_keys(key for key in difference.corrupt if key not in rewritten)
        found = (hub_finding(f) for f in hub)
        self.ledger.remember_repositories(item.entry.scope for item in found if item is not None)
        return difference
