-- The audit trail of one intent (state transitions with their timestamps), oldest first.
SELECT to_jsonb(ev) AS event
FROM ipai_pulser_intent_event ev
WHERE ev.intent_id = %(intent_id)s
ORDER BY ev.id
LIMIT 200;
