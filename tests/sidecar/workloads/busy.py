"""Hundreds of short-lived processes and threads: `python busy.py PROCS THREADS`."""

from __future__ import annotations

import os
import subprocess
import sys
import threading


def main() -> None:
    procs, threads = int(sys.argv[1]), int(sys.argv[2])
    children = []
    for i in range(procs):
        if i % 4 == 0:
            children.append(subprocess.Popen(["/bin/true"]))
        else:
            pid = os.fork()
            if pid == 0:
                os._exit(i % 7)
            children.append(pid)
    for child in children:
        if isinstance(child, int):
            os.waitpid(child, 0)
        else:
            child.wait()
    done = []
    workers = [threading.Thread(target=lambda: done.append(os.getpid())) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    # A grandchild orphaned while still running: the sidecar (subreaper) must reap it.
    subprocess.Popen(["/bin/sh", "-c", "sleep 0.2 &"]).wait()
    print("busy done", len(children), len(done), flush=True)


if __name__ == "__main__":
    main()
