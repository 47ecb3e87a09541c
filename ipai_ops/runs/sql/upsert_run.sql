-- One agent run, written at start, after every attempt and at the end: each write
-- carries the whole record so far, so any of them alone leaves a consistent row.
-- Metadata is merged (||), not replaced: keys other writers add later (metadata.pr,
-- prompt, patch) survive the recorder's updates.
INSERT INTO ops.agent_runs AS r
    (run_id, source, agent, task_ref, status, started_at, finished_at, duration_ms, error_id, metadata)
VALUES (%(run_id)s, %(source)s, %(agent)s, %(task_ref)s, %(status)s, %(started_at)s, %(finished_at)s,
        %(duration_ms)s, %(error_id)s, %(metadata)s::jsonb)
ON CONFLICT (run_id) DO UPDATE SET
    source = EXCLUDED.source,
    agent = EXCLUDED.agent,
    task_ref = EXCLUDED.task_ref,
    status = EXCLUDED.status,
    started_at = least(r.started_at, EXCLUDED.started_at),
    finished_at = EXCLUDED.finished_at,
    duration_ms = EXCLUDED.duration_ms,
    error_id = EXCLUDED.error_id,
    metadata = r.metadata || EXCLUDED.metadata
RETURNING id;
