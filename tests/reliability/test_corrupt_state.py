"""Corrupt ledger and cache items are data, not a crash (issue 11, item 3).

A first `containerscan sweep` (a real subprocess against moto's server, the QScanner
stand-in scanning) fills the ledger and the scan cache. Then every ledger item and every
cache item is damaged, each in a different way (the shapes below: attributes missing, of the
wrong type, unparsable, empty, blobs that do not decompress, payloads of another format), and
so is every repository summary (without them the next sweep would rightly trust the
summaries and read no entry at all; what summaries may vouch for is checked by
`world.summaries_contradicting` in `assert_converged`).
The next sweep must finish (exit 0, a status.json), count what it met, re-import the
findings of the corrupt ledger items and rescan the digests of the corrupt cache items, and
leave the hub equal to the truth with `reconcile --dry-run` finding nothing. A separate
case damages the ledger and repairs it with `reconcile` alone.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.check.standin import (
    AWS_KEY_SECRET,
    BUSYBOX_CVE_2019_5747,
    CURL_CVE_2019_5481,
    MUSL_CVE_2019_14697,
    OPENSSL_CVE_2019_1547,
)
from tests.reliability.conftest import Served
from tests.reliability.test_live_estate import Invocations, assert_converged, env_of, finish, start
from tests.reliability.world import TABLE, Estate, run_cli, sweep_command

Item = dict[str, Any]


def _without(name: str) -> Callable[[Item], None]:
    return lambda item: item.pop(name, None)


def _set(name: str, value: Any) -> Callable[[Item], None]:
    return lambda item: item.__setitem__(name, value)


LEDGER_SHAPES: dict[str, Callable[[Item], None]] = {
    "updated_at garbage": _set("updated_at", {"S": "garbage"}),
    "fingerprint removed": _without("fingerprint"),
    "finding_id removed": _without("finding_id"),
    "scope removed": _without("scope"),
    "kind removed": _without("kind"),
    "created_at removed": _without("created_at"),
    "first_observed_at a number": _set("first_observed_at", {"N": "17"}),
    "record_state unknown": _set("record_state", {"S": "DELETED"}),
    "record_state empty": _set("record_state", {"S": ""}),
    "updated_at binary": _set("updated_at", {"B": b"\x00\x01"}),
    "scope of another image": _set("scope", {"S": "ecr/1/us-east-1/x@sha256%3A0"}),
    "version a string, far ahead": _set("version", {"S": "99999999999999999"}),
    "published_at garbage": _set("published_at", {"S": "yesterday"}),
    "asff not zlib": _set("asff", {"B": b"not zlib at all"}),
}

# Repository summaries (ledger.py): unreadable ones count as corrupt; a well-formed digest that
# matches no observation is not corrupt, only useless (the sweep reads the entries).
SUMMARY_SHAPES: dict[str, Callable[[Item], None]] = {
    "summary stamp removed": _without("stamp"),
    "summary digest not hex": _set("digest", {"S": "not a digest"}),
    "summary digest of nothing": _set("digest", {"S": "f" * 64}),
    "summary count garbage": _set("count", {"S": "many"}),
    "summary oldest garbage": _set("oldest", {"S": "long ago"}),
    "summary format unknown": _set("format", {"N": "999"}),
}

CACHE_SHAPES: dict[str, Callable[[Item], None]] = {
    "payload removed": _without("payload"),
    "payload not gzip": _set("payload", {"B": b"plain bytes"}),
    "payload not JSON": _set("payload", {"B": gzip.compress(b"{{{", mtime=0)}),
    "payload of another format": _set(
        "payload", {"B": gzip.compress(json.dumps({"format": 999}).encode(), mtime=0)}
    ),
    "expires_at a string": _set("expires_at", {"S": "never"}),
    "stored_at garbage": _set("stored_at", {"S": "last tuesday"}),
}


def _findings_payload(findings: Any) -> Callable[[Item], None]:
    def damage(item: Item) -> None:
        doc = json.loads(gzip.decompress(item["payload"]["B"]))
        doc["findings"] = findings
        item["payload"] = {"B": gzip.compress(json.dumps(doc).encode(), mtime=0)}

    return damage


CACHE_SHAPES |= {
    "findings not a list": _findings_payload({"a": 1}),
    "findings of numbers": _findings_payload([1, 2]),
    "a finding without its fields": _findings_payload([{"kind": "vulnerability"}]),
}


def _items(dynamodb: Any, prefix: str) -> list[Item]:
    items: list[Item] = []
    params: dict[str, Any] = {"TableName": TABLE}
    while True:
        page = dynamodb.scan(**params)
        items += [i for i in page["Items"] if i["pk"]["S"].startswith(prefix)]
        if "LastEvaluatedKey" not in page:
            return sorted(items, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# Damage a read does not meet: a version of the wrong type only matters to the next write
# (which it never blocks), the stored ASFF only to an archive (which then reads the finding
# from Security Hub instead).
UNSEEN_ON_READ = frozenset(
    {"version a string, far ahead", "asff not zlib", "summary digest of nothing"}
)


def _damage(
    dynamodb: Any, prefix: str, shapes: dict[str, Callable[[Item], None]], first: int = 0
) -> int:
    """Damage the items under `prefix`, one shape each, cycling from shape `first`; how many
    reads will notice."""
    items = _items(dynamodb, prefix)
    assert len(items) >= min(len(shapes), 3), (len(items), len(shapes))
    names = list(shapes)[first:] + list(shapes)[:first]
    noticed = 0
    for i, item in enumerate(items):
        name = names[i % len(names)]
        shapes[name](item)
        dynamodb.put_item(TableName=TABLE, Item=item)
        noticed += name not in UNSEEN_ON_READ
    return noticed


def _swept(served: Served, tmp_path: Path) -> tuple[Invocations, dict[str, str], Estate]:
    """Nine images in three repositories, swept once: ledger and cache filled."""
    scanner = Invocations(tmp_path)
    env = env_of(served, scanner)
    estate = Estate()
    catalogue = [
        [OPENSSL_CVE_2019_1547, MUSL_CVE_2019_14697],
        [CURL_CVE_2019_5481],
        [BUSYBOX_CVE_2019_5747, CURL_CVE_2019_5481],
    ]
    for i in range(9):
        estate.add(served.ecr, f"corrupt-{i % 3}", f"c-{i}", tag=f"v{i}",
                   findings=catalogue[i % 3], secrets=[AWS_KEY_SECRET] if i % 2 else [])  # fmt: skip
    estate.scenario().write(served.scenario)
    finish(start(sweep_command(tmp_path / "out"), env))
    assert scanner.scans() == 9
    return scanner, env, estate


@pytest.mark.slow  # three sweeps and reconciles as subprocesses (~20 s)
def test_a_sweep_over_corrupt_ledger_and_cache_items_repairs_them(
    served: Served, tmp_path: Path
) -> None:
    scanner, env, estate = _swept(served, tmp_path)
    ledger_items = _damage(served.dynamodb, "ledger#", LEDGER_SHAPES)
    ledger_items += _damage(served.dynamodb, "ledger-summary#", SUMMARY_SHAPES)
    cache_items = _damage(served.dynamodb, "cache#", CACHE_SHAPES)

    status = finish(start(sweep_command(tmp_path / "out"), env))
    assert status["exit_code"] == 0 and status["errors"] == []
    assert status["counts"]["corrupt_state"] == {"cache": cache_items, "ledger": ledger_items}
    assert scanner.scans() == 9 + cache_items  # only the unreadable cache items rescanned
    written = list((tmp_path / "out" / "runs" / status["run_id"]).glob("status.json"))
    assert written, "the run wrote its status.json"
    assert_converged(served, estate, scanner)
    # and the repaired state reads cleanly: nothing corrupt, nothing rescanned
    status = finish(start(sweep_command(tmp_path / "out"), env))
    assert status["counts"]["corrupt_state"] == {"cache": 0, "ledger": 0}
    assert scanner.scans() == 9 + cache_items
    # every image deleted: each finding archived, the ones with a damaged copy included
    for (repository, seed), digest in list(estate.images.items()):
        served.ecr.batch_delete_image(repositoryName=repository, imageIds=[{"imageDigest": digest}])
        del estate.images[(repository, seed)]
    status = finish(start(sweep_command(tmp_path / "out"), env))
    assert status["exit_code"] == 0 and status["errors"] == [], status["errors"]
    assert_converged(served, estate, scanner)


@pytest.mark.slow
def test_reconcile_repairs_corrupt_ledger_items_from_security_hub(
    served: Served, tmp_path: Path
) -> None:
    scanner, env, estate = _swept(served, tmp_path)
    damaged = _damage(served.dynamodb, "ledger#", LEDGER_SHAPES)
    _damage(served.dynamodb, "ledger-summary#", SUMMARY_SHAPES, first=3)  # reconcile reads none
    reconcile = [sys.executable, "-m", "check", "reconcile", "--output", "json"]
    dry = run_cli([*reconcile, "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr[-2000:]
    report = json.loads(dry.stdout)
    # the "scope of another image" items count as corrupt (keys and attributes disagree)
    assert report["corrupt"] == damaged, report
    done = run_cli(reconcile, env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_converged(served, estate, scanner)


@pytest.mark.slow  # four sweeps as subprocesses (~20 s)
def test_damaged_summaries_of_every_shape_cost_a_read_never_a_wrong_result(
    served: Served, tmp_path: Path
) -> None:
    """Only the summaries are damaged (the entries are sound): the sweep reads the entries of
    those repositories, counts the unreadable summaries, rewrites them all, and the hub stays
    the truth; after a change the summaries still say only what the entries hold."""
    scanner = Invocations(tmp_path)
    env = env_of(served, scanner)
    estate = Estate()
    names = list(SUMMARY_SHAPES)
    for i in range(len(names)):
        estate.add(served.ecr, f"summary-{i}", f"s-{i}", tag="v1",
                   findings=[OPENSSL_CVE_2019_1547, CURL_CVE_2019_5481][: 1 + i % 2])  # fmt: skip
    estate.scenario().write(served.scenario)
    finish(start(sweep_command(tmp_path / "out"), env))
    summaries = _items(served.dynamodb, "ledger-summary#")
    assert len(summaries) == len(names) and all("digest" in s for s in summaries)
    noticed = _damage(served.dynamodb, "ledger-summary#", SUMMARY_SHAPES)
    assert noticed == len(names) - 1

    status = finish(start(sweep_command(tmp_path / "out"), env))
    assert status["exit_code"] == 0 and status["errors"] == []
    assert status["counts"]["corrupt_state"]["ledger"] == noticed
    assert scanner.scans() == len(names)  # the cache still holds every digest
    assert_converged(served, estate, scanner)
    rewritten = _items(served.dynamodb, "ledger-summary#")
    assert all("digest" in s and s["digest"]["S"] != "f" * 64 for s in rewritten)
    # a change after the repair: summaries follow the entries
    estate.add(served.ecr, "summary-0", "s-new", tag="v2", findings=[MUSL_CVE_2019_14697])
    estate.scenario().write(served.scenario)
    status = finish(start(sweep_command(tmp_path / "out"), env))
    assert status["counts"]["corrupt_state"]["ledger"] == 0
    assert_converged(served, estate, scanner)
