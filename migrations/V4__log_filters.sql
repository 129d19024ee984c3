-- Every filter of GET /v1/logs is served by an index that leads with its column and then
-- follows the list's order, (created_at DESC, id DESC): webhook, account, status and time
-- had one already; event type and event id get theirs.
CREATE INDEX webhook_logs_type_created ON webhook_logs (event_type, created_at DESC, id DESC);
CREATE INDEX webhook_logs_event_created ON webhook_logs (event_id, created_at DESC, id DESC);
