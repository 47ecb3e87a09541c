-- 0009: merging error groups (one failure reported by two sources, two fingerprints).
--
-- A merge moves everything that made the merged groups to the kept one, in one
-- transaction: the counts, the occurrences, the keys (ops.error_group_keys), the runs and
-- the taught examples. The merged row stays, with status 'merged', count 0 and a pointer
-- (merged_into) to the kept group, so links to it still resolve.
--
-- Later occurrences follow the keys: both writers resolve a fingerprint (and a previous
-- fingerprint) through ops.error_group_keys before anything else, and the merged groups'
-- keys now name the kept group, so the writers need no change. The one gap is a writer
-- that read a key just before the merge committed: its occurrence lands on the merged row
-- after the merge. ops.follow_merges() moves such stragglers (occurrences, count, keys) to
-- where the pointer says; Odoo's cron runs it every few minutes.

ALTER TABLE ops.agent_errors
    ADD COLUMN merged_into bigint REFERENCES ops.agent_errors (id) ON DELETE SET NULL,
    ADD COLUMN merged_at timestamptz,
    ADD CONSTRAINT agent_errors_merged_into_check CHECK (merged_into IS NULL OR merged_into <> id);

ALTER TABLE ops.agent_errors DROP CONSTRAINT agent_errors_status_check;
ALTER TABLE ops.agent_errors ADD CONSTRAINT agent_errors_status_check
    CHECK (status IN ('open', 'resolved', 'ignored', 'regressed', 'merged'));

CREATE INDEX agent_errors_merged_into_idx ON ops.agent_errors (merged_into) WHERE merged_into IS NOT NULL;
-- "new errors since": owner-team auto-assignment. created_at never changes after the
-- insert, so the index costs only new groups, not counted occurrences.
CREATE INDEX agent_errors_created_idx ON ops.agent_errors (created_at);

-- Move the groups p_merged into p_kept; the caller has locked the rows. Returns the
-- occurrences moved.
CREATE FUNCTION ops.move_error_groups(p_kept bigint, p_merged bigint[]) RETURNS bigint
LANGUAGE plpgsql AS $$
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
    -- groups' counts and, where one of them was seen last, that latest occurrence's traces.
    UPDATE ops.agent_errors e SET
        count = e.count + v_count,
        first_seen = least(e.first_seen, coalesce(v_first, e.first_seen)),
        last_seen = greatest(e.last_seen, coalesce(v_last, e.last_seen)),
        last_trace_id = CASE WHEN v_last > e.last_seen THEN v_latest.last_trace_id ELSE e.last_trace_id END,
        last_span_id = CASE WHEN v_last > e.last_seen THEN v_latest.last_span_id ELSE e.last_span_id END,
        last_service_version = CASE WHEN v_last > e.last_seen
            THEN coalesce(v_latest.last_service_version, e.last_service_version) ELSE e.last_service_version END,
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

-- Occurrences counted on a merged group after its merge (a writer that resolved the key
-- just before the merge committed) move to the group it points to. Returns the groups fixed.
CREATE FUNCTION ops.follow_merges() RETURNS integer
LANGUAGE plpgsql AS $$
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

-- Merge the groups p_merged into p_kept in the caller's transaction. Refuses (SQLSTATE
-- 22023, invalid_parameter_value) a kept group that is unknown or merged itself, an empty
-- or unknown merged list, and a group merged already.
CREATE FUNCTION ops.merge_agent_errors(p_kept bigint, p_merged bigint[])
RETURNS TABLE (kept_id bigint, merged_count integer, moved_occurrences bigint, kept_count bigint)
LANGUAGE plpgsql AS $$
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
