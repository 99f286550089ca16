"""Policy patterns compiled with RE2 (google-re2): matching time is linear in the input.

A policy's `argsPattern` runs on every exec's command line, which the workload controls.
With a backtracking engine (Python's `re`) a pattern such as `(\\w+\\s?)+$` takes
exponential time on a crafted argument, and the tracer (and every traced syscall waiting on
it) stalls with it. RE2 guarantees time linear in the input and refuses the constructs that
need backtracking (backreferences, lookaround): such a pattern is rejected when the policy
loads, with the reason, instead of stalling at runtime.

Globs (FIM paths, program names) are translated by `fnmatch` and compiled the same way.
"""

from __future__ import annotations

import fnmatch
from typing import Any

# RE2's memory budget per pattern (its default is 8 MiB); a pattern that needs more is
# refused at load time rather than falling back to slow matching.
MAX_PATTERN_MEMORY = 8 << 20


def _options() -> Any:
    import re2

    options = re2.Options()
    options.log_errors = False  # the error is reported to the user, not logged by RE2
    options.max_mem = MAX_PATTERN_MEMORY
    return options


def compile_pattern(pattern: str) -> Any:
    """An RE2 regular expression (`.search`, `.match`); raises ValueError with RE2's reason."""
    import re2

    try:
        return re2.compile(pattern, options=_options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(str(reason)) from None


def glob_regex(glob: str) -> str:
    """`fnmatch.translate` in RE2's dialect: `\\Z` is `\\z` there, and the atomic groups
    `(?>.*?fixed)` it writes between two stars (so that `/home/*/.ssh/*` cannot backtrack
    badly in Python's `re`) are plain groups, which RE2 accepts and runs in linear time
    anyway. Nothing else in a translation starts with `(?>`: a literal `(` is escaped."""
    translated = fnmatch.translate(glob).replace("(?>", "(?:")
    return translated[:-2] + r"\z" if translated.endswith(r"\Z") else translated


def compile_glob(glob: str) -> Any:
    return compile_pattern(glob_regex(glob))


def pattern_problem(pattern: str, what: str = "regular expression") -> str | None:
    """Why `pattern` cannot be a policy pattern, with the fix; None when it compiles."""
    try:
        compile_pattern(pattern)
    except ValueError as exc:
        return (
            f"the {what} {pattern!r} is not accepted by RE2 ({exc}); patterns run in linear "
            "time, so backreferences and lookaround are not available: rewrite it without "
            "them, and escape special characters with a backslash"
        )
    return None
