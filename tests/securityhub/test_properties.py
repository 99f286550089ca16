"""Property: over random runs, the emulated Security Hub always tells the truth.

Images appear, change, vanish and fail to scan; some scans cover packages only. After every
run, for every image observed in that run the hub's active findings are exactly the observed
ones (and its vanished findings archived); images not observed are untouched; there is never
more than one finding per (image, vulnerability); CreatedAt never changes; UpdatedAt only
ever increases. Throttling is injected all along.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securityhub import emulator, ids
from securityhub.hub import RepositoryScope, SecurityHubPublisher
from securityhub.ledger import create_table
from tests.securityhub.conftest import (
    ACCOUNT,
    FAST_GATEWAY,
    REGION,
    TABLE,
    Clock,
    image,
    observe,
    secret,
    single_attempt_sessions,
    vuln,
)

DIGESTS = tuple("sha256:" + c * 64 for c in "0123")
VULNS = ("CVE-1", "CVE-2", "CVE-3", "CVE-4")
REPO = "team/app"

# One image's fate in one run.
step = st.one_of(
    st.tuples(
        st.just("scan"),
        st.dictionaries(st.sampled_from(VULNS), st.sampled_from(["1", "2"]), max_size=4),
        st.booleans(),
    ),
    st.tuples(
        st.just("pkg-only"),
        st.dictionaries(st.sampled_from(VULNS), st.sampled_from(["1", "2"]), max_size=4),
        st.just(False),
    ),
    st.tuples(st.just("fail"), st.just({}), st.just(False)),
    st.tuples(st.just("vanish"), st.just({}), st.just(False)),
)
run = st.tuples(
    st.lists(step, min_size=len(DIGESTS), max_size=len(DIGESTS)),
    st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(days=8)]),
)


def hub_findings(sessions: Any) -> dict[str, dict[str, Any]]:
    client = sessions.client("securityhub", REGION)
    pages = client.get_paginator("get_findings").paginate(
        Filters={"Id": [{"Value": "containerscan/", "Comparison": "PREFIX"}]}
    )
    return {f["Id"]: f for page in pages for f in page["Findings"]}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=st.lists(run, min_size=1, max_size=5))
def test_hub_equals_the_truth(
    runs: list[tuple[list[tuple[str, dict[str, str], bool]], timedelta]],
) -> None:
    from moto import mock_aws

    emulator.install()
    # Imports are throttled and fail transiently; the test's own reads are not.
    emulator.set_faults(
        emulator.Faults(
            throttle=0.2, failed=0.05, seed=len(runs), operations=frozenset({"BatchImportFindings"})
        )
    )
    try:
        with mock_aws():
            sessions = single_attempt_sessions()
            create_table(sessions.client("dynamodb"), TABLE)
            clock = Clock()
            publisher = SecurityHubPublisher(
                sessions, TABLE, clock=clock, gateway_options=FAST_GATEWAY
            )
            created: dict[str, str] = {}
            updated: dict[str, str] = {}
            before: dict[str, dict[str, Any]] = {}
            for steps, pause in runs:
                clock.now += pause
                observations, present = [], set()
                expected_active: dict[str, set[str]] = {}  # digest -> Ids that must be ACTIVE
                expected_archived: dict[str, set[str]] = {}  # digest -> Ids that must be ARCHIVED
                untouched: set[str] = set()
                for digest, (fate, vulns, has_secret) in zip(DIGESTS, steps, strict=True):
                    img = image(digest, REPO)
                    scope_ids = {fid for fid in before if ids.image_scope(img) + "/" in fid}
                    if fate == "vanish":
                        expected_archived[digest] = scope_ids
                        continue
                    present.add(digest)
                    if fate == "fail":
                        untouched |= scope_ids
                        continue
                    findings = [vuln(img, v, fixed=f) for v, f in sorted(vulns.items())]
                    kinds = ("vulnerability", "secret")
                    if fate == "pkg-only":
                        kinds = ("vulnerability",)
                        untouched |= {fid for fid in scope_ids if "/secret/" in fid}
                    elif has_secret:
                        findings.append(secret(img))
                    observations.append(observe(img, *findings, kinds=kinds))
                    now_ids = {ids.finding_id(f) for f in findings}
                    expected_active[digest] = now_ids
                    covered = {fid for fid in scope_ids if fate != "pkg-only" or "/vuln/" in fid}
                    expected_archived[digest] = covered - now_ids
                summary = publisher.publish(
                    REGION,
                    observations,
                    repositories=[
                        RepositoryScope(ACCOUNT, REGION, REPO, frozenset(present), clock.now)
                    ],
                    # ECR by digest: what the listing shows (nothing is pushed meanwhile)
                    exists=lambda _repo, digests, present=present: set(digests) & present,
                )
                assert summary.failed == 0, summary.errors
                after = hub_findings(sessions)
                for digest, wanted in expected_active.items():
                    scope = ids.image_scope(image(digest, REPO)) + "/"
                    active = {
                        fid
                        for fid, d in after.items()
                        if scope in fid and d["RecordState"] == "ACTIVE"
                    }
                    assert active - untouched == wanted, digest
                for gone in expected_archived.values():
                    for fid in gone:
                        assert after[fid]["RecordState"] == "ARCHIVED", fid
                for fid in untouched:
                    assert after[fid] == before[fid], fid
                # Content is the truth for observed findings (the fixed version changed or not).
                for obs in observations:
                    for f in obs.findings:
                        doc = after[ids.finding_id(f)]
                        if hasattr(f, "packages"):
                            assert doc["Vulnerabilities"][0]["VulnerablePackages"][0][
                                "FixedInVersion"
                            ] == (f.packages[0].fixed_version)
                # One finding per (image, vulnerability); CreatedAt kept; UpdatedAt increases.
                pairs = [(d["Resources"][0]["Id"], d["Title"]) for d in after.values()]
                assert len(pairs) == len(set(pairs))
                for fid, doc in after.items():
                    assert created.setdefault(fid, doc["CreatedAt"]) == doc["CreatedAt"]
                    assert doc["UpdatedAt"] >= updated.get(fid, "")
                    if fid in before and doc != before[fid]:
                        assert doc["UpdatedAt"] > before[fid]["UpdatedAt"]
                    updated[fid] = doc["UpdatedAt"]
                before = after
    finally:
        emulator.set_faults()
