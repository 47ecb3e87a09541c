-- 0006: versioned grouping (docs/architecture.md, "Grouping versions").
--
-- A fingerprint covers the failure code, so a better classifier (grouping version 2) gives
-- some known failures a new fingerprint. A group (an ops.agent_errors row) is therefore
-- reached through keys: ops.error_group_keys maps (key -> group, grouping version). While a
-- version's upgrade window is open (ops.grouping_versions.legacy_until), an occurrence whose
-- key is unknown but whose previous key (the fingerprint grouping version 1 gave it) names a
-- group joins that group, which records the new key and takes the new code, instead of
-- opening a new group that would lose the history and fire "new error" signals.

CREATE TABLE ops.grouping_versions (
    version      smallint    PRIMARY KEY,
    activated_at timestamptz NOT NULL DEFAULT now(),
    -- Until then a miss on this version's key falls back to the previous version's key.
    legacy_until timestamptz,
    description  text        NOT NULL
);
INSERT INTO ops.grouping_versions (version, activated_at, legacy_until, description) VALUES
    (1, '-infinity', NULL, 'signatures in registry file order, first match wins'),
    (2, now(), now() + interval '180 days',
     'families; precedence by specificity on a line and root cause across lines; log reader');

CREATE TABLE ops.error_group_keys (
    fingerprint text        PRIMARY KEY,
    error_id    bigint      NOT NULL REFERENCES ops.agent_errors (id) ON DELETE CASCADE,
    grouping    smallint    NOT NULL REFERENCES ops.grouping_versions (version),
    -- The code the failure had when this key first reached the group: the group's history.
    code        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX error_group_keys_error_idx ON ops.error_group_keys (error_id, created_at);
COMMENT ON TABLE ops.error_group_keys IS
    'Every key that reaches a group: its own fingerprint, and keys of later grouping versions attached to it.';

INSERT INTO ops.error_group_keys (fingerprint, error_id, grouping, code, created_at)
SELECT fingerprint, id, 1, code, created_at FROM ops.agent_errors;

CREATE FUNCTION ops.current_grouping() RETURNS smallint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT max(version) FROM ops.grouping_versions
$$;

-- Is the current version's upgrade window open (previous keys still attach)?
CREATE FUNCTION ops.previous_keys_attach() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(legacy_until > now(), false)
    FROM ops.grouping_versions ORDER BY version DESC LIMIT 1
$$;

-- Every group is reachable through its own fingerprint, whoever inserts it.
CREATE FUNCTION ops.agent_errors_own_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ops.error_group_keys (fingerprint, error_id, grouping, code)
    VALUES (NEW.fingerprint, NEW.id, ops.current_grouping(), NEW.code)
    ON CONFLICT (fingerprint) DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER agent_errors_own_key AFTER INSERT ON ops.agent_errors
    FOR EACH ROW EXECUTE FUNCTION ops.agent_errors_own_key();

-- The group a key reaches, attaching it to its previous key's group when the window is
-- open; NULL when neither key is known (the caller opens a new group).
CREATE FUNCTION ops.group_for_key(p_fingerprint text, p_previous text, p_code text) RETURNS bigint
LANGUAGE plpgsql AS $$
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

DROP FUNCTION ops.upsert_agent_error(text, text, text, text, text, text, text, text, timestamptz, text, text, text, jsonb);

-- One occurrence. Counts (p_source, p_occurrence_id) exactly once however often it is
-- delivered; p_previous_fingerprint attaches a new key to its previous key's group.
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
    p_previous_fingerprint text DEFAULT NULL
) RETURNS TABLE (error_id bigint, error_count bigint, is_new boolean, error_status text)
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
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

-- The batch writer's input row gains the previous key (JSON field previous_fingerprint).
DROP FUNCTION ops.write_agent_errors(jsonb);
ALTER TYPE ops.error_occurrence_input ADD ATTRIBUTE previous_fingerprint text;

-- Many occurrences in one round trip, with the same key resolution as the single upsert:
-- known keys, then previous keys attached while the window is open, then new groups.
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
            (source, occurrence_id, error_id, occurred_at, trace_id, span_id, service_version)
        SELECT r.source, r.occurrence_id, k.error_id, coalesce(r.occurred_at, now()),
               r.trace_id, r.span_id, r.service_version
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
