"""The recorder on real failing commands and a real ops database: typed codes, kept output, rows, retries."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from ipai_devtools.scratch import throwaway_database
from ipai_ops import store
from ipai_ops.envelope import envelope_errors
from ipai_ops.runs import RunSetupError, record_run
from ipai_ops.runs.capture import group_alive

from .conftest import CHILD_ENV, PY, dump, error_row, fetch_one, run_row

SECRETS = ("hunter2", "abcdefghijklmnopqrstuv", "sk-proj-0123456789abcdefghijKLMN", "ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaa")
SECRET_PRINTER = textwrap.dedent(
    """\
    import sys
    print("connecting with password=hunter2")
    print("Authorization: Bearer abcdefghijklmnopqrstuv", file=sys.stderr)
    sys.stdout.write("key sk-proj-0123456")
    sys.stdout.flush()
    sys.stdout.write("789abcdefghijKLMN in use\\n")
    print("token ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaa", file=sys.stderr)
    sys.exit(3)
    """
)


def _failing_test_file(tmp_path: Path) -> Path:
    path = tmp_path / "test_widget.py"
    path.write_text(
        "def test_widget_adds():\n"
        "    print('computing the widget')\n"
        "    assert 1 + 1 == 3, 'widget arithmetic is off'\n"
    )
    return path


def test_a_failing_pytest_is_test_failed_with_its_output_kept(make_recorder, ops_dsn, tmp_path):
    test_file = _failing_test_file(tmp_path)
    argv = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)]
    result = make_recorder().run(argv, env=CHILD_ENV, variant_id="v-red", task_ref="TASK-1", model="gpt-4.1")

    assert (result.status, result.code, result.exit_status) == ("failed", "BUILD.TEST_FAILED", 1)
    assert result.attempts == 1  # not retryable
    item = result.iterations[0]
    # pytest -q prints no "=== 1 failed ===" banner: the FAILED line is the signature that matched.
    assert item.typed_by == "signature" and item.message.startswith("FAILED ") and "test_widget_adds" in item.message
    stdout = Path(item.stdout_log).read_text()
    assert "widget arithmetic is off" in stdout and "FAILED" in stdout and "test_widget_adds" in stdout

    envelope = json.loads(Path(item.envelope).read_text())
    assert envelope_errors(envelope) == []
    assert envelope["error"]["code"] == "BUILD.TEST_FAILED"
    assert envelope["context"]["correlation_id"] == result.run_id
    assert envelope["context"]["occurrence_id"] == f"{result.run_id}:1"
    assert envelope["context"]["source"] == "agent" and envelope["context"]["service"] == "pytest"
    assert envelope["evidence"]["exit_code"] == 1 and envelope["evidence"]["model"] == "gpt-4.1"
    assert "widget arithmetic is off" in envelope["evidence"]["stdout_tail"]

    row = run_row(ops_dsn, result.run_id)
    assert (row["status"], row["agent"], row["task_ref"], row["source"]) == ("failed", "pytest", "TASK-1", "agent")
    assert row["finished_at"] is not None and row["duration_ms"] >= 0
    meta = row["metadata"]
    assert meta["variant_id"] == "v-red" and meta["code"] == "BUILD.TEST_FAILED" and meta["exit_code"] == 1
    assert meta["model"] == "gpt-4.1" and meta["artifacts"]["run_dir"] == str(result.run_dir)
    assert [i["attempt"] for i in meta["iterations"]] == [1]
    assert meta["iterations"][0]["stdout_log"] == item.stdout_log
    error = error_row(ops_dsn, row["error_id"])
    assert (error["code"], error["source"], error["count"]) == ("BUILD.TEST_FAILED", "agent", 1)
    assert error["sample"]["error"]["fingerprint"] == error["fingerprint"] == item.fingerprint

    on_disk = json.loads((result.run_dir / "run.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["metadata"]["iterations"][0]["error_id"] == row["error_id"]


def test_a_timeout_is_build_timeout_exit_124_and_the_group_is_gone(make_recorder, ops_dsn, tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen(['sleep', '60'])\nopen({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\ntime.sleep(60)\n"
    )
    started = time.monotonic()
    result = make_recorder().run([PY, "-c", code], timeout=1, max_attempts=1)
    assert time.monotonic() - started < 15
    assert (result.status, result.code, result.exit_status) == ("failed", "BUILD.TIMEOUT", 124)
    item = result.iterations[0]
    assert item.timed_out and item.typed_by == "timeout"
    assert "started" in Path(item.stdout_log).read_text()
    assert not group_alive(item.pid)
    grandchild = int(pid_file.read_text())
    stat = Path(f"/proc/{grandchild}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    assert run_row(ops_dsn, result.run_id)["metadata"]["iterations"][0]["retry"]["reason"].startswith(
        "attempts exhausted"
    )


def test_a_self_killing_command_is_agent_crashed_and_retried_once(make_recorder, ops_dsn):
    argv = [PY, "-c", "import os, signal; print('about to die', flush=True); os.kill(os.getpid(), signal.SIGKILL)"]
    result = make_recorder().run(argv, agent="crashy")
    assert (result.status, result.code, result.exit_status) == ("failed", "BUILD.AGENT_CRASHED", 137)
    assert [i.attempt for i in result.iterations] == [1, 2]
    assert [i.signal for i in result.iterations] == ["SIGKILL", "SIGKILL"]
    assert result.iterations[0].retry["retry"] is True and result.iterations[1].retry["retry"] is False
    assert (result.run_dir / "1" / "stdout.log").read_text() == "about to die\n"
    assert (result.run_dir / "2" / "envelope.json").is_file()
    meta = run_row(ops_dsn, result.run_id)["metadata"]
    assert [i["code"] for i in meta["iterations"]] == ["BUILD.AGENT_CRASHED"] * 2
    # Two occurrences of one error group: same fingerprint, counted twice.
    error = error_row(ops_dsn, result.error_id)
    assert error["count"] == 2 and meta["iterations"][0]["error_id"] == meta["iterations"][1]["error_id"]


def test_a_crash_that_recovers_on_retry_is_a_succeeded_run_with_the_failed_attempt_kept(make_recorder, ops_dsn):
    code = "import os, signal\nif os.environ['IPAI_RUN_ATTEMPT'] == '1':\n    os.kill(os.getpid(), signal.SIGSEGV)\n"
    result = make_recorder().run([PY, "-c", code])
    assert (result.status, result.code, result.exit_status, result.error_id) == ("succeeded", None, 0, None)
    first, second = result.iterations
    assert (first.code, first.exit_status, second.status) == ("BUILD.AGENT_CRASHED", 139, "succeeded")
    row = run_row(ops_dsn, result.run_id)
    assert row["status"] == "succeeded" and row["error_id"] is None
    assert row["metadata"]["iterations"][0]["error_id"] is not None


def test_ctrl_c_while_waiting_to_retry_cancels_the_run(make_recorder, ops_dsn):
    def interrupt(_seconds: float) -> None:
        raise KeyboardInterrupt

    argv = [PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    result = make_recorder(retry_delay_cap=1, sleep=interrupt).run(argv)
    assert (result.status, result.exit_status, result.attempts) == ("cancelled", 130, 1)
    row = run_row(ops_dsn, result.run_id)
    assert row["status"] == "cancelled" and row["error_id"] == result.error_id is not None


def test_max_attempts_overrides_the_failure_mode(make_recorder):
    argv = [PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    assert make_recorder().run(argv, max_attempts=3).attempts == 3
    assert make_recorder().run(argv, max_attempts=1).attempts == 1


def test_the_retry_delay_comes_from_the_policy_and_is_capped(make_recorder):
    slept: list[float] = []
    argv = [PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    make_recorder(retry_delay_cap=0.25, sleep=slept.append).run(argv)
    assert len(slept) == 1 and 0 <= slept[0] <= 0.25


def test_a_ruff_failure_is_lint_failed(make_recorder, tmp_path):
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        ruff = Path(shutil.which("ruff") or "/nonexistent")
    if not ruff.exists():
        pytest.skip("ruff is not installed")
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    result = make_recorder().run([str(ruff), "check", "--isolated", "--no-cache", str(bad)], cwd=tmp_path)
    assert (result.status, result.code, result.exit_status) == ("failed", "BUILD.LINT_FAILED", 1)
    assert "F401" in Path(result.iterations[0].stdout_log).read_text()


def test_a_missing_program_is_a_clear_typed_error(make_recorder, ops_dsn):
    result = make_recorder().run(["ipai-no-such-agent-xyz", "--go"])
    assert (result.status, result.code, result.exit_status) == ("failed", "ENV.COMMAND_NOT_FOUND", 127)
    assert "command not found: 'ipai-no-such-agent-xyz'" in result.iterations[0].message
    assert error_row(ops_dsn, result.error_id)["error_type"] == "run.command_not_found"


def test_output_over_the_cap_keeps_head_and_tail_with_a_marker(make_recorder):
    code = "for n in range(20000):\n    print(f'row {n:05d} ' + 'y' * 30)\n"
    result = make_recorder(max_output_bytes=16 * 1024).run([PY, "-c", code])
    assert result.status == "succeeded"
    text = Path(result.iterations[0].stdout_log).read_text()
    assert len(text.encode()) <= 16 * 1024 + 64
    assert text.startswith("row 00000 ") and text.rstrip().endswith("row 19999 " + "y" * 30)
    assert "bytes omitted ...]" in text
    stats = result.iterations[0].output["stdout"]
    assert stats["truncated"] and stats["bytes"] == 20000 * 41


def test_secrets_printed_by_the_command_never_reach_disk_db_or_envelope(make_recorder, ops_dsn):
    result = make_recorder().run([PY, "-c", SECRET_PRINTER], variant_id="v1")
    assert result.status == "failed" and result.exit_status == 3
    item = result.iterations[0]
    stored = [
        Path(item.stdout_log).read_text(),
        Path(item.stderr_log).read_text(),
        Path(item.envelope).read_text(),
        (result.run_dir / "run.json").read_text(),
        dump(run_row(ops_dsn, result.run_id)),
        dump(error_row(ops_dsn, result.error_id)),
        dump(result.as_dict()),
    ]
    for text in stored:
        for secret in SECRETS:
            assert secret not in text
    assert "password=[REDACTED:secret]" in stored[0] and "[REDACTED:api_key] in use" in stored[0]
    envelope = json.loads(stored[2])
    assert "[REDACTED:token]" in envelope["evidence"]["stderr_tail"]


def test_secrets_in_the_command_line_and_environment_are_redacted(make_recorder, ops_dsn):
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-proj-0123456789abcdefghijKLMN",
        "OPENAI_BASE_URL": "https://llm.example/v1",
    }
    env["PGPASSWORD"] = "hunter2"
    result = make_recorder().run([PY, "-c", "pass", "--api-key", "hunter2"], env=env)
    meta = run_row(ops_dsn, result.run_id)["metadata"]
    assert "hunter2" not in dump(meta) and "sk-proj-0123456789" not in dump(meta)
    variables = meta["settings"]["variables"]
    assert variables["OPENAI_API_KEY"] == "[set]" and variables["PGPASSWORD"] == "[set]"
    assert variables["OPENAI_BASE_URL"] == "https://llm.example/v1"
    assert meta["argv"][-2:] == ["--api-key", "[REDACTED:secret]"]


#: Secrets whose names the old deny-list missed, with values no pattern recognises.
ENV_SECRETS = {
    "IPAI_PULSER_PEPPER": "correct-horse-battery-staple-pepper",
    "AZURE_OPENAI_KEY": "azure-plain-words-key-value",
    "LITELLM_MASTER_KEY": "litellm-master-plain-value",
    "MY_SERVICE_AUTH": "service auth with spaces",
}
ENV_SECRET_PRINTER = textwrap.dedent(
    """    import json, os, sys
    pepper = os.environ["IPAI_PULSER_PEPPER"]
    print("pepper is", pepper)
    print("azure:" + os.environ["AZURE_OPENAI_KEY"] + ";", file=sys.stderr)
    print(json.dumps({"master": os.environ["LITELLM_MASTER_KEY"]}))
    print("auth", os.environ["MY_SERVICE_AUTH"], file=sys.stderr)
    with open(os.environ["IPAI_RUN_EVENTS"], "a") as f:
        f.write(json.dumps({"type": "tool_call", "name": "call", "ok": False, "error": "bad " + pepper}) + "\\n")
        f.write(json.dumps({"type": "metadata", "data": {"prompt": "use " + pepper}}) + "\\n")
    sys.exit("fatal: could not sign with " + pepper)
    """
)


def test_settings_are_allowlisted_and_known_secret_values_are_masked_everywhere(make_recorder, ops_dsn, tmp_path):
    """Values of secret-named variables (whatever the name list of yesterday missed) are masked
    wherever the command repeats them; settings keep values only for allowlisted names."""
    env = {
        **CHILD_ENV,
        **ENV_SECRETS,
        "OPENAI_BASE_URL": "https://llm.example/v1",
        "IPAI_ODOO_URL": "http://odoo.example:8069",
        "OPENAI_API_KEY": "",
    }
    argv = [PY, "-c", ENV_SECRET_PRINTER, ENV_SECRETS["IPAI_PULSER_PEPPER"]]
    result = make_recorder().run(argv, env=env, variant_id="v1", kind="agent")
    assert result.status == "failed"
    item = result.iterations[0]
    stored = {
        "stdout.log": Path(item.stdout_log).read_text(),
        "stderr.log": Path(item.stderr_log).read_text(),
        "envelope.json": Path(item.envelope).read_text(),
        "run.json": (result.run_dir / "run.json").read_text(),
        "ops.agent_runs": dump(run_row(ops_dsn, result.run_id)),
        "ops.agent_errors": dump(error_row(ops_dsn, result.error_id)),
        "result": dump(result.as_dict()),
    }
    for where, text in stored.items():
        for name, secret in ENV_SECRETS.items():
            assert secret not in text, (where, name)
    assert "pepper is [REDACTED:$IPAI_PULSER_PEPPER]" in stored["stdout.log"]
    assert "azure:[REDACTED:$AZURE_OPENAI_KEY];" in stored["stderr.log"]
    assert "[REDACTED:$IPAI_PULSER_PEPPER]" in json.loads(stored["envelope.json"])["error"]["message"]
    meta = run_row(ops_dsn, result.run_id)["metadata"]
    assert meta["argv"][-1] == "[REDACTED:$IPAI_PULSER_PEPPER]"
    assert meta["prompt"] == "use [REDACTED:$IPAI_PULSER_PEPPER]"
    variables = meta["settings"]["variables"]
    for name in ENV_SECRETS:
        assert variables.get(name, "[set]") == "[set]"
    assert variables["IPAI_PULSER_PEPPER"] == variables["AZURE_OPENAI_KEY"] == "[set]"
    assert variables["LITELLM_MASTER_KEY"] == "[set]" and variables["MY_SERVICE_AUTH"] == "[set]"
    assert variables["OPENAI_API_KEY"] == "[empty]"
    assert variables["OPENAI_BASE_URL"] == "https://llm.example/v1"
    assert variables["IPAI_ODOO_URL"] == "http://odoo.example:8069"


def test_events_file_tool_calls_tokens_and_malformed_lines(make_recorder, ops_dsn):
    code = textwrap.dedent(
        """\
        import json, os
        with open(os.environ["IPAI_RUN_EVENTS"], "a") as f:
            for event in (
                {"type": "tool_call", "name": "grep", "ok": True, "duration_ms": 5},
                {"type": "tool_call", "name": "edit", "ok": False, "error": "conflict"},
                {"type": "usage", "model": "claude-x", "input_tokens": 100, "output_tokens": 40},
                {"type": "metadata", "data": {"prompt": "fix the widget", "patch": "--- a\\n+++ b\\n"}},
            ):
                f.write(json.dumps(event) + "\\n")
            f.write("{broken\\n")
        raise SystemExit(1)
        """
    )
    result = make_recorder().run([PY, "-c", code], kind="agent", variant_id="v2")
    assert result.code == "BUILD.AGENT_CRASHED" and result.attempts == 2  # agent kind, retried once
    meta = run_row(ops_dsn, result.run_id)["metadata"]
    assert meta["tool_call_count"] == 4 and meta["tool_calls_failed"] == 2  # two attempts, summed
    assert meta["tokens"] == {"input": 200, "output": 80, "total": 280}
    assert meta["model"] == "claude-x" and meta["prompt"] == "fix the widget"
    assert meta["events"] == {"lines": 10, "valid": 8, "warnings": 2}
    assert any("not JSON" in w for w in meta["event_warnings"])
    envelope = json.loads(Path(result.iterations[0].envelope).read_text())
    assert envelope["evidence"]["tokens"] == {"input": 100, "output": 40, "total": 140}
    assert [c["name"] for c in envelope["evidence"]["tool_calls"]] == ["grep", "edit"]


def test_an_events_file_with_nothing_usable_is_run_metadata_invalid_without_failing_the_run(make_recorder, ops_dsn):
    code = "import os\nopen(os.environ['IPAI_RUN_EVENTS'], 'w').write('garbage\\n{\\n')\n"
    result = make_recorder().run([PY, "-c", code], variant_id="v3")
    assert result.status == "succeeded" and result.exit_status == 0
    item = result.iterations[0]
    assert item.events_error_id is not None
    assert error_row(ops_dsn, item.events_error_id)["code"] == "AGENT.RUN_METADATA_INVALID"
    assert any("AGENT.RUN_METADATA_INVALID" in w for w in result.warnings)


def test_the_child_gets_run_id_attempt_events_path_and_traceparent(make_recorder):
    code = (
        "import json, os\nprint(json.dumps({k: os.environ.get(k) for k in "
        "('IPAI_RUN_ID', 'IPAI_RUN_ATTEMPT', 'IPAI_RUN_EVENTS', 'IPAI_RUN_DIR', 'TRACEPARENT')}))\n"
        "raise SystemExit(5)\n"
    )
    context = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    with trace.use_span(NonRecordingSpan(context)):
        result = make_recorder().run([PY, "-c", code])
    seen = json.loads(Path(result.iterations[0].stdout_log).read_text())
    assert seen["IPAI_RUN_ID"] == result.run_id and seen["IPAI_RUN_ATTEMPT"] == "1"
    assert seen["IPAI_RUN_EVENTS"] == str(result.run_dir / "1" / "events.jsonl")
    assert seen["TRACEPARENT"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    envelope = json.loads(Path(result.iterations[0].envelope).read_text())
    assert envelope["context"]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert envelope["context"]["span_id"] == "b7ad6b7169203331"


def test_writing_an_attempt_again_counts_nothing_twice(make_recorder, ops_dsn):
    result = make_recorder().run([PY, "-c", "raise SystemExit(2)"])
    envelope = json.loads(Path(result.iterations[0].envelope).read_text())
    conn = store.connect(ops_dsn)
    try:
        again = store.upsert_error(
            conn,
            store.ErrorOccurrence(
                source="agent",
                occurrence_id=f"{result.run_id}:1",
                fingerprint=envelope["error"]["fingerprint"],
                code=envelope["error"]["code"],
                severity=envelope["error"]["severity"],
                message=envelope["error"]["message"],
                occurred_at=envelope["occurred_at"],
                sample=envelope,
            ),
        )
    finally:
        conn.close()
    assert (again.error_id, again.count, again.is_new) == (result.error_id, 1, False)


def test_a_database_that_is_down_does_not_stop_the_command(make_recorder, closed_dsn, tmp_path):
    warnings: list[str] = []
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').write('yes')\nprint('did the work')\nraise SystemExit(4)\n"
    result = make_recorder(dsn=closed_dsn, warn=warnings.append).run([PY, "-c", code])
    assert marker.read_text() == "yes"
    assert (result.status, result.exit_status, result.db, result.error_id) == ("failed", 4, "unavailable", None)
    assert len(warnings) == 1 and warnings[0].startswith("TRANSPORT.DATABASE_UNAVAILABLE:")
    item = result.iterations[0]
    assert Path(item.stdout_log).read_text() == "did the work\n"
    assert envelope_errors(json.loads(Path(item.envelope).read_text())) == []
    assert json.loads((result.run_dir / "run.json").read_text())["db"] == "unavailable"


def test_a_database_back_by_the_end_gets_the_whole_run(make_recorder, ops_dsn, monkeypatch):
    """An outage during the run: the last sync writes the row and every error it missed, once."""
    from ipai_ops.runs import recorder as recorder_module

    real_connect = recorder_module.connect
    calls = []

    def flaky_connect(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise store.OpsDatabaseUnavailable("ops database unreachable (test outage)")
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(recorder_module, "connect", flaky_connect)
    warnings: list[str] = []
    argv = [PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    result = make_recorder(warn=warnings.append).run(argv)
    assert len(warnings) == 1 and result.db == "written" and result.attempts == 2
    row = run_row(ops_dsn, result.run_id)
    assert row["status"] == "failed" and row["error_id"] == result.error_id is not None
    assert [i["error_id"] for i in row["metadata"]["iterations"]] == [result.error_id] * 2
    assert error_row(ops_dsn, result.error_id)["count"] == 2


def test_a_database_without_the_ops_schema_is_a_warning_with_the_fix(make_recorder):
    warnings: list[str] = []
    with throwaway_database("ipai_test") as bare_dsn:
        result = make_recorder(dsn=bare_dsn, warn=warnings.append).run([PY, "-c", "raise SystemExit(1)"])
    assert (result.status, result.db) == ("failed", "unavailable")
    assert len(warnings) == 1 and "ipai-ops db migrate" in warnings[0]
    assert Path(result.iterations[0].envelope).is_file()


def test_no_db_records_on_disk_only(artifacts):
    result = record_run([PY, "-c", "print('hi')"], use_db=False, artifacts_dir=artifacts, quiet=True)
    assert (result.status, result.db) == ("succeeded", "disabled")
    assert (artifacts / result.run_id / "1" / "stdout.log").read_text() == "hi\n"


def test_a_run_id_is_never_reused(make_recorder, ops_dsn):
    recorder = make_recorder()
    recorder.run([PY, "-c", "pass"], run_id="ci-1234-lint")
    with pytest.raises(RunSetupError, match="already recorded"):
        recorder.run([PY, "-c", "pass"], run_id="ci-1234-lint")
    shutil.rmtree(recorder.artifacts_dir / "ci-1234-lint")
    with pytest.raises(RunSetupError, match=r"already in ops\.agent_runs"):
        recorder.run([PY, "-c", "pass"], run_id="ci-1234-lint")
    with pytest.raises(RunSetupError, match="must be 1-128 letters"):
        recorder.run([PY, "-c", "pass"], run_id="../escape")


def test_retention_prunes_old_runs_but_never_the_current_one_or_foreign_directories(make_recorder, artifacts):
    recorder = make_recorder(retention_days=14)
    old = recorder.run([PY, "-c", "pass"]).run_dir
    foreign = artifacts / "not-a-run"
    foreign.mkdir()
    month_ago = time.time() - 30 * 86400
    for path in (old, old / "run.json", foreign):
        os.utime(path, (month_ago, month_ago))
    current = recorder.run([PY, "-c", "pass"])
    assert not old.exists() and foreign.exists() and current.run_dir.exists()
    os.utime(current.run_dir / "run.json", (month_ago, month_ago))
    os.utime(current.run_dir, (month_ago, month_ago))
    assert recorder.prune(keep={current.run_id}) == []
    assert recorder.prune() == [current.run_dir]


def test_a_killed_recorder_leaves_the_row_it_had(make_recorder, ops_dsn):
    """The row is written before the command runs: a recorder killed mid-run leaves status running."""
    seen = {}

    def peek(_seconds: float) -> None:
        row = fetch_one(ops_dsn, "SELECT status, metadata FROM ops.agent_runs ORDER BY id DESC LIMIT 1")
        seen.update(status=row["status"], attempts=len(row["metadata"]["iterations"]))

    argv = [PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    make_recorder(retry_delay_cap=0.01, sleep=peek).run(argv)
    assert seen == {"status": "running", "attempts": 1}


def test_setup_errors_run_nothing(make_recorder):
    with pytest.raises(RunSetupError):
        make_recorder().run([])
    with pytest.raises(RunSetupError):
        make_recorder().run(["true"], kind="deploy")
    with pytest.raises(RunSetupError):
        make_recorder(max_output_bytes=10)


def test_signal_handlers_are_restored_after_a_run(make_recorder):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    make_recorder(use_db=False).run([PY, "-c", "pass"])
    assert {s: signal.getsignal(s) for s in before} == before


def test_bad_settings_are_setup_errors_before_anything_runs(make_recorder, artifacts, tmp_path, monkeypatch):
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    with pytest.raises(RunSetupError, match="cannot create the artifacts directory"):
        make_recorder(artifacts_dir=not_a_dir).run([PY, "-c", "pass"])
    with pytest.raises(RunSetupError, match="invalid PostgreSQL DSN"):
        make_recorder(dsn="host=db password=hunter2 oops")
    make_recorder(dsn="host=db password=hunter2 oops", use_db=False)  # no database, nothing to check
    monkeypatch.setenv("IPAI_OPS_RUN_RETRY_DELAY_CAP", "nan")
    with pytest.raises(RunSetupError, match="not a finite number"):
        make_recorder(retry_delay_cap=None)
    assert not artifacts.exists()
