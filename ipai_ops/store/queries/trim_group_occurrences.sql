-- One bounded chunk of the cap on stored occurrences per error group (ipai-ops db retention
-- --max-per-group): of group %(error_id)s, the occurrences that are neither its first nor
-- among its %(keep)s most recent, and older than %(cutoff)s (the senders' retry window:
-- a redelivery inside it still meets its key and is not counted twice). The count in
-- ops.agent_errors is never touched. Uses agent_error_occurrences_error_idx.
DELETE FROM ops.agent_error_occurrences o
USING (
    SELECT source, occurrence_id
    FROM (
        SELECT source, occurrence_id, occurred_at
        FROM ops.agent_error_occurrences
        WHERE error_id = %(error_id)s
        ORDER BY occurred_at DESC, source DESC, occurrence_id DESC
        OFFSET %(keep)s
    ) older
    WHERE occurred_at < %(cutoff)s
      AND (source, occurrence_id) <> (
          SELECT source, occurrence_id FROM ops.agent_error_occurrences
          WHERE error_id = %(error_id)s
          ORDER BY occurred_at, source, occurrence_id
          LIMIT 1
      )
    LIMIT %(chunk)s
) old
WHERE o.source = old.source AND o.occurrence_id = old.occurrence_id
