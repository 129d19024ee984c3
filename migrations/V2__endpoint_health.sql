-- Endpoint health (contract §2): the circuit breaker's state and the auto-disable clock, one
-- row per webhook that has failed lately. Kept out of `webhooks` so that saving it neither
-- wakes every service's subscription index (the NOTIFY trigger) nor touches `updated_at`.
CREATE TABLE webhook_health (
    webhook_id           uuid PRIMARY KEY REFERENCES webhooks (id) ON DELETE CASCADE,
    -- when the current run of failed attempts began; drives auto-disable
    failing_since        timestamptz NULL,
    consecutive_failures int NOT NULL DEFAULT 0,
    -- pauses in a row; each is longer than the one before
    trips                int NOT NULL DEFAULT 0,
    -- while the breaker is open: no delivery before this time
    paused_until         timestamptz NULL,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- Superseded by webhook_health.failing_since; never written.
ALTER TABLE webhooks DROP COLUMN failing_since;
