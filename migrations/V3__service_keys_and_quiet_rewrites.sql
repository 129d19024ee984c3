-- Keys hookrelay keeps for itself, shared by every process of a deployment and by nobody
-- else: `event_origin` tags the events hookrelay publishes (Webhook.*), so that one sent by
-- an upstream publisher can be told apart and rejected.
CREATE TABLE service_keys (
    name       text PRIMARY KEY,
    key        bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- `hookrelay reencrypt` rewrites stored secrets without changing what they are: the services
-- need not reload anything, and a notification per row would have every one of them reload
-- the webhook once per row. The job sets `hookrelay.quiet` for its own transactions.
CREATE OR REPLACE FUNCTION hookrelay_notify_webhook_change() RETURNS trigger AS $$
BEGIN
    IF current_setting('hookrelay.quiet', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('hookrelay_webhooks', json_build_object(
        'op', lower(TG_OP),
        'id', COALESCE(NEW.id, OLD.id)
    )::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
