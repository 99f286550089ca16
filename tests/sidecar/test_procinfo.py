"""Process launch time and user (sidecar.procinfo) on real processes and real files.

The end-to-end tests run the real Tracer (tests/sidecar/workloads/harness.py) on a process
started (chroot and setuid in a preexec) in a root of its own, as another uid, with an /etc/passwd
naming users differently from the host's. What they check against comes from outside the
project: `ps -o lstart` (procps) for the start time, and the chroot's own passwd file.
The ASFF finding is built by the real Security Hub sink into moto's Security Hub, and
checked against botocore's model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from securityhub import asff
from securityhub.aws import SessionFactory
from sidecar.events import RuntimeEvent
from sidecar.procinfo import (
    MAX_PASSWD_BYTES,
    ProcInfo,
    boot_time,
    effective_uid,
    passwd_name,
    read_passwd,
    starttime_ticks,
)
from tests.sidecar.test_sinks import CONTEXT, REGION, aws  # noqa: F401 - the moto fixture
from tests.sidecar.test_tracer_attach import start_attach

UID = 4321  # a uid the host's passwd does not name
BUSYBOX = shutil.which("busybox")

# ------------------------------------------------------------------------- parsing


def test_stat_fields_are_counted_after_the_last_parenthesis() -> None:
    # comm may hold spaces and ")": a process named "a) b (c" (proc(5) field 2)
    line = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0"
    assert starttime_ticks(line) == 987654
    assert starttime_ticks("garbage") is None
    assert starttime_ticks("1 (x) S 1 2") is None


def test_boot_time_and_uid_lines() -> None:
    assert boot_time("cpu  1 2 3\nintr 5\nbtime 1796538948\nprocesses 9\n") == 1796538948
    assert boot_time("cpu 1\n") is None
    status = "Name:\tsleep\nUid:\t1000\t4321\t4321\t4321\nGid:\t0\t0\t0\t0\n"
    assert effective_uid(status) == 4321  # effective, not real
    assert effective_uid("Name:\tx\n") is None


def test_passwd_name_takes_the_first_valid_entry() -> None:
    passwd = (
        b"root:x:0:0:root:/root:/bin/sh\nbad line\n:x:7:7::/:/x\nsandman:x:4321:4321::/:/bin/sh\n"
    )
    assert passwd_name(passwd, 0) == "root"
    assert passwd_name(passwd, 4321) == "sandman"
    assert passwd_name(passwd, 7) is None  # an empty name is no name
    assert passwd_name(b"evil\x1b[31m:x:5:5::/:/x\n", 5) is None  # terminal escapes
    assert passwd_name(b"", 0) is None


# ---------------------------------------------------------------- hostile passwd files


def _root(tmp: Path) -> Path:
    root = tmp / "root"
    (root / "etc").mkdir(parents=True)
    return root


def test_read_passwd_reads_a_regular_file(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "etc" / "passwd").write_bytes(b"sandman:x:4321:4321::/:/bin/sh\n")
    assert read_passwd(str(root)) == b"sandman:x:4321:4321::/:/bin/sh\n"


def test_read_passwd_follows_no_symbolic_link(tmp_path: Path) -> None:
    """A symlink in the container's tree would resolve against the sidecar's root."""
    outside = tmp_path / "host-passwd"
    outside.write_bytes(b"hostonly:x:4321:4321::/:/bin/sh\n")
    root = _root(tmp_path)
    (root / "etc" / "passwd").symlink_to(outside)
    assert read_passwd(str(root)) is None
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "etc").symlink_to(root / "etc")  # the directory itself a link
    assert read_passwd(str(linked)) is None


def test_read_passwd_neither_blocks_on_a_fifo_nor_reads_a_device(tmp_path: Path) -> None:
    root = _root(tmp_path)
    os.mkfifo(root / "etc" / "passwd")
    started = time.monotonic()
    assert read_passwd(str(root)) is None
    assert time.monotonic() - started < 1
    if os.geteuid() == 0:
        (root / "etc" / "passwd").unlink()
        os.mknod(root / "etc" / "passwd", 0o644 | 0o020000, os.makedev(1, 5))  # /dev/zero
        assert read_passwd(str(root)) is None


def test_read_passwd_reads_at_most_the_cap_in_whole_lines(tmp_path: Path) -> None:
    root = _root(tmp_path)
    filler = b"u%d:x:%d:1::/:/bin/sh\n"
    lines = [filler % (i, 100000 + i) for i in range(MAX_PASSWD_BYTES // 20)]
    body = b"".join(lines) + b"sandman:x:4321:4321::/:/bin/sh\n"
    assert len(body) > MAX_PASSWD_BYTES
    (root / "etc" / "passwd").write_bytes(body)
    data = read_passwd(str(root))
    assert data is not None and len(data) <= MAX_PASSWD_BYTES and data.endswith(b"\n")
    assert passwd_name(data, 4321) is None  # past the cap: not read
    assert passwd_name(data, 100000) == "u0"


def test_read_passwd_of_a_missing_tree(tmp_path: Path) -> None:
    assert read_passwd(str(tmp_path / "absent")) is None
    assert read_passwd(str(tmp_path)) is None  # no etc/


# ------------------------------------------------------------------------------ caches


def test_cache_per_process_refreshes_the_uid_on_exec_and_after_a_while() -> None:
    now = [0.0]
    info = ProcInfo(clock=lambda: now[0], uid_refresh=30)
    me, incarnation = os.getpid(), object()
    first = info.owner(me, incarnation, "/usr/bin/python3")
    assert first.uid == os.geteuid() and first.launched_at is not None
    reads = info.reads
    assert info.owner(me, incarnation, "/usr/bin/python3") == first
    assert info.reads == reads  # nothing read again
    info.owner(me, incarnation, "/usr/bin/other")  # exec'd: the uid is read again
    assert info.reads == reads + 1
    info.owner(me, incarnation, "/usr/bin/other", execed=True)
    assert info.reads == reads + 2
    now[0] = 31.0  # setuid(2) needs no exec: read again after a while
    info.owner(me, incarnation, "/usr/bin/other")
    assert info.reads == reads + 3
    again = info.owner(me, object(), "/usr/bin/other")  # a reused pid: everything again
    assert info.reads > reads + 3 and again.launched_at == first.launched_at


def test_caches_are_bounded() -> None:
    info = ProcInfo(max_processes=2, max_names=1)
    me = os.getpid()
    for pid in (me, os.getppid(), 1):
        info.owner(pid, object(), "x")
    assert len(info._entries) == 2 and len(info._names) == 1


def test_a_gone_process_yields_nothing() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    owner = ProcInfo().owner(child.pid, object(), "/usr/bin/true")
    assert owner.launched_at is None and owner.uid is None and owner.user is None


def test_enrich_copies_the_event_and_keeps_its_own_extra() -> None:
    event = RuntimeEvent(
        1.0, "file", "fim", "high", "alert", os.getpid(), 1, "/bin/sh", "openat",
        path="/etc/x", extra={"inode": 7}, fingerprint="f",
    )  # fmt: skip
    enriched = ProcInfo().enrich(event, object(), "/bin/sh")
    assert event.extra == {"inode": 7}  # the original is untouched
    assert enriched.extra["inode"] == 7 and enriched.extra["uid"] == os.geteuid()
    assert enriched.extra["launched_at"] > 0
    # Every other field is the original's: the same as dataclasses.replace would give.
    assert enriched == replace(event, extra=enriched.extra)


# -------------------------------------------------------------- under the real tracer


def _lstart(pid: int) -> datetime:
    """The process's start time as procps's ps prints it (to the second)."""
    out = subprocess.run(
        ["ps", "-o", "lstart=", "-p", str(pid)],
        capture_output=True,
        text=True,
        check=True,
        env={"TZ": "UTC", "LC_ALL": "C", "PATH": os.environ["PATH"]},
    ).stdout.strip()
    return datetime.strptime(out, "%a %b %d %H:%M:%S %Y").replace(tzinfo=UTC)


def _submitted(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _chroot_with_passwd(tmp: Path, passwd: str) -> Path:
    assert BUSYBOX is not None
    root = tmp / "container"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")  # statically linked: runs alone
    target = root / "etc" / "passwd"
    if passwd == "fifo":
        os.mkfifo(target)
    else:
        # uid 0 named differently from the host's "root": the name comes from this tree
        target.write_text(f"toor:x:0:0::/:/bin/sh\nsandman:x:{UID}:{UID}::/:/bin/sh\n")
    os.mkfifo(root / "go", 0o666)
    os.chmod(root / "go", 0o666)
    return root


def _run_traced(
    tmp: Path, root: Path, exec_after: float = 0.0
) -> tuple[list[dict[str, Any]], datetime]:
    """`busybox sh`, chroot'ed to ROOT as UID, waits on a FIFO, then execs `busybox
    sleep`; the tracer attaches (as it does to a container's processes: their root is set
    before) and reports every exec. The submitted events, and ps's start time of the pid."""
    out = tmp / "submitted.jsonl"
    script = "read x < /go; exec /bin/busybox sleep 20"

    def enter() -> None:  # in the child, before exec: its own root, another uid
        os.chroot(root)
        os.chdir("/")
        os.setgroups([])
        os.setgid(UID)
        os.setuid(UID)

    workload = subprocess.Popen(["/bin/busybox", "sh", "-c", script], preexec_fn=enter)  # noqa: PLW1509
    spawned = time.monotonic()
    opts = ("--process-only", "--report-exec", "--submitted", str(out))
    tracer = start_attach(tmp, "--pid", str(workload.pid), watch="execve", opts=opts)
    try:
        time.sleep(max(0.0, spawned + exec_after - time.monotonic()))
        with open(root / "go", "w") as go:  # the workload reads it: go on to exec
            go.write("go\n")
        deadline = time.monotonic() + 20
        while not _submitted(out):
            assert tracer.poll() is None, tracer.communicate()
            assert time.monotonic() < deadline, "no exec event"
            time.sleep(0.05)
        started = _lstart(workload.pid)
        workload.kill()
        workload.wait()
        tracer.wait(timeout=20)
    finally:
        for proc in (workload, tracer):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return _submitted(out), started


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or BUSYBOX is None,
    reason="chroot and setuid need root; the workload is a static busybox",
)


def _finding_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The ASFF finding the real Security Hub sink imports for a submitted event (moto)."""
    from securityhub.hub import SecurityHubPublisher
    from securityhub.ledger import create_table
    from sidecar.sinks import SecurityHubSink

    known = set(RuntimeEvent.__dataclass_fields__) - {"extra", "fingerprint"}
    event = RuntimeEvent(
        **{k: v for k, v in doc.items() if k in known and k != "action"},
        action="alert",  # the harness logs; the sink imports alerts
        extra={k: v for k, v in doc.items() if k not in known},
    )
    sessions = SessionFactory(REGION, max_attempts=1)
    create_table(sessions.client("dynamodb"), "ledger")
    SecurityHubSink(SecurityHubPublisher(sessions, "ledger"), CONTEXT, REGION).send([event])
    (finding,) = sessions.client("securityhub").get_findings()["Findings"]
    return finding


@pytest.mark.ptrace
@needs_root
def test_launch_time_and_container_user_reach_the_asff_finding(
    tmp_path: Path,
    aws: None,  # noqa: F811
) -> None:
    from tests.securityhub.test_asff_model import problems_of

    root = _chroot_with_passwd(tmp_path, "file")
    submitted, started = _run_traced(tmp_path, root, exec_after=2.0)
    (busybox,) = submitted
    assert busybox["path"] == str(root / "bin" / "busybox")
    # Its fork's time (before the tracer attached; exec keeps it), to ps's second, not the
    # exec's two seconds later (btime is whole seconds: allow one).
    assert int(busybox["launched_at"]) == int(started.timestamp())
    assert busybox["timestamp"] - busybox["launched_at"] > 1.0
    # named from the container's passwd (the host's names no uid 4321)
    assert (busybox["uid"], busybox["user"]) == (UID, "sandman")

    finding = _finding_of(busybox)
    process = finding["Process"]
    assert process["Pid"] == busybox["pid"]
    launched = datetime.fromisoformat(process["LaunchedAt"].replace("Z", "+00:00"))
    assert launched.replace(microsecond=0) == started
    # ASFF's Process has no user member (botocore's ProcessDetails: Name, Path, Pid,
    # ParentPid, LaunchedAt, TerminatedAt): GuardDuty puts the user in ProductFields too.
    assert finding["ProductFields"]["containerscan/runtime/process/user"] == "sandman"
    assert finding["ProductFields"]["containerscan/runtime/process/uid"] == str(UID)
    assert problems_of(asff.provider_content(finding)) == []


@pytest.mark.ptrace
@needs_root
def test_a_fifo_for_passwd_neither_hangs_the_tracer_nor_names_the_user(tmp_path: Path) -> None:
    root = _chroot_with_passwd(tmp_path, "fifo")
    submitted, started = _run_traced(tmp_path, root)
    (busybox,) = submitted
    assert (busybox["uid"], busybox["user"]) == (UID, str(UID))
    assert int(busybox["launched_at"]) == int(started.timestamp())
