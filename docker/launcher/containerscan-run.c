/*
 * containerscan-run: the entry point of the self-contained sidecar launcher.
 *
 *     /containerscan/bin/containerscan-run [SIDECAR-RUN-OPTIONS] -- COMMAND [ARGS...]
 *
 * runs `containerscan sidecar run [SIDECAR-RUN-OPTIONS] -- COMMAND [ARGS...]` on the Python
 * bundled beside it, through the dynamic loader bundled beside it:
 *
 *     ROOT/lib/ld.so --library-path ROOT/lib ROOT/bin/python3 -I -B -m check sidecar run ...
 *
 * ROOT is the directory above this program's (/proc/self/exe; its absolute argv[0] or
 * /containerscan when /proc is missing). Statically linked, so it needs nothing from the
 * image it runs in, glibc or musl or neither. The library path is a loader argument, not
 * LD_LIBRARY_PATH, and Python runs isolated (-I: no PYTHON* variables, no user site, not the
 * working directory on sys.path), so the application's environment reaches the workload
 * unchanged: nothing is added to it. Built by docker/launcher/bundle.py.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef DEFAULT_ROOT
#define DEFAULT_ROOT "/containerscan"
#endif
#define SELF "/bin/containerscan-run"

/* ROOT: this program's path without its last two components (bin/containerscan-run). */
static int find_root(const char *argv0, char *root, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", root, size - 1);
    if (n > 0) {
        root[n] = '\0';
    } else if (argv0 != NULL && argv0[0] == '/' && strlen(argv0) < size) {
        strcpy(root, argv0);
    } else if (strlen(DEFAULT_ROOT SELF) < size) {
        strcpy(root, DEFAULT_ROOT SELF);
    } else {
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        char *slash = strrchr(root, '/');
        if (slash == NULL)
            return -1;
        *slash = '\0';
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const char *fixed[] = {"-I", "-B", "-m", "check", "sidecar", "run"};
    const size_t nfixed = sizeof(fixed) / sizeof(fixed[0]);
    char root[PATH_MAX], loader[PATH_MAX + 16], libs[PATH_MAX + 16], python[PATH_MAX + 16];
    int has_separator = 0;

    if (find_root(argc > 0 ? argv[0] : NULL, root, sizeof(root)) != 0) {
        fprintf(stderr, "containerscan-run: cannot find the launcher's directory\n");
        return 127;
    }
    snprintf(loader, sizeof(loader), "%s/lib/ld.so", root);
    snprintf(libs, sizeof(libs), "%s/lib", root);
    snprintf(python, sizeof(python), "%s/bin/python3", root);
    for (int i = 1; i < argc; i++)
        has_separator |= strcmp(argv[i], "--") == 0;
    if (argc < 2 || (has_separator && strcmp(argv[argc - 1], "--") == 0)) {
        fprintf(stderr, "usage: %s [SIDECAR-RUN-OPTIONS] -- COMMAND [ARGS...]\n",
                argc > 0 ? argv[0] : "containerscan-run");
        return 2;
    }
    /* loader, --library-path, libs, python, fixed..., [--], argv[1..], NULL */
    char **args = calloc((size_t)argc + nfixed + 6, sizeof(char *));
    if (args == NULL)
        return 127;
    size_t n = 0;
    args[n++] = loader;
    args[n++] = "--library-path";
    args[n++] = libs;
    args[n++] = python;
    for (size_t i = 0; i < nfixed; i++)
        args[n++] = (char *)fixed[i];
    if (!has_separator)
        args[n++] = "--"; /* `containerscan-run app --flag`: all of it is the command */
    for (int i = 1; i < argc; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    execv(loader, args);
    fprintf(stderr, "containerscan-run: cannot run %s: %s\n", loader, strerror(errno));
    return errno == ENOENT ? 127 : 126;
}
