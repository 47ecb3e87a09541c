"""The escalation bundle: one archive per run, error or intent, with the runbooks' evidence, redacted."""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ipai_ops import store
from ipai_ops.classify import classify
from ipai_ops.envelope import build_envelope
from ipai_ops.runs import EscalationError, escalate
from ipai_ops.runs.escalate import parse_ref
from tests.connector_intents import create_intent_tables

from .conftest import PY
from .test_recorder import SECRET_PRINTER, SECRETS


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as archive:
        out = {}
        for info in archive.getmembers():
            assert info.isfile() and not info.name.startswith("/") and ".." not in info.name
            out[info.name.split("/", 1)[1]] = archive.extractfile(info).read()
        return out


@pytest.fixture
def failed_run(make_recorder):
    return make_recorder().run([PY, "-c", SECRET_PRINTER], agent="widget-agent", variant_id="v1", model="gpt-4.1")


def test_parse_ref():
    assert parse_ref("intent:abc123") == ("intent", "abc123")
    assert parse_ref("42") == ("error", "42")
    assert parse_ref("fp1:" + "a" * 32) == ("error", "fp1:" + "a" * 32)
    assert parse_ref("error:fp1:" + "b" * 32) == ("error", "fp1:" + "b" * 32)
    assert parse_ref("run-20250101T000000-abc") == ("run", "run-20250101T000000-abc")
    assert parse_ref("run:42") == ("run", "42")
    with pytest.raises(EscalationError):
        parse_ref("intent:")


def test_a_run_bundle_holds_the_runbook_evidence(failed_run, ops_dsn, artifacts, tmp_path):
    now = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    result = escalate(failed_run.run_id, dsn=ops_dsn, artifacts_dir=artifacts, out_dir=tmp_path / "out", now=now)
    assert result.path.is_absolute() and result.path.parent == (tmp_path / "out").resolve()
    assert result.path.name == f"escalation-run-{failed_run.run_id}-20250304T050607Z.tar.gz"
    files = _members(result.path)
    assert set(files) == {
        "manifest.json",
        "README.txt",
        "envelope.json",
        "error.json",
        "run.json",
        "logs/1/stdout.log",
        "logs/1/stderr.log",
        "logs/1/envelope.json",
    }  # no logs/1/events.jsonl: this command reported no events
    manifest = json.loads(files["manifest.json"])
    assert manifest["bundle_version"] == 2 and manifest["kind"] == "run"
    ids = manifest["ids"]
    assert ids["run_id"] == ids["correlation_id"] == failed_run.run_id
    assert ids["error_id"] == failed_run.error_id and ids["fingerprint"].startswith("fp1:")
    assert ids["occurrence_ids"] == [f"{failed_run.run_id}:1"]
    assert manifest["command"]["argv"][:2] == [PY, "-c"]
    error = manifest["error"]
    assert (error["code"], error["owner"], error["error_type"]) == ("UNCLASSIFIED.UNKNOWN", "sre", "run.exit_status")
    assert error["runbook"] == "docs/runbooks/failures/UNCLASSIFIED.UNKNOWN.md"
    assert error["show"] == f"ipai-ops errors show {ids['fingerprint']}"
    assert manifest["settings"]["model"] == "gpt-4.1" and manifest["settings"]["service"] == "widget-agent"
    stamps = manifest["timestamps"]
    assert stamps["bundled_at"] == "2025-03-04T05:06:07.000Z"
    for key in ("first_seen", "last_seen", "started_at", "finished_at", "occurred_at"):
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", stamps[key]), (key, stamps[key])
    assert manifest["envelope_problems"] == []
    assert {c["member"] for c in manifest["artifacts"]["copied"]} >= {"logs/1/stdout.log", "logs/1/stderr.log"}
    assert manifest["artifacts"]["missing"] == []
    assert manifest["members"] == sorted(files)
    readme = files["README.txt"].decode()
    assert "Owner team: sre." in readme and "ipai-ops envelope validate envelope.json" in readme


def test_nothing_secret_gets_into_the_bundle(failed_run, ops_dsn, artifacts, tmp_path):
    result = escalate(failed_run.run_id, dsn=ops_dsn, artifacts_dir=artifacts, out_dir=tmp_path)
    files = _members(result.path)
    for name, data in files.items():
        for secret in SECRETS:
            assert secret.encode() not in data, (name, secret)
    assert b"password=[REDACTED:secret]" in files["logs/1/stdout.log"]


@pytest.mark.parametrize("by", ["id", "fingerprint"])
def test_an_error_bundle_finds_its_latest_run(failed_run, ops_dsn, artifacts, tmp_path, by):
    fingerprint = failed_run.iterations[0].fingerprint
    ref = str(failed_run.error_id) if by == "id" else fingerprint
    result = escalate(ref, dsn=ops_dsn, artifacts_dir=artifacts, out_dir=tmp_path)
    assert result.kind == "error"
    manifest = result.manifest
    assert manifest["ids"]["error_id"] == failed_run.error_id and manifest["ids"]["fingerprint"] == fingerprint
    assert manifest["ids"]["run_id"] == failed_run.run_id
    assert "logs/1/stderr.log" in _members(result.path)
    expected = str(failed_run.error_id) if by == "id" else fingerprint.replace(":", "-")
    assert result.path.name.startswith(f"escalation-error-{expected}-")


def test_unknown_ids_are_clear_errors(ops_dsn, artifacts, tmp_path):
    with pytest.raises(EscalationError, match="no run, error or intent 'run-nope'"):
        escalate("run-nope", dsn=ops_dsn, artifacts_dir=artifacts, out_dir=tmp_path)
    with pytest.raises(EscalationError, match="no error with id or fingerprint '999999'"):
        escalate("999999", dsn=ops_dsn, artifacts_dir=artifacts, out_dir=tmp_path)
    assert list(tmp_path.glob("*.tar.gz")) == []


def test_an_intent_without_the_intent_table_is_a_typed_error(ops_dsn, tmp_path):
    with pytest.raises(EscalationError, match="no intent table") as caught:
        escalate("intent:abc", dsn=ops_dsn, out_dir=tmp_path)
    assert caught.value.failure_code == "INTENT.NOT_FOUND"


def test_an_intent_bundle_from_odoos_tables(ops_dsn, tmp_path, registry):
    envelope = build_envelope(
        classify(registry, explicit_code="INTENT.HANDLER_CRASHED"),
        message="ZeroDivisionError: division by zero",
        error_type="ZeroDivisionError",
        context={
            "source": "odoo",
            "service": "ipai_pulser_connector",
            "intent_id": 7,
            "intent_type": "health.check",
            "attempt": 3,
            "correlation_id": "corr-1",
            "env": "prod",
        },
        evidence={"stderr_tail": "Traceback ...\nZeroDivisionError: division by zero"},
    )
    conn = store.connect(ops_dsn)
    try:
        upserted = store.upsert_error(
            conn,
            store.ErrorOccurrence(
                source="odoo",
                occurrence_id="7:3",
                fingerprint=envelope["error"]["fingerprint"],
                code="INTENT.HANDLER_CRASHED",
                severity="high",
                message=envelope["error"]["message"],
                occurred_at=envelope["occurred_at"],
                sample=envelope,
            ),
        )
        with conn, conn.cursor() as cur:
            create_intent_tables(cur)
            cur.execute(
                "INSERT INTO ipai_pulser_intent (id, ref, intent_type, state, source, args, correlation_id,"
                " traceparent, failure_envelope, failure_code, ops_error_id, attempts, started_at, finished_at,"
                " create_date) VALUES (7, 'int-ref-7', 'health.check', 'dead', 'agent-key-1', %s, 'corr-1',"
                " '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', %s, 'INTENT.HANDLER_CRASHED', %s, 3,"
                " '2025-01-01 10:00:00', '2025-01-01 10:00:05', '2025-01-01 09:59:59')",
                (
                    json.dumps({"target": "db", "api_key": "sk-proj-0123456789abcdefghijKLMN"}),
                    json.dumps(envelope),
                    upserted.error_id,
                ),
            )
            cur.execute(
                "INSERT INTO ipai_pulser_intent_event (intent_id, event_type, from_state, to_state, create_date)"
                " VALUES (7, 'created', NULL, 'queued', '2025-01-01 09:59:59'),"
                " (7, 'attempt_failed', 'running', 'dead', '2025-01-01 10:00:05')"
            )
    finally:
        conn.close()

    for ref in ("intent:int-ref-7", "intent:7"):
        result = escalate(ref, dsn=ops_dsn, out_dir=tmp_path)
        manifest = result.manifest
        assert manifest["kind"] == "intent"
        assert manifest["ids"]["intent_ref"] == "int-ref-7" and manifest["ids"]["intent_id"] == 7
        assert manifest["ids"]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert manifest["ids"]["correlation_id"] == "corr-1" and manifest["ids"]["error_id"] == upserted.error_id
        assert manifest["command"]["intent_type"] == "health.check"
        assert manifest["error"]["code"] == "INTENT.HANDLER_CRASHED" and manifest["error"]["owner"] == "odoo"
        assert manifest["settings"]["env"] == "prod" and manifest["status"]["intent"] == "dead"
        assert manifest["timestamps"]["started_at"].startswith("2025-01-01T10:00:00")
        files = _members(result.path)
        assert {"intent.json", "envelope.json", "error.json"} <= set(files)
        assert b"sk-proj-0123456789" not in b"".join(files.values())
        intent = json.loads(files["intent.json"])
        assert [e["event_type"] for e in intent["events"]] == ["created", "attempt_failed"]
        # read through the connector's view (contract v1), not its tables: UTC times, v1 names
        assert "create_date" not in intent["intent"] and intent["intent"]["created_at"].endswith("+00:00")
        assert manifest["timestamps"]["intent_created_at"].startswith("2025-01-01T09:59:59")

    with pytest.raises(EscalationError, match="no intent with ref or id 'missing'"):
        escalate("intent:missing", dsn=ops_dsn, out_dir=tmp_path)


def test_with_the_database_down_a_run_is_bundled_from_its_directory(failed_run, closed_dsn, artifacts, tmp_path):
    result = escalate(failed_run.run_id, dsn=closed_dsn, artifacts_dir=artifacts, out_dir=tmp_path)
    manifest = result.manifest
    assert manifest["ids"]["run_id"] == failed_run.run_id
    assert manifest["error"]["code"] == "UNCLASSIFIED.UNKNOWN"  # from the envelope file
    assert any(w.startswith("TRANSPORT.DATABASE_UNAVAILABLE") for w in manifest["warnings"])
    assert "logs/1/stdout.log" in _members(result.path)


def test_an_invalid_envelope_is_reported_not_fatal_and_big_logs_are_bounded(
    make_recorder, ops_dsn, artifacts, tmp_path
):
    code = "for n in range(5000):\n    print(f'line {n:05d} ' + 'z' * 60)\nraise SystemExit(1)\n"
    run = make_recorder().run([PY, "-c", code])
    envelope_path = Path(run.iterations[0].envelope)
    broken = json.loads(envelope_path.read_text())
    del broken["error"]["severity"]
    envelope_path.write_text(json.dumps(broken))
    result = escalate(run.run_id, dsn=ops_dsn, artifacts_dir=artifacts, out_dir=tmp_path, max_log_bytes=4096)
    assert any("severity" in p for p in result.manifest["envelope_problems"])
    files = _members(result.path)
    stdout = files["logs/1/stdout.log"].decode()
    assert len(stdout) < 4096 + 200 and "bytes omitted from the bundle" in stdout
    assert stdout.startswith("line 00000") and "line 04999" in stdout
    assert "envelope has problems" in files["README.txt"].decode()


def test_paths_outside_the_artifacts_directory_are_never_read(failed_run, ops_dsn, artifacts, tmp_path):
    """Run metadata is data anyone with write access to ops.agent_runs controls: no file reads outside."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "stdout.log").write_text("server-private-log\n")
    (outside / "envelope.json").write_text(json.dumps({"secret": "server-private-json"}))
    conn = store.connect(ops_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE ops.agent_runs SET metadata = jsonb_set(jsonb_set(metadata,"
                " '{iterations,0,stdout_log}', to_jsonb(%s::text)), '{iterations,0,envelope}', to_jsonb(%s::text))"
                " WHERE run_id = %s",
                (str(outside / "stdout.log"), str(outside / "envelope.json"), failed_run.run_id),
            )
    finally:
        conn.close()
    result = escalate(failed_run.run_id, dsn=ops_dsn, artifacts_dir=artifacts, out_dir=tmp_path / "out")
    blob = b"".join(_members(result.path).values())
    assert b"server-private-log" not in blob and b"server-private-json" not in blob
    warnings = " ".join(result.manifest["warnings"])
    assert "outside the run directory" in warnings


def test_an_unwritable_out_dir_is_a_clear_error(failed_run, ops_dsn, artifacts, tmp_path):
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    with pytest.raises(EscalationError, match="cannot write the bundle to"):
        escalate(failed_run.run_id, dsn=ops_dsn, artifacts_dir=artifacts, out_dir=not_a_dir)


@pytest.mark.parametrize(
    ("record", "found"),
    [
        ("[1, 2]", False),
        ("{truncated", False),
        ('{"run_id": "r", "metadata": "not an object"}', True),
        ('{"run_id": "r", "metadata": {"iterations": ["x", {"attempt": 1, "stdout_log": 5}]}}', True),
    ],
)
def test_a_malformed_run_file_is_never_a_crash(artifacts, tmp_path, record, found):
    run_dir = artifacts / "run-hand-edited"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(record)
    if not found:
        with pytest.raises(EscalationError, match="no run, error or intent") as err:
            escalate("run-hand-edited", use_db=False, artifacts_dir=artifacts, out_dir=tmp_path)
        assert "run.json is not" in str(err.value)  # says why the file that is there was not used
        return
    result = escalate("run-hand-edited", use_db=False, artifacts_dir=artifacts, out_dir=tmp_path)
    assert any("ignored" in w for w in result.manifest["warnings"])
    assert "run.json" in _members(result.path)


def _set_metadata(dsn: str, run_id: str, path: str, value) -> None:
    conn = store.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE ops.agent_runs SET metadata = jsonb_set(metadata, %s::text[], %s::jsonb) WHERE run_id = %s",
                ("{" + path + "}", json.dumps(value), run_id),
            )
    finally:
        conn.close()


@pytest.mark.parametrize("how", ["file", "attempt_dir", "run_dir", "hard_link", "fifo", "other_run", "dotdot"])
def test_symlinks_links_and_other_directories_are_never_read(failed_run, ops_dsn, artifacts, tmp_path, how):
    """Only regular files of the run's own directory are bundled, never through a symbolic link:
    whoever can write the run directory or ops.agent_runs must not make the bundle read other files."""
    import os

    outside = tmp_path / "elsewhere"
    (outside / "1").mkdir(parents=True)
    private = outside / "1" / "stdout.log"
    private.write_text("server-private-log\n")
    run_dir = failed_run.run_dir
    log = run_dir / "1" / "stdout.log"
    if how == "file":
        log.unlink()
        log.symlink_to(private)
    elif how == "attempt_dir":
        shutil.rmtree(run_dir / "1")
        (run_dir / "1").symlink_to(outside / "1")
    elif how == "run_dir":
        shutil.rmtree(run_dir)
        run_dir.symlink_to(outside)
    elif how == "hard_link":
        private = run_dir.parent / "private.log"  # same file system as the run directory
        private.write_text("server-private-log\n")
        log.unlink()
        os.link(private, log)
    elif how == "fifo":
        (run_dir / "1" / "stderr.log").unlink()
        os.mkfifo(run_dir / "1" / "stderr.log")  # would block a plain open() forever
    elif how == "other_run":
        other = artifacts / "run-someone-else" / "1"
        other.mkdir(parents=True)
        (other / "stdout.log").write_text("server-private-log\n")
        _set_metadata(ops_dsn, failed_run.run_id, "iterations,0,stdout_log", str(other / "stdout.log"))
    elif how == "dotdot":
        other = artifacts / "run-someone-else" / "1"
        other.mkdir(parents=True)
        (other / "stdout.log").write_text("server-private-log\n")
        sneaky = f"{run_dir}/1/../../run-someone-else/1/stdout.log"
        _set_metadata(ops_dsn, failed_run.run_id, "iterations,0,stdout_log", sneaky)
    result = escalate(failed_run.run_id, dsn=ops_dsn, artifacts_dir=artifacts, out_dir=tmp_path / "out")
    blob = b"".join(_members(result.path).values())
    assert b"server-private-log" not in blob
    warnings = " ".join(result.manifest["warnings"])
    expected = {
        "file": "symbolic link",
        "attempt_dir": "symbolic link",
        "run_dir": "symbolic link",
        "hard_link": "other hard links",
        "fifo": "not a regular file",
        "other_run": "outside the run directory",
        "dotdot": "outside the run directory",
    }[how]
    assert expected in warnings, warnings


def test_settings_of_runs_recorded_before_the_allowlist_are_shown_as_set_and_masked(
    failed_run, ops_dsn, artifacts, tmp_path, monkeypatch
):
    """An old run record kept IPAI_PULSER_PEPPER in clear: the bundle shows [set] and masks its
    value everywhere, and the bundling process's own secrets are masked too."""
    pepper = "old-record-pepper-value-in-clear"
    server_token = "bundling-server-token-value"
    variables = {"IPAI_PULSER_PEPPER": pepper, "OPENAI_BASE_URL": "https://llm.example/v1", "PATH": "/usr/bin"}
    _set_metadata(ops_dsn, failed_run.run_id, "settings,variables", variables)
    log = Path(failed_run.iterations[0].stdout_log)
    log.write_text(log.read_text() + f"pepper {pepper}\nserver {server_token}\n")
    monkeypatch.setenv("ODOO_SERVER_TOKEN", server_token)
    result = escalate(failed_run.run_id, dsn=ops_dsn, artifacts_dir=artifacts, out_dir=tmp_path)
    files = _members(result.path)
    for name, data in files.items():
        assert pepper.encode() not in data and server_token.encode() not in data, name
    assert b"pepper [REDACTED:$IPAI_PULSER_PEPPER]" in files["logs/1/stdout.log"]
    assert b"server [REDACTED:$ODOO_SERVER_TOKEN]" in files["logs/1/stdout.log"]
    shown = result.manifest["settings"]["variables"]
    assert shown == {"IPAI_PULSER_PEPPER": "[set]", "OPENAI_BASE_URL": "https://llm.example/v1", "PATH": "/usr/bin"}
    assert json.loads(files["run.json"])["metadata"]["settings"]["variables"] == shown
