-- Every stored category score of one variant under one benchmark version.
SELECT b.subject, b.category, b.score, b.composite
FROM ops.agent_benchmark_results b
WHERE b.variant_id = %(variant)s
  AND b.benchmark_version = %(version)s
  AND (%(agent)s::text IS NULL OR b.agent = %(agent)s::text)
ORDER BY b.subject, b.category;
