-- The whole schema of contract §3. Column names of webhooks, webhook_logs and
-- webhook_attempts are a promise to admins who query them directly: change them only on purpose.

CREATE TABLE event_types (
    name        text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    -- seeded by hookrelay; admins add the others through the API
    builtin     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO event_types (name, description, builtin) VALUES
    ('Contact.created', 'A contact was created.', true),
    ('Contact.updated', 'A contact was updated.', true),
    ('Contact.mapped', 'A contact was mapped.', true),
    ('Contact.unmapped', 'A contact was unmapped.', true),
    ('Conversation.created', 'A conversation was created.', true),
    ('Conversation.updated', 'A conversation was updated.', true),
    ('Conversation.UnAttended', 'A conversation was left unattended.', true),
    ('Conversation.Tag.mapped', 'A tag was mapped to a conversation.', true),
    ('Conversation.Tag.unmapped', 'A tag was unmapped from a conversation.', true),
    ('Message.received', 'A message was received.', true),
    ('Message.flow.received', 'A flow message was received.', true),
    ('Message.WA.status.received', 'A WhatsApp message status was received.', true),
    ('Message.WA.status.failed', 'A WhatsApp message reported a failed status.', true),
    ('Template.status', 'A template''s status changed.', true),
    ('Webhook.test', 'A test event sent by hand to one webhook from the admin API.', true),
    ('Webhook.disabled', 'A webhook was disabled because its deliveries kept failing.', true),
    ('Webhook.delivery.failed', 'A delivery exhausted its retries.', true);

CREATE TABLE api_keys (
    id         uuid PRIMARY KEY,
    account_id text NOT NULL,
    -- SHA-256 of the key: the key itself is answered once and never stored
    key_hash   bytea NOT NULL UNIQUE,
    -- the first characters of the key, so an admin can tell keys apart
    key_prefix text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz NULL
);
CREATE INDEX api_keys_account ON api_keys (account_id);

CREATE TABLE webhooks (
    id               uuid PRIMARY KEY,
    account_id       text NOT NULL,
    url              text NOT NULL,
    secret           text NULL,
    -- secrets still valid after a rotation: [{"secret": "...", "expires_at": "..."}]
    previous_secrets jsonb NOT NULL DEFAULT '[]',
    headers          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(headers) = 'object'),
    events           text[] NOT NULL CHECK (cardinality(events) > 0),
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    disabled_reason  text NULL,
    description      text NULL,
    -- when the current run of failed attempts began; drives auto-disable
    failing_since    timestamptz NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_account_created ON webhooks (account_id, created_at DESC, id DESC);
CREATE INDEX webhooks_created ON webhooks (created_at DESC, id DESC);

-- One row per (event, webhook). No foreign key to webhooks: the log of a deleted webhook
-- stays readable, and the fan-out never waits on a lock of the webhooks table.
CREATE TABLE webhook_logs (
    id              uuid PRIMARY KEY,
    webhook_id      uuid NOT NULL,
    account_id      text NOT NULL,
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'retrying', 'succeeded', 'failed')),
    attempts        int NOT NULL DEFAULT 0,
    response_status int NULL,
    response_body   text NULL,
    error           text NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NULL,
    delivered_at    timestamptz NULL,
    -- the fan-out's dedupe key: the same event id twice gives one delivery per webhook
    CONSTRAINT webhook_logs_webhook_event UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_logs_webhook_created ON webhook_logs (webhook_id, created_at DESC, id DESC);
CREATE INDEX webhook_logs_account_created ON webhook_logs (account_id, created_at DESC, id DESC);
CREATE INDEX webhook_logs_status_created ON webhook_logs (status, created_at DESC, id DESC);
CREATE INDEX webhook_logs_created ON webhook_logs (created_at DESC, id DESC);

CREATE TABLE webhook_attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    log_id          uuid NOT NULL REFERENCES webhook_logs (id) ON DELETE CASCADE,
    attempt         int NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_ms     int NOT NULL,
    response_status int NULL,
    response_body   text NULL,
    error           text NULL
);
CREATE INDEX webhook_attempts_log ON webhook_attempts (log_id, attempt);

-- Every change to a webhook, through the API or by hand in psql, reaches the running
-- services' in-memory subscription index through LISTEN/NOTIFY.
CREATE FUNCTION hookrelay_notify_webhook_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('hookrelay_webhooks', json_build_object(
        'op', lower(TG_OP),
        'id', COALESCE(NEW.id, OLD.id)
    )::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER webhooks_notify
    AFTER INSERT OR UPDATE OR DELETE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION hookrelay_notify_webhook_change();
