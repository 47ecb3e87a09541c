"""A small, valid registry + runbook tree in a temp dir, to break in tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ipai_ops.runbooks import REQUIRED_SECTIONS

MINI_REGISTRY = textwrap.dedent(
    """\
    schema_version: 1
    failure_modes:
      - code: TRANSPORT.DATABASE_UNAVAILABLE
        title: Database unavailable
        category: TRANSPORT
        family: network
        severity: high
        description: PostgreSQL cannot be reached.
        runbook: docs/runbooks/failures/TRANSPORT.DATABASE_UNAVAILABLE.md
        retryable: true
        http_status: 503
        max_attempts: 5
        signatures:
          - on: type
            pattern: OperationalError$
          - on: message
            pattern: could not connect to server|Connection refused
      - code: INTENT.ARGS_INVALID
        title: Intent arguments invalid
        category: INTENT
        family: data
        severity: medium
        description: The intent's args do not match its JSON Schema.
        runbook: docs/runbooks/failures/INTENT.ARGS_INVALID.md
        retryable: false
        http_status: 422
        aliases: [ARGS_INVALID]
        signatures:
          - on: type
            pattern: jsonschema\\.exceptions\\.ValidationError
          - on: text
            pattern: "is a required property"
      - code: BUILD.TEST_FAILED
        title: Tests failed
        category: BUILD
        family: test
        severity: high
        description: The test suite reported failures.
        runbook: docs/runbooks/failures/BUILD.TEST_FAILED.md
        retryable: false
        http_status: null
        signatures:
          - on: text
            pattern: "=+ \\\\d+ failed"
          - on: message
            pattern: "Connection refused by test fixture"
      - code: LEGACY.OLD_THING
        title: An old code
        category: LEGACY
        family: test
        severity: low
        description: Replaced by the test code.
        runbook: docs/runbooks/failures/LEGACY.OLD_THING.md
        retryable: false
        http_status: null
        lifecycle: deprecated
        replaced_by: BUILD.TEST_FAILED
        signatures:
          - on: text
            pattern: "=+ \\\\d+ failed"
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
    """
)


def add_lifecycle(text: str) -> str:
    """Every entry without a lifecycle gets ``lifecycle: active``."""
    out = []
    for block in text.split("\n  - code: "):
        if block.startswith("schema_version") or "lifecycle:" in block:
            out.append(block)
        else:
            out.append(block.rstrip("\n") + "\n    lifecycle: active\n")
    return "\n  - code: ".join(out)


def runbook_text(code: str, *, skip: str | None = None, extra: str = "") -> str:
    parts = [f"# {code}: title\n\nWhat it is.\n"]
    for section in REQUIRED_SECTIONS:
        if section == skip:
            continue
        parts.append(f"## {section}\n\nStep specific to {code}.\n")
    return "\n".join(parts) + extra


@pytest.fixture
def mini_repo(tmp_path: Path) -> Path:
    """<tmp>/ssot/errors/failure_modes.yaml + runbooks for every code."""
    text = add_lifecycle(MINI_REGISTRY)
    (tmp_path / "ssot" / "errors").mkdir(parents=True)
    (tmp_path / "ssot" / "errors" / "failure_modes.yaml").write_text(text)
    runbooks = tmp_path / "docs" / "runbooks" / "failures"
    runbooks.mkdir(parents=True)
    for code in (
        "TRANSPORT.DATABASE_UNAVAILABLE",
        "INTENT.ARGS_INVALID",
        "BUILD.TEST_FAILED",
        "LEGACY.OLD_THING",
        "UNCLASSIFIED.UNKNOWN",
    ):
        (runbooks / f"{code}.md").write_text(runbook_text(code))
    return tmp_path


@pytest.fixture
def mini_registry(mini_repo: Path):
    from ipai_ops.registry import load_registry

    return load_registry(mini_repo / "ssot" / "errors" / "failure_modes.yaml")
