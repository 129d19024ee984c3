-- Bulk requeues (recover, bulk retry, the refill of a lost queue) are paced by one budget for
-- the whole deployment: a token bucket that every process's jobs draw on, so that
-- `requeue_rate` holds however many jobs run, in however many processes.
CREATE TABLE requeue_budget (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    tokens      double precision NOT NULL,
    refilled_at timestamptz NOT NULL
);
INSERT INTO requeue_budget (tokens, refilled_at) VALUES (0, now());

-- A job claims the logs it will queue when it is asked for, so that its answer counts what
-- it will queue, and two calls over the same logs never count (or queue) one twice. A job
-- beats while it runs; the claims of one that stopped beating (its process gone) may be
-- taken by the next call.
CREATE TABLE requeue_jobs (
    id           uuid PRIMARY KEY,
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
-- A job's claims go with it.
CREATE TABLE requeue_claims (
    log_id uuid PRIMARY KEY,
    job_id uuid NOT NULL REFERENCES requeue_jobs ON DELETE CASCADE
);
CREATE INDEX requeue_claims_job ON requeue_claims (job_id);
