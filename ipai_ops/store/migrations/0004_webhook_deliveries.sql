-- 0004: inbound webhook deliveries already accepted, so a replayed or redelivered one is
-- refused (WEBHOOK.DELIVERY_DUPLICATE) instead of being processed twice
-- (ipai_ops.middleware.webhooks).
--
-- A row is a claim: taken when a verified delivery arrives, completed when its handler
-- succeeded, deleted when the handler failed (so the sender's retry is accepted: the
-- senders deliver at least once). A claim never completed and older than the claimer's
-- lease belongs to a process that died mid-delivery; the next delivery of that id takes
-- it over. A claim taken inside the caller's own transaction is completed on insert and
-- disappears with that transaction's rollback.
CREATE TABLE ops.webhook_deliveries (
    provider     text        NOT NULL,
    delivery_id  text        NOT NULL,
    endpoint     text,
    received_at  timestamptz NOT NULL DEFAULT now(),
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    attempts     integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (provider, delivery_id),
    CONSTRAINT webhook_deliveries_provider_check CHECK (length(provider) BETWEEN 1 AND 64),
    CONSTRAINT webhook_deliveries_delivery_id_check CHECK (length(delivery_id) BETWEEN 1 AND 256),
    CONSTRAINT webhook_deliveries_attempts_check CHECK (attempts >= 1)
);
COMMENT ON TABLE ops.webhook_deliveries IS
    'Inbound webhook delivery ids per provider: claimed, completed or (released) gone; refuses duplicates.';
-- Retention deletes by age in chunks (ipai_ops.middleware.webhooks.purge_deliveries).
CREATE INDEX webhook_deliveries_received_idx ON ops.webhook_deliveries (received_at);
