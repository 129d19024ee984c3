-- Endpoint health (contract §2): the circuit breaker's state and the auto-disable clock, one
-- row per webhook that has failed lately. Kept out of `webhooks` so that saving it neither
-- wakes every service's subscription index (the NOTIFY trigger) nor touches `updated_at`.
CREATE TABLE webhook_health (
    webhook_id           uuid PRIMARY KEY REFERENCES webhooks (id) ON DELETE CASCADE,
    -- the webhook's updated_at this health belongs to: any change to the webhook (enabled
    -- again, a new URL) starts it healthy, and a row of an older version counts for nothing
    webhook_version      timestamptz NOT NULL,
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

-- How many times a delivery was queued again by hand (log retry, recover). Each delivery
-- message carries the count it was made with, so that a retry chain overtaken by a newer one
-- gives way instead of sending its retries too.
ALTER TABLE webhook_logs ADD COLUMN requeues int NOT NULL DEFAULT 0;
