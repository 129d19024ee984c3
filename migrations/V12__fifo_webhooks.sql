-- Ordered delivery (docs/api.md "Ordered delivery"): a `fifo` webhook's deliveries go out
-- one at a time, in the order its account's events were published.
-- `ordering_changed_at`: when an edit last changed it (NULL: as created). For a while after,
-- both fan-outs serve the webhook, so that a process that has not heard of the change yet
-- and one that has cannot both leave an event to the other.
ALTER TABLE webhooks
    ADD COLUMN ordering text NOT NULL DEFAULT 'unordered'
        CHECK (ordering IN ('unordered', 'fifo')),
    ADD COLUMN ordering_changed_at timestamptz NULL;

-- A FIFO webhook's line is its open deliveries by `seq`. The ordered fan-out, which takes its
-- account's events one after another, hands out the numbers in publish order; every other
-- way a delivery opens (the unordered fan-out, a retry by hand, a replay) takes the next
-- number, which puts it at the end of the line. No index: the line is read a page at a time
-- from the webhook's rows of this small table, and an index would cost every unordered
-- delivery a write.
CREATE SEQUENCE open_deliveries_seq AS bigint;
ALTER TABLE open_deliveries
    ADD COLUMN seq bigint NOT NULL DEFAULT nextval('open_deliveries_seq');
ALTER SEQUENCE open_deliveries_seq OWNED BY open_deliveries.seq;
