"""``ipai-ops gate quality``: a pull request below its repository's threshold fails with the
reasons. Subjects are invented (unit tests) but for the three real PRs of
tests/ci/fixtures/pull_requests/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ipai_ops.benchmark_config import parse_config
from ipai_ops.classify import classify
from ipai_ops.registry import load_registry

from .fake_github import FakeGitHub
from .test_pulls import GOOD_BODY

ROOT = Path(__file__).resolve().parents[2]
REAL = sorted(str(p) for p in (ROOT / "tests/ci/fixtures/pull_requests").glob("*.json"))
CHECKS = [
    {"name": "tests", "conclusion": "success", "started_at": "2026-12-01T09:00:00Z",
     "completed_at": "2026-12-01T09:10:00Z"},
]  # fmt: skip


def _subject(tmp_path: Path, name: str, **fields) -> str:
    data = {
        "subject": f"github:acme/{name}#1",
        "body": GOOD_BODY,
        "files": [{"filename": "app/x.py", "additions": 20, "deletions": 2}],
        "check_runs": CHECKS,
        **fields,
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_a_good_pull_request_passes(run_cli, tmp_path):
    result = run_cli("gate", "quality", "--subject-file", _subject(tmp_path, "shop"))
    assert result.code == 0, result.err
    assert "ok: quality passed (github:acme/shop#1)" in result.out


def test_one_below_the_threshold_fails_with_its_reasons_worst_first(run_cli, tmp_path):
    bad = _subject(
        tmp_path,
        "shop",
        body="wip",
        files=[{"filename": ".github/workflows/ci.yml", "additions": 900, "deletions": 0}],
        check_runs=[{**CHECKS[0], "conclusion": "failure"}],
    )
    result = run_cli("gate", "quality", "--subject-file", bad)
    assert result.code == 1
    lines = result.err.splitlines()
    assert lines[0].startswith("github:acme/shop#1: quality score ") and "below the threshold 70" in lines[0]
    reasons = [line.split(": ", 1)[1].split(" ")[0] for line in lines[1:-1]]
    assert reasons[:2] == ["ci", "evidence"] or reasons[:2] == ["evidence", "ci"]  # the zeros first
    assert "time_to_green 0.00 (weight 0.1): never green" in result.err
    assert lines[-1].startswith("CI.QUALITY_GATE_FAILED: ")
    # once ingested from the workflow's log, the lines classify as the gate's code
    assert classify(load_registry(), text=result.err, model=None).code == "CI.QUALITY_GATE_FAILED"


def test_the_threshold_is_per_repository_and_can_be_overridden(run_cli, tmp_path):
    config = (
        (ROOT / "ssot/agents/benchmark.yaml")
        .read_text()
        .replace("  repositories: {}", "  repositories:\n    acme/strict: 99\n    acme/lenient: 10")
    )
    (tmp_path / "bench.yaml").write_text(config)
    cfg, problems = parse_config(config)
    assert not problems and cfg.threshold_for("ACME/Strict") == 99 and cfg.threshold_for("other/x") == 70
    middling = {"body": "wip"}  # evidence costs points: composite ~81
    strict = _subject(tmp_path, "strict", **middling)
    lenient = _subject(tmp_path, "lenient", **middling)
    shop = _subject(tmp_path, "shop", **middling)
    result = run_cli("gate", "quality", "--config", str(tmp_path / "bench.yaml"), "--format", "json",
                     "--subject-file", strict, lenient, shop)  # fmt: skip
    doc = json.loads(result.out)
    assert {s["subject"]: s["threshold"] for s in doc["scores"]} == {
        "github:acme/strict#1": 99,
        "github:acme/lenient#1": 10,
        "github:acme/shop#1": 70,
    }
    failed = {p["file"] for p in doc["problems"]}
    assert failed == {"github:acme/strict#1"} and doc["failure_code"] == "CI.QUALITY_GATE_FAILED"
    assert run_cli("gate", "quality", "--threshold", "1", "--subject-file", strict).code == 0
    with pytest.raises(SystemExit):
        run_cli("gate", "quality", "--threshold", "101", "--subject-file", strict)


def test_a_threshold_out_of_range_is_a_config_problem():
    config = (ROOT / "ssot/agents/benchmark.yaml").read_text().replace("threshold: 70", "threshold: 170")
    _, problems = parse_config(config, source="benchmark.yaml")
    assert any("quality_gate/threshold" in p.message for p in problems)


def test_the_real_pull_requests_fail_for_their_missing_evidence(run_cli):
    result = run_cli("gate", "quality", "--subject-file", *REAL)
    assert result.code == 1
    assert result.err.count("is below the threshold 70") == 3
    assert result.err.count("ci not scored: no check runs") == 3


def test_pull_requests_from_github_pending_checks_are_not_failures(run_cli, fake_github: FakeGitHub):
    sha = "d4" * 20
    fake_github.pulls = {
        5: {
            "pull": {"number": 5, "title": "t", "body": GOOD_BODY, "head": {"sha": sha}, "html_url": "u",
                     "created_at": "2026-12-01T08:00:00Z", "merged_at": None, "updated_at": "2026-12-01T10:00:00Z"},
            "files": [{"filename": "app/x.py", "status": "modified", "additions": 5, "deletions": 1}],
            "check_runs": [{**CHECKS[0], "status": "completed"},
                           {"name": "quality", "status": "in_progress", "conclusion": None,
                            "started_at": "2026-12-01T09:11:00Z", "completed_at": None}],
            "reviews": [],
        }
    }  # fmt: skip
    result = run_cli("gate", "quality", "--repo", fake_github.repo, "--pr", "5", "--token", fake_github.token,
                     "--api-url", fake_github.url)  # fmt: skip
    assert result.code == 0, result.err


def test_a_subject_file_that_is_not_a_pr_is_one_clear_line(run_cli, tmp_path):
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    for command in (("gate", "quality"), ("bench", "score", "--dry-run")):
        result = run_cli(*command, "--subject-file", str(listed))
        assert result.code == 2
        assert f"{listed}: not a PR-shaped subject: a JSON object is expected" in result.err
