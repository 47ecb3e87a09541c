-- One intent by ref or id, as JSON, from the connector's published view (contract v1:
-- addons/ipai_pulser_connector/data/ops_intent_views.sql), never from its tables.
SELECT to_jsonb(i) AS intent
FROM ops.pulser_intents_v1 i
WHERE i.ref = %(ref)s OR i.id = %(ref_id)s
ORDER BY i.id
LIMIT 1;
