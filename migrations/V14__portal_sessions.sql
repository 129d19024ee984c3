-- Portal sessions (docs/api.md "Portal sessions"): a token is checked without the database;
-- ending an account's sessions records the time before which its tokens no longer count.
-- One row per account that ever ended its sessions; the API caches the table.
CREATE TABLE portal_revocations (
    account_id     text PRIMARY KEY,
    revoked_before timestamptz NOT NULL
);
