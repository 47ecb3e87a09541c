-- The handler of attempt %(attempt)s succeeded: the delivery id is now refused for good
-- (until retention). Matching the attempt keeps a slow attempt whose lease ran out from
-- completing the claim a later attempt took over.
UPDATE ops.webhook_deliveries SET completed_at = now()
WHERE provider = %(provider)s AND delivery_id = %(delivery_id)s
  AND attempts = %(attempt)s AND completed_at IS NULL
