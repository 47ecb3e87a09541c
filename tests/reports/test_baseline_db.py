"""``ipai-ops report baseline --dsn``: intents read from an Odoo database through the
connector's published view ``ops.pulser_intents_v1``, never its tables."""

from __future__ import annotations

import json

import psycopg2

from ipai_ops.reports import baseline
from tests.connector_intents import create_intent_tables

_ROWS = [
    # ref, type, source, state, attempts, duration_ms, failure_code, created, cancel requested, acknowledged
    ("r1", "odoo.healthcheck", "pk_a", "succeeded", 1, 10, None, "2026-01-01 00:00:00", None, None),
    ("r2", "odoo.healthcheck", "pk_a", "succeeded", 1, 30, None, "2026-01-01 00:00:01", None, None),
    ("r3", "odoo.healthcheck", "pk_a", "dead", 3, 100, "INTENT.TIMEOUT", "2026-01-01 00:00:02", None, None),
    (
        "r4",
        "odoo.healthcheck",
        "pk_a",
        "cancelled",
        1,
        None,
        None,
        "2026-01-01 00:00:03",
        "2026-01-01 00:00:04",
        "2026-01-01 00:00:04.250",
    ),
    ("r5", "test.crash", "pk_b", "failed", 1, 5, "INTENT.HANDLER_CRASHED", "2026-01-01 00:00:05", None, None),
]


def test_the_report_reads_the_connectors_view(empty_db_dsn, run_cli):
    conn = psycopg2.connect(empty_db_dsn)
    try:
        with conn, conn.cursor() as cur:
            create_intent_tables(cur)
            cur.executemany(
                "INSERT INTO ipai_pulser_intent (ref, intent_type, source, state, attempts, max_attempts,"
                " duration_ms, failure_code, create_date, cancel_requested_at, cancel_acknowledged_at)"
                " VALUES (%s, %s, %s, %s, %s, 3, %s, %s, %s, %s, %s)",
                _ROWS,
            )
        records = baseline.load_records_from_db(conn)
    finally:
        conn.close()
    assert [r["ref"] for r in records] == ["r1", "r2", "r3", "r4", "r5"]
    assert records[0]["type"] == "odoo.healthcheck" and records[0]["created_at"] == "2026-01-01T00:00:00+00:00"

    result = run_cli("report", "baseline", "--dsn", empty_db_dsn, "--format", "json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report == baseline.compute(records)
    overall = report["overall"]
    assert (overall["succeeded"], overall["dead_letters"], overall["cancelled"], overall["failed"]) == (2, 1, 1, 1)
    assert overall["cancel_latency_ms"] == {"p50": 250.0, "p95": 250.0, "n": 1}
    assert overall["retries"] == 2
    assert {c["code"] for c in report["top_failure_codes"]} == {"INTENT.TIMEOUT", "INTENT.HANDLER_CRASHED"}


def test_without_the_view_the_report_says_what_is_missing(empty_db_dsn, run_cli):
    conn = psycopg2.connect(empty_db_dsn)
    try:
        with conn, conn.cursor() as cur:
            # the connector's table alone (an addon older than its views): not read
            cur.execute("CREATE TABLE ipai_pulser_intent (id serial PRIMARY KEY, state varchar)")
    finally:
        conn.close()
    result = run_cli("report", "baseline", "--dsn", empty_db_dsn)
    assert result.code == 2
    assert "no ops.pulser_intents_v1 view (is ipai_pulser_connector installed?)" in result.err
