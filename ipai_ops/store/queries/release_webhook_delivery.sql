-- The handler of attempt %(attempt)s failed: forget the claim so the sender's retry of
-- the same delivery is accepted (senders deliver at least once).
DELETE FROM ops.webhook_deliveries
WHERE provider = %(provider)s AND delivery_id = %(delivery_id)s
  AND attempts = %(attempt)s AND completed_at IS NULL
