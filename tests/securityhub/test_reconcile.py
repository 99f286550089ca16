"""Reconcile's pure diff: missing, drifted, stale, matching, foreign."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from securityhub import asff
from securityhub.reconcile import diff, hub_finding
from tests.securityhub.conftest import ACCOUNT, REGION, image, secret, vuln

NOW = datetime(2026, 11, 1, tzinfo=UTC)
CTX = asff.BuildContext(ACCOUNT, REGION)


def imported(finding, when: datetime = NOW, state: str = "ACTIVE") -> dict:  # type: ignore[no-untyped-def]
    doc = asff.stamp(
        asff.build(finding, CTX),
        created_at=NOW,
        first_observed_at=NOW,
        updated_at=when,
        last_observed_at=when,
        record_state=state,
    )
    # What GetFindings adds on top of what was imported.
    return dict(
        doc,
        ProductName="Default",
        CompanyName="Personal",
        Workflow={"Status": "NEW"},
        ProductFields={**doc["ProductFields"], "aws/securityhub/FindingId": "arn:..."},
    )


def test_diff_classifies_every_case() -> None:
    img = image()
    same, drift, lost = vuln(img, "CVE-1"), vuln(img, "CVE-2"), secret(img)
    hub = [
        imported(same),
        imported(drift, NOW + timedelta(hours=1), "ARCHIVED"),
        imported(lost),
        {"Id": "containerscan/hand-made", "ProductFields": {}},
    ]
    ledger_same = hub_finding(imported(same))
    ledger_drift = hub_finding(imported(drift))
    assert ledger_same is not None and ledger_drift is not None
    stale = dataclasses.replace(ledger_same.entry, finding_id="containerscan/gone")
    other_prefix = dataclasses.replace(ledger_same.entry, finding_id="other/x")
    result = diff(
        hub, [ledger_same.entry, ledger_drift.entry, stale, other_prefix], "containerscan/"
    )
    assert result.matching == 1
    assert [h.entry.finding_id for h in result.missing] == [hub[2]["Id"]]
    ((old, new),) = result.drifted
    assert old.record_state == "ACTIVE" and new.entry.record_state == "ARCHIVED"
    assert [e.finding_id for e in result.stale] == ["containerscan/gone"]
    assert result.foreign == ["containerscan/hand-made"]
    assert result.as_dict()["stale_ids"] == ["containerscan/gone"]


def test_hub_finding_fingerprint_matches_the_built_content() -> None:
    finding = vuln(image())
    item = hub_finding(imported(finding))
    assert item is not None
    assert item.entry.fingerprint == asff.fingerprint(asff.build(finding, CTX))
    assert item.entry.scope in item.entry.finding_id
