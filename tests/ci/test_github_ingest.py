"""GitHub Actions failure ingest against a local fake of the REST API and its log storage."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ipai_ops.ci import github_actions as gha
from ipai_ops.envelope import envelope_errors

from .fake_github import FakeGitHub

EXPECTED = {
    # (job, step number) -> code the failed step classifies as
    ("lint", 4): "BUILD.LINT_FAILED",
    ("test (3.11)", 5): "BUILD.TEST_FAILED",
    ("gates", 3): "CI.EVIDENCE_BLOCK_INVALID",
}
JOB_IDS = {"lint": 31000000101, "test (3.11)": 31000000102, "gates": 31000000103}


def _gh(run_cli, *args: str, repo: str = "acme/shop"):
    """``ipai-ops ingest github-actions --repo REPO ARGS...``."""
    return run_cli("ingest", "github-actions", "--repo", repo, *args)


def _ingest(run_cli, fake: FakeGitHub, *extra: str):
    return _gh(run_cli, "--run-id", "9001", "--api-url", fake.url, "--token", fake.token, *extra, repo=fake.repo)


def _client(fake: FakeGitHub, **kwargs) -> gha.GitHubClient:
    return gha.GitHubClient(token=fake.token, api_url=fake.url, **kwargs)


def test_online_ingest_classifies_every_failed_step(run_cli, fake_github, registry):
    result = _ingest(run_cli, fake_github, "--dry-run", "--format", "json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    got = {(f["job"], f["step_number"]): f["code"] for f in report["failures"]}
    assert got == EXPECTED
    assert report["jobs_seen"] == 4  # two pages of two: pagination followed
    ids = sorted(f["occurrence_id"] for f in report["failures"])
    assert ids == sorted(f"9001:{JOB_IDS[job]}:{step}:1" for job, step in EXPECTED)
    by_job = {f["job"]: f for f in report["failures"]}
    # The message is the log line the signature matched, not the generic exit-code line.
    assert by_job["lint"]["message"] == "Found 3 errors."
    assert by_job["test (3.11)"]["message"] == "1 failed, 41 passed in 7.31s"
    # Two lines match the same code: the later one, closer to where the step failed.
    assert by_job["gates"]["message"].endswith("[DIFF SUMMARY] is empty")


def test_steps_reach_the_groups_grouping_version_1_gave_them(run_cli, fake_github):
    """Today's ingest picks other lines and codes; the key it hands the writer for the
    upgrade window is the one the version-1 ingest recorded (fixture grouping_v1.json)."""
    recorded = json.loads((fake_github.dir / "grouping_v1.json").read_text())["fingerprints"]
    report = json.loads(_ingest(run_cli, fake_github, "--dry-run", "--format", "json").out)
    reached = {f["occurrence_id"]: f["previous_fingerprint"] or f["fingerprint"] for f in report["failures"]}
    assert reached == recorded
    # The deciding lines travel with each failure, with the log's own line numbers.
    by_job = {f["job"]: f for f in report["failures"]}
    test_lines = [e["line"] for e in by_job["test (3.11)"]["evidence"]]
    assert 14 in test_lines and by_job["test (3.11)"]["family"] == "test"


def test_pagination_follows_link_headers(fake_github):
    client = _client(fake_github)
    jobs = list(client.paginate("/repos/acme/shop/actions/runs/9001/attempts/1/jobs", key="jobs"))
    assert [j["name"] for j in jobs] == ["lint", "test (3.11)", "gates", "build"]
    pages = [r["query"] for r in fake_github.requests if r["path"].endswith("/jobs")]
    assert pages == ["per_page=100", "per_page=2&page=2"]
    assert all(r["headers"]["X-GitHub-Api-Version"] == gha.API_VERSION for r in fake_github.requests)


def test_ingest_writes_once_and_reingest_counts_nothing_twice(run_cli, fake_github, ops_dsn, ops_conn):
    first = _ingest(run_cli, fake_github, "--dsn", ops_dsn, "--format", "json")
    assert first.code == 0, first.err
    assert json.loads(first.out)["written"] == {"received": 3, "new_occurrences": 3, "errors_touched": 3}
    again = _ingest(run_cli, fake_github, "--dsn", ops_dsn, "--format", "json")
    assert json.loads(again.out)["written"] == {"received": 3, "new_occurrences": 0, "errors_touched": 0}
    with ops_conn.cursor() as cur:
        cur.execute("SELECT code, count, source, service, sample FROM ops.agent_errors ORDER BY code")
        rows = cur.fetchall()
        cur.execute("SELECT occurrence_id FROM ops.agent_error_occurrences ORDER BY 1")
        occurrences = [r[0] for r in cur.fetchall()]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("BUILD.LINT_FAILED", 1, "github_actions", "acme/shop/ci"),
        ("BUILD.TEST_FAILED", 1, "github_actions", "acme/shop/ci"),
        ("CI.EVIDENCE_BLOCK_INVALID", 1, "github_actions", "acme/shop/ci"),
    ]
    assert occurrences == sorted(f"9001:{JOB_IDS[job]}:{step}:1" for job, step in EXPECTED)
    for *_, sample in rows:
        assert envelope_errors(sample) == []
        assert sample["context"]["source"] == "github_actions"
        assert sample["error"]["details"]["run_url"] == "https://github.com/acme/shop/actions/runs/9001"
    # The text output says what was written.
    text = _ingest(run_cli, fake_github, "--dsn", ops_dsn)
    assert "wrote 3 occurrence(s): 0 new" in text.out


def test_offline_archive_gives_the_same_occurrences_as_online(run_cli, fake_github, tmp_path, registry):
    online = json.loads(_ingest(run_cli, fake_github, "--dry-run", "--format", "json").out)
    archive = tmp_path / "logs_9001.zip"
    archive.write_bytes(fake_github.archive())
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps({"total_count": 4, "jobs": fake_github.jobs()}))
    run = tmp_path / "run.json"
    run.write_text(json.dumps(fake_github.run_json()))
    offline = _gh(
        run_cli,
        *("--run-id", "9001", "--logs-archive", str(archive), "--jobs-json", str(jobs), "--run-json", str(run)),
        *("--dry-run", "--format", "json"),
    )
    assert offline.code == 0, offline.err
    key = ("occurrence_id", "code", "fingerprint", "message")
    assert [[f[k] for k in key] for f in json.loads(offline.out)["failures"]] == [
        [f[k] for k in key] for f in online["failures"]
    ]


def test_offline_archive_alone_finds_failed_steps_by_error_marks(run_cli, fake_github, tmp_path):
    archive = tmp_path / "logs.zip"
    archive.write_bytes(fake_github.archive())
    result = _gh(
        run_cli,
        "--run-id",
        "9001",
        "--logs-archive",
        str(archive),
        "--workflow-name",
        "ci",
        "--dry-run",
        "--format",
        "json",
    )
    assert result.code == 0, result.err
    failures = json.loads(result.out)["failures"]
    assert {(f["job"], f["step_number"], f["step"]): f["code"] for f in failures} == {
        ("lint", 4, "Ruff"): "BUILD.LINT_FAILED",
        ("test (3.11)", 5, "Run tests"): "BUILD.TEST_FAILED",
        ("gates", 3, "Evidence block"): "CI.EVIDENCE_BLOCK_INVALID",
    }
    # No job ids offline: the job name (letters and digits) stands in.
    assert sorted(f["occurrence_id"] for f in failures) == ["9001:gates:3:1", "9001:lint:4:1", "9001:test311:5:1"]


def test_archive_without_step_files_is_cut_by_step_times(run_cli, fake_github):
    fake_github.logs_mode = "jobs_only"
    result = _ingest(run_cli, fake_github, "--dry-run", "--format", "json")
    assert result.code == 0, result.err
    failures = json.loads(result.out)["failures"]
    assert {(f["job"], f["step_number"]): f["code"] for f in failures} == EXPECTED
    assert {f["job"]: f["message"] for f in failures}["lint"] == "Found 3 errors."


def test_primary_rate_limit_waits_until_the_reset(fake_github):
    fake_github.rate_limit = {r"/runs/9001$": "reset"}
    fake_github.reset_in = 30
    slept: list[float] = []
    client = _client(fake_github, sleep=slept.append)
    run = client.get_json("/repos/acme/shop/actions/runs/9001")
    assert run["id"] == 9001
    assert len(slept) == 1 and 29 <= slept[0] <= 32  # until x-ratelimit-reset (+1 s), then retried
    assert [r["path"] for r in fake_github.requests].count("/repos/acme/shop/actions/runs/9001") == 2


def test_secondary_rate_limit_honours_retry_after_end_to_end(run_cli, fake_github):
    fake_github.rate_limit = {r"/jobs$": "retry-after"}
    result = _ingest(run_cli, fake_github, "--dry-run", "--format", "json")
    assert result.code == 0, result.err
    assert len(json.loads(result.out)["failures"]) == 3
    assert "rate limit" in result.err.lower() or result.err == ""  # logged warning, no failure


def test_rate_limit_beyond_max_wait_fails_clearly(run_cli, fake_github):
    fake_github.rate_limit = {r"/runs/9001$": "reset"}
    fake_github.reset_in = 3600
    result = _ingest(run_cli, fake_github, "--max-wait", "5", "--dry-run")
    assert result.code == 3
    assert result.err.startswith("ipai-ops: error: GITHUB.RATE_LIMITED: API rate limit exceeded")
    assert "more than --max-wait" in result.err
    assert "Traceback" not in result.err


def test_logs_past_retention_still_ingest_the_failed_steps(run_cli, fake_github):
    fake_github.logs_mode = "gone"
    result = _ingest(run_cli, fake_github, "--dry-run", "--format", "json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert [w["code"] for w in report["warnings"]] == ["GITHUB.LOGS_EXPIRED"]
    assert "HTTP 410" in report["warnings"][0]["message"]
    assert len(report["failures"]) == 3
    assert all("log is not available" in f["message"] for f in report["failures"])


def test_expired_signed_log_url_is_logs_expired_not_auth(run_cli, fake_github):
    fake_github.logs_mode = "expired_url"
    result = _ingest(run_cli, fake_github, "--dry-run")
    assert result.code == 0, result.err
    assert "warning: GITHUB.LOGS_EXPIRED: the signed log URL expired" in result.err
    assert "sig=" not in result.err  # the URL's signature is a credential
    # The blob request went without our token.
    blob = [r for r in fake_github.requests if r["path"].startswith("/blob/")]
    assert blob and "Authorization" not in blob[0]["headers"]


def test_missing_token_is_a_clear_error(run_cli, monkeypatch):
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    result = _gh(run_cli, "--run-id", "9001", "--dry-run")
    assert result.code == 2
    assert result.err.strip() == (
        "ipai-ops: error: GITHUB.AUTH_FAILED: no GitHub token: pass --token or set GITHUB_TOKEN "
        "(or ingest offline with --logs-archive)"
    )


def test_bad_token_and_unknown_run(run_cli, fake_github):
    bad = _gh(run_cli, "--run-id", "9001", "--api-url", fake_github.url, "--token", "ghp_wrong", "--dry-run")
    assert bad.code == 2
    assert "GITHUB.AUTH_FAILED: GitHub rejected the token: Bad credentials" in bad.err
    gone = _gh(run_cli, "--run-id", "1", "--api-url", fake_github.url, "--token", fake_github.token, "--dry-run")
    assert gone.code == 2
    assert "GITHUB.NOT_FOUND: HTTP 404: Not Found" in gone.err


def test_unreachable_api_is_transport_error(run_cli):
    result = _gh(run_cli, "--run-id", "9001", "--api-url", "http://127.0.0.1:9", "--token", "t", "--dry-run")
    assert result.code == 3
    assert "TRANSPORT.UPSTREAM_TIMEOUT: cannot reach GitHub" in result.err


def _one_line_usage_error(result, *needles: str) -> None:
    assert result.code == 2, result.err
    assert result.err.startswith("ipai-ops: error: ") and result.err.count("\n") == 1, result.err
    for needle in needles:
        assert needle in result.err


def test_api_url_that_is_not_a_url_is_a_usage_error(run_cli):
    result = _gh(run_cli, "--run-id", "9001", "--api-url", "api.github.com", "--token", "t", "--dry-run")
    _one_line_usage_error(result, "--api-url must be an http(s) URL")


def test_api_answering_html_is_one_line(run_cli):
    """--api-url pointing at a web page (e.g. a GitHub Enterprise host without /api/v3)."""

    class Html(BaseHTTPRequestHandler):
        def log_message(self, *_args):
            pass

        def do_GET(self):
            body = b"<html><body>Sign in</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = _gh(run_cli, "--run-id", "9001", "--api-url", url, "--token", "t", "--dry-run")
    finally:
        server.shutdown()
        server.server_close()
    _one_line_usage_error(result, "UNCLASSIFIED.UNKNOWN: GitHub answered HTTP 200 with a body that is not JSON")


@pytest.mark.parametrize(
    "case",
    [
        ("--run-json", [9001], "expected the run response (a JSON object)"),
        ("--run-json", {"id": "not a number"}, "is run not a number, not --run-id 9001"),
        ("--jobs-json", {"jobs": [1, 2]}, "a list of jobs, each with an id and a name"),
        ("--jobs-json", [{"id": 1, "conclusion": "failure"}], "a list of jobs, each with an id and a name"),
    ],
)
def test_offline_files_of_the_wrong_shape_are_one_line(run_cli, fake_github, tmp_path, case):
    flag, content, needle = case
    archive = tmp_path / "logs.zip"
    archive.write_bytes(fake_github.archive())
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(content))
    result = _gh(run_cli, "--run-id", "9001", "--logs-archive", str(archive), "--workflow-name", "ci", flag, str(saved))
    _one_line_usage_error(result, needle)


def test_attempt_must_be_positive(run_cli, capsys):
    with pytest.raises(SystemExit) as exit_:
        _gh(run_cli, "--run-id", "9001", "--attempt", "0", "--logs-archive", "x.zip", "--workflow-name", "ci")
    assert exit_.value.code == 2
    assert "'0' must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            '<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=5>; rel="last"',
            "https://api.github.com/x?page=2",
        ),
        ('<https://api.github.com/x?page=1>; rel="prev"', None),
        (None, None),
    ],
)
def test_link_header(header, expected):
    assert gha._link_next(header) == expected
