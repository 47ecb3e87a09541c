"""Classification precedence: explicit code, then signatures by specificity and root cause, then fallback."""

from __future__ import annotations

import psycopg2
import pytest

from ipai_ops.classify import classify, classify_exception, qualified_type


def test_explicit_code_wins_over_signatures(mini_registry):
    result = classify(
        mini_registry,
        explicit_code="INTENT.ARGS_INVALID",
        error_type="psycopg2.OperationalError",
        message="could not connect to server",
    )
    assert (result.code, result.matched_by) == ("INTENT.ARGS_INVALID", "explicit")


def test_legacy_alias_resolves_to_dotted_code(mini_registry):
    assert classify(mini_registry, explicit_code="ARGS_INVALID").code == "INTENT.ARGS_INVALID"


def test_unknown_explicit_code_falls_through_to_signatures(mini_registry):
    result = classify(mini_registry, explicit_code="NOT.A_CODE", message="Connection refused")
    assert (result.code, result.matched_by) == ("TRANSPORT.DATABASE_UNAVAILABLE", "signature")


def test_deprecated_explicit_code_maps_to_its_replacement(mini_registry):
    assert classify(mini_registry, explicit_code="LEGACY.OLD_THING").code == "BUILD.TEST_FAILED"


def test_type_tier_beats_message_tier(mini_registry):
    # message matches BUILD.TEST_FAILED's message signature, type matches INTENT's type signature
    result = classify(
        mini_registry,
        error_type="jsonschema.exceptions.ValidationError",
        message="Connection refused by test fixture",
    )
    assert result.code == "INTENT.ARGS_INVALID"
    assert result.signature == r"type:jsonschema\.exceptions\.ValidationError"


def test_on_one_line_the_more_specific_signature_wins(mini_registry):
    # TRANSPORT's "Connection refused" and BUILD's "Connection refused by test fixture" both
    # read the message; the longer literal is the more specific reading (file order is not used)
    result = classify(mini_registry, message="Connection refused by test fixture")
    assert result.code == "BUILD.TEST_FAILED"
    assert classify(mini_registry, message="Connection refused").code == "TRANSPORT.DATABASE_UNAVAILABLE"


def test_text_tier_and_deprecated_codes_never_match(mini_registry):
    result = classify(mini_registry, text="collected 12 items\n===== 3 failed, 9 passed in 1.2s =====")
    assert result.code == "BUILD.TEST_FAILED"  # LEGACY.OLD_THING has the same signature but is deprecated


def test_fallback_when_nothing_matches(mini_registry):
    result = classify(mini_registry, error_type="ValueError", message="something odd")
    assert result.is_fallback and result.code == "UNCLASSIFIED.UNKNOWN" and result.signature is None


def test_classify_real_exceptions(mini_registry):
    try:
        psycopg2.connect("postgresql://nobody@127.0.0.1:1/none", connect_timeout=1)
    except psycopg2.OperationalError as exc:
        result = classify_exception(mini_registry, exc)
    assert result.code == "TRANSPORT.DATABASE_UNAVAILABLE"
    assert qualified_type(ValueError()) == "ValueError"

    class Typed(Exception):
        failure_code = "ARGS_INVALID"

    assert classify_exception(mini_registry, Typed("x")).code == "INTENT.ARGS_INVALID"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {
                "error_type": "psycopg2.OperationalError",
                "message": 'connection to server at "10.0.0.5", port 5432 failed: Connection refused',
            },
            "TRANSPORT.DATABASE_UNAVAILABLE",
        ),
        (
            {
                "text": "Warning: Path Validation Error: Path(s) specified in the action for caching do(es) not exist,"
                " hence no cache is being saved."
            },
            "CI.CACHE_PATH_MISSING",
        ),
        (
            {"text": "src/app.ts(12,5): error TS2322: Type 'string' is not assignable to type 'number'."},
            "BUILD.TYPECHECK_FAILED",
        ),
        (
            {"text": "========================= 2 failed, 31 passed in 4.02s ========================="},
            "BUILD.TEST_FAILED",
        ),
        (
            {
                "text": "=========================== short test summary info ============================\n"
                "ERROR tests/test_x.py::test_y - RuntimeError: boom\n"
                "=================== 1 passed, 1 deselected, 1 error in 0.03s ==================="
            },
            "BUILD.TEST_FAILED",
        ),
        (
            {"text": "=============================== 1 error in 0.09s ==============================="},
            "BUILD.TEST_FAILED",
        ),
        ({"text": "bash: line 1: foo: command not found"}, "ENV.COMMAND_NOT_FOUND"),
        ({"text": "sh: 1: foo: not found"}, "ENV.COMMAND_NOT_FOUND"),
        ({"text": "/usr/bin/env: \u2018python9\u2019: No such file or directory"}, "ENV.COMMAND_NOT_FOUND"),
        (
            {"text": 'sh: line 1: vite: command not found\nError: Command "vite build" exited with 127'},
            "ENV.COMMAND_NOT_FOUND",
        ),
        ({"text": "FileNotFoundError: [Errno 2] No such file or directory: 'foo'"}, "UNCLASSIFIED.UNKNOWN"),
        ({"text": "cat: ./notes.txt: Permission denied"}, "PERMISSION.DENIED"),
        ({"message": "API rate limit exceeded for installation ID 123."}, "GITHUB.RATE_LIMITED"),
        ({"code": "ODOO_EXEC_ERROR", "message": "KeyError: 'name'"}, "INTENT.HANDLER_CRASHED"),
        ({"message": "nothing in the registry looks like this"}, "UNCLASSIFIED.UNKNOWN"),
        # a "Timeout:" label (Playwright's assertion detail) is no exception type; the types are
        ({"text": "    Timeout: 5000ms"}, "UNCLASSIFIED.UNKNOWN"),
        ({"text": "httpx.ConnectTimeout: timed out"}, "TRANSPORT.UPSTREAM_TIMEOUT"),
        ({"text": "TimeoutError: timed out"}, "TRANSPORT.UPSTREAM_TIMEOUT"),
        # a NuGet warning fails nothing; the compile error behind it does
        (
            {
                "text": "x.csproj : warning NU1608: Detected package version outside of dependency constraint\n"
                "/src/A.cs(42,20): error CS0023: Operator '.' cannot be applied to operand of type 'void'"
            },
            "BUILD.COMPILE_FAILED",
        ),
        (
            {"text": "x.csproj : error NU1608: Detected package version outside of dependency constraint"},
            "DEPENDENCY.RESOLUTION_FAILED",
        ),
    ],
)
def test_shipped_registry_classifies_real_lines(registry, kwargs, expected):
    kwargs = dict(kwargs)
    assert classify(registry, explicit_code=kwargs.pop("code", None), **kwargs).code == expected
