-- The audit trail of one intent (state transitions with their timestamps), oldest first,
-- from the connector's published view (contract v1).
SELECT to_jsonb(ev) AS event
FROM ops.pulser_intent_events_v1 ev
WHERE ev.intent_id = %(intent_id)s
ORDER BY ev.id
LIMIT 200;
