-- One error by id or by any key that reaches it (its fingerprint, or a key a later grouping
-- version attached), with its latest occurrences and its keys (the group's grouping history).
SELECT e.*,
       (SELECT coalesce(json_agg(o ORDER BY o.occurred_at DESC), '[]'::json)
        FROM (SELECT source, occurrence_id, occurred_at, trace_id, span_id, service_version
              FROM ops.agent_error_occurrences
              WHERE error_id = e.id
              ORDER BY occurred_at DESC
              LIMIT 10) o) AS recent_occurrences,
       (SELECT coalesce(json_agg(k ORDER BY k.created_at), '[]'::json)
        FROM (SELECT fingerprint, grouping, code, created_at
              FROM ops.error_group_keys
              WHERE error_id = e.id) k) AS keys
FROM ops.agent_errors e
WHERE e.id = (SELECT k.error_id FROM ops.error_group_keys k WHERE k.fingerprint = %(ref)s)
   OR e.id = %(ref_id)s
