-- Claim one delivery id: a new one, or one whose earlier claim was never completed and
-- whose lease ran out (its process died). Returns the claim's attempt number, or, when the
-- id is taken, 0 with the state of the claim holding it ('completed' or 'in_progress';
-- NULL when that claim was committed after this statement's snapshot).
-- %(completed)s: true when the claim is taken in the caller's transaction (it completes
-- with that transaction's commit).
WITH claimed AS (
    INSERT INTO ops.webhook_deliveries AS d (provider, delivery_id, endpoint, completed_at)
    VALUES (%(provider)s, %(delivery_id)s, %(endpoint)s, CASE WHEN %(completed)s THEN now() END)
    ON CONFLICT (provider, delivery_id) DO UPDATE
        SET claimed_at = now(),
            attempts = d.attempts + 1,
            endpoint = coalesce(EXCLUDED.endpoint, d.endpoint),
            completed_at = EXCLUDED.completed_at
        WHERE d.completed_at IS NULL
          AND d.claimed_at < now() - make_interval(secs => %(lease_seconds)s)
    RETURNING d.attempts
)
SELECT attempts, 'claimed' FROM claimed
UNION ALL
SELECT 0, CASE WHEN d.completed_at IS NULL THEN 'in_progress' ELSE 'completed' END
FROM ops.webhook_deliveries d
WHERE d.provider = %(provider)s AND d.delivery_id = %(delivery_id)s
  AND NOT EXISTS (SELECT 1 FROM claimed)
