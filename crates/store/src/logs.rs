//! Events, delivery logs and attempts (the layout of migration V9, `docs/storage.md`):
//! written in batches (a few statements per batch of hundreds of rows), since a round trip
//! per row is what would make the pipeline slow. Each event is stored once; a log
//! references it; a log's id carries its day, so that every lookup by id reads one partition.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use hookrelay_core::LogStatus;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::{count, to_int, Store, StoreError};

/// An event to store once, with the body every webhook of it receives.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub account_id: String,
    pub id: String,
    pub event_type: String,
    /// The exact JSON body sent (and signed), shared by all the deliveries of the event.
    pub body: std::sync::Arc<str>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// The event's W3C `traceparent`, when it came with one.
    pub traceparent: Option<String>,
}

/// A delivery to record at fan-out, `pending`: a log of `event` for one webhook. Its
/// `created_at` is the time of its id ([`new_log_id`]).
#[derive(Debug, Clone)]
pub struct NewLog {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event: std::sync::Arc<NewEvent>,
    /// Its place in its webhook's line (`open_deliveries.seq`), handed out beforehand by the
    /// ordered fan-out ([`Store::take_seqs`]); `None`: the next number when written.
    pub seq: Option<i64>,
}

/// A new log id: a UUIDv7 of time `at`. A log's `created_at` is the time of its id, so that
/// a lookup by id alone knows the partition to read.
pub fn new_log_id(at: DateTime<Utc>) -> Uuid {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        u64::try_from(at.timestamp()).unwrap_or(0),
        at.timestamp_subsec_nanos(),
    );
    Uuid::new_v7(ts)
}

/// The time of a UUIDv7 id, to the millisecond; `None` for ids of other versions (logs
/// written by hand), which are looked up in every partition.
pub(crate) fn log_time(id: Uuid) -> Option<DateTime<Utc>> {
    if id.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
}

/// The ids of `ids` that carry their time, with those times; and the others.
pub(crate) fn split_by_time(ids: &[Uuid]) -> (Vec<Uuid>, Vec<DateTime<Utc>>, Vec<Uuid>) {
    let (mut timed, mut times, mut untimed) = (Vec::new(), Vec::new(), Vec::new());
    for &id in ids {
        match log_time(id) {
            Some(at) => {
                timed.push(id);
                times.push(at);
            }
            None => untimed.push(id),
        }
    }
    times.sort_unstable();
    times.dedup();
    (timed, times, untimed)
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
    /// When its event was received.
    pub received_at: DateTime<Utc>,
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
    /// Only logs whose next attempt was due by this time: `pending`, or `retrying` with
    /// `next_attempt_at` at or before it (a retry still waiting in a delay tier is not lost).
    pub due_before: Option<DateTime<Utc>>,
}

/// Every filter is optional: `$n IS NULL OR …`, folded away when PostgreSQL plans the
/// statement with its values. The unfinished logs are found through `open_deliveries`, the
/// failed ones through the index of the logs that ever failed; the others by webhook,
/// account or time.
const REQUEUE_WHERE: &str = "($1::uuid IS NULL OR id = $1)
    AND ($2::text IS NULL OR account_id = $2)
    AND ($3::uuid IS NULL OR webhook_id = $3)
    AND ($4::text IS NULL OR event_type = $4)
    AND ($5::timestamptz IS NULL OR created_at >= $5)
    AND ($6::timestamptz IS NULL OR created_at < $6)
    AND (NOT $7 OR (troubled AND status = 'failed'))
    AND ($8::timestamptz IS NULL OR updated_at <= $8)
    AND (NOT $9 OR EXISTS (SELECT 1 FROM webhooks w WHERE w.id = delivery_logs.webhook_id))
    AND (NOT $10 OR (status IN ('pending', 'retrying')
                     AND (id, created_at) IN (SELECT o.log_id, o.created_at
                                              FROM open_deliveries o
                                              WHERE $3::uuid IS NULL OR o.webhook_id = $3)))
    AND ($11::uuid IS NULL OR EXISTS (SELECT 1 FROM requeue_claims c
                                      WHERE c.log_id = delivery_logs.id AND c.job_id = $11
                                        AND NOT c.taken))
    AND ($12::timestamptz IS NULL OR status = 'pending' OR next_attempt_at <= $12)";

impl RequeueFilter {
    fn params(&self) -> [&(dyn ToSql + Sync); 12] {
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
            &self.due_before,
        ]
    }
}

/// What a replay delivers to one webhook: every stored event of its account received in
/// `[since, until)`, of one of `event_types`, that the webhook has no log of yet.
#[derive(Debug, Clone)]
pub struct Replay {
    pub webhook_id: Uuid,
    pub account_id: String,
    pub event_types: Vec<String>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// The webhook's filter: only the events it passes are replayed.
    pub filter: Option<hookrelay_core::Filter>,
}

impl Replay {
    /// The parameters of [`REPLAY_CANDIDATES`], in order.
    fn candidate_params(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            &self.webhook_id,
            &self.account_id,
            &self.event_types,
            &self.since,
            &self.until,
            &MAX_REPLAY_EVENTS,
        ]
    }
}

/// The events a replay takes (parameters: webhook, account, types, since, until, limit): of
/// the account and the webhook's types, in the window, with no log for the webhook, in
/// received order.
const REPLAY_CANDIDATES: &str = "
    FROM events e
    WHERE e.account_id = $2 AND e.event_type = ANY($3)
      AND e.received_at >= $4 AND e.received_at < $5
      AND NOT EXISTS (
          SELECT 1 FROM delivery_logs l
          WHERE l.webhook_id = $1 AND l.account_id = e.account_id
            AND l.event_id = e.id)
      AND NOT EXISTS (
          SELECT 1 FROM webhook_logs_v8 l
          WHERE l.webhook_id = $1 AND l.event_id = e.id)";

/// The ids of the first events (at most [`MAX_REPLAY_EVENTS`]) a replay would take that
/// `filter` passes. The bodies are read as a stream, over the whole window (the events the
/// filter refuses get no log, so a limit before the filter would find them again at every
/// call and never reach the rest), and dropped as they are judged: only the ids of those
/// passing are kept.
async fn passing_events(
    tx: &deadpool_postgres::Transaction<'_>,
    replay: &Replay,
    filter: &hookrelay_core::Filter,
) -> Result<Vec<String>, StoreError> {
    use futures::TryStreamExt as _;
    let sql = format!("SELECT e.id, e.body {REPLAY_CANDIDATES} ORDER BY e.received_at, e.id");
    let params = replay.candidate_params();
    let rows = tx.query_raw(&sql, params[..5].iter().copied()).await?;
    futures::pin_mut!(rows);
    let mut passing = Vec::new();
    while let Some(row) = rows.try_next().await? {
        let body: &str = row.get(1);
        // Stored only after its JSON was checked (`CHECK (body::jsonb IS NOT NULL)`).
        let body = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
        if filter.matches(&body) {
            passing.push(row.get(0));
            if passing.len() as i64 >= MAX_REPLAY_EVENTS {
                break;
            }
        }
    }
    Ok(passing)
}

/// Events one replay call takes at most; a call over a larger window takes the first ones
/// (in received order), and the next call the rest.
pub const MAX_REPLAY_EVENTS: i64 = 100_000;

/// The error of a replay's log until its delivery is queued: a job stopped before it did
/// leaves the log `failed` with it, for the next replay call (or a recover) to queue.
const REPLAY_WAITING: &str = "waiting to be replayed";

/// The end of an INSERT INTO requeue_claims: a log claimed by a job that stopped beating
/// (for the seconds in parameter `grace`, say `"$14"`) is taken over, untaken; one a live job
/// holds is left to it.
fn take_over_dead_claims(grace: &str) -> String {
    format!(
        "ON CONFLICT (log_id) DO UPDATE SET job_id = EXCLUDED.job_id, taken = false
         WHERE NOT EXISTS (
             SELECT 1 FROM requeue_jobs j
             WHERE j.id = requeue_claims.job_id
               AND j.heartbeat_at > now() - make_interval(secs => {grace}))"
    )
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

/// A delivery in a FIFO webhook's line.
#[derive(Debug, Clone)]
pub struct InLine {
    /// What its delivery needs; `payload` is empty when its event is gone (`has_body`).
    pub log: LogToRequeue,
    pub has_body: bool,
    /// When its next attempt is due, if it waits for a retry.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When its event was received.
    pub received_at: DateTime<Utc>,
}

/// How long taking one log by id waits for another transaction's lock on it.
const ONE_LOG_LOCK_WAIT_MS: u64 = 5_000;

/// Rows and body bytes per INSERT at most: a statement stays far below PostgreSQL's 1 GB per
/// parameter, and a fan-out of big events to many webhooks does not build one huge query.
const MAX_ROWS_PER_INSERT: usize = 2000;
const MAX_BYTES_PER_INSERT: usize = 16 * 1024 * 1024;

/// One event of a batch and its logs, the event's first occurrence in the batch only.
struct EventLogs<'a> {
    event: &'a NewEvent,
    logs: Vec<&'a NewLog>,
}

/// The batch's events, each once (the first of an event id repeated in the batch stands for
/// it; the logs of the others go the duplicates' way), with the logs of each, one per webhook.
fn group<'a>(
    events: &'a [std::sync::Arc<NewEvent>],
    logs: &'a [NewLog],
) -> (Vec<EventLogs<'a>>, Vec<NewLog>) {
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut grouped: Vec<EventLogs<'_>> = Vec::new();
    for event in events {
        index
            .entry((event.account_id.as_str(), event.id.as_str()))
            .or_insert_with(|| {
                grouped.push(EventLogs {
                    event,
                    logs: Vec::new(),
                });
                grouped.len() - 1
            });
    }
    let mut seen = std::collections::HashSet::new();
    let mut others = Vec::new();
    for log in logs {
        let key = (log.event.account_id.as_str(), log.event.id.as_str());
        match index.get(&key) {
            Some(&i)
                if std::ptr::eq(grouped[i].event, &*log.event)
                    && seen.insert((log.webhook_id, key)) =>
            {
                grouped[i].logs.push(log)
            }
            _ => others.push(log.clone()),
        }
    }
    (grouped, others)
}

fn chunks_by_size<'a, 'b>(grouped: &'b [EventLogs<'a>]) -> Vec<&'b [EventLogs<'a>]> {
    let mut chunks = Vec::new();
    let (mut start, mut rows, mut bytes) = (0, 0, 0);
    for (i, g) in grouped.iter().enumerate() {
        let size = g.event.body.len();
        if i > start
            && (rows + g.logs.len() > MAX_ROWS_PER_INSERT || bytes + size > MAX_BYTES_PER_INSERT)
        {
            chunks.push(&grouped[start..i]);
            start = i;
            rows = 0;
            bytes = 0;
        }
        rows += g.logs.len().max(1);
        bytes += size;
    }
    if start < grouped.len() {
        chunks.push(&grouped[start..]);
    }
    chunks
}

/// One statement for a chunk: the events whose id is new take their dedupe key, are stored
/// once, and get their logs and open deliveries; an event whose key exists already (a
/// duplicate) writes nothing here. Answers the ids of the logs written.
async fn insert_chunk(
    tx: &impl deadpool_postgres::GenericClient,
    chunk: &[EventLogs<'_>],
) -> Result<Vec<Uuid>, StoreError> {
    let events = chunk.iter().map(|g| g.event);
    let accounts: Vec<&str> = events.clone().map(|e| e.account_id.as_str()).collect();
    let ids: Vec<&str> = events.clone().map(|e| e.id.as_str()).collect();
    let types: Vec<&str> = events.clone().map(|e| e.event_type.as_str()).collect();
    let bodies: Vec<&str> = events.clone().map(|e| &*e.body).collect();
    let occurred: Vec<DateTime<Utc>> = events.clone().map(|e| e.occurred_at).collect();
    let received: Vec<DateTime<Utc>> = events.clone().map(|e| e.received_at).collect();
    let traces: Vec<Option<&str>> = events.map(|e| e.traceparent.as_deref()).collect();
    let mut log_ids = Vec::new();
    let mut webhooks = Vec::new();
    let mut of_event: Vec<i64> = Vec::new();
    let mut created = Vec::new();
    let mut seqs: Vec<Option<i64>> = Vec::new();
    for (n, g) in chunk.iter().enumerate() {
        for log in &g.logs {
            log_ids.push(log.id);
            webhooks.push(log.webhook_id);
            of_event.push(n as i64 + 1);
            created.push(log_time(log.id).unwrap_or(g.event.received_at));
            seqs.push(log.seq);
        }
    }
    let rows = tx
        .query(
            "WITH ev AS (
                SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                     $5::timestamptz[], $6::timestamptz[], $7::text[])
                       WITH ORDINALITY
                       AS e(account_id, id, event_type, body, occurred_at, received_at,
                            traceparent, n)),
             fresh AS (
                INSERT INTO event_keys (account_id, event_id, received_at)
                SELECT account_id, id, received_at FROM ev
                ON CONFLICT DO NOTHING
                RETURNING account_id, event_id),
             kept AS (
                SELECT ev.* FROM ev
                JOIN fresh ON fresh.account_id = ev.account_id AND fresh.event_id = ev.id),
             stored AS (
                INSERT INTO events (account_id, id, event_type, body, occurred_at, received_at,
                                    traceparent)
                SELECT account_id, id, event_type, body, occurred_at, received_at, traceparent
                FROM kept),
             logs AS (
                INSERT INTO delivery_logs (id, webhook_id, account_id, event_id, event_type,
                                           event_at, created_at, updated_at)
                SELECT u.id, u.webhook_id, k.account_id, k.id, k.event_type, k.received_at,
                       u.created_at, u.created_at
                FROM unnest($8::uuid[], $9::uuid[], $10::int8[], $11::timestamptz[])
                     AS u(id, webhook_id, event, created_at)
                JOIN kept k ON k.n = u.event
                RETURNING id, webhook_id, created_at),
             opened AS (
                INSERT INTO open_deliveries (webhook_id, log_id, created_at, seq)
                SELECT l.webhook_id, l.id, l.created_at,
                       COALESCE(s.seq, nextval('open_deliveries_seq'))
                FROM logs l JOIN unnest($8::uuid[], $12::int8[]) AS s(id, seq) ON s.id = l.id)
             SELECT id FROM logs",
            &[
                &accounts, &ids, &types, &bodies, &occurred, &received, &traces, &log_ids,
                &webhooks, &of_event, &created, &seqs,
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A log written, with the event it delivers when that is not the one given.
type Written = (Uuid, Option<std::sync::Arc<NewEvent>>);

/// The logs written (`inserted`), and those still to write as duplicates: the logs of
/// events whose key existed already, and `duplicates`.
fn not_written(
    inserted: Vec<Uuid>,
    grouped: &[EventLogs<'_>],
    duplicates: Vec<NewLog>,
) -> (Vec<Written>, Vec<NewLog>) {
    let written: std::collections::HashSet<Uuid> = inserted.iter().copied().collect();
    let mut again: Vec<NewLog> = grouped
        .iter()
        .flat_map(|g| g.logs.iter())
        .filter(|l| !written.contains(&l.id))
        .map(|l| (*l).clone())
        .collect();
    again.extend(duplicates);
    (inserted.into_iter().map(|id| (id, None)).collect(), again)
}

/// The logs of events whose id was seen before (within the dedupe window): a webhook that
/// has no log of the event yet gets one, of the event as first stored; one that has keeps
/// it. Duplicates of one event id are written one at a time (an advisory lock per event,
/// held by the caller's transaction until it ends), so that two of them arriving together
/// cannot both find no log.
async fn insert_duplicates(
    tx: &impl deadpool_postgres::GenericClient,
    logs: &[NewLog],
) -> Result<Vec<(Uuid, Option<std::sync::Arc<NewEvent>>)>, StoreError> {
    let accounts: Vec<&str> = logs.iter().map(|l| l.event.account_id.as_str()).collect();
    let events: Vec<&str> = logs.iter().map(|l| l.event.id.as_str()).collect();
    tx.execute(
        "SELECT pg_advisory_xact_lock(h) FROM (
            SELECT DISTINCT hashtextextended('hookrelay.event/' || a || '/' || e, 0) AS h
            FROM unnest($1::text[], $2::text[]) AS k(a, e)) s
         ORDER BY h",
        &[&accounts, &events],
    )
    .await?;
    let ids: Vec<Uuid> = logs.iter().map(|l| l.id).collect();
    let webhooks: Vec<Uuid> = logs.iter().map(|l| l.webhook_id).collect();
    let created: Vec<DateTime<Utc>> = logs
        .iter()
        .map(|l| log_time(l.id).unwrap_or(l.event.received_at))
        .collect();
    let seqs: Vec<Option<i64>> = logs.iter().map(|l| l.seq).collect();
    // A log's created_at is the time of its id, made at most a millisecond before its
    // event's received_at: the margin covers that.
    let rows = tx
        .query(
            "WITH u AS (
                SELECT DISTINCT ON (webhook_id, account_id, event_id) *
                FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[],
                            $6::int8[])
                     AS u(id, webhook_id, account_id, event_id, created_at, seq)),
             logs AS (
                INSERT INTO delivery_logs (id, webhook_id, account_id, event_id, event_type,
                                           event_at, created_at, updated_at)
                SELECT u.id, u.webhook_id, e.account_id, e.id, e.event_type, e.received_at,
                       u.created_at, u.created_at
                FROM u
                JOIN event_keys k ON k.account_id = u.account_id AND k.event_id = u.event_id
                JOIN events e ON e.account_id = k.account_id AND e.received_at = k.received_at
                             AND e.id = k.event_id
                WHERE NOT EXISTS (
                    SELECT 1 FROM delivery_logs l
                    WHERE l.webhook_id = u.webhook_id AND l.event_id = u.event_id
                      AND l.account_id = u.account_id
                      AND l.created_at >= k.received_at - interval '1 minute')
                RETURNING id, webhook_id, created_at, account_id, event_id, event_at),
             opened AS (
                INSERT INTO open_deliveries (webhook_id, log_id, created_at, seq)
                SELECT l.webhook_id, l.id, l.created_at,
                       COALESCE(u.seq, nextval('open_deliveries_seq'))
                FROM logs l JOIN u ON u.id = l.id)
             SELECT l.id, e.account_id, e.id, e.event_type, e.body, e.occurred_at,
                    e.received_at, e.traceparent
             FROM logs l
             JOIN events e ON e.account_id = l.account_id AND e.received_at = l.event_at
                          AND e.id = l.event_id",
            &[&ids, &webhooks, &accounts, &events, &created, &seqs],
        )
        .await?;
    // The event as first stored: what its new deliveries send.
    Ok(rows
        .iter()
        .map(|r| {
            let event = NewEvent {
                account_id: r.get(1),
                id: r.get(2),
                event_type: r.get(3),
                body: r.get::<_, String>(4).into(),
                occurred_at: r.get(5),
                received_at: r.get(6),
                traceparent: r.get(7),
            };
            (r.get(0), Some(std::sync::Arc::new(event)))
        })
        .collect())
}

/// Locks the logs of `ids` (sorted), answering `id, attempts, requeues, webhook_id,
/// created_at` of each found. The ids carry their time, so that only the partitions of those
/// days are read; a log whose id does not (written by hand) is looked for in every one.
async fn lock_logs(
    tx: &impl deadpool_postgres::GenericClient,
    ids: &[Uuid],
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let (timed, days, untimed) = split_by_time(ids);
    let mut rows = Vec::with_capacity(ids.len());
    if !timed.is_empty() {
        rows = tx
            .query(
                "SELECT id, attempts, requeues, webhook_id, created_at FROM delivery_logs
                 WHERE id = ANY($1) AND created_at = ANY($2)
                 ORDER BY id FOR UPDATE",
                &[&timed, &days],
            )
            .await?;
    }
    let found: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    let rest: Vec<Uuid> = untimed
        .into_iter()
        .chain(timed.into_iter().filter(|id| !found.contains(id)))
        .collect();
    if !rest.is_empty() {
        rows.extend(
            tx.query(
                "SELECT id, attempts, requeues, webhook_id, created_at FROM delivery_logs
                 WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                &[&rest],
            )
            .await?,
        );
    }
    Ok(rows)
}

/// Takes the lock of the requeue claims `account`'s logs may be in: the deployment-wide one
/// shared and the account's own, or, for a call over every account, the deployment-wide one
/// alone. Claims that may overlap are then made one at a time, each after the last committed.
async fn lock_claims(
    tx: &deadpool_postgres::Transaction<'_>,
    account: Option<&str>,
) -> Result<(), StoreError> {
    match account {
        Some(account) => {
            tx.execute(
                "SELECT pg_advisory_xact_lock_shared(
                            hashtextextended('hookrelay.requeue_claims', 0)),
                        pg_advisory_xact_lock(
                            hashtextextended('hookrelay.requeue_claims/' || $1, 0))",
                &[&account],
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
    Ok(())
}

impl Store {
    /// Stores `events` (each once, the first time its id is seen within the dedupe window)
    /// and `logs`, the deliveries of them, `pending`; answers the ids of the logs written,
    /// each with the event it delivers when that is not the one given: an event whose id was
    /// seen before is delivered as first stored. A log not written is a duplicate: its
    /// webhook has a log of that event already. The new events commit together or not at
    /// all, so a failed call leaves nothing behind that a retry would mistake for a
    /// duplicate.
    pub async fn insert_logs(
        &self,
        events: &[std::sync::Arc<NewEvent>],
        logs: &[NewLog],
    ) -> Result<Vec<(Uuid, Option<std::sync::Arc<NewEvent>>)>, StoreError> {
        let mut client = self.client().await?;
        let (grouped, duplicates) = group(events, logs);
        let chunks = chunks_by_size(&grouped);
        // The ordered fan-out's logs carry their places in their lines: written in one
        // transaction, so that none is seen (and sent) before one placed ahead of it that
        // the second statement writes.
        if logs.iter().any(|l| l.seq.is_some()) {
            let tx = client.transaction().await?;
            let mut inserted = Vec::with_capacity(logs.len());
            for chunk in chunks {
                inserted.extend(insert_chunk(&tx, chunk).await?);
            }
            let (mut inserted, again) = not_written(inserted, &grouped, duplicates);
            if !again.is_empty() {
                inserted.extend(insert_duplicates(&tx, &again).await?);
            }
            tx.commit().await?;
            return Ok(inserted);
        }
        let mut inserted = Vec::with_capacity(logs.len());
        match chunks.as_slice() {
            [] => {}
            // One statement is atomic already: no transaction round trips for the usual case.
            [only] => inserted = insert_chunk(&client, only).await?,
            _ => {
                let tx = client.transaction().await?;
                for chunk in chunks {
                    inserted.extend(insert_chunk(&tx, chunk).await?);
                }
                tx.commit().await?;
            }
        }
        let (mut inserted, again) = not_written(inserted, &grouped, duplicates);
        if !again.is_empty() {
            let tx = client.transaction().await?;
            inserted.extend(insert_duplicates(&tx, &again).await?);
            tx.commit().await?;
        }
        Ok(inserted)
    }

    /// The logs of these `(webhook_id, event_id)` pairs.
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
                "SELECT l.id, l.webhook_id, l.event_id, l.status, l.attempts, l.event_at
                 FROM delivery_logs l
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
                received_at: r.get(5),
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
        let rows = lock_logs(&tx, &ids).await?;
        let mut logs: HashMap<Uuid, (u32, u32)> = rows
            .iter()
            .map(|r| (r.get(0), (count(r.get(1)), count(r.get(2)))))
            .collect();
        let found: HashMap<Uuid, (Uuid, DateTime<Utc>)> = rows
            .iter()
            .map(|r| (r.get(0), (r.get(3), r.get(4))))
            .collect();
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
        let webhook_col: Vec<Uuid> = kept.iter().map(|a| found[&a.log_id].0).collect();
        let created_col: Vec<DateTime<Utc>> = kept.iter().map(|a| found[&a.log_id].1).collect();
        tx.execute(
            "INSERT INTO delivery_attempts
                (log_id, attempt, started_at, duration_ms, response_status, response_body, error,
                 webhook_id, log_created_at)
             SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::int[],
                                  $5::int[], $6::text[], $7::text[], $8::uuid[],
                                  $9::timestamptz[])",
            &[
                &logs_col,
                &attempts,
                &started,
                &durations,
                &statuses,
                &bodies,
                &errors,
                &webhook_col,
                &created_col,
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
        let created_col: Vec<DateTime<Utc>> = moves.iter().map(|a| found[&a.log_id].1).collect();
        let mut days = created_col.clone();
        days.sort_unstable();
        days.dedup();
        // Nothing indexed changes on the way to `succeeded` (a HOT update); `troubled` only
        // on a log's first failure. The logs finished leave the open deliveries.
        tx.execute(
            "WITH moved AS (
             UPDATE delivery_logs l SET
                status = u.status,
                troubled = l.troubled OR u.status IN ('retrying', 'failed'),
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
                         $6::int[], $7::text[], $8::text[], $9::text[], $10::timestamptz[],
                         $11::timestamptz[])
                  AS u(log_id, attempt, requeue, started_at, duration_ms, response_status,
                       response_body, error, status, next_attempt_at, created_at)
             WHERE l.id = u.log_id AND l.created_at = u.created_at
               AND l.created_at = ANY($12)
             RETURNING l.webhook_id, l.id, l.status)
             DELETE FROM open_deliveries o USING moved
             WHERE o.webhook_id = moved.webhook_id AND o.log_id = moved.id
               AND moved.status IN ('succeeded', 'failed')",
            &[
                &logs_col,
                &attempts,
                &requeues,
                &started,
                &durations,
                &statuses,
                &bodies,
                &errors,
                &states,
                &next,
                &created_col,
                &days,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(current)
    }

    /// Where a log stands: `(attempts, requeues)`, or `None` when it is gone.
    pub async fn log_position(&self, log_id: Uuid) -> Result<Option<(u32, u32)>, StoreError> {
        let client = self.client().await?;
        let row = match log_time(log_id) {
            Some(at) => {
                client
                    .query_opt(
                        "SELECT attempts, requeues FROM delivery_logs
                         WHERE id = $1 AND created_at = $2",
                        &[&log_id, &at],
                    )
                    .await?
            }
            None => None,
        };
        let row = match row {
            Some(row) => Some(row),
            // A log written by hand, whose id does not tell its time.
            None => {
                client
                    .query_opt(
                        "SELECT attempts, requeues FROM delivery_logs WHERE id = $1",
                        &[&log_id],
                    )
                    .await?
            }
        };
        Ok(row.map(|r| (count(r.get(0)), count(r.get(1)))))
    }

    /// The database's clock, for comparisons with times it wrote.
    pub async fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        let client = self.client().await?;
        Ok(client.query_one("SELECT now()", &[]).await?.get(0))
    }

    /// The webhooks with a delivery under way (`pending` or `retrying`) whose log was made
    /// before `before`. Reads the open deliveries alone, which are few and narrow.
    pub async fn webhooks_with_open_deliveries(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT DISTINCT webhook_id FROM open_deliveries WHERE created_at < $1",
                &[&before],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The webhooks of the logs `filter` selects now.
    pub async fn webhooks_to_requeue(
        &self,
        filter: &RequeueFilter,
    ) -> Result<Vec<Uuid>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT DISTINCT webhook_id FROM delivery_logs WHERE {REQUEUE_WHERE}");
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
        lock_claims(&tx, filter.account_id.as_deref()).await?;
        tx.execute("INSERT INTO requeue_jobs (id) VALUES ($1)", &[&job])
            .await?;
        let mut params = filter.params().to_vec();
        params.push(&job);
        params.push(&JOB_HEARTBEAT_GRACE_SECS);
        let take_over = take_over_dead_claims("$14");
        let sql = format!(
            "WITH claimed AS (
                INSERT INTO requeue_claims (log_id, job_id)
                SELECT id, $13 FROM delivery_logs WHERE {REQUEUE_WHERE}
                {take_over}
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

    /// Writes, for job `job`, a log of each event `replay` selects (in received order, at
    /// most [`MAX_REPLAY_EVENTS`]), `failed` and waiting to be queued, and claims them, with
    /// the replay logs of this webhook an earlier job left unqueued; answers how many.
    /// Replays of one account take their turns (the lock of its requeue claims), so that
    /// two calls at once cannot both find an event not yet received.
    pub async fn claim_replay(&self, job: Uuid, replay: &Replay) -> Result<i64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_claims(&tx, Some(&replay.account_id)).await?;
        tx.execute("INSERT INTO requeue_jobs (id) VALUES ($1)", &[&job])
            .await?;
        // Every log of one call has the same created_at (the id's time, of the transaction's
        // start): the job takes them in the order of their events.
        let passing = match &replay.filter {
            Some(filter) => Some(passing_events(&tx, replay, filter).await?),
            None => None,
        };
        let take_over = take_over_dead_claims("$9");
        let sql = format!(
            "WITH candidates AS MATERIALIZED (
                    SELECT e.account_id, e.id AS event_id, e.event_type, e.received_at,
                           hookrelay_log_id(now()) AS log_id
                    {REPLAY_CANDIDATES}
                      AND ($10::text[] IS NULL OR e.id = ANY($10))
                    ORDER BY e.received_at, e.id
                    LIMIT $6),
                 written AS (
                    INSERT INTO delivery_logs (id, webhook_id, account_id, event_id, event_type,
                                               event_at, created_at, status, troubled, error,
                                               updated_at)
                    SELECT log_id, $1, account_id, event_id, event_type, received_at,
                           hookrelay_uuid_time(log_id), 'failed', true, $8, now()
                    FROM candidates
                    RETURNING id),
                 left_over AS (
                    SELECT id FROM delivery_logs
                    WHERE webhook_id = $1 AND troubled AND status = 'failed' AND attempts = 0
                      AND error = $8),
                 claimed AS (
                    INSERT INTO requeue_claims (log_id, job_id)
                    SELECT id, $7::uuid FROM written
                    UNION ALL
                    SELECT id, $7::uuid FROM left_over
                    {take_over}
                    RETURNING 1)
                 SELECT count(*) FROM claimed"
        );
        let mut params = replay.candidate_params().to_vec();
        params.extend([
            &job as &(dyn ToSql + Sync),
            &REPLAY_WAITING,
            &JOB_HEARTBEAT_GRACE_SECS,
            &passing,
        ]);
        let claimed: i64 = tx.query_one(&sql, &params).await?.get(0);
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
        // The body comes from the log's event, read after the logs are taken and locked.
        let sql = format!(
            "SELECT l.id, l.webhook_id, l.account_id, l.event_id, l.event_type, e.body,
                    l.attempts, l.created_at, l.requeues, e.traceparent
             FROM (SELECT * FROM delivery_logs WHERE {REQUEUE_WHERE}
                   ORDER BY created_at, event_at, id
                   LIMIT {limit}
                   {lock}) l
             LEFT JOIN events e ON e.account_id = l.account_id AND e.received_at = l.event_at
                               AND e.id = l.event_id
             ORDER BY l.created_at, l.event_at, l.id"
        );
        let rows = match tx.query(&sql, &filter.params()).await {
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                return Err(StoreError::Conflict(
                    "the log is being changed right now; try again in a moment".into(),
                ))
            }
            rows => rows?,
        };
        let taken_ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
        let taken = taken_ids.len();
        let logs: Vec<LogToRequeue> = rows
            .iter()
            // A log whose event is gone (retired with its day, while the log, made by a
            // replay, lived on) has no body left to send.
            .filter(|r| r.get::<_, Option<String>>(5).is_some())
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
        // Every log taken is marked taken in the job's claims, queued or not (a webhook gone
        // meanwhile): the job is done with it, and no other call claims it while the job
        // lives.
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
        let (_, days, _) = split_by_time(&ids);
        tx.execute(
            "WITH queued AS (
                UPDATE delivery_logs SET status = 'pending', requeues = requeues + 1,
                       next_attempt_at = NULL, updated_at = now()
                WHERE id = ANY($1) AND (created_at = ANY($2) OR $3)
                RETURNING webhook_id, id, created_at)
             INSERT INTO open_deliveries (webhook_id, log_id, created_at)
             SELECT webhook_id, id, created_at FROM queued
             ON CONFLICT DO NOTHING",
            &[&ids, &days, &(days.len() < ids.len())],
        )
        .await?;
        if let Some(job) = filter.claimed_by {
            tx.execute(
                "UPDATE requeue_claims SET taken = true WHERE job_id = $1 AND log_id = ANY($2)",
                &[&job, &taken_ids],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(taken))
    }

    /// `n` places in the webhooks' lines, in increasing order: the ordered fan-out takes
    /// them for a batch before writing it, so that the batch's logs are numbered in the order
    /// of its events, whichever statement writes each.
    pub async fn take_seqs(&self, n: usize) -> Result<Vec<i64>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT nextval('open_deliveries_seq') AS seq FROM generate_series(1, $1::int8)
                 ORDER BY seq",
                &[&(n as i64)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The first `limit` deliveries of FIFO webhook `webhook_id`'s line, in its order: its
    /// open deliveries by place (`open_deliveries.seq`), with what sending them needs.
    pub async fn line(&self, webhook_id: Uuid, limit: i64) -> Result<Vec<InLine>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT l.id, l.webhook_id, l.account_id, l.event_id, l.event_type, e.body,
                        l.attempts, l.created_at, l.requeues, e.traceparent, l.status,
                        l.next_attempt_at, l.event_at
                 FROM (SELECT log_id, created_at, seq FROM open_deliveries
                       WHERE webhook_id = $1 ORDER BY seq LIMIT $2) o
                 JOIN delivery_logs l ON l.id = o.log_id AND l.created_at = o.created_at
                 LEFT JOIN events e ON e.account_id = l.account_id AND e.received_at = l.event_at
                                   AND e.id = l.event_id
                 WHERE l.status IN ('pending', 'retrying')
                 ORDER BY o.seq",
                &[&webhook_id, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| InLine {
                log: LogToRequeue {
                    id: r.get(0),
                    webhook_id: r.get(1),
                    account_id: r.get(2),
                    event_id: r.get(3),
                    event_type: r.get(4),
                    payload: r.get::<_, Option<String>>(5).unwrap_or_default(),
                    attempts: count(r.get(6)),
                    created_at: r.get(7),
                    requeues: count(r.get(8)),
                    traceparent: r.get(9),
                },
                has_body: r.get::<_, Option<String>>(5).is_some(),
                next_attempt_at: match r.get::<_, &str>(10) {
                    "retrying" => r.get(11),
                    _ => None,
                },
                received_at: r.get(12),
            })
            .collect())
    }

    /// Ends the first delivery of FIFO webhook `webhook_id`'s line, `failed` with `reason`,
    /// so that the line moves on; `None` when the line is empty or no such webhook is
    /// visible to `account`. Its `requeues` goes one up, so that an attempt of it under way
    /// records itself without moving it again (`hookrelay_core::is_current_attempt`).
    pub async fn skip_head(
        &self,
        webhook_id: Uuid,
        account: Option<&str>,
        reason: &str,
    ) -> Result<Option<Uuid>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // A head that finishes while it is taken (its attempt recorded) is no longer the
        // head: the next one is, a few times over at most.
        let mut skipped = None;
        for _ in 0..3 {
            let head = tx
                .query_opt(
                    "SELECT o.log_id, o.created_at FROM open_deliveries o
                     JOIN webhooks w ON w.id = o.webhook_id
                     WHERE o.webhook_id = $1 AND ($2::text IS NULL OR w.account_id = $2)
                     ORDER BY o.seq LIMIT 1",
                    &[&webhook_id, &account],
                )
                .await?;
            let Some(head) = head else {
                return Ok(None);
            };
            let (log_id, created_at): (Uuid, DateTime<Utc>) = (head.get(0), head.get(1));
            // The log first, as the attempt writer locks it (then its open delivery): two
            // transactions never wait on each other's second lock.
            let ended = tx
                .execute(
                    "UPDATE delivery_logs SET status = 'failed', troubled = true, error = $3,
                            requeues = requeues + 1, next_attempt_at = NULL, updated_at = now()
                     WHERE id = $1 AND created_at = $2 AND status IN ('pending', 'retrying')",
                    &[&log_id, &created_at, &reason],
                )
                .await?;
            if ended == 1 {
                skipped = Some((log_id, created_at));
                break;
            }
        }
        let Some((log_id, _)) = skipped else {
            return Err(StoreError::Conflict(
                "the line is moving right now; try again in a moment".into(),
            ));
        };
        tx.execute(
            "DELETE FROM open_deliveries WHERE webhook_id = $1 AND log_id = $2",
            &[&webhook_id, &log_id],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(log_id))
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
pub(crate) const FAIL_OPEN_LOGS: &str = "WITH closed AS (
        DELETE FROM open_deliveries WHERE webhook_id = $1 RETURNING log_id, created_at)
     UPDATE delivery_logs l SET status = 'failed', troubled = true, error = $2,
            next_attempt_at = NULL, updated_at = now()
     FROM closed
     WHERE l.id = closed.log_id AND l.created_at = closed.created_at
       AND l.status IN ('pending', 'retrying')";

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn event(id: &str, bytes: usize) -> Arc<NewEvent> {
        Arc::new(NewEvent {
            account_id: "a".into(),
            id: id.into(),
            event_type: "Contact.created".into(),
            body: "x".repeat(bytes).into(),
            occurred_at: DateTime::from_timestamp(0, 0).unwrap(),
            received_at: DateTime::from_timestamp(0, 0).unwrap(),
            traceparent: None,
        })
    }

    fn logs_of(event: &Arc<NewEvent>, n: usize) -> Vec<NewLog> {
        (0..n)
            .map(|_| NewLog {
                id: Uuid::new_v4(),
                webhook_id: Uuid::new_v4(),
                event: event.clone(),
                seq: None,
            })
            .collect()
    }

    #[test]
    fn inserts_are_chunked_by_rows_and_bytes() {
        let events: Vec<_> = (0..450).map(|i| event(&i.to_string(), 10)).collect();
        let logs: Vec<NewLog> = events.iter().flat_map(|e| logs_of(e, 10)).collect();
        let (grouped, others) = group(&events, &logs);
        assert!(others.is_empty());
        let sizes: Vec<usize> = chunks_by_size(&grouped).iter().map(|c| c.len()).collect();
        assert_eq!(
            sizes,
            vec![200, 200, 50],
            "2000 log rows per statement at most"
        );
        let big: Vec<_> = (0..5)
            .map(|i| event(&i.to_string(), 6 * 1024 * 1024))
            .collect();
        let (grouped, _) = group(&big, &[]);
        let sizes: Vec<usize> = chunks_by_size(&grouped).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        let huge = vec![event("h", MAX_BYTES_PER_INSERT + 1)];
        let (grouped, _) = group(&huge, &[]);
        assert_eq!(
            chunks_by_size(&grouped).len(),
            1,
            "one oversized event still goes alone"
        );
        assert!(chunks_by_size(&[]).is_empty());
    }

    #[test]
    fn an_event_id_twice_in_a_batch_is_stored_once_with_one_log_per_webhook() {
        let first = event("same", 10);
        let again = event("same", 10);
        let webhook = Uuid::new_v4();
        let log = |e: &Arc<NewEvent>| NewLog {
            id: Uuid::new_v4(),
            webhook_id: webhook,
            event: e.clone(),
            seq: None,
        };
        let logs = vec![log(&first), log(&first), log(&again)];
        let events = [first.clone(), again];
        let (grouped, others) = group(&events, &logs);
        assert_eq!(grouped.len(), 1);
        assert_eq!(grouped[0].logs.len(), 1);
        assert_eq!(others.len(), 2, "the others go the duplicates' way");
    }

    #[test]
    fn a_log_id_tells_its_time_to_the_millisecond() {
        let at = DateTime::parse_from_rfc3339("2026-12-07T10:11:12.345678Z")
            .unwrap()
            .with_timezone(&Utc);
        let id = new_log_id(at);
        assert_eq!(
            log_time(id).unwrap().to_rfc3339(),
            "2026-12-07T10:11:12.345+00:00"
        );
        assert_eq!(log_time(Uuid::new_v4()), None);
        let (timed, times, untimed) = split_by_time(&[id, id, Uuid::nil()]);
        assert_eq!((timed.len(), times.len(), untimed.len()), (2, 1, 1));
    }
}
