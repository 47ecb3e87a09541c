-- 0003: concurrent batches deadlocked on the error rows.
--
-- Inserting an occurrence takes FOR KEY SHARE on its error row (the foreign key);
-- the batch writer then took FOR UPDATE in id order, which conflicts with another
-- batch's KEY SHARE on the same rows: two batches with overlapping fingerprints
-- each waited for the other. FOR NO KEY UPDATE (what the UPDATE itself needs, as it
-- never changes the key) does not conflict with KEY SHARE, so the id-ordered lock
-- step keeps its purpose (a fixed lock order between batches) without the cycle.

-- Many occurrences in one round trip. Correct when the batch repeats a
-- fingerprint or an occurrence, and when it repeats earlier deliveries. Locks
-- are taken in a fixed order (fingerprint, then occurrence key, then error id)
-- so concurrent batches cannot deadlock each other.
CREATE OR REPLACE FUNCTION ops.write_agent_errors(p_batch jsonb)
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
