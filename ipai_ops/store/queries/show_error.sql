-- One error by id or fingerprint, with its latest occurrences.
SELECT e.*,
       (SELECT coalesce(json_agg(o ORDER BY o.occurred_at DESC), '[]'::json)
        FROM (SELECT source, occurrence_id, occurred_at, trace_id, span_id, service_version
              FROM ops.agent_error_occurrences
              WHERE error_id = e.id
              ORDER BY occurred_at DESC
              LIMIT 10) o) AS recent_occurrences
FROM ops.agent_errors e
WHERE e.fingerprint = %(ref)s OR e.id = %(ref_id)s
