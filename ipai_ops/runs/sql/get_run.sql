-- One agent run by run_id, with the code of its error.
SELECT r.id, r.run_id, r.source, r.agent, r.task_ref, r.status, r.started_at, r.finished_at,
       r.duration_ms, r.error_id, r.metadata, e.code AS error_code, e.fingerprint AS error_fingerprint
FROM ops.agent_runs r
LEFT JOIN ops.agent_errors e ON e.id = r.error_id
WHERE r.run_id = %(run_id)s;
