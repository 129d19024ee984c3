-- Keys hookrelay keeps for itself, shared by every process of a deployment and by nobody
-- else: `event_origin` tags the events hookrelay publishes (Webhook.*), so that one sent by
-- an upstream publisher can be told apart and rejected.
CREATE TABLE service_keys (
    name       text PRIMARY KEY,
    key        bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
