/*
 * The tracer's quiet stops, handled without the interpreter (sidecar/stoploop/__init__.py).
 *
 * Under FIM, most seccomp stops are an open, chmod, chown or unlink of a path no rule
 * watches: the Python tracer reads the registers, resolves the path the way the kernel will
 * (sidecar/resolve.py), asks the engine (Engine.open_is_quiet / path_is_quiet), finds it
 * quiet and resumes. That costs 10-12 us of interpreter per stop. Loop.wait() does the same
 * work here, for the cases where the answer is certain, and returns to Python every stop it
 * cannot decide alone: anything but a seccomp stop of a known thread that Python holds no
 * state for (a pending exec, an exit check, a stepped thread), any syscall outside its table,
 * any path that sidecar.resolve would resolve by a route not written here (a /proc path, a
 * missing file, a deleted or memfd target, an empty path), and any path a FIM rule might
 * match. Returning is always safe: the thread is still stopped and Python sees exactly the
 * stop it would have seen.
 *
 * What must hold: every stop decided here is one the Python tracer would also have found
 * quiet, resolving to the same path. tests/sidecar/test_stoploop.py checks `resolve` and
 * `normal` here against sidecar.resolve on real files and symlinks, `is_quiet` against the
 * engine, and real traced workloads with both loops.
 *
 * An open for writing that the policy re-checks at its exit (Requirements.recheck_writes) is
 * resumed with PTRACE_SYSCALL and noted here; at its exit stop the returned fd is read back
 * (/proc/PID/fd/N) and, when it is the file judged at entry (and no hard-link check applies),
 * the thread goes on. Otherwise, and at any other stop of that thread, the note is handed to
 * Python with the stop (Tracer._exit_checks), which then judges it as before.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PTRACE_EVENT_SECCOMP
#define PTRACE_EVENT_SECCOMP 7
#endif
#ifndef __WALL
#define __WALL 0x40000000
#endif

#define PATH_BUF 4096           /* PATH_MAX: a longer string goes to Python */
#define MAX_PENDING 512         /* exit checks noted here at once; more go to Python */
#define BUDGET 4096             /* quiet stops before Python gets to merge the counters */
#define MAX_PREFIXES 256
#define MAX_NR 4096             /* syscall numbers are below this on every Linux ABI */

/* What a syscall is, as decode.py's handlers read it. */
enum op {
    OP_OPEN = 1,   /* open(path, flags, mode) */
    OP_OPENAT,     /* openat(dirfd, path, flags, mode) */
    OP_CREAT,      /* creat(path, mode): O_CREAT|O_WRONLY|O_TRUNC */
    OP_PATH,       /* unlink, rmdir, chmod, chown, lchown: (path, ...) from the cwd */
    OP_PATHAT,     /* unlinkat, fchmodat: (dirfd, path, ...) */
    OP_FCHOWNAT,   /* fchownat(dirfd, path, uid, gid, flags) */
    OP_FD,         /* fchmod, fchown: (fd, ...) */
};

/* Whether a kind of stop can be quiet: the engine's answer before it looks at the path. */
enum mode { NEVER = 0, ALWAYS = 1, BY_PATH = 2 };

struct entry {
    int op;
    int follow;      /* OP_PATH / OP_PATHAT: whether a final symlink is followed */
    int mode_read;   /* non-open ops: the one mode */
    int mode_write;
};

struct pending {
    pid_t tid;
    int nr;
    int resume;      /* PTRACE_CONT, or PTRACE_SYSCALL for a thread that stops at every call */
    unsigned long long flags, mode;
    unsigned long long args[6];
    char path[PATH_BUF];
    size_t path_len;
};

typedef struct {
    PyObject_HEAD
    PyObject *threads, *procs, *pending_exec, *stepped, *exit_checks;
    PyObject *same_root_name;
    struct entry *table;   /* indexed by syscall number */
    int table_size;
    char *prefixes[MAX_PREFIXES];
    size_t prefix_len[MAX_PREFIXES];
    int n_prefixes;
    char *roots[MAX_PREFIXES];
    size_t root_len[MAX_PREFIXES];
    int n_roots;
    int recheck_writes;
    int every;             /* every syscall of every thread stops (attach without the filter) */
    unsigned char *visible; /* by syscall number: Python must see its entry (watched, chroot) */
    int visible_size;
    int check_inodes;      /* protected inodes exist: a non-O_EXCL open may be a hard link */
    unsigned int audit_arch;
    struct pending *pending;
    int n_pending;
    int wake;
    /* counters, taken by take_counts() */
    unsigned long long stops, syscall_stops, quiet, exit_stops;
} Loop;

/* ----------------------------------------------------------------- pure path logic */

static int has(const char *s, size_t n, const char *needle, size_t m)
{
    if (m > n)
        return 0;
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(s + i, needle, m) == 0)
            return 1;
    return 0;
}

/* sidecar.resolve._normal for an absolute path, in place: only when it holds "//" or "/."
 * (then posixpath.normpath, whose leading "//" _normal turns into "/"). */
static size_t normal(char *p, size_t n)
{
    if (n == 0 || p[0] != '/' || !(has(p, n, "//", 2) || has(p, n, "/.", 2)))
        return n;
    size_t out = 0, i = 0;
    size_t starts[PATH_BUF / 2 + 1];
    int depth = 0;
    while (i < n) {
        while (i < n && p[i] == '/')
            i++;
        size_t j = i;
        while (j < n && p[j] != '/')
            j++;
        size_t len = j - i;
        if (len == 0 || (len == 1 && p[i] == '.')) {
            /* skip */
        } else if (len == 2 && p[i] == '.' && p[i + 1] == '.') {
            if (depth > 0)
                out = starts[--depth];
        } else {
            starts[depth++] = out;
            p[out++] = '/';
            memmove(p + out, p + i, len);
            out += len;
        }
        i = j;
    }
    if (out == 0)
        p[out++] = '/';
    p[out] = '\0';
    return out;
}

static int starts_with(const char *s, size_t n, const char *prefix, size_t m)
{
    return n >= m && memcmp(s, prefix, m) == 0;
}

/* Engine._fim_rules(path) == [] without globs: not a root, under no root. */
static int outside(const Loop *self, const char *p, size_t n)
{
    for (int i = 0; i < self->n_roots; i++)
        if (n == self->root_len[i] && memcmp(p, self->roots[i], n) == 0)
            return 0;
    for (int i = 0; i < self->n_prefixes; i++)
        if (starts_with(p, n, self->prefixes[i], self->prefix_len[i]))
            return 0;
    return 1;
}

/* The engine's answer for a resolved path: 1 quiet, 0 evaluate in Python. `p` is a path
 * as sidecar.resolve returns it; the engine normalizes it first (Engine._fim_match). */
static int quiet_path(const Loop *self, int mode, char *p, size_t n)
{
    if (mode == ALWAYS)
        return 1;
    if (mode != BY_PATH || n == 0)
        return 0;  /* an empty path is quiet in Python too; not worth a case here */
    char buf[PATH_BUF];
    if (n >= sizeof buf)
        return 0;
    memcpy(buf, p, n);
    buf[n] = '\0';
    if (buf[0] == '/')
        n = normal(buf, n);
    else if (has(buf, n, "//", 2) || has(buf, n, "/.", 2))
        return 0;
    return outside(self, buf, n);
}

/* ------------------------------------------------------------ kernel path resolution */

static const char DELETED[] = " (deleted)";
#define DELETED_LEN (sizeof DELETED - 1)

/* readlink into buf (NUL-terminated); -1 on failure, -2 when it may not fit. */
static ssize_t read_link(const char *where, char *buf)
{
    ssize_t n = readlink(where, buf, PATH_BUF - 1);
    if (n < 0)
        return -1;
    if (n >= PATH_BUF - 1)
        return -2;
    buf[n] = '\0';
    return n;
}

/* sidecar.resolve.display is the identity for this target (else: leave it to Python). */
static int plain_display(const char *t, size_t n)
{
    if (starts_with(t, n, "/memfd:", 7))
        return 0;
    if (n >= DELETED_LEN && memcmp(t + n - DELETED_LEN, DELETED, DELETED_LEN) == 0)
        return 0;
    return 1;
}

/* sidecar.resolve._plain: 1 when the kernel reaches `path` through no symlink (or stops at
 * a missing component having met none); 0 otherwise, or when openat2 cannot tell. */
static int plain(const char *path)
{
    struct open_how how = {
        .flags = O_PATH | O_CLOEXEC,
        .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    long fd = syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
    if (fd >= 0) {
        close((int)fd);
        return 1;
    }
    return errno == ENOENT || errno == ENOTDIR;
}

/* The /proc links of where a relative path starts, most precise first (sidecar.resolve._start):
 * the dirfd, or the thread's own cwd (after unshare(CLONE_FS)) and then the process's. */
static int starts(pid_t pid, pid_t tid, int dirfd, char where[2][64])
{
    if (dirfd != AT_FDCWD) {
        snprintf(where[0], 64, "/proc/%d/fd/%d", pid, dirfd);
        return 1;
    }
    snprintf(where[0], 64, "/proc/%d/task/%d/cwd", pid, tid);
    snprintf(where[1], 64, "/proc/%d/cwd", pid);
    return 2;
}

/* Its canonical spelling (sidecar.resolve._start_path). */
static ssize_t start_path(pid_t pid, pid_t tid, int dirfd, char *buf)
{
    char where[2][64];
    ssize_t n = -1;
    for (int i = 0, count = starts(pid, tid, dirfd, where); i < count && n == -1; i++)
        n = read_link(where[i], buf);
    return n;
}

/* An O_PATH descriptor of it (sidecar.resolve._base). */
static int start_fd(pid_t pid, pid_t tid, int dirfd)
{
    char where[2][64];
    int fd = -1;
    for (int i = 0, count = starts(pid, tid, dirfd, where); i < count && fd < 0; i++)
        fd = open(where[i], O_PATH | O_CLOEXEC | O_DIRECTORY);
    return fd;
}

/* sidecar.resolve._opened: what the kernel finds for `path` from `base`. */
static ssize_t opened(const char *path, int base, int follow, char *out)
{
    int fd = openat(base, path, O_PATH | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
    if (fd < 0)
        return -1;
    char self_fd[40];
    snprintf(self_fd, sizeof self_fd, "/proc/self/fd/%d", fd);
    ssize_t n = read_link(self_fd, out);
    close(fd);
    return n;
}

/* sidecar.resolve.resolve(pid, tid, dirfd, raw, follow, same_root) for the routes written
 * here: the answer's length in `out`, or -1 when Python must resolve it. */
static ssize_t resolve(pid_t pid, pid_t tid, int dirfd, const char *raw, size_t raw_len,
                       int follow, int same_root, char *out)
{
    if (raw_len == 0)
        return -1;  /* AT_EMPTY_PATH: the dirfd itself */
    size_t k = 0;
    while (k < raw_len && raw[k] == '/')
        k++;
    if (k > 0 && starts_with(raw + k, raw_len - k, "proc", 4))
        return -1;  /* /proc/self and friends mean the reader: sidecar.resolve.without_self */
    char path[PATH_BUF + 64];
    int base = AT_FDCWD;
    if (raw[0] == '/') {
        if (same_root) {
            if (plain(raw)) {
                memcpy(out, raw, raw_len + 1);
                return (ssize_t)normal(out, raw_len);
            }
            memcpy(path, raw, raw_len + 1);
        } else {
            int n = snprintf(path, sizeof path, "/proc/%d/task/%d/root%s", pid, tid, raw);
            if (n < 0 || (size_t)n >= sizeof path)
                return -1;
        }
    } else {
        if (same_root && raw[raw_len - 1] != '/') {
            /* sidecar.resolve._relative_plain */
            char start[PATH_BUF];
            ssize_t s = start_path(pid, tid, dirfd, start);
            if (s < 0)
                return -1;
            if (start[0] == '/' &&
                !(s >= (ssize_t)DELETED_LEN && memcmp(start + s - DELETED_LEN, DELETED, DELETED_LEN) == 0)) {
                size_t n = (size_t)s;
                if (n + 1 + raw_len >= PATH_BUF)
                    return -1;
                if (!(n == 1 && start[0] == '/'))
                    start[n++] = '/';
                else
                    n = 1;
                memcpy(start + n, raw, raw_len + 1);
                n += raw_len;
                if (!((follow || memchr(raw, '/', raw_len)) && !plain(start))) {
                    memcpy(out, start, n + 1);
                    return (ssize_t)normal(out, n);
                }
            }
        }
        base = start_fd(pid, tid, dirfd);
        if (base < 0)
            return -1;  /* gone: Python guesses lexically */
        memcpy(path, raw, raw_len + 1);
    }
    ssize_t n = opened(path, base, follow, out);
    if (base != AT_FDCWD)
        close(base);
    if (n < 0 || !plain_display(out, (size_t)n))
        return -1;  /* missing (sidecar.resolve._missing), memfd or deleted: Python's */
    return n;
}

/* The fd's target as sidecar.resolve.fd_target gives it; -1 when Python must. */
static ssize_t fd_path(pid_t pid, long long fd, char *out)
{
    if (fd < 0 || fd > INT32_MAX)
        return -1;
    char where[64];
    snprintf(where, sizeof where, "/proc/%d/fd/%lld", pid, fd);
    ssize_t n = read_link(where, out);
    if (n < 0 || !plain_display(out, (size_t)n))
        return -1;
    return n;
}

/* ------------------------------------------------------------------ tracee memory */

/* The NUL-terminated string at addr, as ProcessMemory.cstring reads it; -1 when it is
 * unreadable or longer than PATH_BUF - 1 (Python reads those). */
static ssize_t read_string(pid_t pid, unsigned long long addr, char *out)
{
    if (addr == 0)
        return -1;
    size_t got = 0;
    while (got < PATH_BUF - 1) {
        unsigned long long here = addr + got;
        size_t room = 4096 - (size_t)(here & 4095);
        if (room > PATH_BUF - 1 - got)
            room = PATH_BUF - 1 - got;
        struct iovec local = {out + got, room}, remote = {(void *)(uintptr_t)here, room};
        ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (n <= 0)
            return -1;
        char *nul = memchr(out + got, '\0', (size_t)n);
        if (nul != NULL)
            return nul - out;
        got += (size_t)n;
    }
    return -1;
}

/* ------------------------------------------------------------------- the loop */

static int can_write(unsigned long long flags)
{
    /* sidecar.decode.can_write */
    return (flags & (O_TRUNC | O_CREAT)) || (flags & O_ACCMODE) == O_WRONLY ||
           (flags & O_ACCMODE) == O_RDWR;
}

static int open_follows(unsigned long long flags)
{
    return !((flags & O_NOFOLLOW) || ((flags & O_CREAT) && (flags & O_EXCL)));
}

static int32_t s32(unsigned long long v) { return (int32_t)(uint32_t)v; }

static struct pending *find_pending(Loop *self, pid_t tid)
{
    for (int i = 0; i < self->n_pending; i++)
        if (self->pending[i].tid == tid)
            return &self->pending[i];
    return NULL;
}

/* The note as Python keeps it: (nr, path, flags, mode, args); the slot is freed. */
static PyObject *take_note(Loop *self, struct pending *p)
{
    PyObject *path = PyUnicode_DecodeFSDefaultAndSize(p->path, (Py_ssize_t)p->path_len);
    PyObject *out = NULL;
    if (path != NULL) {
        out = Py_BuildValue("(iNKK(KKKKKK))", p->nr, path, p->flags, p->mode, p->args[0],
                            p->args[1], p->args[2], p->args[3], p->args[4], p->args[5]);
    }
    *p = self->pending[--self->n_pending];
    return out;
}

static int contains(PyObject *container, PyObject *key)
{
    if (PyDict_Check(container))
        return PyDict_GET_SIZE(container) > 0 && PyDict_Contains(container, key);
    return PySet_GET_SIZE(container) > 0 && PySet_Contains(container, key);
}

/* The thread's Process when Python holds nothing that this stop must see; NULL otherwise
 * (borrowed; -1 in *err on a Python error). *resume: how Tracer._resume would go on. */
static PyObject *eligible(Loop *self, pid_t tid, pid_t *tgid, int *same_root, int *resume,
                          int *err)
{
    PyObject *key = PyLong_FromLong(tid);
    if (key == NULL) {
        *err = 1;
        return NULL;
    }
    PyObject *proc = NULL;
    PyObject *group = PyDict_GetItemWithError(self->threads, key);
    if (group == NULL || contains(self->pending_exec, key) == 1 ||
        contains(self->exit_checks, key) == 1)
        goto done;
    *resume = self->every || contains(self->stepped, key) == 1 ? PTRACE_SYSCALL : PTRACE_CONT;
    proc = PyDict_GetItemWithError(self->procs, group);
    if (proc == NULL)
        goto done;
    PyObject *flag = PyObject_GetAttr(proc, self->same_root_name);
    if (flag == NULL) {
        proc = NULL;
        goto done;
    }
    *same_root = PyObject_IsTrue(flag);
    Py_DECREF(flag);
    *tgid = (pid_t)PyLong_AsLong(group);
done:
    Py_DECREF(key);
    if (PyErr_Occurred()) {
        *err = 1;
        return NULL;
    }
    return proc;
}

/* A watched syscall of the table at its seccomp or entry stop: 1 handled (the thread
 * resumed with `resume`), 0 for Python. */
static int decide(Loop *self, pid_t tid, pid_t pid, int same_root, int resume,
                  unsigned long long nr, const uint64_t *args)
{
    const struct entry *e = &self->table[nr];
    unsigned long long a[6];
    for (int i = 0; i < 6; i++)
        a[i] = args[i];
    char raw[PATH_BUF], path[PATH_BUF];
    ssize_t raw_len, n;
    unsigned long long flags = 0, fmode = 0;
    int mode, write = 0;
    switch (e->op) {
    case OP_OPEN:
    case OP_OPENAT:
    case OP_CREAT: {
        int at = e->op == OP_OPENAT;
        unsigned long long addr = a[at];
        if (e->op == OP_CREAT) {
            flags = O_CREAT | O_WRONLY | O_TRUNC;
            fmode = a[1];
        } else {
            flags = a[at + 1];
            fmode = a[at + 2];
        }
        write = can_write(flags);
        mode = write ? e->mode_write : e->mode_read;
        if (mode == NEVER)
            return 0;
        if ((raw_len = read_string(pid, addr, raw)) < 0)
            return 0;
        n = resolve(pid, tid, at ? s32(a[0]) : AT_FDCWD, raw, (size_t)raw_len,
                    open_follows(flags), same_root, path);
        break;
    }
    case OP_PATH:
    case OP_PATHAT:
    case OP_FCHOWNAT: {
        int at = e->op != OP_PATH;
        int follow = e->follow;
        if (e->op == OP_FCHOWNAT) {
            if (a[4] & AT_EMPTY_PATH)
                return 0;
            follow = !(a[4] & AT_SYMLINK_NOFOLLOW);
        }
        mode = e->mode_read;
        if (mode == NEVER)
            return 0;
        if ((raw_len = read_string(pid, a[at], raw)) < 0)
            return 0;
        n = resolve(pid, tid, at ? s32(a[0]) : AT_FDCWD, raw, (size_t)raw_len, follow,
                    same_root, path);
        break;
    }
    case OP_FD:
        mode = e->mode_read;
        if (mode == NEVER)
            return 0;
        n = fd_path(pid, s32(a[0]), path);
        break;
    default:
        return 0;
    }
    if (n < 0 || !quiet_path(self, mode, path, (size_t)n))
        return 0;
    int recheck = write && self->recheck_writes && e->op <= OP_CREAT;
    if (recheck && self->n_pending >= MAX_PENDING)
        return 0;  /* Python keeps its own */
    self->syscall_stops++;
    self->quiet++;
    int request = resume;
    if (recheck) {
        struct pending *p = &self->pending[self->n_pending++];
        p->tid = tid;
        p->nr = (int)nr;
        p->resume = resume;
        p->flags = flags;
        p->mode = fmode;
        memcpy(p->args, a, sizeof p->args);
        memcpy(p->path, path, (size_t)n + 1);
        p->path_len = (size_t)n;
        request = PTRACE_SYSCALL;
    }
    /* A failure is ESRCH (killed while stopped): its exit status comes through waitpid,
     * as after Tracer._resume. */
    ptrace(request, tid, 0, 0);
    return 1;
}

static int in_table(const Loop *self, unsigned long long nr)
{
    return nr < (unsigned long long)self->table_size && self->table[nr].op != 0;
}

/* A seccomp stop: 1 handled (the thread resumed), 0 for Python. */
static int on_seccomp(Loop *self, pid_t tid)
{
    int err = 0, same_root = 1, resume = PTRACE_CONT;
    pid_t pid = 0;
    if (eligible(self, tid, &pid, &same_root, &resume, &err) == NULL)
        return err ? -1 : 0;
    struct __ptrace_syscall_info info;
    if (ptrace(PTRACE_GET_SYSCALL_INFO, tid, (void *)sizeof info, &info) <= 0 ||
        info.op != PTRACE_SYSCALL_INFO_SECCOMP || info.arch != self->audit_arch ||
        !in_table(self, info.seccomp.nr))
        return 0;
    return decide(self, tid, pid, same_root, resume, info.seccomp.nr, info.seccomp.args);
}

/* A syscall-entry or -exit stop of a thread that stops at every syscall (attach mode
 * without the filter, or a process that refused it), as Tracer._on_syscall_stop: an exit,
 * or the entry of a syscall Python need not see, only resumes. 1 handled, 0 for Python. */
static int on_syscall(Loop *self, pid_t tid)
{
    int err = 0, same_root = 1, resume = PTRACE_CONT;
    pid_t pid = 0;
    if (eligible(self, tid, &pid, &same_root, &resume, &err) == NULL)
        return err ? -1 : 0;
    if (resume != PTRACE_SYSCALL)
        return 0;  /* a stop Python asked for */
    struct __ptrace_syscall_info info;
    if (ptrace(PTRACE_GET_SYSCALL_INFO, tid, (void *)sizeof info, &info) <= 0)
        return 0;
    if (info.op == PTRACE_SYSCALL_INFO_EXIT) {
        ptrace(PTRACE_SYSCALL, tid, 0, 0);
        return 1;
    }
    if (info.op != PTRACE_SYSCALL_INFO_ENTRY || info.arch != self->audit_arch)
        return 0;
    unsigned long long nr = info.entry.nr;
    if (in_table(self, nr))
        return decide(self, tid, pid, same_root, resume, nr, info.entry.args);
    if (nr >= (unsigned long long)self->visible_size || self->visible[nr])
        return 0;  /* watched, chroot and friends, or a number beyond the table: Python's */
    ptrace(PTRACE_SYSCALL, tid, 0, 0);
    return 1;
}

/* The exit stop of an open noted at entry: 1 handled, 0 for Python (note handed over). */
static int on_exit_check(Loop *self, pid_t tid, struct pending *p)
{
    PyObject *key = PyLong_FromLong(tid);
    if (key == NULL)
        return -1;
    PyObject *group = PyDict_GetItemWithError(self->threads, key);
    Py_DECREF(key);
    if (group == NULL)
        return PyErr_Occurred() ? -1 : 0;
    pid_t pid = (pid_t)PyLong_AsLong(group);
    struct __ptrace_syscall_info info;
    if (ptrace(PTRACE_GET_SYSCALL_INFO, tid, (void *)sizeof info, &info) <= 0 ||
        info.op != PTRACE_SYSCALL_INFO_EXIT)
        return 0;
    if (info.exit.rval >= 0) {
        /* Tracer._on_exit_check: the inode first (a second name of a protected file),
         * then the fd's target against the path judged at entry. */
        char where[64], target[PATH_BUF];
        struct stat st;
        snprintf(where, sizeof where, "/proc/%d/fd/%lld", pid, (long long)info.exit.rval);
        int created = (p->flags & O_CREAT) && (p->flags & O_EXCL);
        if (self->check_inodes && !created && stat(where, &st) == 0 && st.st_nlink >= 2)
            return 0;  /* maybe a second name of a protected file: Python looks it up */
        ssize_t n = read_link(where, target);
        if (n == -2 || (n >= 0 && !plain_display(target, (size_t)n)))
            return 0;  /* long, memfd or deleted: Python's display */
        if (n >= 0 && ((size_t)n != p->path_len || memcmp(target, p->path, (size_t)n) != 0))
            return 0;  /* not the file judged at entry: Python judges it */
        /* n == -1: the fd is already gone (another thread closed it): fd_target's None,
         * nothing to judge. */
    }
    self->exit_stops++;
    int resume = p->resume;
    *p = self->pending[--self->n_pending];
    ptrace(resume, tid, 0, 0);  /* as decide */
    return 1;
}

static const int SECCOMP_STATUS = (PTRACE_EVENT_SECCOMP << 16) | (SIGTRAP << 8) | 0x7f;
static const int SYSCALL_STATUS = ((SIGTRAP | 0x80) << 8) | 0x7f;

static PyObject *Loop_wait(Loop *self, PyObject *Py_UNUSED(ignored))
{
    if (self->pending == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the Loop was not configured");
        return NULL;
    }
    for (unsigned budget = 0; budget < BUDGET; budget++) {
        if (PyErr_CheckSignals() < 0)
            return NULL;
        if (self->wake) {
            self->wake = 0;
            break;
        }
        int status = 0;
        pid_t tid;
        Py_BEGIN_ALLOW_THREADS
        tid = waitpid(-1, &status, __WALL);
        Py_END_ALLOW_THREADS
        if (tid < 0)
            return Py_BuildValue("(iiO)", -1, errno, Py_None);
        self->stops++;
        struct pending *p = self->n_pending ? find_pending(self, tid) : NULL;
        int done;
        if (p != NULL)
            done = status == SYSCALL_STATUS ? on_exit_check(self, tid, p) : 0;
        else if (status == SECCOMP_STATUS)
            done = on_seccomp(self, tid);
        else
            done = status == SYSCALL_STATUS ? on_syscall(self, tid) : 0;
        if (done == 1)
            continue;
        self->stops--;  /* Python counts the stops it is given */
        if (done < 0)
            PyErr_Clear();  /* no memory for a key: Python handles the stop instead */
        PyObject *note = Py_None;
        if (p != NULL) {
            note = take_note(self, p);
            if (note == NULL)
                return NULL;
            return Py_BuildValue("(iiN)", tid, status, note);
        }
        return Py_BuildValue("(iiO)", tid, status, note);
    }
    return Py_BuildValue("(iiO)", 0, 0, Py_None);
}

static PyObject *Loop_take_counts(Loop *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = Py_BuildValue("(KKKK)", self->stops, self->syscall_stops, self->quiet,
                                  self->exit_stops);
    self->stops = self->syscall_stops = self->quiet = self->exit_stops = 0;
    return out;
}

static PyObject *Loop_take_pending(Loop *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    while (self->n_pending > 0) {
        pid_t tid = self->pending[self->n_pending - 1].tid;
        PyObject *note = take_note(self, &self->pending[self->n_pending - 1]);
        PyObject *item = note != NULL ? Py_BuildValue("(iN)", tid, note) : NULL;
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    return out;
}

static PyObject *Loop_wake(Loop *self, PyObject *Py_UNUSED(ignored))
{
    self->wake = 1;
    Py_RETURN_NONE;
}

/* For tests: resolve(pid, tid, dirfd, raw: bytes, follow, same_root) -> bytes | None. */
static PyObject *Loop_resolve(Loop *Py_UNUSED(self), PyObject *args)
{
    int pid, tid, dirfd, follow, same_root;
    const char *raw;
    Py_ssize_t raw_len;
    if (!PyArg_ParseTuple(args, "iiiy#pp", &pid, &tid, &dirfd, &raw, &raw_len, &follow, &same_root))
        return NULL;
    if (raw_len >= PATH_BUF || memchr(raw, '\0', (size_t)raw_len))
        Py_RETURN_NONE;
    char buf[PATH_BUF], out[PATH_BUF];
    memcpy(buf, raw, (size_t)raw_len);
    buf[raw_len] = '\0';
    ssize_t n = resolve(pid, tid, dirfd, buf, (size_t)raw_len, follow, same_root, out);
    if (n < 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(out, n);
}

/* For tests: is_quiet(nr, write, path: bytes) -> bool, the decision for a resolved path. */
static PyObject *Loop_is_quiet(Loop *self, PyObject *args)
{
    int nr, write;
    const char *path;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "ipy#", &nr, &write, &path, &n))
        return NULL;
    if (nr < 0 || nr >= self->table_size || self->table[nr].op == 0 || n >= PATH_BUF)
        Py_RETURN_FALSE;
    const struct entry *e = &self->table[nr];
    int mode = e->op <= OP_CREAT && write ? e->mode_write : e->mode_read;
    char buf[PATH_BUF];
    memcpy(buf, path, (size_t)n);
    return PyBool_FromLong(quiet_path(self, mode, buf, (size_t)n));
}

static int copy_strings(PyObject *seq, char **out, size_t *lens, int *count, const char *what)
{
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n > MAX_PREFIXES) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "more than %d %s", MAX_PREFIXES, what);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        char *s;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(PySequence_Fast_GET_ITEM(fast, i), &s, &len) < 0) {
            Py_DECREF(fast);
            return -1;
        }
        out[i] = PyMem_Malloc((size_t)len + 1);
        if (out[i] == NULL) {
            Py_DECREF(fast);
            PyErr_NoMemory();
            return -1;
        }
        memcpy(out[i], s, (size_t)len + 1);
        lens[i] = (size_t)len;
        *count = (int)i + 1;
    }
    Py_DECREF(fast);
    return 0;
}

/* Loop(threads, procs, pending_exec, stepped, exit_checks, table, prefixes, roots,
 *      recheck_writes, check_inodes, audit_arch)
 * table: {nr: (op, follow, mode_read, mode_write)}; prefixes, roots: bytes. */
static int Loop_init(Loop *self, PyObject *args, PyObject *Py_UNUSED(kwds))
{
    PyObject *table, *prefixes, *roots, *visible;
    int recheck, inodes, every;
    unsigned int arch;
    if (self->pending != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a Loop is configured once");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!OOppIpO", &PyDict_Type, &self->threads,
                          &PyDict_Type, &self->procs, &PyDict_Type, &self->pending_exec,
                          &PySet_Type, &self->stepped, &PyDict_Type, &self->exit_checks,
                          &PyDict_Type, &table, &prefixes, &roots, &recheck, &inodes, &arch,
                          &every, &visible))
        return -1;
    Py_INCREF(self->threads);
    Py_INCREF(self->procs);
    Py_INCREF(self->pending_exec);
    Py_INCREF(self->stepped);
    Py_INCREF(self->exit_checks);
    self->same_root_name = PyUnicode_InternFromString("same_root");
    self->recheck_writes = recheck;
    self->check_inodes = inodes;
    self->audit_arch = arch;
    self->every = every;
    self->pending = PyMem_Calloc(MAX_PENDING, sizeof(struct pending));
    self->visible = PyMem_Calloc(MAX_NR, 1);
    self->visible_size = MAX_NR;
    if (self->same_root_name == NULL || self->pending == NULL || self->visible == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyObject *seen = PySequence_Fast(visible, "visible: a sequence of syscall numbers");
    if (seen == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seen); i++) {
        long nr = PyLong_AsLong(PySequence_Fast_GET_ITEM(seen, i));
        if (nr < 0 || nr >= MAX_NR) {
            Py_DECREF(seen);
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "syscall number %ld out of range", nr);
            return -1;
        }
        self->visible[nr] = 1;
    }
    Py_DECREF(seen);
    long top = -1;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(table, &pos, &key, &value)) {
        long nr = PyLong_AsLong(key);
        if (nr < 0 || nr >= MAX_NR) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "syscall number %ld out of range", nr);
            return -1;
        }
        if (nr > top)
            top = nr;
    }
    self->table_size = (int)top + 1;
    self->table = PyMem_Calloc((size_t)self->table_size + 1, sizeof(struct entry));
    if (self->table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    pos = 0;
    while (PyDict_Next(table, &pos, &key, &value)) {
        struct entry e;
        if (!PyArg_ParseTuple(value, "iiii", &e.op, &e.follow, &e.mode_read, &e.mode_write))
            return -1;
        if (e.op < OP_OPEN || e.op > OP_FD) {
            PyErr_Format(PyExc_ValueError, "unknown op %d", e.op);
            return -1;
        }
        self->table[PyLong_AsLong(key)] = e;
    }
    if (copy_strings(prefixes, self->prefixes, self->prefix_len, &self->n_prefixes, "prefixes") < 0)
        return -1;
    return copy_strings(roots, self->roots, self->root_len, &self->n_roots, "roots");
}

static void Loop_dealloc(Loop *self)
{
    Py_XDECREF(self->threads);
    Py_XDECREF(self->procs);
    Py_XDECREF(self->pending_exec);
    Py_XDECREF(self->stepped);
    Py_XDECREF(self->exit_checks);
    Py_XDECREF(self->same_root_name);
    for (int i = 0; i < self->n_prefixes; i++)
        PyMem_Free(self->prefixes[i]);
    for (int i = 0; i < self->n_roots; i++)
        PyMem_Free(self->roots[i]);
    PyMem_Free(self->table);
    PyMem_Free(self->pending);
    PyMem_Free(self->visible);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *stoploop_normal(PyObject *Py_UNUSED(module), PyObject *arg)
{
    char *s;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(arg, &s, &n) < 0)
        return NULL;
    if (n >= PATH_BUF)
        Py_RETURN_NONE;
    char buf[PATH_BUF];
    memcpy(buf, s, (size_t)n);
    buf[n] = '\0';
    return PyBytes_FromStringAndSize(buf, (Py_ssize_t)normal(buf, (size_t)n));
}

static PyMethodDef Loop_methods[] = {
    {"wait", (PyCFunction)Loop_wait, METH_NOARGS,
     "wait() -> (tid, status, note): the next stop Python must handle; (0, 0, None) after a "
     "budget of quiet stops or a wake(); (-1, errno, None) when waitpid fails."},
    {"take_counts", (PyCFunction)Loop_take_counts, METH_NOARGS,
     "(stops, seccomp_stops, quiet, exit_stops) handled here since the last call."},
    {"take_pending", (PyCFunction)Loop_take_pending, METH_NOARGS,
     "[(tid, note)]: the exit checks noted here, handed to Python."},
    {"wake", (PyCFunction)Loop_wake, METH_NOARGS, "Make wait() return before its next waitpid."},
    {"resolve", (PyCFunction)Loop_resolve, METH_VARARGS, "For tests: the path resolution."},
    {"is_quiet", (PyCFunction)Loop_is_quiet, METH_VARARGS, "For tests: the path decision."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LoopType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sidecar.stoploop._stoploop.Loop",
    .tp_basicsize = sizeof(Loop),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The quiet-stop loop of one Tracer.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Loop_init,
    .tp_dealloc = (destructor)Loop_dealloc,
    .tp_methods = Loop_methods,
};

static PyMethodDef module_methods[] = {
    {"normal", stoploop_normal, METH_O, "For tests: sidecar.resolve._normal of an absolute path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_stoploop", "The tracer's quiet stops in C.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__stoploop(void)
{
    if (PyType_Ready(&LoopType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&LoopType);
    if (PyModule_AddObject(m, "Loop", (PyObject *)&LoopType) < 0) {
        Py_DECREF(&LoopType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "OP_OPEN", OP_OPEN);
    PyModule_AddIntConstant(m, "OP_OPENAT", OP_OPENAT);
    PyModule_AddIntConstant(m, "OP_CREAT", OP_CREAT);
    PyModule_AddIntConstant(m, "OP_PATH", OP_PATH);
    PyModule_AddIntConstant(m, "OP_PATHAT", OP_PATHAT);
    PyModule_AddIntConstant(m, "OP_FCHOWNAT", OP_FCHOWNAT);
    PyModule_AddIntConstant(m, "OP_FD", OP_FD);
    PyModule_AddIntConstant(m, "NEVER", NEVER);
    PyModule_AddIntConstant(m, "ALWAYS", ALWAYS);
    PyModule_AddIntConstant(m, "BY_PATH", BY_PATH);
    return m;
}
