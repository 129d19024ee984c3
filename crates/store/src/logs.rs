//! `webhook_logs` and `webhook_attempts`: written in batches (a few statements per batch of
//! hundreds of rows), since a round trip per row is what would make the pipeline slow.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use hookrelay_core::LogStatus;
use uuid::Uuid;

use crate::{count, to_int, Store, StoreError};

/// A delivery to record at fan-out, `pending`.
#[derive(Debug, Clone)]
pub struct NewLog {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub account_id: String,
    pub event_id: String,
    pub event_type: String,
    /// The JSON body that will be sent, shared by all the deliveries of one event.
    pub payload: std::sync::Arc<str>,
    pub created_at: DateTime<Utc>,
    /// The event's W3C `traceparent`, when it came with one.
    pub traceparent: Option<String>,
}

/// A log row that already existed when a fan-out tried to insert it again.
#[derive(Debug, Clone)]
pub struct ExistingLog {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_id: String,
    /// `None` for a status a CHECK constraint should have kept out: the fan-out then leaves
    /// the log alone rather than stop on it.
    pub status: Option<LogStatus>,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
}

/// One finished HTTP attempt and the state its log moves to.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub log_id: Uuid,
    pub attempt: u32,
    /// The delivery's `requeue` and whether the broker redelivered it: whether it is still
    /// the log's current delivery is decided with them (`hookrelay_core::is_current`).
    pub requeue: u32,
    pub redelivered: bool,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u32,
    pub response_status: Option<u16>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub status: LogStatus,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Which logs to queue again: one by id whatever its status, the `failed` ones of a window,
/// or the unfinished ones of a webhook whose queue the broker lost.
#[derive(Debug, Clone, Default)]
pub struct RequeueFilter {
    pub log_id: Option<Uuid>,
    /// Only this account's logs (an account key's scope, or an admin's choice).
    pub account_id: Option<String>,
    pub webhook_id: Option<Uuid>,
    pub event_type: Option<String>,
    /// `created_at` from this time on.
    pub since: Option<DateTime<Utc>>,
    /// `created_at` before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only `failed` logs.
    pub only_failed: bool,
    /// Only logs not finished yet (`pending`, `retrying`): those whose delivery messages a
    /// broker that lost a queue took with it.
    pub only_unfinished: bool,
    /// Only logs last changed at or before this time: a job queueing logs again in batches
    /// sets it to its start, so that a log it queued, which failed again since, is not
    /// queued a second time by the same job.
    pub changed_before: Option<DateTime<Utc>>,
    /// Only logs whose webhook still exists (the others have nowhere to go).
    pub webhook_exists: bool,
    /// Only logs this job claimed ([`Store::claim_requeue`]).
    pub claimed_by: Option<Uuid>,
}

/// Every filter is optional: `$n IS NULL OR …`. The indexes on (webhook_id, created_at),
/// (account_id, created_at) and (status, created_at) serve the usual combinations.
const REQUEUE_WHERE: &str = "($1::uuid IS NULL OR id = $1)
    AND ($2::text IS NULL OR account_id = $2)
    AND ($3::uuid IS NULL OR webhook_id = $3)
    AND ($4::text IS NULL OR event_type = $4)
    AND ($5::timestamptz IS NULL OR created_at >= $5)
    AND ($6::timestamptz IS NULL OR created_at < $6)
    AND (NOT $7 OR status = 'failed')
    AND ($8::timestamptz IS NULL OR updated_at <= $8)
    AND (NOT $9 OR EXISTS (SELECT 1 FROM webhooks w WHERE w.id = webhook_logs.webhook_id))
    AND (NOT $10 OR status IN ('pending', 'retrying'))
    AND ($11::uuid IS NULL OR EXISTS (SELECT 1 FROM requeue_claims c
                                      WHERE c.log_id = webhook_logs.id AND c.job_id = $11))";

impl RequeueFilter {
    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 11] {
        [
            &self.log_id,
            &self.account_id,
            &self.webhook_id,
            &self.event_type,
            &self.since,
            &self.until,
            &self.only_failed,
            &self.changed_before,
            &self.webhook_exists,
            &self.only_unfinished,
            &self.claimed_by,
        ]
    }
}

/// How long a requeue job may go without beating before its claims may be taken.
const JOB_HEARTBEAT_GRACE_SECS: f64 = 60.0;

/// A log about to be queued again, with what its delivery message needs.
#[derive(Debug, Clone)]
pub struct LogToRequeue {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub account_id: String,
    pub event_id: String,
    pub event_type: String,
    /// The body as stored (PostgreSQL's normal form of the JSON sent before).
    pub payload: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    /// Times it was queued again by hand so far; its new delivery carries one more.
    pub requeues: u32,
    pub traceparent: Option<String>,
}

/// How long taking one log by id waits for another transaction's lock on it.
const ONE_LOG_LOCK_WAIT_MS: u64 = 5_000;

/// Rows and payload bytes per INSERT at most: a statement stays far below PostgreSQL's 1 GB
/// per parameter, and a fan-out of big events to many webhooks does not build one huge query.
const MAX_ROWS_PER_INSERT: usize = 2000;
const MAX_BYTES_PER_INSERT: usize = 16 * 1024 * 1024;

fn chunks_by_size(logs: &[NewLog]) -> Vec<&[NewLog]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, log) in logs.iter().enumerate() {
        if i > start
            && (i - start >= MAX_ROWS_PER_INSERT
                || bytes + log.payload.len() > MAX_BYTES_PER_INSERT)
        {
            chunks.push(&logs[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += log.payload.len();
    }
    if start < logs.len() {
        chunks.push(&logs[start..]);
    }
    chunks
}

/// One INSERT of a chunk of rows, in the caller's transaction if there is one.
async fn insert_log_chunk(
    tx: &impl deadpool_postgres::GenericClient,
    logs: &[NewLog],
) -> Result<Vec<Uuid>, StoreError> {
    let ids: Vec<Uuid> = logs.iter().map(|l| l.id).collect();
    let webhooks: Vec<Uuid> = logs.iter().map(|l| l.webhook_id).collect();
    let accounts: Vec<&str> = logs.iter().map(|l| l.account_id.as_str()).collect();
    let events: Vec<&str> = logs.iter().map(|l| l.event_id.as_str()).collect();
    let types: Vec<&str> = logs.iter().map(|l| l.event_type.as_str()).collect();
    let payloads: Vec<&str> = logs.iter().map(|l| &*l.payload).collect();
    let created: Vec<DateTime<Utc>> = logs.iter().map(|l| l.created_at).collect();
    let traces: Vec<Option<&str>> = logs.iter().map(|l| l.traceparent.as_deref()).collect();
    let rows = tx
        .query(
            "INSERT INTO webhook_logs
                (id, webhook_id, account_id, event_id, event_type, payload, created_at, updated_at,
                 traceparent)
             SELECT u.id, u.webhook_id, u.account_id, u.event_id, u.event_type,
                    u.payload::jsonb, u.created_at, u.created_at, u.traceparent
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::timestamptz[], $8::text[])
                  AS u(id, webhook_id, account_id, event_id, event_type, payload, created_at,
                       traceparent)
             ON CONFLICT (webhook_id, event_id) DO NOTHING
             RETURNING id",
            &[
                &ids, &webhooks, &accounts, &events, &types, &payloads, &created, &traces,
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

impl Store {
    /// Inserts the rows that do not exist yet (the unique `(webhook_id, event_id)` dedupes)
    /// and returns the ids of those inserted. All chunks commit together or not at all, so a
    /// failed call leaves nothing behind that a retry would mistake for a duplicate.
    pub async fn insert_logs(&self, logs: &[NewLog]) -> Result<Vec<Uuid>, StoreError> {
        let mut client = self.client().await?;
        let chunks = chunks_by_size(logs);
        if let [only] = chunks.as_slice() {
            // One statement is atomic already: no transaction round trips for the usual case.
            return insert_log_chunk(&client, only).await;
        }
        let tx = client.transaction().await?;
        let mut inserted = Vec::with_capacity(logs.len());
        for chunk in chunks {
            inserted.extend(insert_log_chunk(&tx, chunk).await?);
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// The rows for these `(webhook_id, event_id)` pairs.
    pub async fn existing_logs(
        &self,
        keys: &[(Uuid, String)],
    ) -> Result<Vec<ExistingLog>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let webhooks: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let events: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        let rows = client
            .query(
                "SELECT l.id, l.webhook_id, l.event_id, l.status, l.attempts, l.created_at
                 FROM webhook_logs l
                 JOIN unnest($1::uuid[], $2::text[]) AS k(webhook_id, event_id)
                   ON l.webhook_id = k.webhook_id AND l.event_id = k.event_id",
                &[&webhooks, &events],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ExistingLog {
                id: r.get(0),
                webhook_id: r.get(1),
                event_id: r.get(2),
                status: LogStatus::parse(r.get(3)),
                attempts: count(r.get(4)),
                created_at: r.get(5),
            })
            .collect())
    }

    /// Records attempts and moves their logs on, in one transaction, and answers for each
    /// record whether its delivery was still the log's current one. Every attempt goes on
    /// record; only a current one moves its log (the latest of them, should a batch hold two
    /// for one log). The logs are locked first, so that the answer holds until the commit.
    pub async fn record_attempts(&self, batch: &[AttemptRecord]) -> Result<Vec<bool>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut ids: Vec<Uuid> = batch.iter().map(|a| a.log_id).collect();
        ids.sort_unstable();
        ids.dedup();
        // In id order, so that two writers locking overlapping batches cannot deadlock.
        let rows = tx
            .query(
                "SELECT id, attempts, requeues, webhook_id FROM webhook_logs WHERE id = ANY($1)
                 ORDER BY id FOR UPDATE",
                &[&ids],
            )
            .await?;
        let mut logs: HashMap<Uuid, (u32, u32)> = rows
            .iter()
            .map(|r| (r.get(0), (count(r.get(1)), count(r.get(2)))))
            .collect();
        let webhooks: HashMap<Uuid, Uuid> = rows.iter().map(|r| (r.get(0), r.get(3))).collect();
        let mut current = Vec::with_capacity(batch.len());
        let mut moves: HashMap<Uuid, &AttemptRecord> = HashMap::new();
        for record in batch {
            // A log deleted by hand: nothing to record against, nothing to move.
            let is_current = logs
                .get_mut(&record.log_id)
                .is_some_and(|(attempts, requeues)| {
                    let ok = hookrelay_core::is_current_attempt(
                        record.attempt,
                        record.requeue,
                        record.redelivered,
                        *attempts,
                        *requeues,
                    );
                    if ok {
                        *attempts = record.attempt;
                        *requeues = record.requeue;
                    }
                    ok
                });
            if is_current {
                moves.insert(record.log_id, record);
            }
            current.push(is_current);
        }
        let kept: Vec<&AttemptRecord> = batch
            .iter()
            .filter(|a| logs.contains_key(&a.log_id))
            .collect();
        let logs_col: Vec<Uuid> = kept.iter().map(|a| a.log_id).collect();
        let attempts: Vec<i32> = kept.iter().map(|a| to_int(a.attempt)).collect();
        let started: Vec<DateTime<Utc>> = kept.iter().map(|a| a.started_at).collect();
        let durations: Vec<i32> = kept.iter().map(|a| to_int(a.duration_ms)).collect();
        let statuses: Vec<Option<i32>> = kept
            .iter()
            .map(|a| a.response_status.map(i32::from))
            .collect();
        let bodies: Vec<Option<&str>> = kept.iter().map(|a| a.response_body.as_deref()).collect();
        let errors: Vec<Option<&str>> = kept.iter().map(|a| a.error.as_deref()).collect();
        let webhook_col: Vec<Option<Uuid>> = kept
            .iter()
            .map(|a| webhooks.get(&a.log_id).copied())
            .collect();
        tx.execute(
            "INSERT INTO webhook_attempts
                (log_id, attempt, started_at, duration_ms, response_status, response_body, error,
                 webhook_id)
             SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::int[],
                                  $5::int[], $6::text[], $7::text[], $8::uuid[])",
            &[
                &logs_col,
                &attempts,
                &started,
                &durations,
                &statuses,
                &bodies,
                &errors,
                &webhook_col,
            ],
        )
        .await?;
        let moves: Vec<&AttemptRecord> = moves.into_values().collect();
        let logs_col: Vec<Uuid> = moves.iter().map(|a| a.log_id).collect();
        let attempts: Vec<i32> = moves.iter().map(|a| to_int(a.attempt)).collect();
        let requeues: Vec<i32> = moves.iter().map(|a| to_int(a.requeue)).collect();
        let started: Vec<DateTime<Utc>> = moves.iter().map(|a| a.started_at).collect();
        let durations: Vec<i32> = moves.iter().map(|a| to_int(a.duration_ms)).collect();
        let statuses: Vec<Option<i32>> = moves
            .iter()
            .map(|a| a.response_status.map(i32::from))
            .collect();
        let bodies: Vec<Option<&str>> = moves.iter().map(|a| a.response_body.as_deref()).collect();
        let errors: Vec<Option<&str>> = moves.iter().map(|a| a.error.as_deref()).collect();
        let states: Vec<&str> = moves.iter().map(|a| a.status.as_str()).collect();
        let next: Vec<Option<DateTime<Utc>>> = moves.iter().map(|a| a.next_attempt_at).collect();
        tx.execute(
            "UPDATE webhook_logs l SET
                status = u.status,
                attempts = u.attempt,
                requeues = u.requeue,
                response_status = u.response_status,
                response_body = u.response_body,
                error = u.error,
                next_attempt_at = u.next_attempt_at,
                delivered_at = CASE WHEN u.status = 'succeeded'
                               THEN u.started_at + make_interval(secs => u.duration_ms / 1000.0)
                               ELSE l.delivered_at END,
                updated_at = now()
             FROM unnest($1::uuid[], $2::int[], $3::int[], $4::timestamptz[], $5::int[],
                         $6::int[], $7::text[], $8::text[], $9::text[], $10::timestamptz[])
                  AS u(log_id, attempt, requeue, started_at, duration_ms, response_status,
                       response_body, error, status, next_attempt_at)
             WHERE l.id = u.log_id",
            &[
                &logs_col, &attempts, &requeues, &started, &durations, &statuses, &bodies, &errors,
                &states, &next,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(current)
    }

    /// Where a log stands: `(attempts, requeues)`, or `None` when it is gone.
    pub async fn log_position(&self, log_id: Uuid) -> Result<Option<(u32, u32)>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT attempts, requeues FROM webhook_logs WHERE id = $1",
                &[&log_id],
            )
            .await?;
        Ok(row.map(|r| (count(r.get(0)), count(r.get(1)))))
    }

    /// The database's clock, for comparisons with times it wrote.
    pub async fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        let client = self.client().await?;
        Ok(client.query_one("SELECT now()", &[]).await?.get(0))
    }

    /// The webhooks of the logs `filter` selects now.
    pub async fn webhooks_to_requeue(
        &self,
        filter: &RequeueFilter,
    ) -> Result<Vec<Uuid>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT DISTINCT webhook_id FROM webhook_logs WHERE {REQUEUE_WHERE}");
        let rows = client.query(&sql, &filter.params()).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Claims for job `job` every log `filter` selects now and no running job has claimed;
    /// answers how many: what the job will queue, at most (a log may change before its turn).
    /// A job that claims none is not kept.
    pub async fn claim_requeue(
        &self,
        job: Uuid,
        filter: &RequeueFilter,
    ) -> Result<i64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Calls that may claim the same logs claim one at a time, each after the last
        // committed: the claim below reads the other jobs' rows in its own snapshot, which
        // must hold the job just before it. Calls limited to different accounts cannot, so
        // one account's claim over many logs does not hold up another's: each takes the
        // deployment-wide lock shared and its account's alone; a call over every account
        // takes the deployment-wide one alone.
        match &filter.account_id {
            Some(account) => {
                tx.execute(
                    "SELECT pg_advisory_xact_lock_shared(
                                hashtextextended('hookrelay.requeue_claims', 0)),
                            pg_advisory_xact_lock(
                                hashtextextended('hookrelay.requeue_claims/' || $1, 0))",
                    &[account],
                )
                .await?
            }
            None => {
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('hookrelay.requeue_claims', 0))",
                    &[],
                )
                .await?
            }
        };
        tx.execute("INSERT INTO requeue_jobs (id) VALUES ($1)", &[&job])
            .await?;
        let mut params = filter.params().to_vec();
        params.push(&job);
        params.push(&JOB_HEARTBEAT_GRACE_SECS);
        let sql = format!(
            "WITH claimed AS (
                INSERT INTO requeue_claims (log_id, job_id)
                SELECT id, $12 FROM webhook_logs WHERE {REQUEUE_WHERE}
                ON CONFLICT (log_id) DO UPDATE SET job_id = EXCLUDED.job_id
                WHERE NOT EXISTS (
                    SELECT 1 FROM requeue_jobs j
                    WHERE j.id = requeue_claims.job_id
                      AND j.heartbeat_at > now() - make_interval(secs => $13))
                RETURNING 1)
             SELECT count(*) FROM claimed"
        );
        let claimed: i64 = tx.query_one(&sql, &params).await?.get(0);
        // A job with nothing to queue leaves no trace.
        match claimed {
            0 => tx.rollback().await?,
            _ => tx.commit().await?,
        }
        Ok(claimed)
    }

    /// Job `job` is over: what it still claims (logs changed meanwhile) is let go.
    pub async fn end_requeue_job(&self, job: Uuid) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM requeue_jobs WHERE id = $1", &[&job])
            .await?;
        Ok(())
    }

    /// Removes the jobs that stopped beating an hour ago (their process gone), and so their
    /// claims; answers how many jobs.
    pub async fn forget_dead_requeue_jobs(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "DELETE FROM requeue_jobs WHERE heartbeat_at < now() - interval '1 hour'",
                &[],
            )
            .await?)
    }

    /// For job `job`, which beats by asking (its claims stay its own): takes up to `want`
    /// requeue tokens from the deployment's budget, which refills at `rate` a second up to
    /// one second's worth. Answers how many were granted and, when none was, how long until
    /// one is. One statement: the budget's row is locked for no longer than it takes.
    pub async fn take_requeue_budget(
        &self,
        job: Uuid,
        want: u32,
        rate: u32,
    ) -> Result<(u32, std::time::Duration), StoreError> {
        let rate = f64::from(rate.max(1));
        let client = self.client().await?;
        // The row's lock makes every process's jobs take their turns.
        let row = client
            .query_one(
                "WITH beat AS (
                    UPDATE requeue_jobs SET heartbeat_at = now() WHERE id = $3),
                 old AS (
                    SELECT LEAST(tokens + $2 * GREATEST(
                               EXTRACT(EPOCH FROM now() - refilled_at)::float8, 0), $2)
                           AS available
                    FROM requeue_budget FOR UPDATE),
                 taken AS (
                    SELECT available, LEAST(GREATEST(floor(available), 0), $1) AS granted
                    FROM old)
                 UPDATE requeue_budget
                 SET tokens = taken.available - taken.granted, refilled_at = now()
                 FROM taken
                 RETURNING taken.available, taken.granted",
                &[&f64::from(want), &rate, &job],
            )
            .await?;
        let (available, granted): (f64, f64) = (row.get(0), row.get(1));
        let wait = match granted {
            g if g >= 1.0 => std::time::Duration::ZERO,
            _ => std::time::Duration::from_secs_f64((1.0 - available).max(0.0) / rate),
        };
        Ok((granted as u32, wait))
    }

    /// Takes up to `limit` logs that `filter` selects, oldest first, hands them to `publish`,
    /// and marks `pending` those it answers (the ones it queued); nothing changes if it
    /// answers `Err`. Answers how many it took (0: none left).
    ///
    /// The rows stay locked while `publish` runs, so that two callers never take the same log
    /// (the second skips it), and so that an attempt of a log sent by `publish` records after
    /// the log is `pending`, not before. Publishing before marking means a crash in between
    /// leaves a log `failed` whose delivery is queued: it may go out twice if queued again by
    /// hand, but is never marked queued without being so.
    pub async fn requeue_logs<F, Fut, E>(
        &self,
        filter: &RequeueFilter,
        limit: i64,
        publish: F,
    ) -> Result<Result<usize, E>, StoreError>
    where
        F: FnOnce(Vec<LogToRequeue>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Uuid>, E>>,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // A batch skips the logs another job or the attempt writer holds: they are taken by
        // the next batch. One log asked for by id waits for its lock instead (the writer holds
        // it for a commit), so that a log that exists is never answered as missing; briefly.
        let (lock, one) = match filter.log_id {
            Some(_) => ("FOR UPDATE", true),
            None => ("FOR UPDATE SKIP LOCKED", false),
        };
        if one {
            tx.batch_execute(&format!(
                "SET LOCAL lock_timeout = '{ONE_LOG_LOCK_WAIT_MS}ms'"
            ))
            .await?;
        }
        let sql = format!(
            "SELECT id, webhook_id, account_id, event_id, event_type, payload::text, attempts,
                    created_at, requeues, traceparent
             FROM webhook_logs WHERE {REQUEUE_WHERE}
             ORDER BY created_at, id
             LIMIT {limit}
             {lock}"
        );
        let rows = match tx.query(&sql, &filter.params()).await {
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                return Err(StoreError::Conflict(
                    "the log is being changed right now; try again in a moment".into(),
                ))
            }
            rows => rows?,
        };
        let logs: Vec<LogToRequeue> = rows
            .iter()
            .map(|r| LogToRequeue {
                id: r.get(0),
                webhook_id: r.get(1),
                account_id: r.get(2),
                event_id: r.get(3),
                event_type: r.get(4),
                payload: r.get(5),
                attempts: count(r.get(6)),
                created_at: r.get(7),
                requeues: count(r.get(8)),
                traceparent: r.get(9),
            })
            .collect();
        let taken = logs.len();
        // Every log taken leaves the job's claims, queued or not (a webhook gone meanwhile):
        // the job is done with it.
        let taken_ids: Vec<Uuid> = logs.iter().map(|log| log.id).collect();
        if taken == 0 {
            tx.commit().await?;
            return Ok(Ok(0));
        }
        let ids = match publish(logs).await {
            Ok(ids) => ids,
            Err(e) => {
                tx.rollback().await?;
                return Ok(Err(e));
            }
        };
        tx.execute(
            "UPDATE webhook_logs SET status = 'pending', requeues = requeues + 1,
                    next_attempt_at = NULL, updated_at = now()
             WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
        if let Some(job) = filter.claimed_by {
            tx.execute(
                "DELETE FROM requeue_claims WHERE job_id = $1 AND log_id = ANY($2)",
                &[&job, &taken_ids],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(taken))
    }

    /// Ends the open deliveries of a webhook that no longer exists.
    pub async fn fail_open_logs(&self, webhook_id: Uuid, error: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(FAIL_OPEN_LOGS, &[&webhook_id, &error])
            .await?)
    }
}

/// Ends the open logs of webhook `$1` with error `$2`.
pub(crate) const FAIL_OPEN_LOGS: &str =
    "UPDATE webhook_logs SET status = 'failed', error = $2, next_attempt_at = NULL,
            updated_at = now()
     WHERE webhook_id = $1 AND status IN ('pending', 'retrying')";

#[cfg(test)]
mod tests {
    use super::*;

    fn log(bytes: usize) -> NewLog {
        NewLog {
            traceparent: None,
            id: Uuid::nil(),
            webhook_id: Uuid::nil(),
            account_id: String::new(),
            event_id: String::new(),
            event_type: String::new(),
            payload: "x".repeat(bytes).into(),
            created_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
        }
    }

    #[test]
    fn inserts_are_chunked_by_rows_and_bytes() {
        let many: Vec<NewLog> = (0..4500).map(|_| log(10)).collect();
        let sizes: Vec<usize> = chunks_by_size(&many).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![2000, 2000, 500]);
        let big: Vec<NewLog> = (0..5).map(|_| log(6 * 1024 * 1024)).collect();
        let sizes: Vec<usize> = chunks_by_size(&big).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        let huge = vec![log(MAX_BYTES_PER_INSERT + 1)];
        assert_eq!(
            chunks_by_size(&huge).len(),
            1,
            "one oversized row still goes alone"
        );
        assert!(chunks_by_size(&[]).is_empty());
    }
}
