-- Agent runs that carry a PR-shaped change in metadata.pr, by id list, by variant, or all.
SELECT r.run_id, r.agent, r.metadata
FROM ops.agent_runs r
WHERE r.metadata ? 'pr'
  AND (%(run_ids)s::text[] IS NULL OR r.run_id = ANY(%(run_ids)s::text[]))
  AND (%(variant)s::text IS NULL OR r.metadata ->> 'variant_id' = %(variant)s::text)
  AND (%(run_ids)s::text[] IS NOT NULL OR %(variant)s::text IS NOT NULL OR %(all)s)
ORDER BY r.run_id;
