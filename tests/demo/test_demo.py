"""``ipai-ops demo`` end to end: real SDK telemetry through a real bridge into a throwaway ops DB."""

from __future__ import annotations

import json
from collections import Counter

import psycopg2
import pytest

from ipai_ops.classify import classify
from ipai_ops.cli import main
from ipai_ops.demo import DEMO_SOURCE, agent, intents
from tests.bridge.conftest import free_port

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
