-- The intents as the ipai_ops core reads them (docs/architecture.md, "The ops schema"):
-- `ipai-ops escalate intent:<ref>` and `ipai-ops report baseline --dsn` read these views,
-- never the connector's tables, so the models may change as long as each published
-- version keeps its columns and their types. A changed contract is a new version
-- (ops.pulser_intents_v2) beside v1, which stays until no reader uses it.
--
-- Loaded as a data file: on install and on every upgrade, after the tables are updated.
-- Each view selects from a SQL function rather than from the tables: a view that names a
-- table's columns blocks Odoo's ALTER COLUMN ... TYPE on a field's change of type (Odoo
-- drops the depending views it finds, but only in its own schema, not in ops), while a
-- SQL function's body holds no dependency on the columns. The functions are STABLE, plain
-- SELECTs: PostgreSQL inlines them, so a reader's WHERE still reaches the tables' indexes.
-- Times are UTC (Odoo stores naive UTC timestamps).

CREATE SCHEMA IF NOT EXISTS ops;

CREATE OR REPLACE FUNCTION ops.pulser_intents_v1_rows()
RETURNS TABLE (
    id integer,
    ref text,
    intent_type text,
    state text,
    source text,
    args jsonb,
    idempotency_key text,
    correlation_id text,
    traceparent text,
    work_item_ref text,
    priority integer,
    attempts integer,
    max_attempts integer,
    duration_ms double precision,
    failure_code text,
    failure_envelope jsonb,
    ops_error_id bigint,
    created_at timestamptz,
    started_at timestamptz,
    finished_at timestamptz,
    cancel_requested_at timestamptz,
    cancel_acknowledged_at timestamptz
)
LANGUAGE sql STABLE AS $$
    SELECT i.id::integer, i.ref::text, i.intent_type::text, i.state::text, i.source::text,
           i.args::jsonb, i.idempotency_key::text, i.correlation_id::text, i.traceparent::text,
           i.work_item_ref::text, i.priority::integer, i.attempts::integer, i.max_attempts::integer,
           i.duration_ms::double precision, i.failure_code::text, i.failure_envelope::jsonb,
           i.ops_error_id::bigint,
           i.create_date AT TIME ZONE 'UTC', i.started_at AT TIME ZONE 'UTC',
           i.finished_at AT TIME ZONE 'UTC', i.cancel_requested_at AT TIME ZONE 'UTC',
           i.cancel_acknowledged_at AT TIME ZONE 'UTC'
      FROM ipai_pulser_intent i
$$;

CREATE OR REPLACE VIEW ops.pulser_intents_v1 AS SELECT * FROM ops.pulser_intents_v1_rows();
COMMENT ON VIEW ops.pulser_intents_v1 IS
    'Intents of ipai_pulser_connector, contract version 1 (read by ipai-ops escalate and report baseline)';

CREATE OR REPLACE FUNCTION ops.pulser_intent_events_v1_rows()
RETURNS TABLE (
    id integer,
    intent_id integer,
    event_type text,
    from_state text,
    to_state text,
    attempt integer,
    worker text,
    failure_code text,
    message text,
    created_at timestamptz
)
LANGUAGE sql STABLE AS $$
    SELECT ev.id::integer, ev.intent_id::integer, ev.event_type::text, ev.from_state::text,
           ev.to_state::text, ev.attempt::integer, ev.worker::text, ev.failure_code::text,
           ev.message::text, ev.create_date AT TIME ZONE 'UTC'
      FROM ipai_pulser_intent_event ev
$$;

CREATE OR REPLACE VIEW ops.pulser_intent_events_v1 AS SELECT * FROM ops.pulser_intent_events_v1_rows();
COMMENT ON VIEW ops.pulser_intent_events_v1 IS
    'Audit events of the intents, contract version 1 (read by ipai-ops escalate)';
