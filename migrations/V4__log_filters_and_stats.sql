-- Index builds lock writes to their table while they run: on a large existing table, create
-- these beforehand with CREATE INDEX CONCURRENTLY (same names), and this migration skips them.
-- Every filter of GET /v1/logs is served by an index that leads with its column and then
-- follows the list's order, (created_at DESC, id DESC): webhook, account, status and time
-- had one already; event type and event id get theirs.
CREATE INDEX IF NOT EXISTS webhook_logs_type_created ON webhook_logs (event_type, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS webhook_logs_event_created ON webhook_logs (event_id, created_at DESC, id DESC);

-- Per-webhook statistics (GET /v1/webhooks/{id}/stats) read a window of one webhook's
-- attempts: they carry their webhook, so that window is one index range, whichever logs the
-- attempts belong to (a retry can come a day after its log was created).
-- Adding a nullable column is instant; the attempts written before it are filled in by the
-- services in small batches (see dispatch/src/retention.rs), not by one long UPDATE that
-- would hold this table's lock for the whole rewrite. The partial index finds the ones left
-- (empty once done, and for attempts an older release still writes during a rollout).
ALTER TABLE webhook_attempts ADD COLUMN webhook_id uuid NULL;
CREATE INDEX IF NOT EXISTS webhook_attempts_webhook_started ON webhook_attempts (webhook_id, started_at);
CREATE INDEX webhook_attempts_unfilled ON webhook_attempts (id) WHERE webhook_id IS NULL;
