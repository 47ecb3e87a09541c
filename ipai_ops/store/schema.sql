-- The ops schema as the migrations leave it (generated: python -m ipai_devtools.dump_schema).
-- Do not edit by hand: add a migration, then regenerate. A test compares the two.
SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

CREATE SCHEMA ops;

CREATE TYPE ops.error_occurrence_input AS (
	source text,
	occurrence_id text,
	fingerprint text,
	code text,
	severity text,
	message text,
	error_type text,
	service text,
	occurred_at timestamp with time zone,
	trace_id text,
	span_id text,
	service_version text,
	sample jsonb,
	previous_fingerprint text,
	environment text,
	gen_ai_provider text,
	gen_ai_operation text,
	gen_ai_request_model text,
	gen_ai_response_model text,
	gen_ai_input_tokens text,
	gen_ai_output_tokens text
);

CREATE TYPE ops.occurrence_context AS (
	environment text,
	gen_ai_provider text,
	gen_ai_operation text,
	gen_ai_request_model text,
	gen_ai_response_model text,
	gen_ai_input_tokens text,
	gen_ai_output_tokens text
);

CREATE TYPE ops.occurrence_key AS (
	error_id bigint,
	source text,
	occurrence_id text
);

CREATE FUNCTION ops.agent_errors_own_key() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO ops.error_group_keys (fingerprint, error_id, grouping, code)
    VALUES (NEW.fingerprint, NEW.id, ops.current_grouping(), NEW.code)
    ON CONFLICT (fingerprint) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE FUNCTION ops.bridge_quota_take(p_sender text, p_source text, p_want integer, p_slice integer, p_per_minute integer, p_per_hour integer, p_unspent integer, p_unspent_hour bigint, OUT granted integer, OUT minute_left double precision, OUT hour_left double precision, OUT minute_full boolean, OUT hour_full boolean, OUT hour_id bigint) RETURNS record
    LANGUAGE plpgsql
    AS $$
DECLARE
    t double precision := extract(epoch FROM clock_timestamp());
    m bigint := floor(t / 60);
    h bigint := floor(t / 3600);
    cur ops.bridge_quota%ROWTYPE;
    used_m bigint;
    used_h bigint;
    room bigint;
BEGIN
    INSERT INTO ops.bridge_quota AS q (sender, source, minute, hour)
    VALUES (p_sender, p_source, m, h)
    ON CONFLICT (sender, source) DO NOTHING;
    SELECT * INTO cur FROM ops.bridge_quota AS q
     WHERE q.sender = p_sender AND q.source = p_source
       FOR UPDATE;
    used_m := CASE WHEN cur.minute = m THEN cur.in_minute ELSE 0 END;
    used_h := CASE WHEN cur.hour = h THEN cur.in_hour ELSE 0 END;
    IF p_unspent > 0 AND p_unspent_hour = h THEN
        used_h := greatest(used_h - p_unspent, 0);
    END IF;
    room := least(
        CASE WHEN p_per_minute > 0 THEN p_per_minute - used_m ELSE 2147483647 END,
        CASE WHEN p_per_hour > 0 THEN p_per_hour - used_h ELSE 2147483647 END
    );
    granted := greatest(least(room, greatest(p_want, least(p_slice, ceil(room / 4.0)::bigint))), 0);
    UPDATE ops.bridge_quota AS q
       SET minute = m, in_minute = used_m + granted, hour = h, in_hour = used_h + granted
     WHERE q.sender = p_sender AND q.source = p_source;
    minute_left := (m + 1) * 60 - t;
    hour_left := (h + 1) * 3600 - t;
    minute_full := p_per_minute > 0 AND used_m + granted >= p_per_minute;
    hour_full := p_per_hour > 0 AND used_h + granted >= p_per_hour;
    hour_id := h;
END
$$;

CREATE FUNCTION ops.current_grouping() RETURNS smallint
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT max(version) FROM ops.grouping_versions
$$;

CREATE FUNCTION ops.follow_merges() RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_row record;
    v_ids bigint[];
    v_fixed integer := 0;
BEGIN
    SELECT array_agg(e.id) INTO v_ids FROM ops.agent_errors e
     WHERE e.merged_into IS NOT NULL
       AND (e.count > 0 OR EXISTS (SELECT 1 FROM ops.error_group_keys k WHERE k.error_id = e.id));
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    -- every row involved, locked at once in ascending id order, as the batch writer takes
    -- them: no deadlock with a batch
    PERFORM 1 FROM ops.agent_errors e
     WHERE e.id = ANY(v_ids) OR e.id IN (SELECT m.merged_into FROM ops.agent_errors m WHERE m.id = ANY(v_ids))
     ORDER BY e.id FOR NO KEY UPDATE;
    FOR v_row IN SELECT e.id, e.merged_into FROM ops.agent_errors e WHERE e.id = ANY(v_ids) ORDER BY e.id LOOP
        PERFORM ops.move_error_groups(v_row.merged_into, ARRAY[v_row.id]);
        v_fixed := v_fixed + 1;
    END LOOP;
    RETURN v_fixed;
END
$$;

CREATE FUNCTION ops.group_for_key(p_fingerprint text, p_previous text, p_code text) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_id bigint;
BEGIN
    SELECT k.error_id INTO v_id FROM ops.error_group_keys k WHERE k.fingerprint = p_fingerprint;
    IF v_id IS NOT NULL OR p_previous IS NULL OR p_previous = p_fingerprint
       OR NOT ops.previous_keys_attach() THEN
        RETURN v_id;
    END IF;
    SELECT k.error_id INTO v_id FROM ops.error_group_keys k WHERE k.fingerprint = p_previous;
    IF v_id IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO ops.error_group_keys (fingerprint, error_id, grouping, code)
    VALUES (p_fingerprint, v_id, ops.current_grouping(), p_code)
    ON CONFLICT (fingerprint) DO NOTHING;
    SELECT k.error_id INTO v_id FROM ops.error_group_keys k WHERE k.fingerprint = p_fingerprint;
    RETURN v_id;
END
$$;

CREATE FUNCTION ops.merge_agent_errors(p_kept bigint, p_merged bigint[]) RETURNS TABLE(kept_id bigint, merged_count integer, moved_occurrences bigint, kept_count bigint)
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_ids bigint[];
    v_kept ops.agent_errors;
    v_bad bigint;
    v_moved bigint;
BEGIN
    SELECT array_agg(DISTINCT m) INTO v_ids FROM unnest(p_merged) AS m WHERE m IS NOT NULL AND m <> p_kept;
    IF p_kept IS NULL OR v_ids IS NULL THEN
        RAISE EXCEPTION 'merge needs a kept error and at least one other error' USING ERRCODE = '22023';
    END IF;
    -- row locks in ascending id order, as the batch writer takes them
    PERFORM 1 FROM ops.agent_errors e WHERE e.id = p_kept OR e.id = ANY(v_ids) ORDER BY e.id FOR NO KEY UPDATE;
    SELECT e.* INTO v_kept FROM ops.agent_errors e WHERE e.id = p_kept;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'error % does not exist', p_kept USING ERRCODE = '22023';
    END IF;
    IF v_kept.merged_into IS NOT NULL THEN
        RAISE EXCEPTION 'error % is merged into error %; keep that one instead', p_kept, v_kept.merged_into
            USING ERRCODE = '22023';
    END IF;
    SELECT m INTO v_bad FROM unnest(v_ids) AS m
     WHERE NOT EXISTS (SELECT 1 FROM ops.agent_errors e WHERE e.id = m) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'error % does not exist', v_bad USING ERRCODE = '22023';
    END IF;
    SELECT e.id INTO v_bad FROM ops.agent_errors e WHERE e.id = ANY(v_ids) AND e.merged_into IS NOT NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'error % is merged already', v_bad USING ERRCODE = '22023';
    END IF;
    v_moved := ops.move_error_groups(p_kept, v_ids);
    RETURN QUERY SELECT e.id, cardinality(v_ids), v_moved, e.count FROM ops.agent_errors e WHERE e.id = p_kept;
END
$$;

CREATE FUNCTION ops.move_error_groups(p_kept bigint, p_merged bigint[]) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_latest ops.agent_errors;
    v_count bigint;
    v_first timestamptz;
    v_last timestamptz;
    v_moved bigint;
BEGIN
    SELECT coalesce(sum(e.count), 0), min(e.first_seen), max(e.last_seen)
      INTO v_count, v_first, v_last
      FROM ops.agent_errors e WHERE e.id = ANY(p_merged);
    SELECT e.* INTO v_latest FROM ops.agent_errors e
     WHERE e.id = ANY(p_merged) ORDER BY e.last_seen DESC, e.id DESC LIMIT 1;

    -- The kept group keeps its identity (code, message, status); it takes the merged
    -- groups' counts and, where one of them was seen last, that latest occurrence's context.
    UPDATE ops.agent_errors e SET
        count = e.count + v_count,
        first_seen = least(e.first_seen, coalesce(v_first, e.first_seen)),
        last_seen = greatest(e.last_seen, coalesce(v_last, e.last_seen)),
        last_trace_id = CASE WHEN v_last > e.last_seen THEN v_latest.last_trace_id ELSE e.last_trace_id END,
        last_span_id = CASE WHEN v_last > e.last_seen THEN v_latest.last_span_id ELSE e.last_span_id END,
        last_service_version = CASE WHEN v_last > e.last_seen
            THEN coalesce(v_latest.last_service_version, e.last_service_version) ELSE e.last_service_version END,
        last_environment = CASE WHEN v_last > e.last_seen
            THEN coalesce(v_latest.last_environment, e.last_environment) ELSE e.last_environment END,
        last_gen_ai_provider = CASE WHEN v_last > e.last_seen
            THEN coalesce(v_latest.last_gen_ai_provider, e.last_gen_ai_provider) ELSE e.last_gen_ai_provider END,
        last_gen_ai_model = CASE WHEN v_last > e.last_seen
            THEN coalesce(v_latest.last_gen_ai_model, e.last_gen_ai_model) ELSE e.last_gen_ai_model END,
        sample = CASE WHEN v_last > e.last_seen OR e.sample IS NULL
            THEN coalesce(v_latest.sample, e.sample) ELSE e.sample END,
        -- "snoozed for N more occurrences" stays N more: the threshold moves with the count
        snooze_until_count = e.snooze_until_count + v_count,
        updated_at = now()
    WHERE e.id = p_kept;

    UPDATE ops.agent_error_occurrences SET error_id = p_kept WHERE error_id = ANY(p_merged);
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    UPDATE ops.error_group_keys SET error_id = p_kept WHERE error_id = ANY(p_merged);
    UPDATE ops.agent_runs SET error_id = p_kept WHERE error_id = ANY(p_merged);
    UPDATE ops.classification_examples SET error_id = p_kept WHERE error_id = ANY(p_merged);
    -- groups merged earlier into a merged group now point at the kept one (no chains)
    UPDATE ops.agent_errors SET merged_into = p_kept, updated_at = now() WHERE merged_into = ANY(p_merged);
    UPDATE ops.agent_errors e SET
        status = 'merged',
        merged_into = p_kept,
        merged_at = coalesce(e.merged_at, now()),
        count = 0,
        snooze_until = NULL,
        snooze_until_count = NULL,
        updated_at = now()
    WHERE e.id = ANY(p_merged);
    RETURN v_moved;
END
$$;

CREATE FUNCTION ops.next_status(p_status text, p_resolved_in_version text, p_service_versions text[], p_snooze_until timestamp with time zone, p_snooze_until_count bigint, p_new_count bigint, p_now timestamp with time zone) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE
        WHEN p_status = 'resolved' AND (
                p_resolved_in_version IS NULL
             OR EXISTS (SELECT 1 FROM unnest(p_service_versions) AS v
                        WHERE v IS NULL
                           OR ops.version_key(v) >= ops.version_key(p_resolved_in_version)))
            THEN 'regressed'
        WHEN p_status IN ('ignored', 'snoozed') AND (
                (p_snooze_until IS NOT NULL AND p_now >= p_snooze_until)
             OR (p_snooze_until_count IS NOT NULL AND p_new_count >= p_snooze_until_count))
            THEN 'open'
        ELSE p_status
    END
$$;

CREATE FUNCTION ops.previous_keys_attach() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(legacy_until > now(), false)
    FROM ops.grouping_versions ORDER BY version DESC LIMIT 1
$$;

CREATE FUNCTION ops.token_count(v text) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $_$
    SELECT CASE WHEN v ~ '^[0-9]{1,18}$' THEN v::bigint END
$_$;

CREATE FUNCTION ops.upsert_agent_error(p_source text, p_occurrence_id text, p_fingerprint text, p_code text, p_severity text, p_message text, p_error_type text DEFAULT NULL::text, p_service text DEFAULT NULL::text, p_occurred_at timestamp with time zone DEFAULT now(), p_trace_id text DEFAULT NULL::text, p_span_id text DEFAULT NULL::text, p_service_version text DEFAULT NULL::text, p_sample jsonb DEFAULT NULL::jsonb, p_previous_fingerprint text DEFAULT NULL::text, p_context jsonb DEFAULT NULL::jsonb) RETURNS TABLE(error_id bigint, error_count bigint, is_new boolean, error_status text)
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION ops.version_key(v text) RETURNS numeric[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE WHEN left(v, 256) ~ '[0-9]'
        THEN string_to_array(trim(BOTH '.' FROM regexp_replace(left(v, 256), '[^0-9]+', '.', 'g')), '.')::numeric[]
        ELSE '{}'::numeric[] END
$$;

CREATE FUNCTION ops.write_agent_errors(p_batch jsonb) RETURNS TABLE(received integer, new_occurrences integer, errors_touched integer)
    LANGUAGE plpgsql
    AS $$
BEGIN
    RETURN QUERY
    SELECT jsonb_array_length(p_batch), w.new_occurrences, w.errors_touched
    FROM ops.write_occurrences(ARRAY(
        SELECT r FROM jsonb_populate_recordset(NULL::ops.error_occurrence_input, p_batch) AS r
    )) AS w;
END
$$;

CREATE FUNCTION ops.write_occurrences(p_rows ops.error_occurrence_input[], OUT new_occurrences integer, OUT errors_touched integer) RETURNS record
    LANGUAGE plpgsql
    AS $$
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

SET default_tablespace = '';

SET default_table_access_method = heap;

CREATE TABLE ops.agent_ab_comparisons (
    id bigint NOT NULL,
    comparison_id text NOT NULL,
    baseline_variant text NOT NULL,
    candidate_variant text NOT NULL,
    benchmark_version integer NOT NULL,
    category text NOT NULL,
    n_baseline integer NOT NULL,
    n_candidate integer NOT NULL,
    mean_baseline numeric(8,4),
    mean_candidate numeric(8,4),
    delta numeric(8,4),
    ci_low numeric(8,4),
    ci_high numeric(8,4),
    confidence numeric(5,4) NOT NULL,
    resamples integer NOT NULL,
    seed bigint NOT NULL,
    verdict text NOT NULL,
    details jsonb DEFAULT '{}'::jsonb NOT NULL,
    compared_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT agent_ab_comparisons_verdict_check CHECK ((verdict = ANY (ARRAY['better'::text, 'worse'::text, 'no evidence'::text])))
);

COMMENT ON TABLE ops.agent_ab_comparisons IS 'A/B comparisons of agent variants: per-category delta (candidate - baseline), bootstrap CI, verdict.';

CREATE SEQUENCE ops.agent_ab_comparisons_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE ops.agent_ab_comparisons_id_seq OWNED BY ops.agent_ab_comparisons.id;

CREATE TABLE ops.agent_benchmark_results (
    id bigint NOT NULL,
    subject text NOT NULL,
    run_id text,
    agent text,
    variant_id text,
    benchmark_version integer DEFAULT 1 NOT NULL,
    category text NOT NULL,
    score numeric(6,2) NOT NULL,
    weight numeric(6,4),
    composite numeric(6,2),
    tier text,
    details jsonb DEFAULT '{}'::jsonb NOT NULL,
    scored_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT agent_benchmark_results_score_check CHECK (((score >= (0)::numeric) AND (score <= (100)::numeric)))
);

CREATE SEQUENCE ops.agent_benchmark_results_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE ops.agent_benchmark_results_id_seq OWNED BY ops.agent_benchmark_results.id;

CREATE TABLE ops.agent_error_occurrences (
    source text NOT NULL,
    occurrence_id text NOT NULL,
    error_id bigint NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    received_at timestamp with time zone DEFAULT now() NOT NULL,
    trace_id text,
    span_id text,
    service_version text,
    environment text,
    gen_ai_provider text,
    gen_ai_operation text,
    gen_ai_request_model text,
    gen_ai_response_model text,
    gen_ai_input_tokens bigint,
    gen_ai_output_tokens bigint,
    CONSTRAINT agent_error_occurrences_tokens_check CHECK (((gen_ai_input_tokens >= 0) AND (gen_ai_output_tokens >= 0)))
);

COMMENT ON COLUMN ops.agent_error_occurrences.environment IS 'deployment.environment.name of the sender''s resource';

COMMENT ON COLUMN ops.agent_error_occurrences.gen_ai_provider IS 'gen_ai.provider.name (or the older gen_ai.system) of the GenAI call that failed';

CREATE TABLE ops.agent_errors (
    id bigint NOT NULL,
    fingerprint text NOT NULL,
    code text NOT NULL,
    source text NOT NULL,
    service text,
    message text,
    error_type text,
    severity text DEFAULT 'medium'::text NOT NULL,
    count bigint DEFAULT 0 NOT NULL,
    first_seen timestamp with time zone NOT NULL,
    last_seen timestamp with time zone NOT NULL,
    status text DEFAULT 'open'::text NOT NULL,
    last_trace_id text,
    last_span_id text,
    last_service_version text,
    sample jsonb,
    resolved_at timestamp with time zone,
    resolved_in_version text,
    regressed_at timestamp with time zone,
    snooze_until timestamp with time zone,
    snooze_until_count bigint,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    merged_into bigint,
    merged_at timestamp with time zone,
    last_environment text,
    last_gen_ai_provider text,
    last_gen_ai_model text,
    CONSTRAINT agent_errors_count_check CHECK ((count >= 0)),
    CONSTRAINT agent_errors_merged_into_check CHECK (((merged_into IS NULL) OR (merged_into <> id))),
    CONSTRAINT agent_errors_severity_check CHECK ((severity = ANY (ARRAY['critical'::text, 'high'::text, 'medium'::text, 'low'::text]))),
    CONSTRAINT agent_errors_status_check CHECK ((status = ANY (ARRAY['open'::text, 'resolved'::text, 'ignored'::text, 'snoozed'::text, 'regressed'::text, 'merged'::text])))
);

COMMENT ON TABLE ops.agent_errors IS 'One row per error fingerprint; count = distinct occurrences (exactly once per (source, occurrence_id)).';

COMMENT ON COLUMN ops.agent_errors.last_gen_ai_model IS 'The latest occurrence''s gen_ai.response.model, else its gen_ai.request.model';

CREATE SEQUENCE ops.agent_errors_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE ops.agent_errors_id_seq OWNED BY ops.agent_errors.id;

CREATE TABLE ops.agent_runs (
    id bigint NOT NULL,
    run_id text NOT NULL,
    source text DEFAULT 'cli'::text NOT NULL,
    agent text,
    task_ref text,
    status text DEFAULT 'running'::text NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    duration_ms bigint,
    error_id bigint,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL,
    CONSTRAINT agent_runs_metadata_check CHECK ((jsonb_typeof(metadata) = 'object'::text)),
    CONSTRAINT agent_runs_status_check CHECK ((status = ANY (ARRAY['queued'::text, 'running'::text, 'succeeded'::text, 'failed'::text, 'cancelled'::text])))
);

CREATE SEQUENCE ops.agent_runs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE ops.agent_runs_id_seq OWNED BY ops.agent_runs.id;

CREATE TABLE ops.bridge_quota (
    sender text NOT NULL,
    source text NOT NULL,
    minute bigint NOT NULL,
    in_minute integer DEFAULT 0 NOT NULL,
    hour bigint NOT NULL,
    in_hour integer DEFAULT 0 NOT NULL,
    CONSTRAINT bridge_quota_in_hour_check CHECK ((in_hour >= 0)),
    CONSTRAINT bridge_quota_in_minute_check CHECK ((in_minute >= 0))
);

COMMENT ON TABLE ops.bridge_quota IS 'Occurrences granted to bridge workers per (sender, source) in the current minute and hour (ops.bridge_quota_take).';

CREATE TABLE ops.classification_examples (
    id bigint NOT NULL,
    code text NOT NULL,
    error_type text,
    text text NOT NULL,
    error_id bigint,
    previous_code text,
    taught_by text NOT NULL,
    taught_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT classification_examples_code_check CHECK ((code ~ '^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)+$'::text)),
    CONSTRAINT classification_examples_error_type_check CHECK (((error_type IS NULL) OR (length(error_type) <= 512))),
    CONSTRAINT classification_examples_taught_by_check CHECK (((length(btrim(taught_by)) > 0) AND (length(taught_by) <= 256))),
    CONSTRAINT classification_examples_text_check CHECK (((length(btrim(text)) > 0) AND (length(text) <= 16384)))
);

COMMENT ON TABLE ops.classification_examples IS 'Labelled examples people taught (text, chosen code, who, when): the learned layer trains on them.';

CREATE SEQUENCE ops.classification_examples_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE ops.classification_examples_id_seq OWNED BY ops.classification_examples.id;

CREATE TABLE ops.error_group_keys (
    fingerprint text NOT NULL,
    error_id bigint NOT NULL,
    "grouping" smallint NOT NULL,
    code text,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

COMMENT ON TABLE ops.error_group_keys IS 'Every key that reaches a group: its own fingerprint, and keys of later grouping versions attached to it.';

CREATE TABLE ops.grouping_versions (
    version smallint NOT NULL,
    activated_at timestamp with time zone DEFAULT now() NOT NULL,
    legacy_until timestamp with time zone,
    description text NOT NULL
);

CREATE TABLE ops.webhook_deliveries (
    provider text NOT NULL,
    delivery_id text NOT NULL,
    endpoint text,
    received_at timestamp with time zone DEFAULT now() NOT NULL,
    claimed_at timestamp with time zone DEFAULT now() NOT NULL,
    completed_at timestamp with time zone,
    attempts integer DEFAULT 1 NOT NULL,
    CONSTRAINT webhook_deliveries_attempts_check CHECK ((attempts >= 1)),
    CONSTRAINT webhook_deliveries_delivery_id_check CHECK (((length(delivery_id) >= 1) AND (length(delivery_id) <= 256))),
    CONSTRAINT webhook_deliveries_provider_check CHECK (((length(provider) >= 1) AND (length(provider) <= 64)))
);

COMMENT ON TABLE ops.webhook_deliveries IS 'Inbound webhook delivery ids per provider: claimed, completed or (released) gone; refuses duplicates.';

ALTER TABLE ONLY ops.agent_ab_comparisons ALTER COLUMN id SET DEFAULT nextval('ops.agent_ab_comparisons_id_seq'::regclass);

ALTER TABLE ONLY ops.agent_benchmark_results ALTER COLUMN id SET DEFAULT nextval('ops.agent_benchmark_results_id_seq'::regclass);

ALTER TABLE ONLY ops.agent_errors ALTER COLUMN id SET DEFAULT nextval('ops.agent_errors_id_seq'::regclass);

ALTER TABLE ONLY ops.agent_runs ALTER COLUMN id SET DEFAULT nextval('ops.agent_runs_id_seq'::regclass);

ALTER TABLE ONLY ops.classification_examples ALTER COLUMN id SET DEFAULT nextval('ops.classification_examples_id_seq'::regclass);

ALTER TABLE ONLY ops.agent_ab_comparisons
    ADD CONSTRAINT agent_ab_comparisons_key UNIQUE (comparison_id, category);

ALTER TABLE ONLY ops.agent_ab_comparisons
    ADD CONSTRAINT agent_ab_comparisons_pkey PRIMARY KEY (id);

ALTER TABLE ONLY ops.agent_benchmark_results
    ADD CONSTRAINT agent_benchmark_results_pkey PRIMARY KEY (id);

ALTER TABLE ONLY ops.agent_benchmark_results
    ADD CONSTRAINT agent_benchmark_results_subject_key UNIQUE (subject, category, benchmark_version);

ALTER TABLE ONLY ops.agent_error_occurrences
    ADD CONSTRAINT agent_error_occurrences_pkey PRIMARY KEY (source, occurrence_id);

ALTER TABLE ONLY ops.agent_errors
    ADD CONSTRAINT agent_errors_fingerprint_key UNIQUE (fingerprint);

ALTER TABLE ONLY ops.agent_errors
    ADD CONSTRAINT agent_errors_pkey PRIMARY KEY (id);

ALTER TABLE ONLY ops.agent_runs
    ADD CONSTRAINT agent_runs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY ops.agent_runs
    ADD CONSTRAINT agent_runs_run_id_key UNIQUE (run_id);

ALTER TABLE ONLY ops.bridge_quota
    ADD CONSTRAINT bridge_quota_pkey PRIMARY KEY (sender, source);

ALTER TABLE ONLY ops.classification_examples
    ADD CONSTRAINT classification_examples_pkey PRIMARY KEY (id);

ALTER TABLE ONLY ops.error_group_keys
    ADD CONSTRAINT error_group_keys_pkey PRIMARY KEY (fingerprint);

ALTER TABLE ONLY ops.grouping_versions
    ADD CONSTRAINT grouping_versions_pkey PRIMARY KEY (version);

ALTER TABLE ONLY ops.webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (provider, delivery_id);

CREATE INDEX agent_ab_comparisons_variants_idx ON ops.agent_ab_comparisons USING btree (baseline_variant, candidate_variant, compared_at DESC);

CREATE INDEX agent_benchmark_results_variant_idx ON ops.agent_benchmark_results USING btree (variant_id, category);

CREATE INDEX agent_error_occurrences_error_idx ON ops.agent_error_occurrences USING btree (error_id, occurred_at DESC);

CREATE INDEX agent_error_occurrences_gen_ai_idx ON ops.agent_error_occurrences USING btree (occurred_at) INCLUDE (gen_ai_provider, gen_ai_request_model, gen_ai_response_model, environment, error_id) WHERE (gen_ai_provider IS NOT NULL);

CREATE INDEX agent_error_occurrences_occurred_idx ON ops.agent_error_occurrences USING btree (occurred_at);

CREATE INDEX agent_errors_code_idx ON ops.agent_errors USING btree (code, last_seen DESC);

CREATE INDEX agent_errors_console_recent_idx ON ops.agent_errors USING btree (((last_seen AT TIME ZONE 'UTC'::text)) DESC, id DESC) INCLUDE (last_seen, status, severity, code, count, fingerprint);

CREATE INDEX agent_errors_console_severity_idx ON ops.agent_errors USING btree (severity, status DESC, ((last_seen AT TIME ZONE 'UTC'::text)) DESC, id DESC) INCLUDE (last_seen, code, fingerprint);

CREATE INDEX agent_errors_console_status_idx ON ops.agent_errors USING btree (status, ((last_seen AT TIME ZONE 'UTC'::text)) DESC, id DESC) INCLUDE (last_seen, code, fingerprint);

CREATE INDEX agent_errors_created_idx ON ops.agent_errors USING btree (created_at);

CREATE INDEX agent_errors_last_seen_idx ON ops.agent_errors USING btree (last_seen DESC);

CREATE INDEX agent_errors_merged_into_idx ON ops.agent_errors USING btree (merged_into) WHERE (merged_into IS NOT NULL);

CREATE INDEX agent_errors_source_idx ON ops.agent_errors USING btree (source, last_seen DESC);

CREATE INDEX agent_errors_status_idx ON ops.agent_errors USING btree (status, last_seen DESC);

CREATE INDEX agent_runs_agent_idx ON ops.agent_runs USING btree (agent, started_at DESC);

CREATE INDEX agent_runs_error_idx ON ops.agent_runs USING btree (error_id) WHERE (error_id IS NOT NULL);

CREATE INDEX agent_runs_recent_idx ON ops.agent_runs USING btree (((started_at AT TIME ZONE 'UTC'::text)) DESC, id DESC);

CREATE INDEX agent_runs_variant_idx ON ops.agent_runs USING btree (((metadata ->> 'variant_id'::text)));

CREATE INDEX classification_examples_code_idx ON ops.classification_examples USING btree (code, taught_at);

CREATE INDEX classification_examples_error_idx ON ops.classification_examples USING btree (error_id) WHERE (error_id IS NOT NULL);

CREATE INDEX error_group_keys_error_idx ON ops.error_group_keys USING btree (error_id, created_at);

CREATE INDEX webhook_deliveries_received_idx ON ops.webhook_deliveries USING btree (received_at);

CREATE TRIGGER agent_errors_own_key AFTER INSERT ON ops.agent_errors FOR EACH ROW EXECUTE FUNCTION ops.agent_errors_own_key();

ALTER TABLE ONLY ops.agent_benchmark_results
    ADD CONSTRAINT agent_benchmark_results_run_id_fkey FOREIGN KEY (run_id) REFERENCES ops.agent_runs(run_id) ON DELETE CASCADE;

ALTER TABLE ONLY ops.agent_error_occurrences
    ADD CONSTRAINT agent_error_occurrences_error_id_fkey FOREIGN KEY (error_id) REFERENCES ops.agent_errors(id) ON DELETE CASCADE;

ALTER TABLE ONLY ops.agent_errors
    ADD CONSTRAINT agent_errors_merged_into_fkey FOREIGN KEY (merged_into) REFERENCES ops.agent_errors(id) ON DELETE SET NULL;

ALTER TABLE ONLY ops.agent_runs
    ADD CONSTRAINT agent_runs_error_id_fkey FOREIGN KEY (error_id) REFERENCES ops.agent_errors(id) ON DELETE SET NULL;

ALTER TABLE ONLY ops.classification_examples
    ADD CONSTRAINT classification_examples_error_id_fkey FOREIGN KEY (error_id) REFERENCES ops.agent_errors(id) ON DELETE SET NULL;

ALTER TABLE ONLY ops.error_group_keys
    ADD CONSTRAINT error_group_keys_error_id_fkey FOREIGN KEY (error_id) REFERENCES ops.agent_errors(id) ON DELETE CASCADE;

ALTER TABLE ONLY ops.error_group_keys
    ADD CONSTRAINT error_group_keys_grouping_fkey FOREIGN KEY ("grouping") REFERENCES ops.grouping_versions(version);
