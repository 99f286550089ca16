"""Which package-manager subcommand a command line runs, by each tool's own grammar.

The subcommand is not "the first argument that does not start with a dash": global options
take values (`apt-get -o Dpkg::Options::=--force-confnew install x`, `pip --proxy URL install
x`, `npm --prefix DIR i x`, `apk -X URL add x`), so their values are skipped by the tool's
own list of value-taking options. Aliases are the tools' own (`npm i`, `npm isntall`,
`pnpm i`, `yarn` alone installs). `python -m pip`, `python3.11 -m pip`, `pip3.11` are pip.

Option lists from the tools' manuals: apt-get(8) / apt(8) "-o, -c, -t, -a"; dnf(8) and
yum(8) global options; apk(8) "GLOBAL OPTIONS"; `pip --help` "General Options"; npm-config(7)
/ `npm help install`; yarn and pnpm CLI docs; `gem help`, `cargo --help`, `go help`.
Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Options that consume the next argument when given without `=`, per tool (global options
# before the subcommand; for tools whose options may also follow it, those too).
VALUE_OPTIONS: dict[str, frozenset[str]] = {
    "apt": frozenset({"-o", "--option", "-c", "--config-file", "-t", "--target-release",
                      "--default-release", "-a", "--host-architecture", "-P",
                      "--build-profiles"}),
    "yum": frozenset({"-c", "--config", "-d", "--debuglevel", "-e", "--errorlevel",
                      "--installroot", "--releasever", "--setopt", "-x", "--exclude",
                      "--enablerepo", "--disablerepo", "--repo", "--repoid", "--repofrompath",
                      "--downloaddir", "--destdir", "--forcearch", "--color", "-R",
                      "--randomwait", "--rpmverbosity", "--disableplugin", "--enableplugin"}),
    "rpm": frozenset({"--root", "-r", "--dbpath", "--rcfile", "--define", "-D", "--eval",
                      "-E", "--macros", "--pipe", "--relocate", "--prefix", "--excludepath"}),
    "dpkg": frozenset({"--admindir", "--instdir", "--root", "--log", "--status-fd",
                       "--status-logger", "--path-include", "--path-exclude", "--ignore-depends"}),
    "apk": frozenset({"-X", "--repository", "-p", "--root", "--keys-dir", "--arch",
                      "--cache-dir", "--repositories-file", "--progress-fd", "--timeout",
                      "--wait", "-t", "--virtual"}),
    "pip": frozenset({"--proxy", "--log", "--log-file", "--local-log", "--cert",
                      "--client-cert", "--cache-dir", "--timeout", "--retries",
                      "--exists-action", "--trusted-host", "--python", "--keyring-provider",
                      "--use-feature", "--use-deprecated", "--progress-bar", "--root-user-action"}),
    "npm": frozenset({"--prefix", "-C", "--registry", "--userconfig", "--globalconfig",
                      "--cache", "-w", "--workspace", "--loglevel", "--before", "--tag",
                      "--omit", "--include", "--install-strategy"}),
    "yarn": frozenset({"--cwd", "--registry", "--cache-folder", "--modules-folder",
                       "--network-timeout", "--global-folder", "--mutex", "--use-yarnrc"}),
    "pnpm": frozenset({"-C", "--dir", "--filter", "-F", "--registry", "--store-dir",
                       "--reporter", "--workspace-root"}),
    "gem": frozenset({"--config-file", "-i", "--install-dir", "-n", "--bindir", "-s",
                      "--source", "-p", "--http-proxy", "-v", "--version", "--platform"}),
    "go": frozenset({"-C"}),
    "cargo": frozenset({"--config", "-C", "-Z", "--color"}),
}  # fmt: skip
VALUE_OPTIONS.update(
    {
        "apt-get": VALUE_OPTIONS["apt"],
        "aptitude": VALUE_OPTIONS["apt"],
        "dnf": VALUE_OPTIONS["yum"],
        "microdnf": VALUE_OPTIONS["yum"],
        "pip3": VALUE_OPTIONS["pip"],
    }
)
# The tools' own abbreviations and misspellings of their install subcommands.
ALIASES: dict[str, dict[str, str]] = {
    "npm": {alias: "install" for alias in ("i", "in", "ins", "inst", "insta", "instal",
                                            "isnt", "isnta", "isntal", "isntall", "add")}
    | {"ci": "ci", "clean-install": "ci", "ic": "ci", "install-clean": "ci",
       "isntall-clean": "ci", "up": "update", "upgrade": "update", "udpate": "update"},
    "pnpm": {"i": "install", "up": "update", "upgrade": "update"},
    "yum": {"in": "install", "up": "update"},
    "dnf": {"in": "install", "up": "upgrade", "update": "upgrade", "reinstall": "reinstall"},
}  # fmt: skip
# Where a subcommand may be preceded by a word that is not yet the subcommand.
PREFIX_WORDS: dict[str, frozenset[str]] = {"yarn": frozenset({"global"})}
# pip3.11 -> pip3, pip-3.11 -> pip, python3.12 -> python3
_VERSION_SUFFIX = re.compile(r"^(pip3?|python3?)-?(\d+(\.\d+)*)?$")
_PYTHON_VALUE_OPTIONS = frozenset({"-W", "-X", "--check-hash-based-pycs"})
_URL = re.compile(r"^(https?|ftp)://", re.IGNORECASE)


def tool_name(name: str) -> str:
    """A program name as the package-manager tables spell it (`pip3.11` -> `pip3`)."""
    match = _VERSION_SUFFIX.match(name)
    if match is None:
        return name
    base = match.group(1)
    # pip3.11 -> pip3; pip-3.11 and pip3 stay pip3; python3.12 -> python3
    version = match.group(2) or ""
    if base in ("pip", "python") and version.startswith("3"):
        return base + "3"
    return base


def python_module(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """`python [options] -m MODULE args...` -> (MODULE, [MODULE, *args]); None otherwise.
    Stops at `-c`/a script (then no module runs), skips the interpreter's value options."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-m" and i + 1 < len(argv):
            return argv[i + 1], [argv[i + 1], *argv[i + 2 :]]
        if arg.startswith("-m") and len(arg) > 2 and not arg.startswith("--"):
            return arg[2:], [arg[2:], *argv[i + 1 :]]
        if arg in _PYTHON_VALUE_OPTIONS:
            i += 2
            continue
        if arg in {"-c", "-"} or not arg.startswith("-"):
            return None
        i += 1
    return None


def subcommand(tool: str, args: Sequence[str]) -> tuple[str | None, int]:
    """The tool's subcommand in `args` (argv[1:]) and its index; (None, -1) when none."""
    value_options = VALUE_OPTIONS.get(tool, frozenset())
    prefixes = PREFIX_WORDS.get(tool, frozenset())
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if arg.startswith("-") and len(arg) > 1:
            # `-o X=Y` takes the next argument; `-oX=Y`, `--opt=value` carry their own
            takes_value = arg in value_options
            i += 2 if takes_value else 1
            continue
        if arg in prefixes:
            i += 1
            continue
        return ALIASES.get(tool, {}).get(arg, arg), i
    if i < len(args):
        return ALIASES.get(tool, {}).get(args[i], args[i]), i
    return None, -1


def install_command(tool: str, commands: Sequence[str], args: Sequence[str]) -> str | None:
    """Which of `commands` (the rule's install subcommands, or option-style commands such
    as `-i` for rpm/dpkg) the command line runs; None when it is not an install."""
    if tool in ("curl", "wget"):
        return next((a for a in args if _URL.match(a)), None)
    sub, _ = subcommand(tool, args)
    if sub is None and tool == "yarn":
        sub = "install"  # `yarn` alone installs the project's dependencies
    wanted = {ALIASES.get(tool, {}).get(c, c): c for c in commands if not c.startswith("-")}
    if sub is not None and sub in wanted:
        return wanted[sub]
    for command in commands:
        if command.startswith("-") and _has_option(command, args):
            return command
    return None


def _has_option(option: str, args: Sequence[str]) -> bool:
    for arg in args:
        if arg == "--":
            return False
        if arg == option or (option.startswith("--") and arg.startswith(option + "=")):
            return True
        # rpm -ivh / -Uvh: the mode letter comes first in a short-flag cluster (-qi is a query)
        if (
            len(option) == 2
            and not option.startswith("--")
            and arg.startswith(option)
            and arg[2:].isalpha()
        ):
            return True
    return False
