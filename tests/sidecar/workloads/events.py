"""A workload that triggers every event type the tracer decodes, in a given directory.

    python events.py DIR PORT UDP_PORT

DIR holds a fake `pip` (put on PATH by the caller). Each step prints `step NAME` first, so
a test can see how far it got; failures of the calls themselves (chown as non-root) are
ignored: the attempt is what the tracer sees.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys


def step(name: str) -> None:
    print("step", name, flush=True)


def main() -> None:
    base, port, udp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.chdir(base)
    step("exec")
    subprocess.run(["/bin/true"], check=True)
    step("open-write")
    with open("written.txt", "w") as fh:  # relative: resolved against the cwd
        fh.write("x")
    step("open-read")
    with open(os.path.join(base, "written.txt")) as fh:
        fh.read()
    step("openat-dirfd")
    dirfd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    fd = os.open("viadirfd.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=dirfd)
    os.close(fd)
    step("chmod")
    os.chmod("written.txt", 0o640)
    step("chown")
    with contextlib.suppress(PermissionError):
        os.chown("written.txt", os.getuid(), os.getgid())
    step("rename")
    os.rename("viadirfd.txt", "renamed.txt")
    step("unlink")
    os.unlink("renamed.txt", dir_fd=dirfd)
    os.close(dirfd)
    step("connect")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"hi")
    step("connect6")
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET6) as s6:
        s6.settimeout(1)
        s6.connect(("::1", port))
    step("unix")
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as su:
        su.connect(os.path.join(base, "no.sock"))
    step("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as su:
        su.sendto(b"ping", ("127.0.0.1", udp_port))
    step("pip")
    subprocess.run(["pip", "install", "nothing"], check=True)
    step("done")


if __name__ == "__main__":
    main()
