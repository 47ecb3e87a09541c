-- Agent runs for the dataset export, ordered by task key then run id so each task's
-- runs arrive together (preference pairs are built per task) and every export of the
-- same rows comes out in the same order. Benchmark scores are those of one version.
SELECT r.run_id, r.agent, r.task_ref, r.status, r.started_at, r.duration_ms, r.metadata,
       e.code AS error_code, b.composite, b.tier, b.scores
FROM ops.agent_runs r
LEFT JOIN ops.agent_errors e ON e.id = r.error_id
LEFT JOIN LATERAL (
    SELECT max(x.composite) AS composite, max(x.tier) AS tier,
           jsonb_object_agg(x.category, x.score) AS scores
    FROM ops.agent_benchmark_results x
    WHERE x.run_id = r.run_id AND x.benchmark_version = %(version)s
) b ON true
WHERE (%(agent)s::text IS NULL OR r.agent = %(agent)s::text)
  AND (%(variant)s::text IS NULL OR r.metadata ->> 'variant_id' = %(variant)s::text)
  AND (%(status)s::text IS NULL OR r.status = %(status)s::text)
  AND (%(since)s::interval IS NULL OR r.started_at >= now() - %(since)s::interval)
ORDER BY coalesce(r.task_ref, 'run:' || r.run_id), r.run_id
LIMIT %(limit)s;
