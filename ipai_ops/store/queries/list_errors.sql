-- The errors console query of the CLI: newest first, optional filters.
SELECT id, fingerprint, code, source, service, severity, status, count,
       first_seen, last_seen, message
FROM ops.agent_errors
WHERE (%(code)s::text IS NULL OR code = %(code)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(source)s::text IS NULL OR source = %(source)s)
  AND (%(since)s::interval IS NULL OR last_seen >= now() - %(since)s::interval)
ORDER BY last_seen DESC
LIMIT %(limit)s
