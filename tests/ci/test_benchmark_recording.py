"""What ``.github/workflows/benchmark.yml`` runs, end to end on loopback and real PostgreSQL:
merged pull requests fetched from a GitHub-shaped API (the fake pages by 2), scored into
``ops.agent_benchmark_results`` under the variant their ``variant:<id>`` label names, then
compared with ``bench compare`` (its bootstrap interval) into ``ops.agent_ab_comparisons``.
And the ablation the demo records from the three real public PRs, through the same CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .fake_github import FakeGitHub
from .test_pulls import GOOD_BODY

REAL_PRS = Path(__file__).parent / "fixtures" / "pull_requests"


def _merged(number: int, *, labels: list[str], minutes: int, lines: int, body: str = GOOD_BODY) -> dict:
    head = f"{number:02x}" * 20
    return {
        "pull": {
            "number": number,
            "title": f"Change {number}",
            "body": body,
            "html_url": f"https://github.com/acme/shop/pull/{number}",
            "user": {"login": "agent-bot"},
            "head": {"sha": head},
            "merge_commit_sha": f"{number:040x}",
            "created_at": "2026-12-01T08:00:00Z",
            "merged_at": f"2026-12-0{1 + number % 5}T12:00:00Z",
            "updated_at": f"2026-12-0{1 + number % 5}T12:00:00Z",
            "changed_files": 1,
            "labels": [{"name": name} for name in labels],
        },
        "files": [{"filename": "ipai_ops/text.py", "status": "modified", "additions": lines, "deletions": 0}],
        "check_runs": [
            {"name": "tests", "status": "completed", "conclusion": "success",
             "started_at": "2026-12-01T09:00:00Z", "completed_at": f"2026-12-01T09:{minutes:02d}:00Z"},
        ],
        "reviews": [],
    }  # fmt: skip


@pytest.fixture
def labelled(fake_github: FakeGitHub) -> FakeGitHub:
    # variant "plan" PRs are small and quick to go green; "no-plan" ones big and slow
    pulls = {}
    for i in range(6):
        pulls[10 + i] = _merged(10 + i, labels=["agent", "variant:no-plan"], minutes=50 + i, lines=600 + 40 * i)
        pulls[20 + i] = _merged(20 + i, labels=["variant:plan"], minutes=5 + i, lines=40 + 10 * i)
    pulls[30] = _merged(30, labels=["variant:plan", "variant:no-plan"], minutes=10, lines=10)
    pulls[31] = _merged(31, labels=[], minutes=10, lines=10)
    fake_github.pulls = pulls
    return fake_github


def _score(run_cli, fake: FakeGitHub, dsn: str, *args: str):
    return run_cli(
        "bench", "score", "--format", "json", "--repo", fake.repo, "--token", fake.token,
        "--api-url", fake.url, "--dsn", dsn, *args,
    )  # fmt: skip


def test_merged_prs_are_recorded_under_their_variant_label_and_compared(run_cli, labelled, ops_dsn, ops_conn):
    numbers = [str(n) for n in sorted(labelled.pulls)]
    result = _score(run_cli, labelled, ops_dsn, "--pr", *numbers)
    assert result.code == 0, result.err
    assert json.loads(result.out)["written"] is True
    with ops_conn.cursor() as cur:
        cur.execute("SELECT subject, variant_id, count(*) FROM ops.agent_benchmark_results GROUP BY 1, 2 ORDER BY 1")
        rows = {subject: (variant, n) for subject, variant, n in cur.fetchall()}
    ops_conn.rollback()
    assert rows["github:acme/shop#10"] == ("no-plan", 5)  # five categories, check runs included
    assert rows["github:acme/shop#20"] == ("plan", 5)
    assert rows["github:acme/shop#30"][0] is None  # two variant labels: not guessed
    assert rows["github:acme/shop#31"][0] is None
    # the label went through the fetcher into the saved subject too
    assert sum(1 for v, _ in rows.values() if v == "plan") == 6

    compared = run_cli(
        "bench", "compare", "--variant", "no-plan", "--variant", "plan", "--resamples", "1000",
        "--format", "json", "--dsn", ops_dsn,
    )  # fmt: skip
    assert compared.code == 0, compared.err
    out = json.loads(compared.out)
    composite = out["categories"][0]
    assert composite["category"] == "composite" and (composite["n_baseline"], composite["n_candidate"]) == (6, 6)
    assert out["verdict"] == "better" and composite["ci_low"] > 0
    with ops_conn.cursor() as cur:
        cur.execute(
            "SELECT ci_low::float8, ci_high::float8, verdict FROM ops.agent_ab_comparisons"
            " WHERE comparison_id = %s AND category = 'composite'",
            (out["comparison_id"],),
        )
        assert cur.fetchone() == (
            pytest.approx(composite["ci_low"]),
            pytest.approx(composite["ci_high"]),
            "better",
        )
    ops_conn.rollback()


def test_a_pr_scored_again_moves_to_its_new_variant(run_cli, labelled, ops_dsn, ops_conn):
    assert _score(run_cli, labelled, ops_dsn, "--pr", "31").code == 0
    assert _score(run_cli, labelled, ops_dsn, "--pr", "31", "--as-variant", "manual").code == 0
    with ops_conn.cursor() as cur:
        cur.execute("SELECT DISTINCT variant_id FROM ops.agent_benchmark_results WHERE subject = 'github:acme/shop#31'")
        assert cur.fetchall() == [("manual",)]
    ops_conn.rollback()


def test_as_variant_is_refused_where_runs_carry_their_own(run_cli, ops_dsn):
    refused = run_cli("bench", "score", "--runs", "--as-variant", "x", "--dsn", ops_dsn)
    assert refused.code == 2 and "--as-variant goes with" in refused.err
    empty = run_cli("bench", "score", "--subject-file", str(REAL_PRS / "zabio3-godolint-47.json"), "--as-variant", "")
    assert empty.code == 2 and "needs a variant id" in empty.err


def test_the_real_pr_ablation_through_the_cli(run_cli, ops_dsn):
    """The demo's ablation, as a person would record it: the real PR that touches a risky path
    (a CI workflow) against the two that do not. n = 1 and 2: the interval is computed, and the
    verdict must refuse to claim anything."""
    plain = [str(REAL_PRS / "zabio3-godolint-47.json"), str(REAL_PRS / "voxpupuli-puppet-unattended_upgrades-248.json")]
    risky = [str(REAL_PRS / "dajiaji-pyseto-537.json")]
    for files, variant in ((plain, "real-prs:no-risky-path"), (risky, "real-prs:risky-path")):
        scored = run_cli("bench", "score", "--dsn", ops_dsn, "--as-variant", variant, "--subject-file", *files)
        assert scored.code == 0, scored.err
    compared = run_cli(
        "bench", "compare", "--variant", "real-prs:no-risky-path", "--variant", "real-prs:risky-path",
        "--resamples", "2000", "--format", "json", "--dsn", ops_dsn,
    )  # fmt: skip
    assert compared.code == 0, compared.err
    out = json.loads(compared.out)
    rows = {c["category"]: c for c in out["categories"]}
    assert out["verdict"] == "no evidence" and "too few runs (baseline 2, candidate 1" in rows["composite"]["reason"]
    # 55.71 against 64.29 twice: the only difference is the workflow file's risk penalty
    assert rows["composite"]["delta"] == pytest.approx(55.71 - 64.29, abs=0.01)
    assert rows["risk"]["delta"] == pytest.approx(-30.0)
    assert rows["evidence"]["delta"] == 0 and rows["minimality"]["delta"] == 0
    # no spread inside either group: the bootstrap interval collapses onto the delta
    assert rows["composite"]["ci_low"] == rows["composite"]["ci_high"] == rows["composite"]["delta"]
    assert "ci" not in rows  # the fixtures carry no check runs: not scored, not compared
