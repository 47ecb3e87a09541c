"""One matching model: subjects, precedence (specificity on a line, root cause across lines,
the first failed step, consequences vs the failed command), evidence, captures, the shape cache."""

from __future__ import annotations

import textwrap

import pytest

from ipai_ops.classify import classify, matching
from ipai_ops.registry import parse_registry


def registry_of(entries: str):
    """A registry of the given entries plus the fallback (families/priorities as written)."""
    text = "schema_version: 1\nfailure_modes:\n" + textwrap.indent(textwrap.dedent(entries), "  ")
    text += textwrap.indent(
        textwrap.dedent(
            """\
            - code: UNCLASSIFIED.UNKNOWN
              title: Unclassified
              category: UNCLASSIFIED
              family: unknown
              severity: medium
              description: Matched no signature.
              runbook: docs/runbooks/failures/UNCLASSIFIED.UNKNOWN.md
              retryable: false
              http_status: null
              signatures: []
              fallback: true
              lifecycle: active
            """
        ),
        "  ",
    )
    registry, problems = parse_registry(text)
    assert registry is not None, problems
    return registry


def mode(code: str, family: str, signatures: str, priority: int | None = None) -> str:
    category = code.split(".", maxsplit=1)[0]
    extra = f"  priority: {priority}\n" if priority is not None else ""
    return (
        f"- code: {code}\n  title: {code} title\n  category: {category}\n  family: {family}\n{extra}"
        "  severity: high\n  description: A failure for the tests.\n"
        f"  runbook: docs/runbooks/failures/{code}.md\n  retryable: false\n  http_status: null\n"
        f"  signatures:\n{textwrap.indent(textwrap.dedent(signatures), '    ')}  lifecycle: active\n"
    )


@pytest.fixture(scope="module")
def mini():
    return registry_of(
        mode("DEP.INSTALL_FAILED", "dependency", "- {on: message, pattern: 'npm ERR! code E\\w+'}\n")
        + mode(
            "NET.CONNECTION_FAILED",
            "network",
            "- {on: message, pattern: 'Connection refused'}\n"
            "- {on: message, pattern: 'npm ERR! code ECONN', priority: 3}\n",
            priority=-25,
        )
        + mode(
            "TEST.FAILED",
            "test",
            "- {on: message, pattern: '^(?P<test>\\S+::\\S+) FAILED$'}\n"
            "- {on: text, pattern: '== \\d+ failed'}\n"
            "- {on: command, pattern: '\\btest\\b'}\n",
        )
        + mode(
            "LINT.FAILED",
            "lint",
            "- {on: message, pattern: 'offenses? detected'}\n- {on: command, pattern: '\\blint\\b'}\n",
        )
        + mode(
            "DEPLOY.VERCEL.BUILD_FAILED",
            "compile",
            '- {on: message, pattern: \'Error: Command "[^"\\n]{1,200}" exited with \\d+\', priority: -10}\n',
        )
        + mode("ENV.KEY_MISSING", "config", "- {on: message, pattern: \"KeyError: '(?P<variable>[A-Z][A-Z0-9_]+)'\"}\n")
    )


def test_message_signatures_read_every_log_line_and_type_signatures_read_type_lines(mini):
    result = classify(mini, text="setup\nTraceback (most recent call last):\nKeyError: 'OPENAI_API_KEY'\n")
    assert (result.code, result.captures["variable"]) == ("ENV.KEY_MISSING", "OPENAI_API_KEY")
    assert (3, "signature") in [(e.line, e.role) for e in result.evidence]


def test_on_one_line_the_signature_priority_decides(mini):
    # "npm ERR! code ECONNRESET" is read by the generic install signature and by the
    # network one; the network signature's own priority (3) makes it the reading of the line.
    assert classify(mini, message="npm ERR! code ECONNRESET").code == "NET.CONNECTION_FAILED"


def test_across_lines_the_root_cause_wins_and_generic_conditions_yield_to_test_verdicts(mini):
    log = "npm ERR! code EINTEGRITY\ntests/a.py::test_b FAILED\n== 1 failed in 2s =="
    assert classify(mini, text=log).code == "DEP.INSTALL_FAILED"  # dependency ranks above test
    noisy = "E ConnectionError: Connection refused\ntests/a.py::test_b FAILED\n== 1 failed in 2s =="
    result = classify(mini, text=noisy)
    assert result.code == "TEST.FAILED" and "NET.CONNECTION_FAILED" in result.also
    assert result.captures["test"] == "tests/a.py::test_b"


def test_the_first_failed_step_is_the_cause(mini):
    log = "\n".join(
        [
            "$ npm test",
            "tests/a.py::test_b FAILED",
            'The command "npm test" exited with 1.',
            "$ npm run lint",
            "3 offenses detected",
            'The command "npm run lint" exited with 1.',
        ]
    )
    result = classify(mini, text=log)
    assert result.code == "TEST.FAILED" and result.headline == "tests/a.py::test_b FAILED"


def test_the_failed_command_decides_when_the_step_printed_nothing_known(mini):
    result = classify(mini, text='$ npm run lint\ncould not load the config\nThe command "npm run lint" exited with 1.')
    assert (result.code, result.matched_by) == ("LINT.FAILED", "command")
    assert result.captures == {"command": "npm run lint", "exit_code": 1}
    roles = {e.role for e in result.evidence}
    assert roles == {"command", "context"}  # the marker line, and the error-looking line above it


def test_within_a_failed_command_the_program_says_more_than_its_arguments():
    registry = registry_of(
        mode("TEST.FAILED", "test", "- {on: command, pattern: 'testresults'}\n")
        + mode("LINT.FAILED", "lint", "- {on: command, pattern: '\\bflake8\\b'}\n")
    )
    command = "flake8 --output-file=lint-testresults.xml --format junit-xml"
    log = f'$ {command}\nsomething went wrong\nThe command "{command}" exited with 1.'
    # the longer pattern matches an argument; the program decides
    assert classify(registry, text=log).code == "LINT.FAILED"


def test_a_consequence_line_yields_to_what_the_command_says(mini):
    result = classify(mini, text='Running "npm test"\nError: Command "npm test" exited with 1')
    assert result.code == "TEST.FAILED"


def test_lines_outside_the_failed_step_matter_only_when_nothing_inside_does(mini):
    log = "\n".join(
        [
            "$ bundle exec rubocop",
            "3 offenses detected",  # a lint step that printed offenses but passed (no marker)
            "$ npm test",
            "== 1 failed in 2s ==",
            'The command "npm test" exited with 1.',
        ]
    )
    assert classify(mini, text=log).code == "TEST.FAILED"


def test_an_unmatched_log_falls_back_with_its_exit_marker_as_evidence(mini):
    result = classify(mini, text='$ ./build.sh\nboom\nThe command "./build.sh" exited with 2.')
    assert result.is_fallback and result.captures == {"exit_code": 2, "command": "./build.sh"}
    assert [(e.line, e.role) for e in result.evidence] == [(3, "marker")]


def test_an_unmatched_log_shows_the_error_looking_lines_where_it_failed(mini):
    # No signature decided, so the person who will decide sees the lines they would read first:
    # the failure region's error-looking lines nearest the marker (at most three), in log order.
    log = "\n".join(
        [
            "$ ./build.sh",
            "error: stale cache entry ignored",  # outside the three nearest the marker
            "compiling widgets",
            "widget.c: fatal: frobnicator exploded",
            "0 errors in the linker",  # says no error: not shown
            "cannot continue after frobnicator failure",
            "aborted",
            'The command "./build.sh" exited with 2.',
        ]
    )
    result = classify(mini, text=log)
    assert result.is_fallback and result.headline is None
    lines = [(e.line, e.role) for e in result.evidence]
    assert lines == [(4, "context"), (6, "context"), (7, "context"), (8, "marker")]


@pytest.mark.parametrize(
    ("verdict", "passes"),
    [
        ("Done. Your build exited with 0.", True),
        ("Finished: SUCCESS", True),
        ("Job succeeded", True),
        ("Done. Your build exited with 1.", False),
        ("Finished: FAILURE", False),
    ],
)
def test_a_log_whose_ci_system_says_the_job_passed_is_not_a_failure(mini, verdict, passes):
    log = "$ npm install\nnpm ERR! code ECONNRESET\nretrying...\nadded 12 packages\n" + verdict
    result = classify(mini, text=log)
    if passes:
        assert result.is_fallback and result.captures == {"exit_code": 0}
        assert [(e.line, e.role) for e in result.evidence] == [(5, "passed")]
    else:
        assert result.code == "NET.CONNECTION_FAILED"
    # a message given with the log is classified as usual
    assert classify(mini, message="npm ERR! code ECONNRESET", text=log).code == "NET.CONNECTION_FAILED"


def test_a_step_that_failed_before_a_passing_verdict_still_counts(mini):
    log = '$ npm test\n== 1 failed in 2s ==\nThe command "npm test" exited with 1.\nJob succeeded'
    assert classify(mini, text=log).code == "TEST.FAILED"


def test_a_deciding_line_ending_in_a_colon_brings_its_reason_along(mini):
    result = classify(mini, text="setting up\nConnection refused:\n  db.internal:5432 is not listening\ndone")
    assert [(e.line, e.role) for e in result.evidence] == [(2, "signature"), (3, "context")]


def test_evidence_is_capped_and_keeps_the_first_and_last_deciding_lines(mini):
    log = "\n".join(f"tests/a.py::test_{n} FAILED" for n in range(50))
    result = classify(mini, text=log)
    lines = [e.line for e in result.evidence]
    assert len(lines) <= 8 and lines[:2] == [1, 2] and lines[-1] == 50


def test_the_set_is_one_linear_scan_whatever_the_number_of_codes(registry):
    engine = matching.matcher_for(registry)
    assert engine.signature_count == sum(len(m.signatures) for m in registry.modes if m.active)
    assert matching.relaxed("a{1,300}b{2,5}c\\{1,300\\}") == "a{1,}b{2,5}c\\{1,300\\}"


def test_explicit_codes_and_aliases_win_and_carry_no_evidence(registry):
    result = classify(registry, explicit_code="ARGS_INVALID", message="Connection refused")
    assert (result.code, result.matched_by, result.evidence) == ("INTENT.ARGS_INVALID", "explicit", ())


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        # the everyday errors (texts shaped like the real ones; the corpus has the real ones)
        ({"message": "KeyError: 'OPENAI_API_KEY'"}, "ENV.KEY_MISSING"),
        ({"message": "OPENAI_API_KEY is required"}, "AGENT.PROVIDER_KEY_MISSING"),
        ({"message": "codex_exec mode failed to return valid structured JSON"}, "AGENT.OUTPUT_SCHEMA_INVALID"),
        (
            {"message": "provider base_url is missing a scheme or host: 'api.openai.com/v1'"},
            "AGENT.PROVIDER_BASE_URL_INVALID",
        ),
        ({"message": "run.json is incompatible with this runner (schema version 3)"}, "AGENT.RUN_METADATA_INVALID"),
        ({"message": "validator exited with code 1: report has 3 failures"}, "AGENT.VERIFICATION_FAILED"),
        (
            {
                "error_type": "stripe._error.SignatureVerificationError",
                "message": "No signatures found matching the expected signature for payload",
            },
            "WEBHOOK.SIGNATURE_INVALID",
        ),
        (
            {
                "error_type": "stripe._error.SignatureVerificationError",
                "message": "Timestamp outside the tolerance zone",
            },
            "WEBHOOK.TIMESTAMP_STALE",
        ),
        (
            {"message": "(SecretNotFound) A secret with (name/id) db-password was not found in this key vault."},
            "VAULT.KEY_MISSING",
        ),
        ({"text": ";; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 1234"}, "DNS.RECORD_MISSING"),
        (
            {
                "message": "Validate failed: Migrations have failed validation\n"
                "Migration checksum mismatch for migration version 3"
            },
            "MIGRATION.VALIDATION_FAILED",
        ),
        ({"text": 'Error: Command "npm run build" exited with 1'}, "DEPLOY.VERCEL.BUILD_FAILED"),
        (
            {"text": 'src/a.ts(3,7): error TS2322: x\nError: Command "npm run build" exited with 1'},
            "BUILD.TYPECHECK_FAILED",
        ),
        (
            {"text": 'sh: line 1: vite: command not found\nError: Command "vite build" exited with 127'},
            "ENV.COMMAND_NOT_FOUND",
        ),
    ],
)
def test_the_shipped_registry_types_everyday_errors(registry, kwargs, code):
    assert classify(registry, **kwargs).code == code


def test_every_registry_example_classifies_to_its_code(registry):
    wrong = [
        (mode.code, example[:80], classify(registry, text=example).code)
        for mode in registry.active()
        for example in mode.examples
        if classify(registry, text=example).code != mode.code
    ]
    assert wrong == []
    missing = [m.code for m in registry.active() if not m.fallback and not m.examples]
    assert missing == [], "every code needs at least one real example text"
