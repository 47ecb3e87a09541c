"""``ipai-ops demo`` end to end: real SDK telemetry through a real bridge into a throwaway ops DB."""

from __future__ import annotations

import json
import tempfile
from collections import Counter

import psycopg2
import pytest

from ipai_ops.classify import classify
from ipai_ops.cli import main
from ipai_ops.demo import DEMO_SOURCE, agent, intents, samples
from tests.bridge.conftest import free_port
from tests.conftest import query_rows

from .conftest import load_addon_signing, start_bridge

FAILING = [t for t in agent.TASKS if t.expect]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["demo", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def rows(dsn: str) -> dict[str, tuple[int, str, str]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT code, count, source, service FROM ops.agent_errors WHERE service = 'demo-agent' ORDER BY code"
            )
            return {code: (count, source, service) for code, count, source, service in cur.fetchall()}
    finally:
        conn.close()


def test_every_failing_task_classifies_as_it_expects(registry):
    assert {t.kind for t in FAILING} == {"span", "log"}
    assert len({t.expect for t in FAILING}) == len(FAILING), "one code per failing task"
    for task in FAILING:
        result = classify(
            registry,
            explicit_code=task.explicit_code,
            error_type=agent.__name__ + "." + task.error.__qualname__ if task.error else None,
            message=task.message,
            text=task.message,
        )
        assert result.code == task.expect, task.name
    # Both ways of naming a code are exercised: explicit attributes and registry signatures.
    assert any(t.explicit_code for t in FAILING)
    assert any(not t.explicit_code and t.expect != "UNCLASSIFIED.UNKNOWN" for t in FAILING)


def test_demo_errors_arrive_in_ops_with_their_codes(capsys, bridge, module_ops_dsn):
    code, out, err = run(
        capsys,
        "--otlp-endpoint",
        bridge.url,
        "--dsn",
        module_ops_dsn,
        "--runs",
        "2",
        "--no-intents",
        "--format",
        "json",
    )
    assert code == 0, err
    result = json.loads(out)["agent"]
    expected = Counter(t.expect for t in FAILING for _ in range(2))
    assert result["expected"] == dict(expected)
    assert result["arrived"] == dict(expected)
    assert result["complete"] is True
    stored = rows(module_ops_dsn)
    assert set(stored) == set(expected)
    for code_, (count, source, service) in stored.items():
        # One row per fingerprint, counted once per run.
        assert (count, source, service) == (2, DEMO_SOURCE, "demo-agent"), code_
    # the model calls that failed keep their GenAI context (Provider health has rows on first run)
    conn = psycopg2.connect(module_ops_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT DISTINCT e.code, o.environment, o.gen_ai_provider, o.gen_ai_response_model,"
                " o.gen_ai_input_tokens, e.last_gen_ai_model FROM ops.agent_error_occurrences o"
                " JOIN ops.agent_errors e ON e.id = o.error_id"
                " WHERE e.service = 'demo-agent' AND o.gen_ai_provider IS NOT NULL ORDER BY 1"
            )
            assert cur.fetchall() == [
                (
                    "AGENT.OUTPUT_SCHEMA_INVALID",
                    "demo",
                    "anthropic",
                    "claude-sonnet-4-20250514",
                    812,
                    "claude-sonnet-4-20250514",
                ),
                ("AGENT.PROVIDER_KEY_MISSING", "demo", "openai", None, None, "gpt-4o-mini"),
            ]
    finally:
        conn.close()

    # Again, as text: the same rows count up (new occurrences, same fingerprints).
    code, out, err = run(capsys, "--otlp-endpoint", bridge.url, "--dsn", module_ops_dsn, "--runs", "1", "--no-intents")
    assert code == 0, err
    assert f"all {len(FAILING)} occurrences arrived" in out
    assert "TRANSPORT.DATABASE_UNAVAILABLE" in out
    assert "run 1: " in err  # live counts when stderr is not a terminal
    assert {c: v[0] for c, v in rows(module_ops_dsn).items()} == dict.fromkeys(expected, 3)


def test_bridge_down_is_one_line(capsys, module_ops_dsn):
    code, _out, err = run(
        capsys, "--otlp-endpoint", f"http://127.0.0.1:{free_port()}", "--dsn", module_ops_dsn, "--no-intents"
    )
    assert code == 3
    assert err.count("\n") == 1 and "no OTLP receiver" in err and "Traceback" not in err


def test_wrong_dsn_is_one_line_before_sending(capsys, bridge, module_ops_dsn):
    bad = module_ops_dsn.rpartition("/")[0] + "/ipai_no_such_database"
    code, out, err = run(capsys, "--otlp-endpoint", bridge.url, "--dsn", bad, "--no-intents")
    assert code == 3
    assert err.startswith("ipai-ops: error: TRANSPORT.DATABASE_UNAVAILABLE") and err.count("\n") == 1
    assert "agent:" not in out


def test_database_without_ops_schema(capsys, bridge, empty_db_dsn):
    code, _out, err = run(capsys, "--otlp-endpoint", bridge.url, "--dsn", empty_db_dsn, "--no-intents")
    assert code == 1 and "ipai-ops db migrate" in err


def test_bridge_token(capsys, module_ops_dsn):
    secured = start_bridge(module_ops_dsn, token="s3cret-token")
    try:
        code, _out, err = run(capsys, "--otlp-endpoint", secured.url, "--no-check", "--no-intents")
        assert code == 1 and "--bridge-token" in err
        code, _out, err = run(
            capsys, "--otlp-endpoint", secured.url, "--bridge-token", "s3cret-token", "--no-check", "--no-intents"
        )
        assert code == 0, err
    finally:
        secured.stop()


def test_intents_skipped_with_a_note_when_odoo_is_absent(capsys):
    code, out, _err = run(capsys, "--no-agent", "--odoo-url", f"http://127.0.0.1:{free_port()}")
    assert code == 0
    assert "skipped: Odoo is not reachable" in out
    assert "resolution: skipped: Odoo is not reachable" in out


def test_intents_signed_and_classified(capsys, fake_odoo):
    code, out, err = run(
        capsys, "--no-agent", "--odoo-url", fake_odoo.url, "--odoo-db", "ipai", "--format", "json", "--wait", "5"
    )
    assert code == 0, err
    result = json.loads(out)["intents"]
    assert "created Pulser client 'demo-agent'" in result["client"]
    outcomes = {o["name"]: o for o in result["outcomes"]}
    assert all(o["as_expected"] for o in outcomes.values()), outcomes
    assert outcomes["healthcheck"]["result"] == "succeeded"
    assert outcomes["unknown intent type"]["http_status"] == 422
    assert outcomes["forged signature"]["result"] == "WEBHOOK.SIGNATURE_INVALID"
    assert outcomes["stale timestamp"]["result"] == "WEBHOOK.TIMESTAMP_STALE"
    assert outcomes["unknown allowlist profile"]["result"] == "INTENT.ALLOWLIST_PROFILE_UNKNOWN"
    assert fake_odoo.worker_runs == 1


def test_intents_with_given_key_and_no_login(capsys, fake_odoo, monkeypatch):
    monkeypatch.setenv("IPAI_PULSER_KEY_ID", fake_odoo.key_id)
    monkeypatch.setenv("IPAI_PULSER_SECRET", fake_odoo.key)
    code, out, err = run(capsys, "--no-agent", "--odoo-url", fake_odoo.url, "--odoo-password", "wrong", "--wait", "0")
    assert code == 0, err
    assert f"using Pulser client {fake_odoo.key_id}" in out
    assert "INTENT.TYPE_UNKNOWN (HTTP 422)  ok" in out
    # No usable login: nothing provisioned, the worker is left to its cron.
    assert fake_odoo.rpc_calls == []
    assert "pending" in out


@pytest.mark.parametrize("argv", [["--runs", "0"], ["--wait", "-1"], ["--wait", "nan"]])
def test_bad_usage(capsys, argv):
    code, _out, err = run(capsys, *argv, "--no-intents")
    assert code == 2 and err.startswith("ipai-ops: error:")


def test_demo_signs_v2_like_the_addon():
    """The demo mirrors the addon's canonical string (it cannot import the addon without Odoo)."""
    addon = load_addon_signing()
    target = "/pulser/v1/intents/%C3%BC%20b?b=2&a=x+y&a=1&c="
    args = {"key_id": "pk_0123456789abcdef", "timestamp": 1796659200, "nonce": "bm9uY2Utb2YtdGVzdHM"}
    body = b'{"type": "odoo.healthcheck"}'
    mine = intents.canonical_request(method="post", target=target, body=body, **args)
    theirs = addon.canonical_string_v2(
        method="post", path="/pulser/v1/intents/ü b", query="b=2&a=x+y&a=1&c=", body=body, **args
    )
    assert mine == theirs
    headers = intents.signed_headers(
        "pk_x", "k" * 64, method="GET", target="/pulser/v1/intents/ab", body=b"", timestamp=1
    )
    signed = addon.parse_headers(headers)
    assert signed.scheme == "v2"
    addon.verify(signed, b"", "k" * 64, now=1, method="GET", path="/pulser/v1/intents/ab", query="")


def view_counts(dsn: str) -> dict[str, int]:
    """What the Agent Runs, Benchmark results, A/B and Agent Errors views read (in place)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            counts = {}
            for name, query in (
                ("runs", "SELECT count(*) FROM ops.agent_runs WHERE agent = 'demo-coder'"),
                ("runs_with_error", "SELECT count(*) FROM ops.agent_runs WHERE error_id IS NOT NULL"),
                ("benchmark_results", "SELECT count(*) FROM ops.agent_benchmark_results"),
                ("benchmark_variants", "SELECT count(DISTINCT variant_id) FROM ops.agent_benchmark_results"),
                ("comparisons", "SELECT count(*) FROM ops.agent_ab_comparisons"),
                ("errors", "SELECT count(*) FROM ops.agent_errors"),
            ):
                cur.execute(query)
                counts[name] = cur.fetchone()[0]
            return counts
    finally:
        conn.close()


def test_demo_fills_runs_benchmarks_and_resolutions(capsys, ops_dsn, fake_odoo, run_artifacts):
    """Every view has rows after one run; a second run doubles nothing."""
    fake_odoo.ops_dsn = ops_dsn
    proc = start_bridge(ops_dsn)
    try:
        argv = ("--otlp-endpoint", proc.url, "--dsn", ops_dsn, "--runs", "1", "--odoo-url", fake_odoo.url)
        argv += ("--odoo-db", "ipai", "--wait", "5")
        code, out, err = run(capsys, *argv, "--format", "json")
        assert code == 0, err
        first = json.loads(out)
        after_one = view_counts(ops_dsn)
        code, out, err = run(capsys, *argv)
        assert code == 0, err
        after_two = view_counts(ops_dsn)
    finally:
        proc.stop()

    runs = first["runs"]
    assert runs["ok"] and not runs["unexpected"] and runs["already"] == []
    by_ref = {r["task_ref"]: r for r in runs["recorded"]}
    assert by_ref["demo:tests-pass"]["result"] == "succeeded" and by_ref["demo:tests-pass"]["error_id"] is None
    assert by_ref["demo:tests-fail"]["result"] == "BUILD.TEST_FAILED"
    assert len(by_ref) == 2 + 2 * samples.AB_RUNS_PER_VARIANT
    # The failing run is linked to its error group, typed and kept apart from the OTLP agent's.
    rows_ = query_rows(
        ops_dsn,
        "SELECT r.status, r.metadata ->> 'variant_id' AS variant, e.code, e.source, e.service"
        " FROM ops.agent_runs r JOIN ops.agent_errors e ON e.id = r.error_id",
    )
    assert rows_ == [
        {"status": "failed", "variant": None, "code": "BUILD.TEST_FAILED", "source": "agent", "service": "demo-coder"}
    ]
    assert (run_artifacts / by_ref["demo:tests-fail"]["run_id"] / "run.json").is_file()

    # The three real public PRs, with the scores tests/ci/fixtures/pull_requests/README.md states.
    real = {s["subject"]: (s["composite"], s["variant"]) for s in runs["scored"] if s["subject"].startswith("github:")}
    assert real == {
        "github:dajiaji/pyseto#537": (55.71, samples.REAL_RISKY_VARIANT),
        "github:zabio3/godolint#47": (64.29, samples.REAL_PLAIN_VARIANT),
        "github:voxpupuli/puppet-unattended_upgrades#248": (64.29, samples.REAL_PLAIN_VARIANT),
    }
    # Their ablation (a risky path touched or not): computed by bench compare, stored, and
    # refusing a verdict on 2 against 1 PR.
    ablation = runs["ablation"]
    assert (ablation["baseline"], ablation["candidate"]) == (samples.REAL_PLAIN_VARIANT, samples.REAL_RISKY_VARIANT)
    assert ablation["verdict"] == "no evidence" and "too few runs (baseline 2, candidate 1" in ablation["summary"]
    (stored_ablation,) = query_rows(
        ops_dsn,
        "SELECT n_baseline, n_candidate, delta, ci_low, ci_high, verdict FROM ops.agent_ab_comparisons"
        " WHERE category = 'composite' AND baseline_variant = %s",
        (samples.REAL_PLAIN_VARIANT,),
    )
    assert (stored_ablation["n_baseline"], stored_ablation["n_candidate"]) == (2, 1)
    assert float(stored_ablation["delta"]) == pytest.approx(-8.58, abs=0.01)
    assert stored_ablation["ci_low"] is not None and stored_ablation["verdict"] == "no evidence"
    # The A/B comparison of the sample variants: a verdict with its interval.
    comparison = runs["comparison"]
    assert (comparison["baseline"], comparison["candidate"]) == ("sample-baseline", "sample-candidate")
    stored = query_rows(
        ops_dsn,
        "SELECT verdict, ci_low, ci_high, n_baseline, n_candidate FROM ops.agent_ab_comparisons"
        " WHERE category = 'composite' AND baseline_variant = 'sample-baseline'",
    )
    assert len(stored) == 1
    assert stored[0]["verdict"] == "better" and 0 < stored[0]["ci_low"] <= stored[0]["ci_high"]
    assert stored[0]["n_baseline"] == stored[0]["n_candidate"] == samples.AB_RUNS_PER_VARIANT

    # The sample resolution, linked to the demo's error group by fingerprint and id.
    assert first["resolution"]["created"] is True
    (resolution,) = fake_odoo.resolutions.values()
    (error,) = query_rows(
        ops_dsn,
        "SELECT id, fingerprint FROM ops.agent_errors WHERE service = 'demo-agent'"
        " AND code = 'TRANSPORT.DATABASE_UNAVAILABLE'",
    )
    assert (resolution["fingerprint"], resolution["error_id"]) == (error["fingerprint"], error["id"])
    assert resolution["code"] == "TRANSPORT.DATABASE_UNAVAILABLE" and resolution["stage"] == "review"
    assert "sample" in resolution["name"] and resolution["summary"] and resolution["root_cause"]

    # Rows in every view after one run...
    assert after_one == {
        "runs": 2 + 2 * samples.AB_RUNS_PER_VARIANT,
        "runs_with_error": 1,
        "benchmark_results": 3 * 3 + 2 * samples.AB_RUNS_PER_VARIANT * 5,
        "benchmark_variants": 4,
        "comparisons": 6 + 4,  # the real PRs: composite, evidence, minimality, risk (no check runs)
        "errors": len(FAILING) + 1,
    }
    # ... and the same counts after a second one.
    assert after_two == after_one
    assert len(fake_odoo.resolutions) == 1
    assert f"{2 + 2 * samples.AB_RUNS_PER_VARIANT} run(s) already recorded" in out
    assert "A/B (sample data): sample-candidate is better than sample-baseline" in out
    assert "resolution: resolution 1 already there" in out


def test_runs_skipped_without_the_database_check(capsys, bridge, module_ops_dsn):
    code, out, err = run(
        capsys, "--otlp-endpoint", bridge.url, "--dsn", module_ops_dsn, "--no-check", "--no-intents", "--format", "json"
    )
    assert code == 0, err
    assert "runs" not in json.loads(out)


def test_sample_variants_are_named_as_samples():
    for case in samples.run_cases():
        if case.variant_id:
            assert case.variant_id.startswith("sample-")
            assert samples.sample_pr(case.variant_id, 0)["subject"].startswith("sample:")


def test_runs_fall_back_to_a_temp_dir(ops_dsn, tmp_path, monkeypatch):
    """A container user without a home: the run directories go to the temp dir, the rows to ops."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    report = samples.SamplesReport()
    conn = psycopg2.connect(ops_dsn)
    try:
        samples.record_runs(conn, ops_dsn, report, artifacts_dir=str(blocker / "runs"))
    finally:
        conn.close()
    assert not report.unexpected
    fallback = tmp_path / "tmp" / "ipai-ops-demo-runs"
    assert report.notes == [f"run directories in {fallback} ({blocker / 'runs'}: Not a directory)"]
    assert (fallback / report.recorded[0]["run_id"] / "run.json").is_file()
    assert query_rows(ops_dsn, "SELECT count(*) AS n FROM ops.agent_runs")[0]["n"] == len(samples.run_cases())
