-- 0011: a real 'snoozed' status.
--
-- A snooze used to be 'ignored' with snooze_until / snooze_until_count set, so the console
-- could not tell "ignored for good" from "back when N more occur": filters, the status bar
-- and the kanban counted both as ignored. 'snoozed' is its own value now; ops.next_status
-- reopens it like a snoozed 'ignored' row (kept for writers that still set the old shape).
--
-- The two writers (ops.upsert_agent_error, ops.write_agent_errors) name the statuses that
-- may change on a new occurrence. They are patched in place, not re-declared: earlier
-- migrations may have changed their signatures or bodies, and a copy of an older body here
-- would silently undo that. A body that no longer holds the expected clause is an error.

ALTER TABLE ops.agent_errors DROP CONSTRAINT agent_errors_status_check;
ALTER TABLE ops.agent_errors ADD CONSTRAINT agent_errors_status_check
    CHECK (status IN ('open', 'resolved', 'ignored', 'snoozed', 'regressed', 'merged'));

UPDATE ops.agent_errors SET status = 'snoozed'
 WHERE status = 'ignored' AND (snooze_until IS NOT NULL OR snooze_until_count IS NOT NULL);

CREATE OR REPLACE FUNCTION ops.next_status(
    p_status text, p_resolved_in_version text, p_service_versions text[],
    p_snooze_until timestamptz, p_snooze_until_count bigint, p_new_count bigint, p_now timestamptz
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
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

DO $migration$
DECLARE
    v_fn regprocedure;
    v_def text;
    v_new text;
BEGIN
    FOR v_fn IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'ops' AND p.proname IN ('upsert_agent_error', 'write_agent_errors')
    LOOP
        v_def := pg_get_functiondef(v_fn);
        IF position($q$e.status IN ('resolved', 'ignored')$q$ IN v_def) = 0
           OR position($q$e.status = 'ignored' AND$q$ IN v_def) = 0 THEN
            RAISE EXCEPTION '0011: % no longer names the statuses it updates as expected; adapt this migration', v_fn;
        END IF;
        v_new := replace(v_def, $q$e.status IN ('resolved', 'ignored')$q$,
                         $q$e.status IN ('resolved', 'ignored', 'snoozed')$q$);
        v_new := replace(v_new, $q$e.status = 'ignored' AND$q$, $q$e.status IN ('ignored', 'snoozed') AND$q$);
        EXECUTE v_new;
    END LOOP;
END
$migration$;
