"""``ipai-ops run`` and ``ipai-ops escalate`` through ipai_ops.cli.main, as a CI script uses them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import CHILD_ENV, PY, run_row


def test_run_exits_with_the_commands_status_and_says_what_happened(run_cli, ops_dsn, artifacts):
    res = run_cli(
        "run", "--dsn", ops_dsn, "--artifacts", str(artifacts), "--retry-delay-cap", "0", "--variant-id", "v1",
        "--", PY, "-c", "print('out line'); import sys; print('err line', file=sys.stderr); sys.exit(7)",
    )  # fmt: skip
    assert res.code == 7
    assert "out line" in res.out and "err line" in res.err  # teed through
    summary = res.err.strip().splitlines()[-1]
    assert summary.startswith("ipai-ops run: run-") and " failed UNCLASSIFIED.UNKNOWN (exit 7, 1 attempt(s)" in summary
    run_id = summary.split()[2]
    assert f"artifacts {artifacts / run_id}" in summary and "; error " in summary
    assert run_row(ops_dsn, run_id)["metadata"]["variant_id"] == "v1"


def test_run_format_json_prints_only_the_record_on_stdout(run_cli, ops_dsn, artifacts):
    res = run_cli(
        "run", "--dsn", ops_dsn, "--artifacts", str(artifacts), "--format", "json", "--kind", "test",
        "--", PY, "-c", "print('chatty child'); raise SystemExit(1)",
    )  # fmt: skip
    assert res.code == 1
    record = json.loads(res.out)
    assert (record["status"], record["code"], record["exit_status"]) == ("failed", "BUILD.TEST_FAILED", 1)
    assert record["metadata"]["iterations"][0]["typed_by"] == "kind"
    assert "chatty child" in res.err


def test_run_timeout_exits_124(run_cli, ops_dsn, artifacts):
    res = run_cli(
        "run", "--dsn", ops_dsn, "--artifacts", str(artifacts), "--quiet", "--timeout", "1", "--max-attempts", "1",
        "--kill-grace", "0.5", "--", PY, "-c", "import time; time.sleep(30)",
    )  # fmt: skip
    assert res.code == 124 and " failed BUILD.TIMEOUT (exit 124" in res.err


def test_run_with_the_database_down_still_runs_and_warns_once(run_cli, closed_dsn, artifacts, tmp_path):
    marker = tmp_path / "did-it"
    res = run_cli(
        "run", "--dsn", closed_dsn, "--artifacts", str(artifacts), "--quiet",
        "--", PY, "-c", f"open({str(marker)!r}, 'w').write('1')",
    )  # fmt: skip
    assert res.code == 0 and marker.exists()
    warnings = [line for line in res.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "TRANSPORT.DATABASE_UNAVAILABLE" in warnings[0]
    assert "database unavailable" in res.err.strip().splitlines()[-1]
    (run_dir,) = artifacts.iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "succeeded"


def test_run_usage_errors_exit_2(run_cli, artifacts):
    assert run_cli("run", "--no-db", "--artifacts", str(artifacts)).code == 2
    res = run_cli("run", "--no-db", "--artifacts", str(artifacts), "--prune", "--", "true")
    assert res.code == 2 and "--prune takes no command" in res.err
    res = run_cli("run", "--no-db", "--artifacts", str(artifacts), "--run-id", "a/b", "--", "true")
    assert res.code == 2 and "must be 1-128 letters" in res.err


def test_run_prune_only(run_cli, artifacts):
    stale = artifacts / "run-old"
    stale.mkdir(parents=True)
    (stale / "run.json").write_text("{}")
    os.utime(stale / "run.json", (0, 0))
    os.utime(stale, (0, 0))
    res = run_cli("run", "--artifacts", str(artifacts), "--prune", "--retention-days", "3")
    assert res.code == 0 and "removed 1 run directory older than 3 day(s)" in res.out
    assert not stale.exists()


def test_run_in_a_real_shell_pipeline_composes_like_the_command(ops_dsn, artifacts, tmp_path):
    test_file = tmp_path / "test_x.py"
    test_file.write_text("def test_x():\n    assert False\n")
    env = {**CHILD_ENV, "IPAI_OPS_RUN_ARTIFACTS": str(artifacts), "IPAI_OPS_RUN_RETRY_DELAY_CAP": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "ipai_ops", "run", "--dsn", ops_dsn, "--quiet", "--", PY, "-m", "pytest", "-q",
         "-p", "no:cacheprovider", str(test_file)],
        capture_output=True, text=True, env=env, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert " failed BUILD.TEST_FAILED (exit 1" in done.stderr
    assert done.stdout == ""  # --quiet: the test output is in the run directory only
    (run_dir,) = artifacts.iterdir()
    assert "assert False" in (run_dir / "1" / "stdout.log").read_text()


def test_escalate_prints_the_bundle_path(run_cli, ops_dsn, artifacts, tmp_path):
    res = run_cli(
        "run", "--dsn", ops_dsn, "--artifacts", str(artifacts), "--quiet", "--", PY, "-c", "raise SystemExit(9)"
    )
    run_id = res.err.strip().splitlines()[-1].split()[2]
    out_dir = tmp_path / "bundles"
    res = run_cli("escalate", run_id, "--dsn", ops_dsn, "--artifacts", str(artifacts), "--out", str(out_dir))
    assert res.code == 0
    path = Path(res.out.strip())
    assert path.is_absolute() and path.is_file() and path.parent == out_dir.resolve()
    res = run_cli("escalate", run_id, "--dsn", ops_dsn, "--artifacts", str(artifacts), "--out", str(out_dir),
                  "--format", "json")  # fmt: skip
    assert json.loads(res.out)["manifest"]["ids"]["run_id"] == run_id


def test_escalate_unknown_and_missing_intent_table_exit_2(run_cli, ops_dsn, tmp_path):
    res = run_cli("escalate", "run-does-not-exist", "--dsn", ops_dsn, "--out", str(tmp_path))
    assert res.code == 2 and "no run, error or intent 'run-does-not-exist'" in res.err
    res = run_cli("escalate", "intent:abc", "--dsn", ops_dsn, "--out", str(tmp_path))
    assert res.code == 2 and "INTENT.NOT_FOUND: this database has no intent table" in res.err
    res = run_cli("escalate", "12345", "--dsn", ops_dsn, "--out", str(tmp_path))
    assert res.code == 2 and "no error with id or fingerprint '12345'" in res.err


def test_escalate_with_the_database_down_and_no_run_directory_exits_3(run_cli, closed_dsn, tmp_path):
    res = run_cli("escalate", "fp1:" + "0" * 32, "--dsn", closed_dsn, "--out", str(tmp_path))
    assert res.code == 3 and "TRANSPORT.DATABASE_UNAVAILABLE" in res.err
