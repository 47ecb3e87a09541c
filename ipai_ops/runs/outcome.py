"""A finished command -> a typed outcome: never just "build failed".

The rules, first match wins, are docs/agent_runs.md, "Typing rules"; :func:`type_outcome`
applies them in that order.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from ipai_ops.classify import Classification, classify, legacy
from ipai_ops.registry import Registry

TIMEOUT_EXIT = 124
NOT_EXECUTABLE_EXIT = 126
NOT_FOUND_EXIT = 127

CODE_TIMEOUT = "BUILD.TIMEOUT"
CODE_CRASHED = "BUILD.AGENT_CRASHED"
CODE_NOT_STARTED = "ENV.COMMAND_NOT_FOUND"
KIND_CODES = {
    "test": "BUILD.TEST_FAILED",
    "lint": "BUILD.LINT_FAILED",
    "typecheck": "BUILD.TYPECHECK_FAILED",
    "agent": CODE_CRASHED,
}
KINDS = tuple(KIND_CODES)
#: Shell exit statuses (128 + n) that mean the command died of signal n.
CRASH_EXIT_STATUSES = {
    128 + signal.SIGABRT: signal.SIGABRT,
    128 + signal.SIGBUS: signal.SIGBUS,
    128 + signal.SIGKILL: signal.SIGKILL,
    128 + signal.SIGSEGV: signal.SIGSEGV,
}

#: Program (basename, or ``python -m`` module) -> kind.
PROGRAM_KINDS = {
    "pytest": "test",
    "py.test": "test",
    "jest": "test",
    "vitest": "test",
    "mocha": "test",
    "ava": "test",
    "tox": "test",
    "nox": "test",
    "unittest": "test",
    "phpunit": "test",
    "rspec": "test",
    "ruff": "lint",
    "eslint": "lint",
    "flake8": "lint",
    "pylint": "lint",
    "prettier": "lint",
    "black": "lint",
    "isort": "lint",
    "biome": "lint",
    "stylelint": "lint",
    "shellcheck": "lint",
    "golangci-lint": "lint",
    "pre-commit": "lint",
    "mypy": "typecheck",
    "pyright": "typecheck",
    "basedpyright": "typecheck",
    "tsc": "typecheck",
    "vue-tsc": "typecheck",
    "pytype": "typecheck",
}
#: Subcommands of multi-purpose tools: (program, subcommand) -> kind.
SUBCOMMAND_KINDS = {
    ("go", "test"): "test",
    ("go", "vet"): "lint",
    ("cargo", "test"): "test",
    ("cargo", "nextest"): "test",
    ("cargo", "clippy"): "lint",
    ("cargo", "fmt"): "lint",
    ("dotnet", "test"): "test",
    ("deno", "test"): "test",
    ("deno", "lint"): "lint",
    ("deno", "check"): "typecheck",
    ("bun", "test"): "test",
}
#: Script names run through npm/pnpm/yarn/make ("npm test", "make lint").
SCRIPT_KINDS = {
    "test": "test",
    "tests": "test",
    "check:test": "test",
    "lint": "lint",
    "format:check": "lint",
    "fmt:check": "lint",
    "typecheck": "typecheck",
    "type-check": "typecheck",
    "types": "typecheck",
    "tsc": "typecheck",
}
#: Launchers whose first non-option argument is the real program.
_LAUNCHERS = {"env", "npx", "bunx", "pnpx", "uvx", "nice", "time", "nohup", "xvfb-run", "stdbuf", "timeout"}
#: Launchers with a verb first (``uv run pytest``, ``poetry run mypy``, ``pnpm exec tsc``).
_VERB_LAUNCHERS = {
    "uv": {"run"},
    "poetry": {"run"},
    "pipenv": {"run"},
    "hatch": {"run"},
    "pdm": {"run"},
    "rye": {"run"},
    "pnpm": {"exec", "dlx"},
    "yarn": {"exec", "dlx"},
    "npm": {"exec"},
    "bundle": {"exec"},
}
_SCRIPT_RUNNERS = {"npm", "pnpm", "yarn", "bun", "make", "just", "task"}
_SHELLS = {"sh", "bash", "zsh", "dash", "ksh"}
_PYTHON = re.compile(r"^(?:python|pypy)(?:\d+(?:\.\d+)?)?$")
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_DECORATION = re.compile(r"^[=_\-\s]*|[=_\-\s]*$")
_EXIT = "run.exit_status"
_ERRORISH = re.compile(r"(?i)\b(?:error|exception|fatal|traceback)\b|Error:")
_SHELL_NOT_FOUND = re.compile(
    r"(?:command not found|: not found|No such file or directory|Permission denied|cannot execute)"
)


@dataclass(frozen=True)
class Outcome:
    """How one execution ended, typed."""

    #: ``succeeded``, ``failed`` or ``cancelled``.
    status: str
    #: The exit status ``ipai-ops run`` reports for it (timeout 124, signal 128+n).
    exit_status: int
    #: What decided the code: exit_zero, cancelled, timeout, signal, exit_signal,
    #: not_found, not_executable, kind, signature, program, fallback.
    reason: str
    classification: Classification | None = None
    message: str = ""
    error_type: str | None = None
    signal: str | None = None
    #: The kind that typed it (explicit or inferred from the program).
    kind: str | None = None
    #: The message grouping version 1 chose, when it differs (feeds the group key of the
    #: upgrade window: ``build_envelope(previous_message=)``).
    previous_message: str | None = None

    @property
    def code(self) -> str | None:
        return self.classification.code if self.classification else None

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def _base(word: str) -> str:
    return os.path.basename(word).lower()


def _strip_launchers(argv: Sequence[str]) -> list[str]:
    words = list(argv)
    for _ in range(8):
        while words and _ENV_ASSIGNMENT.match(words[0]):
            words = words[1:]
        if not words:
            return words
        head = _base(words[0])
        if head in _LAUNCHERS:
            rest = words[1:]
            while rest and (rest[0].startswith("-") or _ENV_ASSIGNMENT.match(rest[0]) or rest[0][:1].isdigit()):
                rest = rest[1:]
            words = rest
            continue
        verbs = _VERB_LAUNCHERS.get(head)
        if verbs and len(words) > 1 and words[1] in verbs:
            rest = words[2:]
            while rest and rest[0].startswith("-"):
                rest = rest[1:]
            words = rest
            continue
        if head in _SHELLS and "-c" in words[1:]:
            index = words.index("-c", 1)
            if index + 1 < len(words):
                try:
                    words = shlex.split(words[index + 1])
                except ValueError:
                    return words
                # "a && b": the last command decides the exit status.
                for sep in ("&&", "||", ";", "|"):
                    if sep in words:
                        words = words[len(words) - words[::-1].index(sep) :]
                continue
        return words
    return words


def program_name(argv: Sequence[str]) -> str:
    """A short name for the program ``argv`` runs (``pytest`` for ``python -m pytest``)."""
    words = _strip_launchers(argv)
    if not words:
        return _base(argv[0]) if argv else "command"
    head = _base(words[0])
    if _PYTHON.match(head) and "-m" in words[1:]:
        index = words.index("-m", 1)
        if index + 1 < len(words):
            return words[index + 1].split(".")[0]
    return head


def infer_kind(argv: Sequence[str]) -> str | None:
    """test / lint / typecheck from the program, or None when the name says nothing."""
    words = _strip_launchers(argv)
    if not words:
        return None
    program = program_name(words)
    if program in PROGRAM_KINDS:
        return PROGRAM_KINDS[program]
    rest = [w for w in words[1:] if not w.startswith("-")]
    if rest and (program, rest[0]) in SUBCOMMAND_KINDS:
        return SUBCOMMAND_KINDS[(program, rest[0])]
    if program in _SCRIPT_RUNNERS and rest:
        script = rest[1] if rest[0] in ("run", "run-script") and len(rest) > 1 else rest[0]
        return SCRIPT_KINDS.get(script)
    return None


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(text: str) -> str | None:
    for line in reversed(text.splitlines()):
        clean = _DECORATION.sub("", line).strip()
        if clean:
            return clean[:300]
    return None


def _error_line(text: str) -> str | None:
    """The last line of the stderr tail that says error/exception/fatal, else its last line."""
    lines = [ln.strip() for ln in text.splitlines()[-200:] if ln.strip()]
    for line in reversed(lines):
        if _ERRORISH.search(line):
            return line[:1000]
    return lines[-1][:1000] if lines else None


def _message_v1(text: str, generic: str) -> str:
    """The message grouping version 1 gave a failed command typed by a text signature: the
    first output line its deciding pattern matched."""
    _, pattern = legacy.classify_v1_signature(text=text)
    match = pattern.search(text) if pattern is not None else None
    if match is None:
        return generic
    line = _matching_text_line(text, match)
    return (_DECORATION.sub("", line).strip() or line)[:1000]


def _undecorated(line: str | None) -> str | None:
    """A deciding line without pytest-style ``=====`` framing."""
    if not line:
        return None
    return (_DECORATION.sub("", line).strip() or line)[:1000]


def _matching_text_line(text: str, match: re.Match[str]) -> str:
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start : end if end >= 0 else len(text)].strip()[:300]


def _spawn_outcome(
    registry: Registry, program: str, spawn_error: OSError | None, returncode: int | None, *, detail: str | None = None
) -> Outcome:
    """The command never ran: ENV.COMMAND_NOT_FOUND.

    The program is not installed in this image/virtualenv, PATH was not passed through
    (sudo, systemd, a CI step), or the file is not executable. The code is not retryable
    (re-running without changing the environment fails the same way) and blocks. The
    error type (``run.command_not_found``, exit 127 / ``run.command_not_executable``,
    exit 126) tells the two cases apart inside the code.
    """
    not_found = (
        isinstance(spawn_error, FileNotFoundError)
        or (spawn_error is not None and spawn_error.errno == errno.ENOENT)
        or (spawn_error is None and returncode == NOT_FOUND_EXIT)
    )
    if not_found:
        message = f"command not found: {program!r} is not installed or not on PATH"
        error_type, exit_status, reason = "run.command_not_found", NOT_FOUND_EXIT, "not_found"
    else:
        why = f" ({spawn_error.strerror})" if spawn_error is not None and spawn_error.strerror else ""
        message = f"command cannot be executed: {program!r}{why}"
        error_type, exit_status, reason = "run.command_not_executable", NOT_EXECUTABLE_EXIT, "not_executable"
    if detail:
        message += f": {detail}"
    return Outcome(
        "failed", exit_status, reason, classify(registry, explicit_code=CODE_NOT_STARTED), message, error_type
    )


def type_outcome(
    registry: Registry,
    *,
    argv: Sequence[str],
    returncode: int | None,
    timed_out: bool = False,
    timeout_seconds: float | None = None,
    spawn_error: OSError | None = None,
    cancelled_by: int | None = None,
    kind: str | None = None,
    stdout_text: str = "",
    stderr_text: str = "",
) -> Outcome:
    """Type one execution. ``stdout_text``/``stderr_text`` are the *raw* tails (never stored)."""
    if kind is not None and kind not in KIND_CODES:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    program = program_name(argv)
    if spawn_error is not None:
        return _spawn_outcome(registry, program, spawn_error, None)
    if returncode == 0 and not timed_out:
        return Outcome("succeeded", 0, "exit_zero")
    if cancelled_by is not None:
        name = signal_name(cancelled_by)
        return Outcome("cancelled", 128 + cancelled_by, "cancelled", None, f"cancelled by {name}", None, name)
    if timed_out:
        limit = f" after {timeout_seconds:g}s" if timeout_seconds else ""
        return Outcome(
            "failed",
            TIMEOUT_EXIT,
            "timeout",
            classify(registry, explicit_code=CODE_TIMEOUT),
            f"{program} timed out{limit}; its process group was killed",
            "run.timeout",
        )
    assert returncode is not None
    if returncode < 0 or returncode in CRASH_EXIT_STATUSES:
        number = -returncode if returncode < 0 else int(CRASH_EXIT_STATUSES[returncode])
        name = signal_name(number)
        how = f"killed by {name}" if returncode < 0 else f"exited with status {returncode} ({name})"
        return Outcome(
            "failed",
            128 + number if returncode < 0 else returncode,
            "signal" if returncode < 0 else "exit_signal",
            classify(registry, explicit_code=CODE_CRASHED),
            f"{program} {how} before reporting a result",
            "run.killed",
            name,
        )
    text = "\n".join(t for t in (stdout_text, stderr_text) if t)
    shell_said = _SHELL_NOT_FOUND.search(stderr_text or "")
    if returncode in (NOT_FOUND_EXIT, NOT_EXECUTABLE_EXIT) and shell_said:
        return _spawn_outcome(registry, program, None, returncode, detail=_matching_text_line(stderr_text, shell_said))
    last = _last_line(stderr_text) or _last_line(stdout_text)
    generic = f"{program} exited with status {returncode}" + (f": {last}" if last else "")
    if kind in ("test", "lint", "typecheck"):
        code = KIND_CODES[kind]
        return Outcome("failed", returncode, "kind", classify(registry, explicit_code=code), generic, _EXIT, kind=kind)
    found = classify(registry, text=text) if text else None
    if found is not None and not found.is_fallback:
        message = _undecorated(found.headline) or generic
        previous = _message_v1(text, generic)
        return Outcome(
            "failed",
            returncode,
            "signature",
            found,
            message,
            _EXIT,
            kind=kind,
            previous_message=previous if previous != message else None,
        )
    # Then `on: message` signatures over the error line the command ended with (an agent's
    # "Incorrect API key provided", a script's "Connection refused"), after every text one.
    line = _error_line(stderr_text)
    found = classify(registry, message=line) if line else None
    if found is not None and not found.is_fallback:
        return Outcome("failed", returncode, "signature", found, line, _EXIT, kind=kind)
    if kind == "agent":
        crashed = classify(registry, explicit_code=CODE_CRASHED)
        return Outcome("failed", returncode, "kind", crashed, generic, _EXIT, kind=kind)
    inferred = infer_kind(argv)
    if inferred is not None:
        return Outcome(
            "failed",
            returncode,
            "program",
            classify(registry, explicit_code=KIND_CODES[inferred]),
            generic,
            _EXIT,
            kind=inferred,
        )
    return Outcome("failed", returncode, "fallback", classify(registry), generic, _EXIT)
