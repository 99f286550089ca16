"""Threads busy in every kind of syscall state, for the injection tests.

    python restartable.py STATUS_FILE

Threads loop on: stat (short syscalls), nanosleep (restarted through restart_syscall when
interrupted), a blocking pipe read and a select + recv (restarted with ERESTARTSYS /
ERESTARTNOHAND), and pure computation (interrupted in user space); a writer feeds the pipe
and the socket. Every 100 ms STATUS_FILE gets the per-thread counts and the exceptions any
thread died of (a wrongly restored register would surface as one, or as a stalled count).
STATUS_FILE.ready holds the pid once all threads run.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable


def main() -> None:
    out = sys.argv[1]
    counts = [0] * 5
    errors: list[str] = []
    r, w = os.pipe()
    a, b = socket.socketpair()

    def writer() -> None:
        while True:
            os.write(w, b"x")
            b.send(b"y")
            time.sleep(0.001)

    def stat() -> None:
        while True:
            os.stat("/")
            counts[0] += 1

    def nap() -> None:
        while True:
            time.sleep(0.0002)
            counts[1] += 1

    def read() -> None:
        while True:
            if os.read(r, 1) != b"x":
                raise AssertionError("pipe read returned the wrong byte")
            counts[2] += 1

    def poll() -> None:
        while True:
            select.select([a], [], [], 0.01)
            if a.recv(1) != b"y":
                raise AssertionError("recv returned the wrong byte")
            counts[3] += 1

    def compute() -> None:
        x = 0
        while True:
            x = (x * 31 + 7) % 1000003
            counts[4] += 1

    def guarded(body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                errors.append(repr(exc))

        return run

    for body in (writer, stat, nap, read, poll, compute):
        threading.Thread(target=guarded(body), daemon=True).start()
    with open(out + ".ready", "w") as fh:
        fh.write(str(os.getpid()))
    while True:
        time.sleep(0.1)
        with open(out + ".tmp", "w") as fh:
            json.dump({"counts": counts, "errors": errors}, fh)
        os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main()
