"""The Pulser connector's intent tables as the core meets them, without Odoo: stand-in
tables with the columns the connector's published views read, and those views created by
the connector's own SQL file (addons/ipai_pulser_connector/data/ops_intent_views.sql), so
the core's tests exercise the contract the addon installs."""

from __future__ import annotations

from pathlib import Path

VIEWS_SQL = Path(__file__).resolve().parent.parent / "addons/ipai_pulser_connector/data/ops_intent_views.sql"

#: Odoo's column types (varchar, naive UTC timestamps, jsonb) for the fields the views read.
_TABLES = """
CREATE TABLE ipai_pulser_intent (
    id serial PRIMARY KEY, ref varchar NOT NULL, intent_type varchar, state varchar, source varchar,
    args jsonb, idempotency_key varchar, correlation_id varchar, traceparent varchar, work_item_ref varchar,
    priority integer, attempts integer, max_attempts integer, duration_ms numeric, failure_code varchar,
    failure_envelope jsonb, ops_error_id integer, create_date timestamp, started_at timestamp,
    finished_at timestamp, cancel_requested_at timestamp, cancel_acknowledged_at timestamp
);
CREATE TABLE ipai_pulser_intent_event (
    id serial PRIMARY KEY, intent_id integer, event_type varchar, from_state varchar, to_state varchar,
    attempt integer, worker varchar, failure_code varchar, message text, data jsonb, create_date timestamp
);
"""


def create_intent_tables(cur) -> None:
    """Create the stand-in tables and the connector's ``ops.pulser_*_v1`` views on ``cur``."""
    cur.execute(_TABLES)
    cur.execute(VIEWS_SQL.read_text(encoding="utf-8"))
