-- A webhook deleted leaves a tombstone until a process has removed its broker queue and ended
-- its open logs. Deleting the row is enough: the trigger writes the tombstone in the same
-- transaction, so a webhook deleted while no process ran (or by SQL) is still cleaned up by
-- the next process that starts, and with several processes any of them may do it.
CREATE TABLE webhook_tombstones (
    webhook_id uuid PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION hookrelay_webhook_tombstone() RETURNS trigger AS $$
BEGIN
    INSERT INTO webhook_tombstones (webhook_id) VALUES (OLD.id) ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER webhooks_tombstone AFTER DELETE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION hookrelay_webhook_tombstone();
