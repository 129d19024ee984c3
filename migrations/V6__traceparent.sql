-- The W3C traceparent an event came with (NULL when it came without one): admins find the
-- upstream trace of a delivery from its log. A nullable column is added without rewriting
-- the table.
ALTER TABLE webhook_logs ADD COLUMN traceparent text;
