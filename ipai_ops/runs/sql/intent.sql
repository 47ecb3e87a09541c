-- One intent of the Odoo connector (table ipai_pulser_intent) by ref or id, as JSON
-- (every column, whatever the addon's version), with its audit events when that table exists.
SELECT to_jsonb(i) AS intent
FROM ipai_pulser_intent i
WHERE i.ref = %(ref)s OR i.id = %(ref_id)s
ORDER BY i.id
LIMIT 1;
