"""``ipai-ops demo`` against a real Odoo 19 with both addons: every view it fills has rows,
read through Odoo's own models, and a second run doubles nothing.

Installs the addons into a throwaway ops database and serves it (about a minute); skipped
when Odoo 19 is not installed here (``scripts/odoo_layer.py locate``).
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg2
import pytest
import requests

from ipai_ops.cli import main
from ipai_ops.demo import samples
from ipai_ops.demo.intents import OdooRpc
from ipai_ops.demo.resolution import CODE, TITLE
from tests.bridge.conftest import REPO, free_port

from .conftest import start_bridge

LAYER = REPO / "scripts" / "odoo_layer.py"


def _odoo_or_skip() -> None:
    done = subprocess.run([sys.executable, str(LAYER), "locate"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("Odoo 19 is missing under CI=true")
        pytest.skip("Odoo 19 is not installed here")


@pytest.fixture
def odoo(ops_dsn: str, tmp_path) -> Iterator[tuple[str, str]]:
    """(url, db): the addons installed into the ops database and Odoo serving it."""
    _odoo_or_skip()
    parts = urlsplit(ops_dsn)
    db = parts.path.lstrip("/")
    # Odoo serves (and lists) only the databases its user owns: hand this one over.
    conn = psycopg2.connect(ops_dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{db}" OWNER TO "{getpass.getuser()}"')
    finally:
        conn.close()
    # Odoo connects as the OS user (it refuses 'postgres'), as the Odoo layer's tests do.
    env = {**os.environ, "ODOO_DB_HOST": parts.hostname or "127.0.0.1", "ODOO_DB_PORT": str(parts.port or 5432)}
    data = str(tmp_path / "odoo-data")
    install = subprocess.run(
        [sys.executable, str(LAYER), "install", "--db", db, "--data-dir", data],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    port = free_port()
    log = (tmp_path / "odoo.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(LAYER), "serve", "--db", db, "--port", str(port), "--data-dir", data],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(url + "/web/login", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None, (tmp_path / "odoo.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Odoo did not come up in 120 s"
            time.sleep(1)
        yield url, db
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def view_counts(rpc: OdooRpc) -> dict[str, int]:
    return {
        "agent runs": rpc.execute("ipai.agent.run", "search_count", [("agent", "=", samples.RUNS_AGENT)]),
        "runs with an error": rpc.execute("ipai.agent.run", "search_count", [("error_id", "!=", False)]),
        "benchmark results": rpc.execute("ipai.benchmark.result", "search_count", []),
        "sample variants": rpc.execute(
            "ipai.benchmark.result", "search_count", [("variant_id", "in", ["sample-baseline", "sample-candidate"])]
        ),
        "A/B verdicts": rpc.execute("ipai.benchmark.comparison", "search_count", []),
        "sample resolutions": rpc.execute("ipai.resolution", "search_count", [("name", "=", TITLE)]),
    }


def test_demo_fills_the_views_of_a_real_odoo(capsys, ops_dsn, odoo):
    url, db = odoo
    proc = start_bridge(ops_dsn)
    argv = ["demo", "--otlp-endpoint", proc.url, "--dsn", ops_dsn, "--runs", "1", "--odoo-url", url, "--odoo-db", db]
    try:
        started = time.monotonic()
        assert main([*argv, "--format", "json"]) == 0, capsys.readouterr().err
        first_s = time.monotonic() - started
        first = json.loads(capsys.readouterr().out)
        rpc = OdooRpc(url, db, "admin", "admin")
        after_one = view_counts(rpc)
        assert main(argv) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        after_two = view_counts(rpc)
    finally:
        proc.stop()
    n_runs = 2 + 2 * samples.AB_RUNS_PER_VARIANT
    assert after_one == {
        "agent runs": n_runs,
        "runs with an error": 1,
        "benchmark results": 3 * 3 + 2 * samples.AB_RUNS_PER_VARIANT * 5,
        "sample variants": 2 * samples.AB_RUNS_PER_VARIANT * 5,
        "A/B verdicts": 6 + 4,  # the sample variants' and the real PRs' ablation (no ci, time_to_green)
        "sample resolutions": 1,
    }, first
    assert after_two == after_one
    assert all(o["as_expected"] for o in first["intents"]["outcomes"]), first["intents"]
    assert "resolution: resolution" in out and "already there" in out
    # The failing run opens its typed error group.
    (run,) = rpc.execute("ipai.agent.run", "search_read", [("error_id", "!=", False)], ["error_id", "status"])
    assert run["status"] == "failed" and run["error_id"][1] == "BUILD.TEST_FAILED"
    # The comparison shows a verdict with its interval.
    (composite,) = rpc.execute(
        "ipai.benchmark.comparison",
        "search_read",
        [("category", "=", "composite"), ("baseline_variant", "=", samples.BASELINE_VARIANT)],
        ["verdict", "ci_low", "ci_high"],
    )
    assert composite["verdict"] == "better" and 0 < composite["ci_low"] <= composite["ci_high"]
    # The real PRs' ablation shows too: its interval, and no verdict on 2 against 1 PR.
    (ablation,) = rpc.execute(
        "ipai.benchmark.comparison",
        "search_read",
        [("category", "=", "composite"), ("candidate_variant", "=", samples.REAL_RISKY_VARIANT)],
        ["baseline_variant", "n_baseline", "n_candidate", "delta", "ci_low", "ci_high", "verdict"],
    )
    assert ablation["baseline_variant"] == samples.REAL_PLAIN_VARIANT
    assert (ablation["n_baseline"], ablation["n_candidate"], ablation["verdict"]) == (2, 1, "no evidence")
    assert ablation["ci_low"] == ablation["ci_high"] == pytest.approx(ablation["delta"]) == pytest.approx(-8.58)
    # The resolution went through Odoo's model: linked to the demo's error group, in review.
    (resolution,) = rpc.execute(
        "ipai.resolution", "search_read", [("name", "=", TITLE)], ["code", "fingerprint", "error_ids", "stage", "ref"]
    )
    (error,) = rpc.execute(
        "ipai.agent.error", "search_read", [("code", "=", CODE), ("service", "=", "demo-agent")], ["fingerprint"]
    )
    assert resolution["fingerprint"] == error["fingerprint"] and resolution["error_ids"] == [error["id"]]
    assert (resolution["code"], resolution["stage"]) == (CODE, "review") and resolution["ref"]
    print(f"first demo run against a real Odoo: {first_s:.1f} s")
