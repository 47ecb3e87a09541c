"""Registry loading and validation: every problem reported at once, with file, line and code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ipai_ops import ssot
from ipai_ops.cli import main
from ipai_ops.registry import CODE_RE, RegistryError, load_registry, parse_registry

from .conftest import MINI_REGISTRY, add_lifecycle, runbook_text

REPO = Path(__file__).resolve().parents[2]


def _registry_file(repo: Path) -> Path:
    return repo / "ssot" / "errors" / "failure_modes.yaml"


def test_shipped_registry_loads_and_covers_the_seed_codes(registry):
    seed = {
        "CI.CACHE_PATH_MISSING",
        "CI.CONFIG_TRIGGER_STALE",
        "MIGRATION.VALIDATION_FAILED",
        "MIGRATION.APPLY_FAILED",
        "FUNCTION.DEPLOY_FAILED",
        "ENV.KEY_MISSING",
        "VAULT.KEY_MISSING",
        "WEBHOOK.SIGNATURE_INVALID",
        "WEBHOOK.DELIVERY_DUPLICATE",
        "DEPLOY.VERCEL.BUILD_FAILED",
        "DNS.RECORD_MISSING",
        "DNS.PLACEHOLDER_ACTIVE",
    }
    codes = {m.code for m in registry}
    assert seed <= codes
    assert all(CODE_RE.match(c) for c in codes)
    assert registry.fallback.code == "UNCLASSIFIED.UNKNOWN"
    for legacy, dotted in {
        "ARGS_INVALID": "INTENT.ARGS_INVALID",
        "ODOO_EXEC_ERROR": "INTENT.HANDLER_CRASHED",
        "ALLOWLIST_PROFILE_UNKNOWN": "INTENT.ALLOWLIST_PROFILE_UNKNOWN",
        "REDACTION_MODE_UNSUPPORTED": "INTENT.REDACTION_MODE_UNSUPPORTED",
    }.items():
        assert registry[legacy].code == dotted


def test_shipped_registry_and_runbooks_pass_the_full_check():
    report = ssot.check()
    assert report.problems == []
    assert report.ok and report.codes >= 40 and report.runbooks == report.codes


def test_mini_registry_round_trips_through_as_dict(mini_registry):
    import yaml

    text = yaml.safe_dump(mini_registry.to_yaml_document(), sort_keys=False)
    again, problems = parse_registry(text)
    assert problems == []
    assert again.modes == mini_registry.modes


def test_on_key_is_a_string_not_a_yaml_11_boolean(mini_registry):
    sig = mini_registry["TRANSPORT.DATABASE_UNAVAILABLE"].signatures[0]
    assert sig.on == "type"


def test_invalid_yaml_names_file_and_line(mini_repo):
    path = _registry_file(mini_repo)
    path.write_text("schema_version: 1\nfailure_modes:\n  - code: A.B\n    title: [unclosed\n")
    with pytest.raises(RegistryError) as err:
        load_registry(path)
    (problem,) = err.value.problems
    assert problem.file == str(path) and problem.line is not None and problem.line >= 4
    assert "invalid YAML" in problem.message


def test_all_schema_problems_are_reported_at_once_with_lines_and_codes():
    text = add_lifecycle(MINI_REGISTRY)
    text = text.replace("severity: high\n    description: PostgreSQL", "severity: urgent\n    description: PostgreSQL")
    text = text.replace("code: BUILD.TEST_FAILED", "code: build.test_failed")
    text = text.replace("http_status: 422", "http_status: 200")
    registry, problems = parse_registry(text, source="reg.yaml")
    assert registry is None
    messages = [(p.code, p.line, p.message) for p in problems]
    assert any(code == "TRANSPORT.DATABASE_UNAVAILABLE" and "urgent" in msg for code, _, msg in messages)
    assert any(code == "build.test_failed" and "code" in msg for code, _, msg in messages)
    assert any(code == "INTENT.ARGS_INVALID" and "http_status" in msg for code, _, msg in messages)
    assert all(p.file == "reg.yaml" and p.line for p in problems)


def test_bad_regex_is_reported_with_its_code_and_line():
    text = add_lifecycle(MINI_REGISTRY).replace("pattern: OperationalError$", "pattern: Operational(Error")
    registry, problems = parse_registry(text, source="reg.yaml")
    assert registry is None
    (problem,) = problems
    assert problem.code == "TRANSPORT.DATABASE_UNAVAILABLE"
    assert "does not compile" in problem.message and problem.line == 14


def test_duplicate_codes_and_bad_cross_references():
    text = add_lifecycle(MINI_REGISTRY)
    text = text.replace("code: INTENT.ARGS_INVALID", "code: BUILD.TEST_FAILED").replace(
        "category: INTENT", "category: BUILD"
    )
    text = text.replace("replaced_by: BUILD.TEST_FAILED", "replaced_by: NOPE.MISSING")
    _, problems = parse_registry(text, source="reg.yaml")
    messages = " | ".join(p.message for p in problems)
    assert "duplicate code (first defined at line" in messages
    assert "replaced_by NOPE.MISSING is not a known code" in messages


def test_exactly_one_fallback_is_required():
    text = add_lifecycle(MINI_REGISTRY).replace("    fallback: true\n", "")
    text = text.replace("    signatures: []\n", "    signatures: [{on: text, pattern: zzz}]\n")
    _, problems = parse_registry(text)
    assert any("fallback: true" in p.message for p in problems)


def test_missing_runbook_and_missing_section_are_reported(mini_repo):
    runbooks = mini_repo / "docs" / "runbooks" / "failures"
    (runbooks / "BUILD.TEST_FAILED.md").unlink()
    (runbooks / "INTENT.ARGS_INVALID.md").write_text(runbook_text("INTENT.ARGS_INVALID", skip="Recovery"))
    report = ssot.check(registry_path=_registry_file(mini_repo))
    found = {(p.code, p.message) for p in report.problems}
    assert ("BUILD.TEST_FAILED", "runbook docs/runbooks/failures/BUILD.TEST_FAILED.md does not exist") in found
    assert ("INTENT.ARGS_INVALID", "missing required section '## Recovery'") in found
    # deprecated codes need no runbook check
    assert not any(p.code == "LEGACY.OLD_THING" for p in report.problems)


def test_runbook_unknown_code_bad_link_and_unclosed_fence(mini_repo):
    path = mini_repo / "docs" / "runbooks" / "failures" / "TRANSPORT.DATABASE_UNAVAILABLE.md"
    extra = "\nSee `BUILD.NO_SUCH_CODE` and [the other](NOPE.md).\n\n```mermaid\nflowchart TD\n  A-->B\n"
    path.write_text(runbook_text("TRANSPORT.DATABASE_UNAVAILABLE", extra=extra))
    report = ssot.check(registry_path=_registry_file(mini_repo))
    messages = [p.message for p in report.problems if p.code == "TRANSPORT.DATABASE_UNAVAILABLE"]
    assert "names unknown failure code BUILD.NO_SUCH_CODE" in messages
    assert "link target NOPE.md does not exist" in messages
    assert "code fence is never closed" in messages
    assert all(p.file.endswith("TRANSPORT.DATABASE_UNAVAILABLE.md") for p in report.problems)


def test_cli_ssot_check_exit_codes_and_json(mini_repo, capsys):
    registry = str(_registry_file(mini_repo))
    assert main(["ssot", "check", "--registry", registry]) == 0
    assert "ok: 5 failure modes" in capsys.readouterr().out
    (mini_repo / "docs" / "runbooks" / "failures" / "UNCLASSIFIED.UNKNOWN.md").unlink()
    assert main(["ssot", "check", "--registry", registry, "--format", "json"]) == 1
    out = capsys.readouterr().out
    assert '"ok": false' in out and "UNCLASSIFIED.UNKNOWN" in out


def test_ci_script_entry_point_runs_the_same_check(mini_repo):
    registry = _registry_file(mini_repo)
    script = REPO / "scripts" / "ci" / "check_failure_modes_ssot.py"
    ok = subprocess.run(
        [sys.executable, str(script), "--registry", str(registry)], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    registry.write_text("failure_modes: {")
    bad = subprocess.run(
        [sys.executable, str(script), "--registry", str(registry)], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 1
    assert "invalid YAML" in bad.stderr and "Traceback" not in bad.stderr


def test_missing_registry_file_is_one_clear_problem(tmp_path):
    with pytest.raises(RegistryError) as err:
        load_registry(tmp_path / "nope.yaml")
    assert "cannot read registry" in str(err.value)


def test_registry_that_is_not_text_is_one_clear_problem(tmp_path):
    binary = tmp_path / "failure_modes.yaml"
    binary.write_bytes(b"schema_version: 1\nfailure_modes: [\xd0\x00]\n")
    with pytest.raises(RegistryError) as err:
        load_registry(binary)
    assert "cannot read registry: not UTF-8 text" in str(err.value)
    assert len(err.value.problems) == 1


def test_ssot_check_also_validates_the_benchmark_config(mini_repo):
    agents = mini_repo / "ssot" / "agents"
    agents.mkdir(parents=True)
    (agents / "benchmark.yaml").write_text("schema_version: 1\ncategories: nope\n")
    report = ssot.check(registry_path=_registry_file(mini_repo))
    assert report.problems and all(p.file == "ssot/agents/benchmark.yaml" for p in report.problems)
    good = (REPO / "ssot" / "agents" / "benchmark.yaml").read_text()
    (agents / "benchmark.yaml").write_text(good)
    assert ssot.check(registry_path=_registry_file(mini_repo)).ok


def test_a_pattern_only_a_backtracking_engine_could_run_is_refused_with_the_reason():
    text = add_lifecycle(MINI_REGISTRY).replace(
        "pattern: OperationalError$", "pattern: (?<!psycopg2\\.)OperationalError$"
    )
    registry, problems = parse_registry(text, source="reg.yaml")
    assert registry is None
    (problem,) = problems
    assert problem.code == "TRANSPORT.DATABASE_UNAVAILABLE"
    assert "RE2 (linear-time engine) cannot run it: invalid perl operator: (?<" in problem.message


def test_named_groups_must_be_known_captures():
    text = add_lifecycle(MINI_REGISTRY).replace("pattern: OperationalError$", "pattern: '(?P<secret_value>\\w+)Error$'")
    _, problems = parse_registry(text, source="reg.yaml")
    assert [p.message.split(" are not")[0] for p in problems] == ["signatures[0]: named group(s) secret_value"]


def test_every_code_declares_a_family_from_the_closed_set():
    text = add_lifecycle(MINI_REGISTRY)
    _, problems = parse_registry(text.replace("    family: network\n", ""), source="reg.yaml")
    assert any("'family' is a required property" in p.message for p in problems)
    _, problems = parse_registry(text.replace("family: network", "family: weather"), source="reg.yaml")
    assert any("family" in p.message and "weather" in p.message for p in problems)
    _, problems = parse_registry(text.replace("family: network", "family: unknown"), source="reg.yaml")
    assert any("family unknown is the fallback's" in p.message for p in problems)
    _, problems = parse_registry(text.replace("family: unknown", "family: runtime"), source="reg.yaml")
    assert any("the fallback code's family must be unknown" in p.message for p in problems)
