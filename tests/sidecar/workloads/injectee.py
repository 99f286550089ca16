"""An application for the seccomp-injection tests (attach --seccomp).

    python injectee.py DIR [--threads N] [--own-filter deny-seccomp|one-thread] [--marker M]

It starts N threads blocked in a futex wait and sleeps in short naps polling for DIR/go
(so the injection meets threads inside blocking, restartable syscalls), writing DIR/ready
first. On DIR/go: every thread opens DIR/thread-I for writing; the main thread makes
UNWATCHED getppid calls (stops counted by the test), opens DIR/main for writing, forks a
shell that records its own seccomp mode in DIR/child-seccomp (a write open) and execs
/bin/true, starts a long `sleep` child (its pid in DIR/sleeper), then writes DIR/done and
naps until killed.

--own-filter: before any thread starts, install a filter of its own that makes seccomp(2)
fail with EPERM (deny-seccomp: the injection is refused by the kernel), or install an
allow-all filter in one thread only (one-thread: the threads' filters differ).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import threading
import time

from sidecar import seccomp
from sidecar.syscalls import native_arch

UNWATCHED = 20_000


def deny_seccomp_program() -> list[seccomp.Insn]:
    arch = native_arch()
    ld, jeq, ret = (
        seccomp.BPF_LD | seccomp.BPF_W | seccomp.BPF_ABS,
        seccomp.BPF_JMP | seccomp.BPF_JEQ | seccomp.BPF_K,
        seccomp.BPF_RET | seccomp.BPF_K,
    )
    return [
        (ld, 0, 0, seccomp.OFFSET_NR),
        (jeq, 0, 1, arch.number("seccomp")),
        (ret, 0, 0, seccomp.SECCOMP_RET_ERRNO | 1),  # EPERM
        (ret, 0, 0, seccomp.SECCOMP_RET_ALLOW),
    ]


def install(program: list[seccomp.Insn]) -> None:
    fprog, keep = seccomp.pack_program(program)
    seccomp.install(fprog)
    del keep


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--own-filter", choices=["deny-seccomp", "one-thread"])
    parser.add_argument("--marker", help="only there to be matched by --match")
    opts = parser.parse_args()
    out = opts.dir
    if opts.own_filter == "deny-seccomp":
        install(deny_seccomp_program())
    go = threading.Event()
    started = threading.Barrier(opts.threads + 1)

    def worker(index: int) -> None:
        if index == 0 and opts.own_filter == "one-thread":
            install([(seccomp.BPF_RET | seccomp.BPF_K, 0, 0, seccomp.SECCOMP_RET_ALLOW)])
        started.wait()
        go.wait()  # futex wait: interrupted by the injection, restarted after it
        with open(os.path.join(out, f"thread-{index}"), "w") as fh:
            fh.write(str(threading.get_native_id()))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(opts.threads)]
    for thread in threads:
        thread.start()
    started.wait()
    with open(os.path.join(out, "ready"), "w") as fh:
        fh.write(str(os.getpid()))
    while not os.path.exists(os.path.join(out, "go")):
        time.sleep(0.01)
    go.set()
    for thread in threads:
        thread.join()
    for _ in range(UNWATCHED):
        os.getppid()
    with open(os.path.join(out, "main"), "w") as fh:
        fh.write("main")
    script = (
        'while read -r line; do case "$line" in Seccomp:*) echo "$line" > "$1";; esac; '
        "done < /proc/self/status; exec /bin/true"
    )
    child = os.path.join(out, "child-seccomp")
    subprocess.run(["/bin/sh", "-c", script, "sh", child], check=True)
    sleeper = subprocess.Popen(["sleep", "1000"])
    with open(os.path.join(out, "sleeper"), "w") as fh:
        fh.write(str(sleeper.pid))
    with open(os.path.join(out, "done"), "w") as fh:
        fh.write("done")
    libc = ctypes.CDLL(None)
    while True:
        libc.usleep(20_000)


if __name__ == "__main__":
    main()
