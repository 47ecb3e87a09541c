"""Benchmark scoring against hand-computed expectations, the config validator, and storage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ipai_ops import benchmark_config
from ipai_ops.ci import bench

ROOT = Path(__file__).resolve().parents[2]
PRS = Path(__file__).parent / "fixtures" / "pull_requests"

BODY = "[CONTEXT]\nwhy\n[CHANGES]\nwhat\n[EVIDENCE]\nproof\n[DIFF SUMMARY]\n3 files\n"


@pytest.fixture(scope="module")
def cfg() -> benchmark_config.BenchmarkConfig:
    return bench.load_config()


def _subject(**overrides) -> dict:
    data = {
        "subject": "github:acme/shop#77",
        "body": BODY,
        "files": [
            {"filename": "ipai_ops/bridge/server.py", "additions": 150, "deletions": 50},
            {"filename": "ipai_ops/store/migrations/0003_x.sql", "additions": 80, "deletions": 20},
            {"filename": ".github/workflows/ci.yml", "additions": 10, "deletions": 10},
        ],
        "check_runs": [
            # tests failed first, then passed on a re-run: the latest run counts.
            {
                "name": "tests",
                "conclusion": "failure",
                "started_at": "2026-03-14T10:00:00Z",
                "completed_at": "2026-03-14T10:20:00Z",
            },
            {
                "name": "tests",
                "conclusion": "success",
                "started_at": "2026-03-14T10:30:00Z",
                "completed_at": "2026-03-14T11:07:30Z",
            },
            {
                "name": "lint",
                "conclusion": "success",
                "started_at": "2026-03-14T10:00:00Z",
                "completed_at": "2026-03-14T10:02:00Z",
            },
            {
                "name": "docs",
                "conclusion": "skipped",
                "started_at": "2026-03-14T10:00:00Z",
                "completed_at": "2026-03-14T10:00:01Z",
            },
        ],
    }
    data.update(overrides)
    return data


def test_shipped_config_is_valid(run_cli, cfg):
    assert cfg.benchmark_version == 1
    assert sum(cfg.weights.values()) == pytest.approx(1.0)
    assert [t.name for t in cfg.tiers] == ["optimized", "established", "baseline"]
    assert run_cli("bench", "validate").code == 0


def test_hand_computed_scores(cfg):
    result = bench.score(bench.Subject.from_mapping(_subject()), cfg)
    scores = {c.category: c.score for c in result.categories}
    # evidence: complete block -> 100.
    # minimality: 320 lines vs 200 -> 62.5; 3 files vs 8 -> 100; mean 81.25.
    # risk: migrations/** (-30, first match before **/*.sql) + workflows/** (-30) -> 40.
    # ci: latest of tests/lint/docs all passing -> 100.
    # time_to_green: 10:00:00 -> 11:07:30 = 67.5 min; 100*(240-67.5)/(240-15) = 76.67.
    assert scores == {"evidence": 100.0, "minimality": 81.25, "risk": 40.0, "ci": 100.0, "time_to_green": 76.67}
    # composite: .25*100 + .25*81.25 + .2*40 + .2*100 + .1*76.67 = 80.979 -> established (>= 70).
    assert result.composite == 80.98
    assert result.tier == "established"
    risky = result.categories[2].details["risky_files"]
    assert [(f["path"], f["glob"]) for f in risky] == [
        ("ipai_ops/store/migrations/0003_x.sql", "**/migrations/**"),
        (".github/workflows/ci.yml", ".github/workflows/**"),
    ]


def test_failing_ci_and_missing_evidence(cfg):
    data = _subject(body="[CONTEXT]\nwhy\n", files=[{"filename": "README.md", "additions": 5, "deletions": 0}])
    data["check_runs"][1]["conclusion"] = "failure"
    result = bench.score(bench.Subject.from_mapping(data), cfg)
    scores = {c.category: c.score for c in result.categories}
    # evidence: 3 sections missing -> 100 - 75 = 25; ci: 2 of 3 green -> 66.67; never green -> 0.
    assert scores == {"evidence": 25.0, "minimality": 100.0, "risk": 100.0, "ci": 66.67, "time_to_green": 0.0}
    # .25*25 + .25*100 + .2*100 + .2*66.67 + 0 = 64.584 -> baseline.
    assert (result.composite, result.tier) == (64.58, "baseline")


def test_task_budget_and_unscored_categories(cfg):
    data = _subject(check_runs=None, task={"budget_lines": 40, "budget_files": 1})
    data["files"] = [
        {"filename": "a.py", "additions": 60, "deletions": 20},
        {"filename": "b.py", "additions": 0, "deletions": 0},
    ]
    result = bench.score(bench.Subject.from_mapping(data), cfg)
    # 80 lines vs 40 -> 50; 2 files vs 1 -> 50; minimality 50. ci/time_to_green not scored.
    assert {c.category: c.score for c in result.categories} == {"evidence": 100.0, "minimality": 50.0, "risk": 100.0}
    assert result.skipped == {"ci": "no check runs", "time_to_green": "no check runs"}
    # (25 + 12.5 + 20) / 0.7 = 82.14
    assert result.composite == 82.14


def test_real_pull_requests(run_cli):
    files = sorted(str(p) for p in PRS.glob("*.json"))
    assert len(files) >= 3
    result = run_cli("bench", "score", "--dry-run", "--format", "json", "--subject-file", *files)
    assert result.code == 0, result.err
    got = {
        r["subject"]: (r["composite"], r["tier"], {k: v["score"] for k, v in r["categories"].items()})
        for r in json.loads(result.out)["results"]
    }
    assert got == {
        "github:dajiaji/pyseto#537": (55.71, "baseline", {"evidence": 0.0, "minimality": 100.0, "risk": 70.0}),
        "github:zabio3/godolint#47": (64.29, "baseline", {"evidence": 0.0, "minimality": 100.0, "risk": 100.0}),
        "github:voxpupuli/puppet-unattended_upgrades#248": (
            64.29,
            "baseline",
            {"evidence": 0.0, "minimality": 100.0, "risk": 100.0},
        ),
    }
    for file in files:
        source = json.loads(Path(file).read_text())["source"]
        assert source["url"].startswith("https://github.com/") and len(source["merge_commit"]) == 40


def test_abcf_tiers_and_list_form_are_accepted():
    text = (ROOT / "ssot" / "agents" / "benchmark.yaml").read_text()
    start = text.index("tiers:")
    end = text.index("risky_paths:")
    abcf = (
        text[:start] + "tiers:\n  A: {min_score: 90}\n  B: {min_score: 75}\n  C: {min_score: 60}\n"
        "  F: {min_score: 0}\n\n" + text[end:]
    )
    cfg, problems = benchmark_config.parse_config(abcf)
    assert problems == []
    assert [cfg.tier_for(s) for s in (95, 80, 60, 12.5)] == ["A", "B", "C", "F"]
    listed = (
        text[:start]
        + "tiers:\n  - {name: optimized, min_score: 85}\n  - {name: baseline, min_score: 50}\n\n"
        + text[end:]
    )
    cfg, problems = benchmark_config.parse_config(listed)
    assert problems == [] and cfg.tier_for(49.99) == benchmark_config.UNRANKED


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            (
                "weight: 0.25\n    description: >-\n      The PR body",
                "weight: 0.35\n    description: >-\n      The PR body",
            ),
            "category weights sum to 1.1, not 1",
        ),
        (("target_minutes: 15", "target_minutes: 300"), "target_minutes must be below max_minutes"),
        (("established: {min_score: 70}", "established: {min_score: 85}"), "two tiers share a min_score"),
        (("  ci:\n", "  cii:\n"), "schema: categories: 'cii' is not one of"),
        (("baseline: {min_score: 50}", "baseline: {min_score: 150}"), "schema: tiers"),
    ],
    ids=["weights", "ttg", "tier-dup", "unknown-category", "score-range"],
)
def test_validator_rejects(run_cli, tmp_path, edit, message):
    text = (ROOT / "ssot" / "agents" / "benchmark.yaml").read_text()
    assert edit[0] in text
    bad = tmp_path / "benchmark.yaml"
    bad.write_text(text.replace(edit[0], edit[1], 1))
    result = run_cli("bench", "validate", "--config", str(bad))
    assert result.code == 1
    assert message in result.err
    assert "Traceback" not in result.err


def test_score_writes_and_rescoring_replaces(run_cli, ops_dsn, ops_conn, tmp_path):
    subject = tmp_path / "pr.json"
    subject.write_text(json.dumps(_subject()))
    assert run_cli("bench", "score", "--subject-file", str(subject), "--dsn", ops_dsn).code == 0
    subject.write_text(json.dumps(_subject(check_runs=None)))
    result = run_cli("bench", "score", "--subject-file", str(subject), "--dsn", ops_dsn)
    assert result.code == 0, result.err
    with ops_conn.cursor() as cur:
        cur.execute("SELECT category, score, composite, tier FROM ops.agent_benchmark_results ORDER BY category")
        rows = [(c, float(s), float(comp), t) for c, s, comp, t in cur.fetchall()]
    # ci and time_to_green were scored the first time and are gone now; (25 + 20.3125 + 8) / 0.7 = 76.16.
    assert rows == [
        ("evidence", 100.0, 76.16, "established"),
        ("minimality", 81.25, 76.16, "established"),
        ("risk", 40.0, 76.16, "established"),
    ]


def test_score_agent_runs_carries_variant(run_cli, ops_dsn, ops_conn):
    with ops_conn, ops_conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ops.agent_runs (run_id, agent, status, metadata) VALUES (%s, %s, 'succeeded', %s)",
            ("run-1", "coder", json.dumps({"variant_id": "B", "pr": _subject(subject=None)})),
        )
    result = run_cli("bench", "score", "--run-id", "run-1", "--dsn", ops_dsn, "--format", "json")
    assert result.code == 0, result.err
    (scored,) = json.loads(result.out)["results"]
    assert (scored["subject"], scored["variant_id"], scored["agent"]) == ("run:run-1", "B", "coder")
    with ops_conn.cursor() as cur:
        cur.execute("SELECT DISTINCT run_id, variant_id FROM ops.agent_benchmark_results")
        assert cur.fetchall() == [("run-1", "B")]
    missing = run_cli("bench", "score", "--run-id", "nope", "--dsn", ops_dsn)
    assert missing.code == 1 and "no agent run with a metadata.pr block: nope" in missing.err


def test_score_bad_subject_file(run_cli, tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    result = run_cli("bench", "score", "--dry-run", "--subject-file", str(bad))
    assert result.code == 2 and "is not JSON" in result.err
    bad.write_text("{}")
    result = run_cli("bench", "score", "--dry-run", "--subject-file", str(bad))
    assert result.code == 2 and "not a PR-shaped subject" in result.err


def test_config_that_is_not_text_is_one_problem(run_cli, tmp_path):
    config = tmp_path / "benchmark.yaml"
    config.write_bytes(b"benchmark_version: \xd0\x00\n")
    with pytest.raises(bench.BenchmarkConfigError, match="not UTF-8 text"):
        bench.load_config(config)
    result = run_cli("bench", "validate", "--config", str(config))
    assert result.code == 1 and "not UTF-8 text" in result.err and "Traceback" not in result.err
