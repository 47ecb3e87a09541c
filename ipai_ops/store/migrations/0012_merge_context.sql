-- 0012: a merge carries the latest occurrence's context to the kept group.
--
-- ops.move_error_groups (0009) was written before 0010 gave groups their latest environment
-- and GenAI provider and model: a merged group seen last left the kept group showing the
-- older context until its next occurrence. The kept group now takes them, like the traces,
-- release and sample, from the merged group seen last (when that one is newer).
CREATE OR REPLACE FUNCTION ops.move_error_groups(p_kept bigint, p_merged bigint[]) RETURNS bigint
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
