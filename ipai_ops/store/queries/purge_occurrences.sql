-- One bounded chunk of retention: the oldest occurrences past the cut-off.
-- SKIP LOCKED lets it run beside writers without waiting on their rows.
DELETE FROM ops.agent_error_occurrences o
USING (
    SELECT source, occurrence_id
    FROM ops.agent_error_occurrences
    WHERE occurred_at < now() - make_interval(days => %(days)s)
    ORDER BY occurred_at
    LIMIT %(chunk)s
    FOR UPDATE SKIP LOCKED
) old
WHERE o.source = old.source AND o.occurrence_id = old.occurrence_id
