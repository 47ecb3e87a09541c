-- 0010: where and with what each occurrence happened (docs/specs/telemetry_v1.md, "Occurrence
-- context"): the deployment environment (resource deployment.environment.name) beside the
-- release (service.version, already kept), and the GenAI call an agent was making when it
-- failed (OpenTelemetry GenAI semantic conventions: gen_ai.provider.name or the older
-- gen_ai.system, gen_ai.operation.name, gen_ai.request.model, gen_ai.response.model,
-- gen_ai.usage.input_tokens / output_tokens). Each occurrence keeps its own; the error
-- group keeps the latest environment, provider and model, as it keeps the latest release.
--
-- Nullable columns without a default: adding them rewrites nothing, however many rows.

ALTER TABLE ops.agent_error_occurrences
    ADD COLUMN environment           text,
    ADD COLUMN gen_ai_provider       text,
    ADD COLUMN gen_ai_operation      text,
    ADD COLUMN gen_ai_request_model  text,
    ADD COLUMN gen_ai_response_model text,
    ADD COLUMN gen_ai_input_tokens   bigint,
    ADD COLUMN gen_ai_output_tokens  bigint,
    ADD CONSTRAINT agent_error_occurrences_tokens_check
        CHECK (gen_ai_input_tokens >= 0 AND gen_ai_output_tokens >= 0);
COMMENT ON COLUMN ops.agent_error_occurrences.environment IS
    'deployment.environment.name of the sender''s resource';
COMMENT ON COLUMN ops.agent_error_occurrences.gen_ai_provider IS
    'gen_ai.provider.name (or the older gen_ai.system) of the GenAI call that failed';

ALTER TABLE ops.agent_errors
    ADD COLUMN last_environment     text,
    ADD COLUMN last_gen_ai_provider text,
    ADD COLUMN last_gen_ai_model    text;
COMMENT ON COLUMN ops.agent_errors.last_gen_ai_model IS
    'The latest occurrence''s gen_ai.response.model, else its gen_ai.request.model';

-- Provider health (Odoo ipai.provider.health): GenAI occurrences of the last day by
-- provider and model. Partial: occurrences without a provider pay nothing for it.
CREATE INDEX agent_error_occurrences_gen_ai_idx ON ops.agent_error_occurrences (occurred_at)
    INCLUDE (gen_ai_provider, gen_ai_request_model, gen_ai_response_model, environment, error_id)
    WHERE gen_ai_provider IS NOT NULL;

-- A token count as the writers receive it (JSON text): a non-negative integer, else NULL.
-- Validated here too, not only by the bridge, so no writer's bad value fails a batch.
CREATE FUNCTION ops.token_count(v text) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN v ~ '^[0-9]{1,18}$' THEN v::bigint END
$$;

-- The context fields of an occurrence, as the single writer receives them (p_context).
CREATE TYPE ops.occurrence_context AS (
    environment           text,
    gen_ai_provider       text,
    gen_ai_operation      text,
    gen_ai_request_model  text,
    gen_ai_response_model text,
    gen_ai_input_tokens   text,
    gen_ai_output_tokens  text
);

DROP FUNCTION ops.upsert_agent_error(
    text, text, text, text, text, text, text, text, timestamptz, text, text, text, jsonb, text);

-- One occurrence (as 0006), with its context: p_context is a JSON object with the
-- ops.occurrence_context fields (lengths capped, token counts validated here).
CREATE FUNCTION ops.upsert_agent_error(
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
    v_id bigint;
    c ops.occurrence_context;
    v_environment text;
    v_provider text;
    v_model text;
BEGIN
    c := jsonb_populate_record(NULL::ops.occurrence_context,
                               CASE WHEN jsonb_typeof(p_context) = 'object' THEN p_context END);
    v_environment := left(c.environment, 256);
    v_provider := left(c.gen_ai_provider, 128);
    v_model := left(coalesce(c.gen_ai_response_model, c.gen_ai_request_model), 256);

    v_id := ops.group_for_key(p_fingerprint, p_previous_fingerprint, p_code);
    IF v_id IS NULL THEN
        INSERT INTO ops.agent_errors AS e
            (fingerprint, code, source, service, message, error_type, severity,
             count, first_seen, last_seen)
        VALUES (p_fingerprint, p_code, p_source, p_service, p_message, p_error_type,
                coalesce(p_severity, 'medium'), 0, p_occurred_at, p_occurred_at)
        ON CONFLICT (fingerprint) DO NOTHING;
        SELECT k.error_id INTO STRICT v_id FROM ops.error_group_keys k WHERE k.fingerprint = p_fingerprint;
    END IF;

    INSERT INTO ops.agent_error_occurrences
        (source, occurrence_id, error_id, occurred_at, trace_id, span_id, service_version,
         environment, gen_ai_provider, gen_ai_operation, gen_ai_request_model, gen_ai_response_model,
         gen_ai_input_tokens, gen_ai_output_tokens)
    VALUES (p_source, p_occurrence_id, v_id, p_occurred_at, p_trace_id, p_span_id, p_service_version,
            v_environment, v_provider, left(c.gen_ai_operation, 128), left(c.gen_ai_request_model, 256),
            left(c.gen_ai_response_model, 256),
            ops.token_count(c.gen_ai_input_tokens), ops.token_count(c.gen_ai_output_tokens))
    ON CONFLICT DO NOTHING;

    IF NOT FOUND THEN
        RETURN QUERY SELECT e.id, e.count, false, e.status
                     FROM ops.agent_errors e WHERE e.id = v_id;
        RETURN;
    END IF;

    RETURN QUERY
    UPDATE ops.agent_errors e SET
        count = e.count + 1,
        first_seen = least(e.first_seen, p_occurred_at),
        last_seen = greatest(e.last_seen, p_occurred_at),
        code = CASE WHEN p_occurred_at >= e.last_seen THEN p_code ELSE e.code END,
        message = CASE WHEN p_occurred_at >= e.last_seen THEN p_message ELSE e.message END,
        service = CASE WHEN p_occurred_at >= e.last_seen THEN coalesce(p_service, e.service) ELSE e.service END,
        last_trace_id = CASE WHEN p_occurred_at >= e.last_seen THEN p_trace_id ELSE e.last_trace_id END,
        last_span_id = CASE WHEN p_occurred_at >= e.last_seen THEN p_span_id ELSE e.last_span_id END,
        last_service_version = CASE WHEN p_occurred_at >= e.last_seen
            THEN coalesce(p_service_version, e.last_service_version) ELSE e.last_service_version END,
        last_environment = CASE WHEN p_occurred_at >= e.last_seen
            THEN coalesce(v_environment, e.last_environment) ELSE e.last_environment END,
        last_gen_ai_provider = CASE WHEN p_occurred_at >= e.last_seen
            THEN coalesce(v_provider, e.last_gen_ai_provider) ELSE e.last_gen_ai_provider END,
        last_gen_ai_model = CASE WHEN p_occurred_at >= e.last_seen
            THEN coalesce(v_model, e.last_gen_ai_model) ELSE e.last_gen_ai_model END,
        sample = CASE WHEN p_occurred_at >= e.last_seen OR e.sample IS NULL
            THEN coalesce(p_sample, e.sample) ELSE e.sample END,
        status = CASE WHEN e.status IN ('resolved', 'ignored') THEN ops.next_status(
                e.status, e.resolved_in_version, ARRAY[p_service_version],
                e.snooze_until, e.snooze_until_count, e.count + 1, now()) ELSE e.status END,
        regressed_at = CASE WHEN e.status = 'resolved' AND ops.next_status(
                e.status, e.resolved_in_version, ARRAY[p_service_version],
                e.snooze_until, e.snooze_until_count, e.count + 1, now()) = 'regressed'
            THEN now() ELSE e.regressed_at END,
        snooze_until = CASE WHEN e.status = 'ignored' AND ops.next_status(
                e.status, NULL, NULL, e.snooze_until, e.snooze_until_count, e.count + 1, now()) = 'open'
            THEN NULL ELSE e.snooze_until END,
        snooze_until_count = CASE WHEN e.status = 'ignored' AND ops.next_status(
                e.status, NULL, NULL, e.snooze_until, e.snooze_until_count, e.count + 1, now()) = 'open'
            THEN NULL ELSE e.snooze_until_count END,
        updated_at = now()
    WHERE e.id = v_id
    RETURNING e.id, e.count, true, e.status;
END
$$;

-- The batch writer's input row gains the context fields (same JSON names as p_context;
-- token counts as text, validated by ops.token_count).
DROP FUNCTION ops.write_agent_errors(jsonb);
ALTER TYPE ops.error_occurrence_input
    ADD ATTRIBUTE environment text,
    ADD ATTRIBUTE gen_ai_provider text,
    ADD ATTRIBUTE gen_ai_operation text,
    ADD ATTRIBUTE gen_ai_request_model text,
    ADD ATTRIBUTE gen_ai_response_model text,
    ADD ATTRIBUTE gen_ai_input_tokens text,
    ADD ATTRIBUTE gen_ai_output_tokens text;

-- Many occurrences in one round trip (as 0006), each stored with its context.
CREATE FUNCTION ops.write_agent_errors(p_batch jsonb)
RETURNS TABLE (received integer, new_occurrences integer, errors_touched integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_rows ops.error_occurrence_input[];
    v_new_keys ops.occurrence_key[];
    v_new  integer;
    v_touched integer;
BEGIN
    -- One row per occurrence key: a batch may carry the same delivery twice.
    SELECT array_agg(d ORDER BY d.source, d.occurrence_id) INTO v_rows
    FROM (
        SELECT DISTINCT ON (r.source, r.occurrence_id) r.*
        FROM jsonb_populate_recordset(NULL::ops.error_occurrence_input, p_batch) AS r
        WHERE r.source IS NOT NULL AND r.occurrence_id IS NOT NULL AND r.fingerprint IS NOT NULL
        ORDER BY r.source, r.occurrence_id
    ) AS d;

    IF v_rows IS NULL THEN
        RETURN QUERY SELECT jsonb_array_length(p_batch), 0, 0;
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
    v_new := coalesce(cardinality(v_new_keys), 0);
    IF v_new = 0 THEN
        RETURN QUERY SELECT jsonb_array_length(p_batch), 0, 0;
        RETURN;
    END IF;

    -- FOR NO KEY UPDATE, not FOR UPDATE: inserting an occurrence took FOR KEY SHARE on
    -- its error row (the foreign key), and FOR UPDATE conflicts with another batch's KEY
    -- SHARE on the same rows (a deadlock between batches with overlapping fingerprints).
    PERFORM 1 FROM ops.agent_errors e
    WHERE e.id IN (SELECT n.error_id FROM unnest(v_new_keys) AS n)
    ORDER BY e.id FOR NO KEY UPDATE;

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
            status = CASE WHEN e.status IN ('resolved', 'ignored') THEN ops.next_status(
                    e.status, e.resolved_in_version, a.versions,
                    e.snooze_until, e.snooze_until_count, e.count + a.n, now()) ELSE e.status END,
            regressed_at = CASE WHEN e.status = 'resolved' AND ops.next_status(
                    e.status, e.resolved_in_version, a.versions,
                    e.snooze_until, e.snooze_until_count, e.count + a.n, now()) = 'regressed'
                THEN now() ELSE e.regressed_at END,
            snooze_until = CASE WHEN e.status = 'ignored' AND ops.next_status(
                    e.status, NULL, NULL, e.snooze_until, e.snooze_until_count, e.count + a.n, now()) = 'open'
                THEN NULL ELSE e.snooze_until END,
            snooze_until_count = CASE WHEN e.status = 'ignored' AND ops.next_status(
                    e.status, NULL, NULL, e.snooze_until, e.snooze_until_count, e.count + a.n, now()) = 'open'
                THEN NULL ELSE e.snooze_until_count END,
            updated_at = now()
        FROM agg a
        WHERE e.id = a.error_id
        RETURNING e.id
    )
    SELECT count(*) INTO v_touched FROM upd;

    RETURN QUERY SELECT jsonb_array_length(p_batch), v_new, v_touched;
END
$$;
