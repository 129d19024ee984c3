-- Every filter of GET /v1/logs is served by an index that leads with its column and then
-- follows the list's order, (created_at DESC, id DESC): webhook, account, status and time
-- had one already; event type and event id get theirs.
CREATE INDEX webhook_logs_type_created ON webhook_logs (event_type, created_at DESC, id DESC);
CREATE INDEX webhook_logs_event_created ON webhook_logs (event_id, created_at DESC, id DESC);

-- Per-webhook statistics (GET /v1/webhooks/{id}/stats) read a window of one webhook's
-- attempts: they carry their webhook, so that window is one index range, whichever logs the
-- attempts belong to (a retry can come a day after its log was created).
ALTER TABLE webhook_attempts ADD COLUMN webhook_id uuid NULL;
UPDATE webhook_attempts a SET webhook_id = l.webhook_id
    FROM webhook_logs l WHERE l.id = a.log_id;
CREATE INDEX webhook_attempts_webhook_started ON webhook_attempts (webhook_id, started_at);
