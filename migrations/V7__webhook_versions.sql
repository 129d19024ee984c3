-- Every change to a webhook gives it a new `version`, and its change notification carries
-- it: a process that already holds that version (it wrote the change itself and applied the
-- row it wrote, or read it since) need not read the row again. Edits made by hand in psql
-- bump it too, so they are never mistaken for a change already seen.
ALTER TABLE webhooks ADD COLUMN version bigint NOT NULL DEFAULT 1;

CREATE FUNCTION hookrelay_webhook_version() RETURNS trigger AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER webhooks_version BEFORE UPDATE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION hookrelay_webhook_version();

CREATE OR REPLACE FUNCTION hookrelay_notify_webhook_change() RETURNS trigger AS $$
BEGIN
    IF current_setting('hookrelay.quiet', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('hookrelay_webhooks', json_build_object(
            'op', 'delete',
            'id', OLD.id
        )::text);
    ELSE
        PERFORM pg_notify('hookrelay_webhooks', json_build_object(
            'op', lower(TG_OP),
            'id', NEW.id,
            'version', NEW.version
        )::text);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
