-- Logs at a platform's volume (docs/storage.md):
-- * each event's body is stored once, in `events`, as the exact bytes signed and sent; the
--   delivery logs reference it instead of carrying a copy each;
-- * events, delivery logs and their attempts are partitioned by day and retired by dropping
--   whole partitions, never by deleting rows;
-- * a delivery's status changes touch no index (HOT updates): no index names a column that
--   changes on the way pending → succeeded, and the deliveries still under way are listed in
--   the small `open_deliveries` instead of an index over `status`;
-- * `webhook_logs` and `webhook_attempts` stay queryable under their names, as views.
--
-- Upgrade in place: the tables of release 8 are renamed, not copied, so this migration takes
-- its locks for catalog changes only. Their unfinished logs move at once (the pipeline writes
-- only the new tables); the finished ones stay readable through the views, which read both
-- layouts, while the services move them over in small batches (store/src/upgrade.rs).

ALTER TABLE webhook_logs RENAME TO webhook_logs_v8;
ALTER TABLE webhook_attempts RENAME TO webhook_attempts_v8;

-- One row per event that reached at least one webhook (or every accepted event, with
-- `keep_unmatched_events`). `body` is text, not jsonb: jsonb would reorder keys and the
-- receiver's signature is over the exact bytes.
CREATE TABLE events (
    account_id  text NOT NULL,
    id          text NOT NULL,
    event_type  text NOT NULL,
    -- Whatever jsonb refuses is refused here too, so that the view's `payload` (jsonb) can
    -- always be read.
    body        text NOT NULL CHECK (body::jsonb IS NOT NULL),
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    traceparent text NULL,
    -- Serves both a log's lookup of its event (all three columns fixed) and a replay's scan
    -- of one account's events over a window.
    PRIMARY KEY (account_id, received_at, id)
) PARTITION BY RANGE (received_at);

-- The fan-out's dedupe: an event id seen within `dedupe_window`. A key on the partitioned
-- tables would have to include the time, which a duplicate arriving later does not share.
CREATE TABLE event_keys (
    account_id  text NOT NULL,
    event_id    text NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (account_id, event_id)
);
CREATE INDEX event_keys_received ON event_keys (received_at);

CREATE TABLE delivery_logs (
    id              uuid NOT NULL,
    webhook_id      uuid NOT NULL,
    account_id      text NOT NULL,
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    -- the event's received_at: with account_id and event_id, the key of its `events` row
    event_at        timestamptz NOT NULL,
    -- the time of the id (a UUIDv7), so that a lookup by id finds its partition
    created_at      timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'retrying', 'succeeded', 'failed')),
    attempts        int NOT NULL DEFAULT 0,
    requeues        int NOT NULL DEFAULT 0,
    -- set when an attempt first fails, never cleared: the only indexed column that ever
    -- changes, and only on the failure path, so that a success rewrites no index
    troubled        boolean NOT NULL DEFAULT false,
    response_status int NULL,
    response_body   text NULL,
    error           text NULL,
    updated_at      timestamptz NOT NULL,
    next_attempt_at timestamptz NULL,
    delivered_at    timestamptz NULL
) PARTITION BY RANGE (created_at);
-- Every index leads with a column that never changes, then follows the list's order and
-- keyset (created_at DESC, id DESC), as the logs API reads them.
CREATE INDEX delivery_logs_id ON delivery_logs (id);
CREATE INDEX delivery_logs_webhook ON delivery_logs (webhook_id, created_at DESC, id DESC);
CREATE INDEX delivery_logs_account ON delivery_logs (account_id, created_at DESC, id DESC);
CREATE INDEX delivery_logs_created ON delivery_logs (created_at DESC, id DESC);
CREATE INDEX delivery_logs_event ON delivery_logs (event_id, created_at DESC, id DESC);
CREATE INDEX delivery_logs_type ON delivery_logs (event_type, created_at DESC, id DESC);
-- The `failed` logs, among the few that ever failed: by time, account and webhook. A log
-- that never fails is in none of these (a partial index costs nothing for the rows outside
-- it); the unfinished ones (`pending`, `retrying`) are found through `open_deliveries`.
CREATE INDEX delivery_logs_troubled ON delivery_logs (created_at DESC, id DESC) WHERE troubled;
CREATE INDEX delivery_logs_troubled_account ON delivery_logs (account_id, created_at DESC, id DESC)
    WHERE troubled;
CREATE INDEX delivery_logs_troubled_webhook ON delivery_logs (webhook_id, created_at DESC, id DESC)
    WHERE troubled;

-- The logs still under way (pending, retrying): a small table of the deliveries in flight,
-- in place of an index over `status` that every status change would rewrite. Written in
-- the same statements as the log's status.
CREATE TABLE open_deliveries (
    webhook_id uuid NOT NULL,
    log_id     uuid NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (webhook_id, log_id)
);

-- Attempts live in the partition of their log's day, so that a log and its attempts retire
-- together.
CREATE SEQUENCE delivery_attempts_id_seq AS bigint;
SELECT setval('delivery_attempts_id_seq',
              COALESCE((SELECT max(id) FROM webhook_attempts_v8), 0) + 1, false);
CREATE TABLE delivery_attempts (
    id              bigint NOT NULL DEFAULT nextval('delivery_attempts_id_seq'),
    log_id          uuid NOT NULL,
    log_created_at  timestamptz NOT NULL,
    webhook_id      uuid NOT NULL,
    attempt         int NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_ms     int NOT NULL,
    response_status int NULL,
    response_body   text NULL,
    error           text NULL
) PARTITION BY RANGE (log_created_at);
ALTER SEQUENCE delivery_attempts_id_seq OWNED BY delivery_attempts.id;
CREATE INDEX delivery_attempts_log ON delivery_attempts (log_id, attempt);
CREATE INDEX delivery_attempts_webhook ON delivery_attempts (webhook_id, started_at);

-- Creates the daily partitions of the three tables from `first` to `last` (UTC days) that do
-- not exist yet; answers how many days it added. Each is made apart and then attached, which
-- locks the parent against other DDL only (SHARE UPDATE EXCLUSIVE), never against the
-- pipeline's reads and writes. Logs leave half of each page free, so that a status change
-- finds room for the row's new version on its own page (a HOT update).
CREATE FUNCTION hookrelay_ensure_partitions(first date, last date) RETURNS int AS $$
DECLARE
    day date := first;
    made int := 0;
    low timestamptz;
    high timestamptz;
    suffix text;
    spec record;
BEGIN
    WHILE day <= last LOOP
        suffix := to_char(day, 'YYYYMMDD');
        low := day::timestamp AT TIME ZONE 'UTC';
        high := (day + 1)::timestamp AT TIME ZONE 'UTC';
        IF to_regclass('delivery_logs_p' || suffix) IS NULL THEN
            FOR spec IN SELECT * FROM (VALUES
                    ('events', 'received_at', ''),
                    ('delivery_logs', 'created_at', ' WITH (fillfactor = 50)'),
                    ('delivery_attempts', 'log_created_at', '')) AS s(parent, key, storage)
            LOOP
                IF to_regclass(spec.parent || '_p' || suffix) IS NULL THEN
                    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)%s',
                                   spec.parent || '_p' || suffix, spec.parent, spec.storage);
                    -- The bound as a constraint, so that attaching need not scan.
                    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (%I >= %L AND %I < %L)',
                                   spec.parent || '_p' || suffix, spec.parent || '_p' || suffix || '_bound',
                                   spec.key, low, spec.key, high);
                    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                                   spec.parent, spec.parent || '_p' || suffix, low, high);
                END IF;
            END LOOP;
            made := made + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN made;
END;
$$ LANGUAGE plpgsql;

-- The time of a UUIDv7 (its first 48 bits, milliseconds since 1970); NULL for other
-- versions. A log's created_at is the time of its id, so a lookup by id knows its partition.
CREATE FUNCTION hookrelay_uuid_time(id uuid) RETURNS timestamptz AS $$
    SELECT CASE WHEN substr(id::text, 15, 1) = '7' THEN
        'epoch'::timestamptz
        + ('x' || substr(replace(id::text, '-', ''), 1, 12))::bit(48)::bigint
          * interval '1 millisecond'
    END
$$ LANGUAGE sql IMMUTABLE PARALLEL SAFE;

-- A new UUIDv7 of time `at`: what the services make for each log, for logs written by hand
-- (tests, generated volume) to be found by id like theirs.
CREATE FUNCTION hookrelay_log_id(at timestamptz) RETURNS uuid AS $$
    SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0')
            || '7' || substr(r, 14, 3) || '8' || substr(r, 18, 15))::uuid
    FROM (SELECT replace(gen_random_uuid()::text, '-', '') AS r) random
$$ LANGUAGE sql VOLATILE;

-- Today and the days ahead; the services keep adding days as they pass.
SELECT hookrelay_ensure_partitions((now() AT TIME ZONE 'UTC')::date - 1,
                                   (now() AT TIME ZONE 'UTC')::date + 3);

-- The logs of release 8 still under way move now, with their attempts and events: from here
-- on the pipeline updates only the new tables. Their partitions are made first.
CREATE TEMPORARY TABLE moving AS
    SELECT *, COALESCE(hookrelay_uuid_time(id), created_at) AS log_at
    FROM webhook_logs_v8 WHERE status IN ('pending', 'retrying');

SELECT hookrelay_ensure_partitions(
           ((SELECT min(least(log_at, created_at)) FROM moving) AT TIME ZONE 'UTC')::date,
           (now() AT TIME ZONE 'UTC')::date - 1);

INSERT INTO events (account_id, id, event_type, body, occurred_at, received_at, traceparent)
SELECT DISTINCT ON (account_id, created_at, event_id)
       account_id, event_id, event_type, payload::text, created_at, created_at, traceparent
FROM moving
ORDER BY account_id, created_at, event_id
ON CONFLICT DO NOTHING;

INSERT INTO delivery_logs (id, webhook_id, account_id, event_id, event_type, event_at, created_at,
                           status, attempts, requeues, troubled, response_status, response_body,
                           error, updated_at, next_attempt_at, delivered_at)
SELECT id, webhook_id, account_id, event_id, event_type, created_at, log_at, status,
       attempts, requeues, status = 'retrying', response_status, response_body, error,
       updated_at, next_attempt_at, delivered_at
FROM moving;

INSERT INTO open_deliveries (webhook_id, log_id, created_at)
SELECT webhook_id, id, log_at FROM moving;

INSERT INTO delivery_attempts (id, log_id, log_created_at, webhook_id, attempt, started_at,
                               duration_ms, response_status, response_body, error)
SELECT a.id, a.log_id, m.log_at, m.webhook_id, a.attempt, a.started_at, a.duration_ms,
       a.response_status, a.response_body, a.error
FROM webhook_attempts_v8 a JOIN moving m ON m.id = a.log_id;

-- Their dedupe keys, so that the same event published again is still one delivery.
INSERT INTO event_keys (account_id, event_id, received_at)
SELECT account_id, event_id, min(created_at) FROM moving GROUP BY account_id, event_id
ON CONFLICT DO NOTHING;

DELETE FROM webhook_logs_v8 WHERE id IN (SELECT id FROM moving);
DROP TABLE moving;

-- The names admins query. A log's payload is its event's body; `body` is that body as the
-- exact text sent (the payload column, jsonb, is PostgreSQL's normal form of it).
CREATE VIEW webhook_logs AS
SELECT l.id, l.webhook_id, l.account_id, l.event_id, l.event_type, e.body::jsonb AS payload,
       l.status, l.attempts, l.response_status, l.response_body, l.error, l.created_at,
       l.updated_at, l.next_attempt_at, l.delivered_at, l.requeues, e.traceparent,
       e.body AS body
FROM delivery_logs l
LEFT JOIN events e
       ON e.account_id = l.account_id AND e.received_at = l.event_at AND e.id = l.event_id
UNION ALL
SELECT id, webhook_id, account_id, event_id, event_type, payload, status, attempts,
       response_status, response_body, error, created_at, updated_at, next_attempt_at,
       delivered_at, requeues, traceparent, payload::text
FROM webhook_logs_v8;

CREATE VIEW webhook_attempts AS
SELECT id, log_id, attempt, started_at, duration_ms, response_status, response_body, error,
       webhook_id
FROM delivery_attempts
UNION ALL
SELECT id, log_id, attempt, started_at, duration_ms, response_status, response_body, error,
       webhook_id
FROM webhook_attempts_v8;

-- A log a requeue job has taken stays claimed by it, marked, until the job ends (and its
-- claims with it): deleting the claim when the log is taken let a call waiting on that row
-- find no claim once the taker committed, and claim (and count) the log a second time.
ALTER TABLE requeue_claims ADD COLUMN taken boolean NOT NULL DEFAULT false;
