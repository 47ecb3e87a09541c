-- How many runs the export will read (for the progress bar).
SELECT count(*) FROM (
    SELECT 1
    FROM ops.agent_runs r
    WHERE (%(agent)s::text IS NULL OR r.agent = %(agent)s::text)
      AND (%(variant)s::text IS NULL OR r.metadata ->> 'variant_id' = %(variant)s::text)
      AND (%(status)s::text IS NULL OR r.status = %(status)s::text)
      AND (%(since)s::interval IS NULL OR r.started_at >= now() - %(since)s::interval)
    LIMIT %(limit)s
) AS n;
