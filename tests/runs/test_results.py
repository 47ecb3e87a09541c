"""What an agent hands back besides its exit status: verification reports, structured output, its session;
and the agent's provider settings in the record and the escalation bundle (by name, never by value)."""

from __future__ import annotations

import json
import tarfile
import textwrap
from pathlib import Path

import pytest

from ipai_ops.runs import RunSetupError, RunSpec, escalate
from ipai_ops.runs.events import parse_events
from ipai_ops.runs.record import RUN_RECORD_VERSION

from .conftest import PY, error_row, run_row

#: A child that appends the events given as JSON in argv[1] (per attempt: a list of lists) and exits 0.
REPORTER = textwrap.dedent(
    """\
    import json, os, sys
    attempt = int(os.environ["IPAI_RUN_ATTEMPT"])
    plan = json.loads(sys.argv[1])
    events = plan[min(attempt, len(plan)) - 1]
    seen = os.environ.get("IPAI_RUN_SESSION_ID")
    with open(os.environ["IPAI_RUN_EVENTS"], "a") as f:
        for event in events:
            if event.get("type") == "output" and event["data"] == "SEEN":
                event = {"type": "output", "data": {"answer": 42, "seen_session": seen}}
            f.write(json.dumps(event) + "\\n")
    print("session seen:", seen)
    """
)
SCHEMA = {
    "type": "object",
    "required": ["answer"],
    "properties": {"answer": {"type": "integer"}},
}


def _reporter(*attempts: list[dict]) -> list[str]:
    return [PY, "-c", REPORTER, json.dumps(list(attempts))]


def test_a_failed_verification_fails_an_exit_zero_attempt_with_its_checks_and_evidence(make_recorder, ops_dsn):
    checks = [
        {"name": "pytest addons/x", "ok": False, "evidence": "3 failed, 9 passed", "duration_ms": 1200},
        {"name": "ruff", "ok": True},
    ]
    result = make_recorder().run(_reporter([{"type": "verification", "checks": checks}]), variant_id="v1")
    assert (result.status, result.code, result.exit_status) == ("failed", "AGENT.VERIFICATION_FAILED", 1)
    assert result.attempts == 1  # not retryable: the change itself was rejected
    item = result.iterations[0]
    assert (item.exit_code, item.typed_by) == (0, "verification")
    assert item.message == "verification stage failed: 1 of 2 checks failed (pytest addons/x)"
    report = item.verification
    assert (report["attempt"], report["status"], report["total"], report["failed"]) == (1, "failed", 2, 1)
    assert report["checks"][0] == checks[0] and report["failed_checks"] == ["pytest addons/x"]

    row = run_row(ops_dsn, result.run_id)
    meta = row["metadata"]
    assert row["status"] == "failed" and meta["verification"] == report
    assert meta["iterations"][0]["verification"] == report
    assert error_row(ops_dsn, row["error_id"])["code"] == "AGENT.VERIFICATION_FAILED"
    envelope = json.loads(Path(item.envelope).read_text())
    assert envelope["evidence"]["verification"]["failed_checks"] == ["pytest addons/x"]


def test_a_passing_verification_is_kept_and_the_run_succeeds(make_recorder):
    checks = [{"name": "pytest", "ok": True, "evidence": {"passed": 12}}]
    result = make_recorder(use_db=False).run(_reporter([{"type": "verification", "checks": checks}]))
    assert (result.status, result.exit_status) == ("succeeded", 0)
    assert result.verification["status"] == "passed" and result.verification["attempt"] == 1
    assert result.verification["checks"] == [{"name": "pytest", "ok": True, "evidence": '{"passed": 12}'}]


def test_output_that_fails_its_schema_is_retried_with_the_agents_session(make_recorder, ops_dsn, tmp_path):
    schema_file = tmp_path / "answer.schema.json"
    schema_file.write_text(json.dumps(SCHEMA))
    first = [{"type": "session", "id": "sess-abc"}, {"type": "output", "data": {"answer": "forty-two"}}]
    second = [{"type": "output", "data": "SEEN"}]
    result = make_recorder().run(_reporter(first, second), output_schema=str(schema_file), variant_id="v1")

    assert (result.status, result.attempts) == ("succeeded", 2)  # OUTPUT_SCHEMA_INVALID: one retry
    bad, good = result.iterations
    assert (bad.status, bad.code, bad.typed_by, bad.exit_status) == (
        "failed",
        "AGENT.OUTPUT_SCHEMA_INVALID",
        "output_schema",
        1,
    )
    assert bad.structured_output["valid"] is False and bad.structured_output["schema"] == str(schema_file)
    assert bad.structured_output["errors"] == ["at /answer: 'forty-two' is not of type 'integer'"]
    assert bad.message.startswith("structured output did not validate against ")
    # The session the first attempt reported is the one the retry resumes.
    assert good.structured_output["data"] == {"answer": 42, "seen_session": "sess-abc"}
    assert good.structured_output["valid"] is True
    assert (bad.session_id, good.session_id, result.session_id) == ("sess-abc", "sess-abc", "sess-abc")
    meta = run_row(ops_dsn, result.run_id)["metadata"]
    assert meta["structured_output"]["attempt"] == 2 and meta["session_id"] == "sess-abc"
    assert meta["record_version"] == RUN_RECORD_VERSION == 2


def test_a_given_session_id_reaches_the_first_attempt(make_recorder):
    result = make_recorder(use_db=False).run(_reporter([]), session_id="resume-7")
    assert "session seen: resume-7" in Path(result.iterations[0].stdout_log).read_text()
    assert result.iterations[0].session_id == result.session_id == "resume-7"
    plain = make_recorder(use_db=False).run(_reporter([]))
    assert "session seen: None" in Path(plain.iterations[0].stdout_log).read_text()
    assert plain.session_id is None


def test_output_is_kept_redacted_without_a_schema_and_missing_output_fails_one(make_recorder):
    note = "api_key=sk-proj-0123456789abcdefghijKLMN"  # pragma: allowlist secret
    secret = {"type": "output", "data": {"answer": 1, "note": note}}
    kept = make_recorder(use_db=False).run(_reporter([secret]))
    slot = kept.structured_output
    assert kept.status == "succeeded" and (slot["present"], slot["valid"], slot["schema"]) == (True, None, None)
    assert slot["data"]["answer"] == 1 and "sk-proj" not in json.dumps(slot)
    assert "sk-proj" not in (kept.run_dir / "run.json").read_text()

    missing = make_recorder(use_db=False).run(_reporter([]), output_schema=SCHEMA, max_attempts=1)
    assert missing.code == "AGENT.OUTPUT_SCHEMA_INVALID"
    assert missing.structured_output["errors"] == ["no output event: the agent returned no structured output"]


def test_a_nonzero_exit_keeps_its_own_code_whatever_the_verification_says(make_recorder):
    code = REPORTER + "raise SystemExit(3)\n"
    events = [[{"type": "verification", "checks": [{"name": "x", "ok": False}]}]]
    result = make_recorder(use_db=False).run([PY, "-c", code, json.dumps(events)])
    assert result.code == "UNCLASSIFIED.UNKNOWN" and result.exit_status == 3
    assert result.verification["status"] == "failed"  # still recorded


def test_a_bad_schema_or_session_id_is_a_setup_error_and_nothing_runs(make_recorder, artifacts, tmp_path):
    recorder = make_recorder(use_db=False)
    with pytest.raises(RunSetupError, match="not a valid JSON Schema"):
        recorder.run(_reporter([]), output_schema={"type": "no-such-type"})
    with pytest.raises(RunSetupError, match="cannot read the output schema"):
        recorder.run(_reporter([]), output_schema=str(tmp_path / "missing.json"))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(RunSetupError, match="is not JSON"):
        recorder.run(_reporter([]), output_schema=str(tmp_path / "broken.json"))
    with pytest.raises(RunSetupError, match="session id"):
        RunSpec(["true"], session_id=" ")
    assert not artifacts.exists()


def test_bad_verification_output_and_session_events_are_warnings(tmp_path):
    path = tmp_path / "events.jsonl"
    lines = [
        {"type": "verification", "checks": []},
        {"type": "verification", "checks": [{"name": "x"}]},
        {"type": "verification", "checks": [{"name": "", "ok": True}]},
        {"type": "output"},
        {"type": "session", "id": 7},
        {"type": "verification", "checks": [{"name": "y", "ok": True}, {"name": "z", "ok": False}]},
        {"type": "output", "data": [1]},
        {"type": "output", "data": [2]},
        {"type": "session", "id": "s-1"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = parse_events(path)
    assert (summary.lines, summary.valid) == (9, 4)
    assert (summary.check_count, summary.checks_failed) == (2, 1)
    assert (summary.output, summary.output_count, summary.session_id) == ([2], 2, "s-1")
    assert any("needs 'ok'" in w for w in summary.warnings)
    assert any("second output event" in w for w in summary.warnings)


def test_agent_provider_settings_are_recorded_and_bundled_by_name_never_by_value(
    make_recorder, ops_dsn, artifacts, tmp_path
):
    values = {
        "AGENT_MODEL": "claude-sonnet-internal-2025",
        "AGENT_TIMEOUT": "900",
        "AGENT_API_BASE_URL": "https://agents.internal.example/v1",
        "CODING_AGENT_CMD": "coder --key sk-ant-api03-abcdefghijklmnopqrstuvwx",  # pragma: allowlist secret
    }
    env = {"PATH": "/usr/bin:/bin", **values}
    result = make_recorder().run([PY, "-c", "raise SystemExit(1)"], env=env, model="m-1", timeout=30, max_attempts=1)
    variables = run_row(ops_dsn, result.run_id)["metadata"]["settings"]["variables"]
    assert {name: variables[name] for name in values} == dict.fromkeys(values, "[set]")

    bundle = escalate(result.run_id, dsn=ops_dsn, artifacts_dir=artifacts, out_dir=tmp_path)
    with tarfile.open(bundle.path, "r:gz") as archive:
        files = {i.name.split("/", 1)[1]: archive.extractfile(i).read() for i in archive.getmembers()}
    agent = json.loads(files["manifest.json"])["settings"]["agent"]
    assert agent == {
        "variables": dict.fromkeys(sorted(values), "[set]"),
        "model": "m-1",
        "timeout_seconds": 30,
        "max_attempts": 1,
    }
    for name, data in files.items():
        for value in values.values():
            assert value.encode() not in data, (name, value)


def test_the_cli_takes_a_session_id_and_an_output_schema(run_cli, artifacts, tmp_path):
    schema_file = tmp_path / "answer.schema.json"
    schema_file.write_text(json.dumps(SCHEMA))
    events = [[{"type": "output", "data": {"answer": "no"}}]]
    res = run_cli(
        "run", "--no-db", "--artifacts", str(artifacts), "--format", "json", "--max-attempts", "1",
        "--session-id", "cli-sess", "--output-schema", str(schema_file),
        "--", PY, "-c", REPORTER, json.dumps(events),
    )  # fmt: skip
    assert res.code == 1
    record = json.loads(res.out)
    assert (record["code"], record["metadata"]["session_id"]) == ("AGENT.OUTPUT_SCHEMA_INVALID", "cli-sess")
    assert "session seen: cli-sess" in res.err
    res = run_cli("run", "--no-db", "--artifacts", str(artifacts), "--output-schema", str(tmp_path / "none"), "--", PY)
    assert res.code == 2 and "cannot read the output schema" in res.err
