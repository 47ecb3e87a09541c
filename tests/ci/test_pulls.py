"""``ipai-ops bench score --repo --pr/--since``: pull requests fetched from a GitHub-shaped
REST API (the fake on loopback pages by 2, rate-limits on demand) and scored from their real
check runs. The pull requests here are invented (unit tests); real ones are in
tests/ci/fixtures/pull_requests/.
"""

from __future__ import annotations

import json

import pytest

from .fake_github import FakeGitHub

GOOD_BODY = (
    "[CONTEXT]\nWebhook retries were lost.\n\n[CHANGES]\n- retry with backoff\n\n"
    "[EVIDENCE]\n- pytest tests/sdk: 41 passed\n\n[DIFF SUMMARY]\n2 files changed\n"
)


def _pull(number: int, *, head: str, merged_at: str | None, updated_at: str, body: str = GOOD_BODY) -> dict:
    return {
        "number": number,
        "title": f"Change {number}",
        "body": body,
        "html_url": f"https://github.com/acme/shop/pull/{number}",
        "user": {"login": "agent-bot"},
        "head": {"sha": head},
        "merge_commit_sha": f"{number:040x}" if merged_at else None,
        "created_at": "2026-11-30T09:00:00Z",
        "merged_at": merged_at,
        "updated_at": updated_at,
        "changed_files": 3,
    }


@pytest.fixture
def shop(fake_github: FakeGitHub) -> FakeGitHub:
    fake_github.pulls = {
        41: {
            "pull": _pull(41, head="a1" * 20, merged_at="2026-12-01T10:00:00Z", updated_at="2026-12-01T10:00:00Z"),
            "files": [
                {"filename": "ipai_ops/sdk/webhooks.py", "status": "modified", "additions": 30, "deletions": 4},
                {"filename": "tests/test_webhooks.py", "status": "modified", "additions": 40, "deletions": 0},
                {"filename": "docs/services.md", "status": "modified", "additions": 3, "deletions": 1},
            ],
            "check_runs": [  # a first run failed, the re-run passed: the latest counts
                {"name": "tests", "status": "completed", "conclusion": "failure",
                 "started_at": "2026-12-01T09:10:00Z", "completed_at": "2026-12-01T09:20:00Z"},
                {"name": "lint", "status": "completed", "conclusion": "success",
                 "started_at": "2026-12-01T09:10:00Z", "completed_at": "2026-12-01T09:12:00Z"},
                {"name": "tests", "status": "completed", "conclusion": "success",
                 "started_at": "2026-12-01T09:25:00Z", "completed_at": "2026-12-01T09:40:00Z"},
            ],
            "reviews": [{"user": {"login": "sre"}, "state": "APPROVED", "submitted_at": "2026-12-01T09:50:00Z"}],
        },
        42: {
            "pull": _pull(42, head="b2" * 20, merged_at=None, updated_at="2026-12-03T10:00:00Z", body="wip"),
            "files": [{"filename": "ipai_ops/store/migrations/0099_x.sql", "status": "added", "additions": 900,
                       "deletions": 0}],
            "check_runs": [{"name": "tests", "status": "completed", "conclusion": "failure",
                            "started_at": "2026-12-03T09:00:00Z", "completed_at": "2026-12-03T09:05:00Z"}],
            "reviews": [],
        },
        40: {
            "pull": _pull(40, head="c3" * 20, merged_at="2026-11-20T10:00:00Z", updated_at="2026-11-20T10:00:00Z"),
            "files": [], "check_runs": [], "reviews": [],
        },
    }  # fmt: skip
    return fake_github


def _score(run_cli, fake: FakeGitHub, *args: str):
    return run_cli(
        "bench", "score", "--dry-run", "--format", "json", "--repo", fake.repo,
        "--token", fake.token, "--api-url", fake.url, *args,
    )  # fmt: skip


def test_a_pull_request_is_fetched_page_by_page_and_scored_from_its_check_runs(run_cli, shop, tmp_path):
    result = _score(run_cli, shop, "--pr", "41", "--save", str(tmp_path))
    assert result.code == 0, result.err
    [scored] = json.loads(result.out)["results"]
    assert scored["subject"] == "github:acme/shop#41"
    categories = scored["categories"]
    assert categories["evidence"]["score"] == 100.0
    assert categories["ci"]["details"] == {"checks": 2, "passed": 2, "failed": []}
    assert categories["time_to_green"]["details"]["minutes"] == 30.0  # first start 09:10 -> last end 09:40
    assert scored["not_scored"] == {}
    # every list came in pages of 2 (GitHub's Link header followed)
    pages = [r["path"] for r in shop.requests]
    assert pages.count("/repos/acme/shop/pulls/41/files") == 2
    assert pages.count(f"/repos/acme/shop/commits/{'a1' * 20}/check-runs") == 2
    saved = json.loads((tmp_path / "acme-shop-41.json").read_text())
    assert saved["source"]["merge_commit"] == f"{41:040x}" and saved["reviews"][0]["state"] == "APPROVED"
    # the saved subject scores the same offline
    again = run_cli(
        "bench", "score", "--dry-run", "--format", "json", "--subject-file", str(tmp_path / "acme-shop-41.json")
    )
    assert json.loads(again.out)["results"][0]["composite"] == scored["composite"]


def test_since_scores_the_pull_requests_merged_since_the_date(run_cli, shop):
    result = _score(run_cli, shop, "--since", "2026-11-25")
    assert result.code == 0, result.err
    assert [r["subject"] for r in json.loads(result.out)["results"]] == ["github:acme/shop#41"]  # 42 is open, 40 older


def test_a_failing_open_pull_request_scores_low(run_cli, shop):
    [scored] = json.loads(_score(run_cli, shop, "--pr", "42").out)["results"]
    assert scored["categories"]["ci"]["score"] == 0.0
    assert scored["categories"]["time_to_green"]["details"]["green"] is False
    assert scored["categories"]["evidence"]["score"] < 100


def test_rate_limits_are_waited_out_and_errors_are_typed(run_cli, shop):
    shop.rate_limit = {r"/pulls/41/files": "retry-after"}
    assert _score(run_cli, shop, "--pr", "41").code == 0
    missing = _score(run_cli, shop, "--pr", "7")
    assert missing.code == 2 and "GITHUB.NOT_FOUND" in missing.err
    wrong = run_cli("bench", "score", "--repo", shop.repo, "--token", "nope", "--api-url", shop.url, "--pr", "41")
    assert wrong.code == 2 and "GITHUB.AUTH_FAILED" in wrong.err
    assert run_cli("bench", "score", "--repo", "not a repo", "--token", "t", "--pr", "1").code == 2
    with pytest.raises(SystemExit) as info:
        run_cli("bench", "score", "--repo", shop.repo, "--since", "yesterday")
    assert info.value.code == 2
