-- 0013: one definition of "write an occurrence".
--
-- ops.upsert_agent_error (one occurrence: Odoo, the CLI, services) and ops.write_agent_errors
-- (a batch: the bridge, the CI ingest) each carried the whole write: resolving the key (and
-- the previous key, 0006), opening a group, inserting the occurrence exactly once, and the
-- aggregate update of the group (count, first and last seen, the latest occurrence's code,
-- message, service, trace and span, release, environment, GenAI provider and model, sample;
-- status by ops.next_status, regressed_at, the snooze). 0006 and 0010 re-declared both and
-- 0011 patched both: every rule was written twice and could drift.
--
-- ops.write_occurrences(ops.error_occurrence_input[]) is now the one writer. The batch
-- writer parses its JSON into it; the single upsert builds its one row (the context fields
-- from p_context, through the same input type) and reads the group back. Signatures and
-- result shapes are unchanged, so no caller changes. A later change to what writing an
-- occurrence means replaces ops.write_occurrences alone.

-- Many occurrences (one may be the whole batch); the body is 0010's batch writer with
-- 0011's statuses. Rows without source, occurrence id or fingerprint are skipped.
CREATE FUNCTION ops.write_occurrences(
    p_rows ops.error_occurrence_input[],
    OUT new_occurrences integer,
    OUT errors_touched integer
)
LANGUAGE plpgsql AS $$
DECLARE
    v_rows ops.error_occurrence_input[];
    v_new_keys ops.occurrence_key[];
BEGIN
    new_occurrences := 0;
    errors_touched := 0;

    -- One row per occurrence key: a batch may carry the same delivery twice.
    SELECT array_agg(d ORDER BY d.source, d.occurrence_id) INTO v_rows
    FROM (
        SELECT DISTINCT ON (r.source, r.occurrence_id) r.*
        FROM unnest(p_rows) AS r
        WHERE r.source IS NOT NULL AND r.occurrence_id IS NOT NULL AND r.fingerprint IS NOT NULL
        ORDER BY r.source, r.occurrence_id
    ) AS d;

    IF v_rows IS NULL THEN
        RETURN;
    END IF;

    -- Unknown keys whose previous key names a group join that group (window open only).
    IF ops.previous_keys_attach() THEN
        INSERT INTO ops.error_group_keys (fingerprint, error_id, grouping, code)
        SELECT DISTINCT ON (r.fingerprint) r.fingerprint, p.error_id, ops.current_grouping(), r.code
        FROM unnest(v_rows) AS r
        JOIN ops.error_group_keys p ON p.fingerprint = r.previous_fingerprint
        WHERE r.previous_fingerprint IS NOT NULL AND r.previous_fingerprint <> r.fingerprint
          AND NOT EXISTS (SELECT 1 FROM ops.error_group_keys k WHERE k.fingerprint = r.fingerprint)
        ORDER BY r.fingerprint, r.occurred_at DESC
        ON CONFLICT (fingerprint) DO NOTHING;
    END IF;

    -- Keys still unknown open new groups (their own key is added by the trigger).
    INSERT INTO ops.agent_errors
        (fingerprint, code, source, service, message, error_type, severity,
         count, first_seen, last_seen)
    SELECT DISTINCT ON (r.fingerprint)
           r.fingerprint, r.code, r.source, r.service, r.message, r.error_type,
           coalesce(r.severity, 'medium'), 0,
           coalesce(r.occurred_at, now()), coalesce(r.occurred_at, now())
    FROM unnest(v_rows) AS r
    WHERE NOT EXISTS (SELECT 1 FROM ops.error_group_keys k WHERE k.fingerprint = r.fingerprint)
    ORDER BY r.fingerprint, r.occurred_at
    ON CONFLICT (fingerprint) DO NOTHING;

    WITH inserted AS (
        INSERT INTO ops.agent_error_occurrences
            (source, occurrence_id, error_id, occurred_at, trace_id, span_id, service_version,
             environment, gen_ai_provider, gen_ai_operation, gen_ai_request_model, gen_ai_response_model,
             gen_ai_input_tokens, gen_ai_output_tokens)
        SELECT r.source, r.occurrence_id, k.error_id, coalesce(r.occurred_at, now()),
               r.trace_id, r.span_id, r.service_version,
               left(r.environment, 256), left(r.gen_ai_provider, 128), left(r.gen_ai_operation, 128),
               left(r.gen_ai_request_model, 256), left(r.gen_ai_response_model, 256),
               ops.token_count(r.gen_ai_input_tokens), ops.token_count(r.gen_ai_output_tokens)
        FROM unnest(v_rows) AS r
        JOIN ops.error_group_keys k ON k.fingerprint = r.fingerprint
        ORDER BY r.source, r.occurrence_id
        ON CONFLICT DO NOTHING
        RETURNING error_id, source, occurrence_id
    )
    SELECT array_agg(ROW(i.error_id, i.source, i.occurrence_id)::ops.occurrence_key)
    INTO v_new_keys FROM inserted i;
    new_occurrences := coalesce(cardinality(v_new_keys), 0);
    IF new_occurrences = 0 THEN
        RETURN;
    END IF;

    -- FOR NO KEY UPDATE, not FOR UPDATE: inserting an occurrence took FOR KEY SHARE on
    -- its error row (the foreign key), and FOR UPDATE conflicts with another batch's KEY
    -- SHARE on the same rows (a deadlock between batches with overlapping fingerprints).
    -- One row needs no order (the single upsert): the UPDATE below locks it.
    IF new_occurrences > 1 THEN
        PERFORM 1 FROM ops.agent_errors e
        WHERE e.id IN (SELECT n.error_id FROM unnest(v_new_keys) AS n)
        ORDER BY e.id FOR NO KEY UPDATE;
    END IF;

    WITH agg AS (
        SELECT n.error_id,
               count(*) AS n,
               min(coalesce(r.occurred_at, now())) AS first_at,
               max(coalesce(r.occurred_at, now())) AS last_at,
               array_agg(DISTINCT r.service_version) AS versions,
               (array_agg(r ORDER BY r.occurred_at DESC NULLS LAST, r.occurrence_id DESC))[1] AS l
        FROM unnest(v_new_keys) AS n
        JOIN unnest(v_rows) AS r ON r.source = n.source AND r.occurrence_id = n.occurrence_id
        GROUP BY n.error_id
    ),
    upd AS (
        UPDATE ops.agent_errors e SET
            count = e.count + a.n,
            first_seen = least(e.first_seen, a.first_at),
            last_seen = greatest(e.last_seen, a.last_at),
            code = CASE WHEN a.last_at >= e.last_seen THEN (a.l).code ELSE e.code END,
            message = CASE WHEN a.last_at >= e.last_seen THEN (a.l).message ELSE e.message END,
            service = CASE WHEN a.last_at >= e.last_seen THEN coalesce((a.l).service, e.service) ELSE e.service END,
            last_trace_id = CASE WHEN a.last_at >= e.last_seen THEN (a.l).trace_id ELSE e.last_trace_id END,
            last_span_id = CASE WHEN a.last_at >= e.last_seen THEN (a.l).span_id ELSE e.last_span_id END,
            last_service_version = CASE WHEN a.last_at >= e.last_seen
                THEN coalesce((a.l).service_version, e.last_service_version) ELSE e.last_service_version END,
            last_environment = CASE WHEN a.last_at >= e.last_seen
                THEN coalesce(left((a.l).environment, 256), e.last_environment) ELSE e.last_environment END,
            last_gen_ai_provider = CASE WHEN a.last_at >= e.last_seen
                THEN coalesce(left((a.l).gen_ai_provider, 128), e.last_gen_ai_provider)
                ELSE e.last_gen_ai_provider END,
            last_gen_ai_model = CASE WHEN a.last_at >= e.last_seen
                THEN coalesce(left(coalesce((a.l).gen_ai_response_model, (a.l).gen_ai_request_model), 256),
                              e.last_gen_ai_model)
                ELSE e.last_gen_ai_model END,
            sample = CASE WHEN a.last_at >= e.last_seen OR e.sample IS NULL
                THEN coalesce((a.l).sample, e.sample) ELSE e.sample END,
            status = CASE WHEN e.status IN ('resolved', 'ignored', 'snoozed') THEN ops.next_status(
                    e.status, e.resolved_in_version, a.versions,
                    e.snooze_until, e.snooze_until_count, e.count + a.n, now()) ELSE e.status END,
            regressed_at = CASE WHEN e.status = 'resolved' AND ops.next_status(
                    e.status, e.resolved_in_version, a.versions,
                    e.snooze_until, e.snooze_until_count, e.count + a.n, now()) = 'regressed'
                THEN now() ELSE e.regressed_at END,
            snooze_until = CASE WHEN e.status IN ('ignored', 'snoozed') AND ops.next_status(
                    e.status, NULL, NULL, e.snooze_until, e.snooze_until_count, e.count + a.n, now()) = 'open'
                THEN NULL ELSE e.snooze_until END,
            snooze_until_count = CASE WHEN e.status IN ('ignored', 'snoozed') AND ops.next_status(
                    e.status, NULL, NULL, e.snooze_until, e.snooze_until_count, e.count + a.n, now()) = 'open'
                THEN NULL ELSE e.snooze_until_count END,
            updated_at = now()
        FROM agg a
        WHERE e.id = a.error_id
        RETURNING e.id
    )
    SELECT count(*) INTO errors_touched FROM upd;
END
$$;

-- Many occurrences in one round trip: the JSON batch, parsed into ops.write_occurrences.
CREATE OR REPLACE FUNCTION ops.write_agent_errors(p_batch jsonb)
RETURNS TABLE (received integer, new_occurrences integer, errors_touched integer)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    SELECT jsonb_array_length(p_batch), w.new_occurrences, w.errors_touched
    FROM ops.write_occurrences(ARRAY(
        SELECT r FROM jsonb_populate_recordset(NULL::ops.error_occurrence_input, p_batch) AS r
    )) AS w;
END
$$;

-- One occurrence: a batch of one row. The context fields come from p_context through the
-- batch's input type (unknown keys ignored, as before), so a context field added to that
-- type reaches both writers; the named parameters always win over p_context's keys.
-- Returns the group the key reaches, its count and status, and whether this occurrence
-- was counted (false for a redelivery).
CREATE OR REPLACE FUNCTION ops.upsert_agent_error(
    p_source text,
    p_occurrence_id text,
    p_fingerprint text,
    p_code text,
    p_severity text,
    p_message text,
    p_error_type text DEFAULT NULL,
    p_service text DEFAULT NULL,
    p_occurred_at timestamptz DEFAULT now(),
    p_trace_id text DEFAULT NULL,
    p_span_id text DEFAULT NULL,
    p_service_version text DEFAULT NULL,
    p_sample jsonb DEFAULT NULL,
    p_previous_fingerprint text DEFAULT NULL,
    p_context jsonb DEFAULT NULL
) RETURNS TABLE (error_id bigint, error_count bigint, is_new boolean, error_status text)
LANGUAGE plpgsql AS $$
DECLARE
    v_new integer;
BEGIN
    -- The batch writer skips such rows; one occurrence without its identity is an error.
    IF p_source IS NULL OR p_occurrence_id IS NULL OR p_fingerprint IS NULL THEN
        RAISE EXCEPTION 'ops.upsert_agent_error: source, occurrence id and fingerprint are required'
            USING ERRCODE = 'not_null_violation';
    END IF;

    SELECT w.new_occurrences INTO v_new
    FROM ops.write_occurrences(ARRAY[jsonb_populate_record(
        NULL::ops.error_occurrence_input,
        CASE WHEN jsonb_typeof(p_context) = 'object' THEN p_context ELSE '{}'::jsonb END
        || jsonb_build_object(
            'source', p_source, 'occurrence_id', p_occurrence_id, 'fingerprint', p_fingerprint,
            'code', p_code, 'severity', p_severity, 'message', p_message,
            'error_type', p_error_type, 'service', p_service, 'occurred_at', p_occurred_at,
            'trace_id', p_trace_id, 'span_id', p_span_id, 'service_version', p_service_version,
            'sample', p_sample, 'previous_fingerprint', p_previous_fingerprint))]) AS w;

    RETURN QUERY
    SELECT e.id, e.count, v_new > 0, e.status
    FROM ops.error_group_keys k JOIN ops.agent_errors e ON e.id = k.error_id
    WHERE k.fingerprint = p_fingerprint;
END
$$;
