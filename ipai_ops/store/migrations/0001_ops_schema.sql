-- 0001: the ops schema: deduplicated errors, their occurrences, agent runs and
-- benchmark results. Applied by ipai_ops.store.migrate under an advisory lock.

CREATE SCHEMA IF NOT EXISTS ops;

CREATE TABLE ops.agent_errors (
    id                   bigserial PRIMARY KEY,
    fingerprint          text        NOT NULL,
    code                 text        NOT NULL,
    source               text        NOT NULL,
    service              text,
    message              text,
    error_type           text,
    severity             text        NOT NULL DEFAULT 'medium',
    count                bigint      NOT NULL DEFAULT 0,
    first_seen           timestamptz NOT NULL,
    last_seen            timestamptz NOT NULL,
    status               text        NOT NULL DEFAULT 'open',
    last_trace_id        text,
    last_span_id         text,
    last_service_version text,
    sample               jsonb,
    resolved_at          timestamptz,
    resolved_in_version  text,
    regressed_at         timestamptz,
    snooze_until         timestamptz,
    snooze_until_count   bigint,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_errors_fingerprint_key UNIQUE (fingerprint),
    CONSTRAINT agent_errors_status_check
        CHECK (status IN ('open', 'resolved', 'ignored', 'regressed')),
    CONSTRAINT agent_errors_severity_check
        CHECK (severity IN ('critical', 'high', 'medium', 'low')),
    CONSTRAINT agent_errors_count_check CHECK (count >= 0)
);
COMMENT ON TABLE ops.agent_errors IS
    'One row per error fingerprint; count = distinct occurrences (exactly once per (source, occurrence_id)).';

-- The consoles: by code, newest first, by status, by source.
CREATE INDEX agent_errors_code_idx ON ops.agent_errors (code, last_seen DESC);
CREATE INDEX agent_errors_last_seen_idx ON ops.agent_errors (last_seen DESC);
CREATE INDEX agent_errors_status_idx ON ops.agent_errors (status, last_seen DESC);
CREATE INDEX agent_errors_source_idx ON ops.agent_errors (source, last_seen DESC);

CREATE TABLE ops.agent_error_occurrences (
    source          text        NOT NULL,
    occurrence_id   text        NOT NULL,
    error_id        bigint      NOT NULL REFERENCES ops.agent_errors (id) ON DELETE CASCADE,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    trace_id        text,
    span_id         text,
    service_version text,
    PRIMARY KEY (source, occurrence_id)
);
CREATE INDEX agent_error_occurrences_error_idx
    ON ops.agent_error_occurrences (error_id, occurred_at DESC);
-- Retention deletes by age in chunks.
CREATE INDEX agent_error_occurrences_occurred_idx ON ops.agent_error_occurrences (occurred_at);

CREATE TABLE ops.agent_runs (
    id          bigserial PRIMARY KEY,
    run_id      text        NOT NULL,
    source      text        NOT NULL DEFAULT 'cli',
    agent       text,
    task_ref    text,
    status      text        NOT NULL DEFAULT 'running',
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    duration_ms bigint,
    error_id    bigint REFERENCES ops.agent_errors (id) ON DELETE SET NULL,
    metadata    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT agent_runs_run_id_key UNIQUE (run_id),
    CONSTRAINT agent_runs_status_check
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    CONSTRAINT agent_runs_metadata_check CHECK (jsonb_typeof(metadata) = 'object')
);
CREATE INDEX agent_runs_agent_idx ON ops.agent_runs (agent, started_at DESC);
CREATE INDEX agent_runs_variant_idx ON ops.agent_runs ((metadata ->> 'variant_id'));

CREATE TABLE ops.agent_benchmark_results (
    id                bigserial PRIMARY KEY,
    subject           text        NOT NULL,
    run_id            text REFERENCES ops.agent_runs (run_id) ON DELETE CASCADE,
    agent             text,
    variant_id        text,
    benchmark_version integer     NOT NULL DEFAULT 1,
    category          text        NOT NULL,
    score             numeric(6, 2) NOT NULL,
    weight            numeric(6, 4),
    composite         numeric(6, 2),
    tier              text,
    details           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    scored_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_benchmark_results_score_check CHECK (score BETWEEN 0 AND 100),
    CONSTRAINT agent_benchmark_results_subject_key UNIQUE (subject, category, benchmark_version)
);
CREATE INDEX agent_benchmark_results_variant_idx
    ON ops.agent_benchmark_results (variant_id, category);

-- Release ordering for "resolved in release X": numeric parts compared as a vector,
-- so 1.10.0 > 1.9.3 and v2 > 1.99.
CREATE FUNCTION ops.version_key(v text) RETURNS numeric[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN v ~ '[0-9]'
        THEN string_to_array(trim(BOTH '.' FROM regexp_replace(v, '[^0-9]+', '.', 'g')), '.')::numeric[]
        ELSE '{}'::numeric[] END
$$;

-- The status an error takes when NEW occurrences arrive (one place for the
-- rules, shared by the single and the batch writer):
--   resolved -> regressed, unless it was resolved in release R and every new
--               occurrence reports an older service.version (old deploys still
--               draining); an occurrence with no version cannot prove it is old;
--   ignored  -> open once the snooze has run out (date passed or count reached).
-- Callers evaluate it only for resolved/ignored rows: the hot path (open) pays nothing.
CREATE FUNCTION ops.next_status(
    p_status text, p_resolved_in_version text, p_service_versions text[],
    p_snooze_until timestamptz, p_snooze_until_count bigint, p_new_count bigint,
    p_now timestamptz
) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_status = 'resolved' AND (
                p_resolved_in_version IS NULL
             OR EXISTS (SELECT 1 FROM unnest(p_service_versions) AS v
                        WHERE v IS NULL
                           OR ops.version_key(v) >= ops.version_key(p_resolved_in_version)))
            THEN 'regressed'
        WHEN p_status = 'ignored' AND (
                (p_snooze_until IS NOT NULL AND p_now >= p_snooze_until)
             OR (p_snooze_until_count IS NOT NULL AND p_new_count >= p_snooze_until_count))
            THEN 'open'
        ELSE p_status
    END
$$;

-- One occurrence. Counts (p_source, p_occurrence_id) exactly once however often
-- it is delivered, concurrently or not.
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
    p_sample jsonb DEFAULT NULL
) RETURNS TABLE (error_id bigint, error_count bigint, is_new boolean, error_status text)
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO ops.agent_errors AS e
        (fingerprint, code, source, service, message, error_type, severity,
         count, first_seen, last_seen)
    VALUES (p_fingerprint, p_code, p_source, p_service, p_message, p_error_type,
            coalesce(p_severity, 'medium'), 0, p_occurred_at, p_occurred_at)
    ON CONFLICT (fingerprint) DO NOTHING;

    SELECT e.id INTO STRICT v_id FROM ops.agent_errors e WHERE e.fingerprint = p_fingerprint;

    INSERT INTO ops.agent_error_occurrences
        (source, occurrence_id, error_id, occurred_at, trace_id, span_id, service_version)
    VALUES (p_source, p_occurrence_id, v_id, p_occurred_at, p_trace_id, p_span_id, p_service_version)
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

-- The row type the batch writer takes (one JSON object per occurrence).
CREATE TYPE ops.error_occurrence_input AS (
    source text,
    occurrence_id text,
    fingerprint text,
    code text,
    severity text,
    message text,
    error_type text,
    service text,
    occurred_at timestamptz,
    trace_id text,
    span_id text,
    service_version text,
    sample jsonb
);

CREATE TYPE ops.occurrence_key AS (error_id bigint, source text, occurrence_id text);

-- Many occurrences in one round trip. Correct when the batch repeats a
-- fingerprint or an occurrence, and when it repeats earlier deliveries. Locks
-- are taken in a fixed order (fingerprint, then occurrence key, then error id)
-- and in compatible modes, so concurrent batches cannot deadlock each other.
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

    INSERT INTO ops.agent_errors
        (fingerprint, code, source, service, message, error_type, severity,
         count, first_seen, last_seen)
    SELECT DISTINCT ON (r.fingerprint)
           r.fingerprint, r.code, r.source, r.service, r.message, r.error_type,
           coalesce(r.severity, 'medium'), 0,
           coalesce(r.occurred_at, now()), coalesce(r.occurred_at, now())
    FROM unnest(v_rows) AS r
    ORDER BY r.fingerprint, r.occurred_at
    ON CONFLICT (fingerprint) DO NOTHING;

    WITH inserted AS (
        INSERT INTO ops.agent_error_occurrences
            (source, occurrence_id, error_id, occurred_at, trace_id, span_id, service_version)
        SELECT r.source, r.occurrence_id, e.id, coalesce(r.occurred_at, now()),
               r.trace_id, r.span_id, r.service_version
        FROM unnest(v_rows) AS r
        JOIN ops.agent_errors e ON e.fingerprint = r.fingerprint
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
    -- The UPDATE below never changes the key, so NO KEY UPDATE is all it needs.
    PERFORM 1 FROM ops.agent_errors e
    WHERE e.id IN (SELECT n.error_id FROM unnest(v_new_keys) AS n)
    ORDER BY e.id FOR NO KEY UPDATE;

    -- One aggregate row per error: count, window, versions and the newest
    -- occurrence (no self-join: the planner cannot estimate unnest() sizes, and a
    -- join here degenerates into a nested loop).
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
