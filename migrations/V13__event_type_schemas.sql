-- Event type schemas (docs/api.md "Event type schemas"): a JSON Schema (draft 2020-12) that
-- the `data` of every event of the type must satisfy, checked by the fan-out before anything
-- else, and an example `data` that satisfies it. jsonb: a schema means the same whatever the
-- order of its keys. `updated_at` tells the fan-out's cache which types changed.
ALTER TABLE event_types
    ADD COLUMN schema jsonb NULL,
    ADD COLUMN example jsonb NULL,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
