"""Every active code's runbook passes the validator and renders (issue: runbooks people can follow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipai_ops import config, runbooks
from ipai_ops.registry import load_registry

from .conftest import runbook_text

ROOT = config.repo_root()
REGISTRY = load_registry()


@pytest.mark.parametrize("code", [m.code for m in REGISTRY.active()])
def test_runbook_of_every_active_code_passes_and_renders(code):
    mode = REGISTRY[code]
    assert runbooks.check_runbook(mode, REGISTRY, ROOT) == []
    text = (ROOT / mode.runbook).read_text(encoding="utf-8")
    html = runbooks.render_html(text)
    for section in runbooks.REQUIRED_SECTIONS:
        assert f"<h2>{section}</h2>" in html
    assert html.count('<code class="language-mermaid">') == text.count("```mermaid")
    # the signatures section quotes every registry pattern of the code
    for sig in mode.signatures:
        assert sig.pattern in text, f"{code}: signature {sig.pattern!r} is not quoted in its runbook"


@pytest.mark.parametrize("doc", ["docs/runbooks/index.md", "docs/runbooks/_template.md"])
def test_index_and_template_mermaid_blocks_are_closed_and_quoted(doc):
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    blocks, unclosed = runbooks._fences(lines)
    assert unclosed is None
    for opening, info in blocks:
        if info == "mermaid":
            assert runbooks._unsafe_mermaid_labels(lines, opening) == []


def test_index_lists_every_active_code():
    index = (ROOT / "docs" / "runbooks" / "index.md").read_text(encoding="utf-8")
    missing = [m.code for m in REGISTRY.active() if f"failures/{m.code}.md" not in index]
    assert missing == []


def test_unquoted_mermaid_label_with_syntax_characters_is_reported(mini_repo: Path):
    extra = '\n```mermaid\nflowchart TD\n  A[check the disk; then restart] --> B("quoted; fine")\n```\n'
    path = mini_repo / "docs" / "runbooks" / "failures" / "BUILD.TEST_FAILED.md"
    path.write_text(runbook_text("BUILD.TEST_FAILED", extra=extra))
    registry = load_registry(mini_repo / "ssot" / "errors" / "failure_modes.yaml")
    problems = runbooks.check_runbook(registry["BUILD.TEST_FAILED"], registry, mini_repo)
    assert [p.message for p in problems] == [
        "mermaid label 'check the disk; then restart' needs quotes: it holds a character Mermaid parses as syntax"
    ]


def test_placeholder_sections_warn_and_fail_only_under_strict(mini_repo: Path, capsys):
    from ipai_ops import ssot
    from ipai_ops.cli import main

    path = mini_repo / "docs" / "runbooks" / "failures" / "BUILD.TEST_FAILED.md"
    text = runbook_text("BUILD.TEST_FAILED")
    text = text.replace("## Likely causes\n\nStep specific to BUILD.TEST_FAILED.", "## Likely causes\n\n1. TODO")
    text = text.replace(
        "## Diagnosis\n\nStep specific to BUILD.TEST_FAILED.",
        "## Diagnosis\n\n<Commands and SQL, one per cause, telling the causes apart.>",
    )
    path.write_text(text)
    registry_file = mini_repo / "ssot" / "errors" / "failure_modes.yaml"

    report = ssot.check(registry_path=registry_file, repo_root=mini_repo)
    assert report.ok  # a stub (as the Odoo wizard writes it) keeps working locally...
    assert [(p.severity, p.message.split(" is ")[0]) for p in report.problems] == [
        ("warning", "section '## Likely causes'"),
        ("warning", "section '## Diagnosis'"),
    ]
    assert not ssot.check(registry_path=registry_file, repo_root=mini_repo, strict=True).ok  # ...and fails CI

    args = ["ssot", "check", "--registry", str(registry_file), "--repo-root", str(mini_repo)]
    assert main(args) == 0
    assert main([*args, "--strict"]) == 1
    err = capsys.readouterr().err
    assert "warning: section '## Likely causes' is still a placeholder ('TODO')" in err
    assert "2 problem(s)" in err
