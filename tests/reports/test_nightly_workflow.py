"""``.github/workflows/nightly-baseline.yml``: its script run as GitHub runs it (bash -eo
pipefail) against a real PostgreSQL holding the connector's views and a real git remote:
night one commits an anonymised baseline, night two drifts (exit 1) and still commits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg2
import yaml

from ipai_ops.reports import baseline
from tests.connector_intents import create_intent_tables

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "nightly-baseline.yml"
KEY = "nightly-test-key-0123456789abcdef"  # pragma: allowlist secret


def _load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=yaml.BaseLoader)


def _script() -> str:
    steps = _load(WORKFLOW)["jobs"]["baseline"]["steps"]
    return next(s["run"] for s in steps if "report drift" in s.get("run", ""))


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _insert(dsn: str, rows: list[tuple[str, str, int, str | None]]) -> None:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM ipai_pulser_intent")
            cur.executemany(
                "INSERT INTO ipai_pulser_intent (ref, intent_type, source, state, attempts, max_attempts,"
                " duration_ms, failure_code, create_date) VALUES (%s, 'odoo.healthcheck', %s, %s, %s, 3, 50,"
                " %s, now() AT TIME ZONE 'UTC')",
                [(f"r{i}", *row) for i, row in enumerate(rows)],
            )
    finally:
        conn.close()


def _night(work: Path, tmp: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    runner_temp = tmp / "runner"
    runner_temp.mkdir(exist_ok=True)
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", _script()],
        cwd=work,
        env={**env, "RUNNER_TEMP": str(runner_temp)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_two_nights_commit_anonymised_baselines_and_the_second_drifts(empty_db_dsn, tmp_path):
    conn = psycopg2.connect(empty_db_dsn)
    try:
        with conn, conn.cursor() as cur:
            create_intent_tables(cur)
    finally:
        conn.close()
    remote, work = tmp_path / "remote.git", tmp_path / "work"
    _git(tmp_path, "init", "--bare", "-b", "main", str(remote))
    _git(tmp_path, "clone", str(remote), str(work))
    (work / "README").write_text("x\n")
    _git(work, "add", "README")
    _git(work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-m", "init")
    _git(work, "push", "origin", "HEAD:main")
    _git(work, "branch", "--set-upstream-to=origin/main")
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "IPAI_REPORT_DSN": empty_db_dsn,
        "IPAI_OPS_REPORT_KEY": KEY,
    }

    # night one: 40 intents of one client, 2 failed; no baseline yet, so nothing to compare
    _insert(empty_db_dsn, [("pk_live_acme", "succeeded", 1, None)] * 38 + [("pk_live_acme", "failed", 1, "X.Y")] * 2)
    first = _night(work, tmp_path, env)
    assert first.returncode == 0, first.stdout + first.stderr
    committed = _git(remote, "show", "main:reports/baseline/baseline.json")
    assert "pk_live_acme" not in committed + _git(remote, "show", "main:reports/baseline/baseline.md")
    report = json.loads(committed)
    assert report["anonymised"]["method"] == "hmac-sha256"
    assert [r["source"] for r in report["by_type_source"]] == [baseline.pseudonym("pk_live_acme", KEY.encode())]
    assert report["overall"]["error_rate"] == 0.05

    # night two: a quarter fail and retry: drift, exit 1, and the new baseline is committed anyway
    _insert(empty_db_dsn, [("pk_live_acme", "succeeded", 1, None)] * 30 + [("pk_live_acme", "failed", 2, "X.Y")] * 10)
    second = _night(work, tmp_path, env)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "CI.BASELINE_DRIFT: overall error_rate 5.0% -> 25.0% (+20.0 points, threshold 5.0), worse" in second.stderr
    assert "::warning::CI.BASELINE_DRIFT" in second.stdout
    assert json.loads(_git(remote, "show", "main:reports/baseline/baseline.json"))["overall"]["error_rate"] == 0.25
    log = _git(remote, "log", "--format=%s", "main").splitlines()
    assert re.fullmatch(r"Nightly reliability baseline \d{4}-\d\d-\d\d \(drift exit 1\)", log[0]), log
    assert re.fullmatch(r"Nightly reliability baseline \d{4}-\d\d-\d\d \(drift exit 0\)", log[1]), log

    # the same numbers again: nothing to commit, no drift
    third = _night(work, tmp_path, env)
    assert third.returncode == 0, third.stderr
    assert "baseline unchanged" in third.stdout
    assert len(_git(remote, "log", "--format=%s", "main").splitlines()) == 3

    # without its secrets the workflow says so and commits nothing
    bare = {k: v for k, v in env.items() if k != "IPAI_OPS_REPORT_KEY"}
    skipped = _night(work, tmp_path, bare)
    assert skipped.returncode == 0 and "IPAI_OPS_REPORT_KEY secret is not set" in skipped.stdout


def test_the_workflow_is_scheduled_and_pins_actions_as_ci_does():
    wf = _load(WORKFLOW)
    assert "schedule" in wf["on"] and "workflow_dispatch" in wf["on"]
    assert wf["permissions"] == {"contents": "write"}
    pins = set(re.findall(r"uses: (\S+@\S+)", (ROOT / ".github" / "workflows" / "ci.yml").read_text()))
    used = re.findall(r"uses: (\S+@\S+)", WORKFLOW.read_text())
    assert used and set(used) <= pins
    assert all(re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", u) for u in used)
