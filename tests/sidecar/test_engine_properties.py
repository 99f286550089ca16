"""Property test: the engine's compiled FIM tables agree with a naive reading of the policy."""

from __future__ import annotations

import os
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.engine import Engine
from sidecar.events import ACCESS_READ, ACCESS_WRITE, KIND_OPEN, SyscallEvent
from sidecar.policy_model import (
    ACTIONS,
    SEVERITIES,
    FileIntegrityMonitoring,
    FimPath,
    Policy,
)

SEGMENTS = st.sampled_from(["etc", "ssl", "a", "b", "passwd"])
PATHS = st.lists(SEGMENTS, min_size=0, max_size=4).map(lambda parts: "/" + "/".join(parts))
RULES = st.builds(
    FimPath,
    path=PATHS,
    recursive=st.booleans(),
    events=st.sets(st.sampled_from(["open", "write"]), min_size=1).map(frozenset),
    severity=st.sampled_from(SEVERITIES),
    action=st.sampled_from(ACTIONS),
)


def naive_matches(rule: FimPath, path: str) -> bool:
    if path == rule.path:
        return True
    if rule.recursive:
        return rule.path == "/" or path.startswith(rule.path + "/")
    return os.path.dirname(path) == rule.path


@settings(max_examples=300, deadline=None)
@given(rules=st.lists(RULES, min_size=1, max_size=6), path=PATHS, write=st.booleans())
def test_fim_tables_match_the_naive_reading(rules: list[FimPath], path: str, write: bool) -> None:
    policy = Policy(fim=FileIntegrityMonitoring(True, tuple(rules)))
    event = SyscallEvent(
        timestamp=1.0,
        pid=1,
        tid=1,
        ppid=0,
        exe="/bin/x",
        syscall="openat",
        kind=KIND_OPEN,
        path=path,
        access=frozenset({ACCESS_WRITE if write else ACCESS_READ}),
    )
    wanted = {"write", "open"} if write else {"open"}
    candidates = [r for r in rules if naive_matches(r, path) and r.events & wanted]
    events = Engine(policy).evaluate(event).events
    if not candidates:
        assert events == ()
        return
    assert len(events) == 1  # one event per syscall, from the strongest rule
    best = max(
        candidates,
        key=lambda r: (ACTIONS.index(r.action), SEVERITIES.index(r.severity), len(r.path)),
    )
    assert (events[0].action, events[0].severity) == (best.action, best.severity)
    assert events[0].path == path


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
ANY_EVENTS = st.builds(
    SyscallEvent,
    timestamp=st.floats(0, 2e9),
    pid=st.integers(1, 2**22),
    tid=st.integers(1, 2**22),
    ppid=st.integers(0, 2**22),
    exe=st.one_of(st.just(""), TEXT, PATHS),
    syscall=st.sampled_from(["execve", "openat", "connect", "sendto", "unlinkat", "ptrace"]),
    kind=st.sampled_from(
        ["exec", "open", "unlink", "rename", "chmod", "chown", "connect", "sendto", "other"]
    ),
    path=st.one_of(st.none(), TEXT, PATHS, st.just("//"), st.just("//etc/x")),
    path2=st.one_of(st.none(), PATHS),
    access=st.sets(st.sampled_from([ACCESS_READ, ACCESS_WRITE, "create"])).map(frozenset),
    argv=st.lists(
        st.one_of(TEXT, st.sampled_from(["-m", "pip", "install", "-ivh", "http://x"])), max_size=6
    ).map(tuple),
    family=st.sampled_from([None, "inet", "inet6", "unix"]),
    ip=st.one_of(st.none(), TEXT, st.ip_addresses().map(str)),
    port=st.one_of(st.none(), st.integers(0, 65535)),
)


@settings(max_examples=400, deadline=None)
@given(event=ANY_EVENTS)
def test_evaluate_never_raises_on_odd_events(event: SyscallEvent) -> None:
    """The engine runs at every stop: whatever the tracer decodes, it answers."""
    verdict = _aggressive().evaluate(event)
    assert verdict.block == any(e.action == "block" for e in verdict.events)


@cache
def _aggressive() -> Engine:
    from sidecar.policy import load_policies, policies_dir

    return Engine(load_policies([policies_dir() / "tracing-policy-schema.yaml"]), clock=lambda: 0.0)
