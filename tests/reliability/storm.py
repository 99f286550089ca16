"""Stress workloads for the sidecar tests: `python -m tests.reliability.storm MODE ...`.

Each mode is bounded in count and time, stops by itself, and writes what it really did as
one JSON line to the file named by STORM_REPORT (so tests count events against the truth):

    fork N DIR PORT     N short-lived children (every 10th forks a grandchild; every 4th
                        execs `true`, every 5th connects to 127.0.0.2:PORT, every 3rd writes a
                        file in DIR); exits 7
    threads N DIR PORT  N threads, 50 alive at a time, created and joined; every 5th
                        connects, every 3rd writes in DIR; exits 8
    exec N              exec itself N times (a chain of one process), then exits 5
    siblings N DIR BAD  N children write files in DIR in a loop while one child writes BAD
                        (the blocked path); reports each child's exit status; exits 0
    forever DIR         forks and execs `true` in a loop until SIGTERM/SIGINT-free end:
                        stops after STORM_SECONDS (default 6) and exits 9
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time

TRUE = "/bin/true"


def _report(doc: dict[str, object]) -> None:
    path = os.environ.get("STORM_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(doc) + "\n")


def _connect(port: int) -> None:
    with socket.socket() as sock:
        sock.settimeout(1)
        try:
            sock.connect(("127.0.0.2", port))
        except OSError:
            pass  # refused: the connect syscall happened, which is what is watched


def _write(directory: str, name: str) -> None:
    with open(os.path.join(directory, name), "w") as fh:
        fh.write("x")


def _child(i: int, directory: str, port: int) -> int:
    """The body of fork child i; returns its exit status (or execs)."""
    if i % 10 == 0:  # nested: a grandchild, waited for
        pid = os.fork()
        if pid == 0:
            os._exit(3)
        os.waitpid(pid, 0)
    if i % 5 == 0:
        _connect(port)
    if i % 3 == 0:
        _write(directory, f"c{i}")
    if i % 4 == 0:
        os.execv(TRUE, [TRUE, str(i)])
    return i % 7


def fork_storm(n: int, directory: str, port: int) -> int:
    started = time.monotonic()
    pids: dict[int, int] = {}
    wrong = 0
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(_child(i, directory, port))
        pids[pid] = i
        if len(pids) >= 32:  # keep at most 32 alive: bounded, but many concurrent
            wrong += _reap_one(pids)
    while pids:
        wrong += _reap_one(pids)
    _report({"mode": "fork", "children": n, "grandchildren": len(range(0, n, 10)),
             "execs": len(range(0, n, 4)), "connects": len(range(0, n, 5)),
             "writes": len(range(0, n, 3)), "wrong_status": wrong,
             "seconds": round(time.monotonic() - started, 3)})  # fmt: skip
    return 7


def _reap_one(pids: dict[int, int]) -> int:
    pid, status = os.wait()
    i = pids.pop(pid)
    expected = 0 if i % 4 == 0 else i % 7
    return int(os.waitstatus_to_exitcode(status) != expected)


def thread_storm(n: int, directory: str, port: int) -> int:
    started = time.monotonic()
    done: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        if i % 5 == 0:
            _connect(port)
        if i % 3 == 0:
            _write(directory, f"t{i}")
        with lock:
            done.append(i)

    alive: list[threading.Thread] = []
    for i in range(n):
        thread = threading.Thread(target=work, args=(i,))
        thread.start()
        alive.append(thread)
        if len(alive) >= 50:
            for t in alive:
                t.join()
            alive = []
    for t in alive:
        t.join()
    _report({"mode": "threads", "threads": n, "joined": len(done),
             "connects": len(range(0, n, 5)), "writes": len(range(0, n, 3)),
             "seconds": round(time.monotonic() - started, 3)})  # fmt: skip
    return 8


def exec_loop(n: int) -> int:
    if n > 0:
        os.execv(sys.executable, [sys.executable, "-S", os.path.abspath(__file__), "exec",
                                  str(n - 1)])  # fmt: skip
    _report({"mode": "exec", "pid": os.getpid()})
    return 5


def siblings(n: int, directory: str, bad: str) -> int:
    pids: dict[int, str] = {}
    deadline = time.monotonic() + 3
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            for k in range(40):
                _write(directory, f"s{i}-{k}")
                if time.monotonic() > deadline:
                    break
            os._exit(0)
        pids[pid] = f"sibling{i}"
        if i == n // 2:  # the offender, while the siblings run
            pid = os.fork()
            if pid == 0:
                _write(os.path.dirname(bad), os.path.basename(bad))
                os._exit(0)
            pids[pid] = "offender"
    statuses: dict[str, int] = {}
    while pids:
        pid, status = os.wait()
        statuses[pids.pop(pid)] = os.waitstatus_to_exitcode(status)
    _report({"mode": "siblings", "statuses": statuses})
    return 0


def forever(directory: str) -> int:
    deadline = time.monotonic() + float(os.environ.get("STORM_SECONDS", "6"))
    rounds = 0
    while time.monotonic() < deadline:
        pid = os.fork()
        if pid == 0:
            if rounds % 2:
                os.execv(TRUE, [TRUE])
            _write(directory, f"f{rounds % 50}")
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            _report({"mode": "forever", "bad_status": status, "rounds": rounds})
            return 1
        rounds += 1
    _report({"mode": "forever", "rounds": rounds})
    return 9


def main(argv: list[str]) -> int:
    mode, args = argv[0], argv[1:]
    if mode == "fork":
        return fork_storm(int(args[0]), args[1], int(args[2]))
    if mode == "threads":
        return thread_storm(int(args[0]), args[1], int(args[2]))
    if mode == "exec":
        return exec_loop(int(args[0]))
    if mode == "siblings":
        return siblings(int(args[0]), args[1], args[2])
    if mode == "forever":
        return forever(args[0])
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
