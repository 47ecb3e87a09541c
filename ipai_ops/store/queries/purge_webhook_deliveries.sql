-- One bounded chunk of retention: the oldest delivery ids past the cut-off.
-- SKIP LOCKED lets it run beside receivers without waiting on their rows.
DELETE FROM ops.webhook_deliveries d
USING (
    SELECT provider, delivery_id
    FROM ops.webhook_deliveries
    WHERE received_at < now() - make_interval(days => %(days)s)
    ORDER BY received_at
    LIMIT %(chunk)s
    FOR UPDATE SKIP LOCKED
) old
WHERE d.provider = old.provider AND d.delivery_id = old.delivery_id
