"""Typing rules: a finished command -> succeeded / cancelled / a typed failure, in documented order."""

from __future__ import annotations

import signal

import pytest

from ipai_ops.runs.outcome import infer_kind, program_name, type_outcome

PYTEST_FAIL = "FAILED tests/test_x.py::test_a - assert 1 == 2\n===== 1 failed, 3 passed in 0.12s =====\n"


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        (["pytest", "-q"], "test"),
        (["/usr/bin/python3", "-m", "pytest", "tests"], "test"),
        (["python3.11", "-m", "mypy", "ipai_ops"], "typecheck"),
        (["uv", "run", "pytest"], "test"),
        (["poetry", "run", "--", "ruff", "check", "."], "lint"),
        (["npx", "--yes", "eslint", "."], "lint"),
        (["npx", "tsc", "--noEmit"], "typecheck"),
        (["pnpm", "exec", "vitest", "run"], "test"),
        (["npm", "test"], "test"),
        (["npm", "run", "typecheck"], "typecheck"),
        (["yarn", "lint"], "lint"),
        (["make", "test"], "test"),
        (["go", "test", "./..."], "test"),
        (["cargo", "clippy"], "lint"),
        (["env", "CI=1", "jest", "--ci"], "test"),
        (["FOO=1", "pyright"], "typecheck"),
        (["bash", "-c", "cd web && npm ci && npx jest"], "test"),
        (["black", "--check", "."], "lint"),
        (["./agent.sh"], None),
        (["python", "agent.py"], None),
        (["npm", "run", "build"], None),
    ],
)
def test_infer_kind_from_the_program(argv, kind):
    assert infer_kind(argv) == kind


def test_program_name_sees_through_python_m_and_launchers():
    assert program_name(["/venv/bin/python", "-m", "pytest.__main__"]) == "pytest"
    assert program_name(["uv", "run", "--frozen", "mypy"]) == "mypy"
    assert program_name(["./scripts/agent"]) == "agent"


def test_exit_zero_succeeds_whatever_the_output_says(registry):
    out = type_outcome(registry, argv=["pytest"], returncode=0, stdout_text=PYTEST_FAIL)
    assert (out.status, out.code, out.exit_status) == ("succeeded", None, 0)


def test_timeout_wins_over_everything(registry):
    out = type_outcome(
        registry, argv=["pytest"], returncode=-signal.SIGKILL, timed_out=True, timeout_seconds=3, kind="test"
    )
    assert (out.code, out.exit_status, out.reason) == ("BUILD.TIMEOUT", 124, "timeout")
    assert "timed out after 3s" in out.message


@pytest.mark.parametrize(
    ("returncode", "exit_status", "sig"),
    [
        (-signal.SIGKILL, 137, "SIGKILL"),
        (-signal.SIGSEGV, 139, "SIGSEGV"),
        (137, 137, "SIGKILL"),
        (134, 134, "SIGABRT"),
    ],
)
def test_killed_by_a_signal_is_a_crash(registry, returncode, exit_status, sig):
    out = type_outcome(registry, argv=["pytest"], returncode=returncode, kind="test", stdout_text=PYTEST_FAIL)
    assert (out.code, out.exit_status, out.signal) == ("BUILD.AGENT_CRASHED", exit_status, sig)
    assert out.classification.mode.retryable


def test_a_forwarded_signal_is_a_cancellation_not_a_failure(registry):
    out = type_outcome(registry, argv=["agent"], returncode=-signal.SIGINT, cancelled_by=signal.SIGINT)
    assert (out.status, out.code, out.exit_status) == ("cancelled", None, 130)


def test_cannot_start_is_typed_with_the_shell_conventions(registry):
    missing = type_outcome(registry, argv=["nope"], returncode=None, spawn_error=FileNotFoundError(2, "No such file"))
    assert (missing.code, missing.exit_status, missing.error_type) == (
        "ENV.COMMAND_NOT_FOUND",
        127,
        "run.command_not_found",
    )
    denied = type_outcome(registry, argv=["./x"], returncode=None, spawn_error=PermissionError(13, "Permission denied"))
    assert (denied.code, denied.exit_status, denied.error_type) == (
        "ENV.COMMAND_NOT_FOUND",
        126,
        "run.command_not_executable",
    )
    shell = type_outcome(registry, argv=["sh", "-c", "jest"], returncode=127, stderr_text="sh: 1: jest: not found\n")
    assert (shell.code, shell.exit_status) == ("ENV.COMMAND_NOT_FOUND", 127)
    assert "sh: 1: jest: not found" in shell.message
    no_x = type_outcome(
        registry, argv=["sh", "-c", "./x"], returncode=126, stderr_text="sh: 1: ./x: Permission denied\n"
    )
    assert (no_x.code, no_x.exit_status, no_x.error_type) == (
        "ENV.COMMAND_NOT_FOUND",
        126,
        "run.command_not_executable",
    )


def test_a_missing_program_inside_a_command_is_typed_by_its_signature(registry):
    # make runs the recipe through /bin/sh, which answers 127; make itself exits 2
    stderr = "/bin/sh: 1: vite: not found\nmake: *** [Makefile:3: build] Error 127\n"
    out = type_outcome(registry, argv=["make", "build"], returncode=2, stderr_text=stderr)
    assert (out.code, out.reason, out.exit_status) == ("ENV.COMMAND_NOT_FOUND", "signature", 2)
    assert out.message == "/bin/sh: 1: vite: not found"


def test_explicit_kind_wins_over_signatures(registry):
    out = type_outcome(
        registry,
        argv=["./check.sh"],
        returncode=1,
        kind="lint",
        stdout_text="Found 3 errors in 1 file (checked 4 source files)",
    )
    assert (out.code, out.reason) == ("BUILD.LINT_FAILED", "kind")


def test_signatures_over_the_tails_then_the_matching_line_is_the_message(registry):
    out = type_outcome(registry, argv=["./ci.sh"], returncode=1, stdout_text="collected 4 items\n" + PYTEST_FAIL)
    assert (out.code, out.reason) == ("BUILD.TEST_FAILED", "signature")
    assert out.message == "1 failed, 3 passed in 0.12s"


def test_an_agent_gets_its_specific_cause_before_crashed(registry):
    said = "openai.AuthenticationError: Error code: 401 - Incorrect API key provided: sk-abc"
    stderr = f"Traceback (most recent call last):\n  ...\n{said}\n"
    specific = type_outcome(registry, argv=["./agent"], returncode=1, kind="agent", stderr_text=stderr)
    assert (specific.code, specific.reason) == ("AGENT.PROVIDER_KEY_MISSING", "signature")
    assert "sk-abc" in specific.message  # the raw line: the envelope redacts it
    plain = type_outcome(registry, argv=["./agent"], returncode=1, kind="agent", stderr_text="bye\n")
    assert (plain.code, plain.reason) == ("BUILD.AGENT_CRASHED", "kind")


def test_the_program_name_types_when_nothing_else_does(registry):
    out = type_outcome(registry, argv=["mypy", "."], returncode=1, stdout_text="something new\n")
    assert (out.code, out.reason, out.kind) == ("BUILD.TYPECHECK_FAILED", "program", "typecheck")


def test_unknown_failure_falls_back_with_its_last_line(registry):
    out = type_outcome(registry, argv=["./deploy"], returncode=2, stderr_text="boom: the widget exploded\n\n")
    assert (out.code, out.reason) == ("UNCLASSIFIED.UNKNOWN", "fallback")
    assert out.message == "deploy exited with status 2: boom: the widget exploded"


def test_an_unknown_kind_is_a_programming_error(registry):
    with pytest.raises(ValueError, match="kind must be one of"):
        type_outcome(registry, argv=["x"], returncode=1, kind="build")
