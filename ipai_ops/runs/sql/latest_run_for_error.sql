-- The newest agent run that failed with this error: the run row links its final error,
-- metadata.iterations[*].error_id every attempt's.
SELECT r.run_id
FROM ops.agent_runs r
WHERE r.error_id = %(error_id)s
   OR r.metadata -> 'iterations' @> jsonb_build_array(jsonb_build_object('error_id', %(error_id)s::bigint))
ORDER BY r.started_at DESC, r.id DESC
LIMIT 1;
