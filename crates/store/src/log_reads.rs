//! Reading the Webhook Logs: the filtered, newest-first list and one log with its attempts.
//!
//! The list's SQL holds a condition only for each filter given, so that PostgreSQL plans
//! each combination on its own, on the index that serves it (one `$n IS NULL OR …` query
//! for all of them would be planned once, generically, and scan). Every filter has an index
//! of each day's partition whose leading column it fixes, followed by `(created_at DESC, id
//! DESC)`, the list's order and keyset: a page is an index range, however deep it is. The
//! statuses, which no index names (a status change must rewrite none), are found through the
//! indexes of the logs that ever failed (`failed`) and the open deliveries (`pending`,
//! `retrying`). These reads go to the read replica when there is one.

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use hookrelay_core::LogStatus;

use crate::{count, log_status, Cursor, Page, Store, StoreError};

/// Which logs to list; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub account_id: Option<String>,
    pub webhook_id: Option<Uuid>,
    pub status: Option<LogStatus>,
    pub event_type: Option<String>,
    pub event_id: Option<String>,
    /// `created_at` from this time on.
    pub since: Option<DateTime<Utc>>,
    /// `created_at` before this time.
    pub until: Option<DateTime<Utc>>,
}

/// A row of `webhook_logs` without its payload and response body (the list's columns).
#[derive(Debug, Clone)]
pub struct LogRow {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub account_id: String,
    pub event_id: String,
    pub event_type: String,
    pub status: LogStatus,
    pub attempts: u32,
    pub response_status: Option<u16>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub traceparent: Option<String>,
}

/// One HTTP attempt of a log.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    /// The row's own id: with `attempt`, where a page of attempts stands.
    pub id: i64,
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u32,
    pub response_status: Option<u16>,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

/// Attempts one log answers at most, the latest: a log retried by hand without end must not
/// make an answer without end. The older ones are read a page at a time
/// ([`Store::list_attempts`]).
pub const ATTEMPTS_SHOWN: usize = 100;

/// One log whole: its row, the body sent, the last answer, and its latest attempts in order.
#[derive(Debug, Clone)]
pub struct LogDetail {
    pub log: LogRow,
    /// The JSON sent, byte for byte (for a log written before release 9: jsonb's normal
    /// form of it). `None` once its event is retired while the log lives on.
    pub payload: Option<String>,
    pub response_body: Option<String>,
    /// The latest [`ATTEMPTS_SHOWN`] attempts at most, oldest first.
    pub attempts: Vec<AttemptRow>,
    /// Every attempt on record.
    pub attempts_total: u64,
    /// Where the older attempts, not shown, continue; `None` when every one is shown.
    pub older_attempts: Option<Cursor>,
}

impl AttemptRow {
    fn from_row(a: &Row) -> Self {
        Self {
            id: a.get("id"),
            attempt: count(a.get("attempt")),
            started_at: a.get("started_at"),
            duration_ms: count(a.get("duration_ms")),
            response_status: http_status(a.get("response_status")),
            response_body: a.get("response_body"),
            error: a.get("error"),
        }
    }

    /// The position of this attempt in its log's list, newest first.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.started_at,
            key: format!("{}.{}", self.attempt, self.id),
        }
    }
}

/// Attempts of a log, newest first, after `after`, one more than `limit`.
async fn attempts_page(
    client: &impl deadpool_postgres::GenericClient,
    log_id: Uuid,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<Page<AttemptRow>, StoreError> {
    let position = after
        .map(|c| {
            let parsed = c.key.split_once('.').and_then(|(attempt, id)| {
                Some((attempt.parse::<i32>().ok()?, id.parse::<i64>().ok()?))
            });
            parsed.ok_or_else(|| {
                StoreError::Invalid("the cursor does not belong to this list".into())
            })
        })
        .transpose()?;
    let (attempt, id) = (position.map(|p| p.0), position.map(|p| p.1));
    let rows = client
        .query(
            "SELECT id, attempt, started_at, duration_ms, response_status, response_body, error
             FROM webhook_attempts
             WHERE log_id = $1 AND ($2::int IS NULL OR (attempt, id) < ($2, $3::bigint))
             ORDER BY attempt DESC, id DESC
             LIMIT $4",
            &[&log_id, &attempt, &id, &(limit as i64 + 1)],
        )
        .await?;
    let rows = rows.iter().map(AttemptRow::from_row).collect();
    Ok(Page::from_rows(rows, limit, AttemptRow::cursor))
}

/// The list's columns of `delivery_logs`; the traceparent is its event's, read for the
/// rows answered only.
const LIST_COLUMNS: &str = "id, webhook_id, account_id, event_id, event_type, status, attempts, \
                            response_status, error, created_at, updated_at, next_attempt_at, \
                            delivered_at, (SELECT e.traceparent FROM events e \
                            WHERE e.account_id = l.account_id AND e.received_at = l.event_at \
                            AND e.id = l.event_id) AS traceparent";

/// A log's body, from its event (stored once for every log of it).
const PAYLOAD: &str = "(SELECT e.body FROM events e
                        WHERE e.account_id = l.account_id
                          AND e.received_at = l.event_at
                          AND e.id = l.event_id) AS payload";

/// One log by id (`$1`) as account `$2` (or the admin) sees it, from the partitioned table or
/// release 8's: `new` and `legacy` are what each gives. `$3`, the time in the log's id, takes
/// the read to one partition.
fn one_log(new: &str, legacy: &str) -> String {
    format!(
        "SELECT {new} FROM delivery_logs l
         WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)
           AND ($3::timestamptz IS NULL OR created_at = $3)
         UNION ALL
         SELECT {legacy} FROM webhook_logs_v8
         WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)"
    )
}

/// The same columns of the logs of release 8 not moved over yet (migration V9).
const LEGACY_COLUMNS: &str = "id, webhook_id, account_id, event_id, event_type, status, \
                              attempts, response_status, error, created_at, updated_at, \
                              next_attempt_at, delivered_at, traceparent";

/// An HTTP status as stored; one no HTTP answer could have (edited by hand) reads as none.
fn http_status(stored: Option<i32>) -> Option<u16> {
    stored.and_then(|status| u16::try_from(status).ok())
}

impl LogRow {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(Self {
            id: row.get("id"),
            webhook_id: row.get("webhook_id"),
            account_id: row.get("account_id"),
            event_id: row.get("event_id"),
            event_type: row.get("event_type"),
            status: log_status(row.get("status"))?,
            attempts: count(row.get("attempts")),
            response_status: http_status(row.get("response_status")),
            error: row.get("error"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
            next_attempt_at: row.get("next_attempt_at"),
            delivered_at: row.get("delivered_at"),
            traceparent: row.get("traceparent"),
        })
    }

    pub fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            key: self.id.to_string(),
        }
    }
}

/// The parameters of a list's SQL, bound as its clauses are written.
struct Conditions {
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Conditions {
    fn new() -> Self {
        Self { params: Vec::new() }
    }

    /// Binds `value` and answers its placeholder (`$n`).
    fn param(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

impl LogFilter {
    /// The filter's clauses over `delivery_logs` (or over the logs of release 8, `legacy`),
    /// its values bound in `c`.
    fn clauses(&self, c: &mut Conditions, legacy: bool) -> Vec<String> {
        let mut clauses = Vec::new();
        let mut push = |c: &mut Conditions, clause: &str, value: Box<dyn ToSql + Sync + Send>| {
            c.params.push(value);
            clauses.push(clause.replace("$?", &format!("${}", c.params.len())));
        };
        if let Some(account) = &self.account_id {
            push(c, "account_id = $?", Box::new(account.clone()));
        }
        if let Some(webhook) = self.webhook_id {
            push(c, "webhook_id = $?", Box::new(webhook));
        }
        if let Some(status) = self.status {
            // No index names `status` (a status change rewrites no index): the logs that
            // ever failed have an index of their own, and the unfinished ones a table.
            let clause = match (legacy, status) {
                (true, _) => "status = $?",
                (false, LogStatus::Failed) => "troubled AND status = $?",
                // The list reads the open deliveries first (see `list_query`).
                (false, LogStatus::Pending | LogStatus::Retrying) => "status = $?",
                (false, LogStatus::Succeeded) => "status = $?",
            };
            push(c, clause, Box::new(status.as_str()));
        }
        if let Some(event_type) = &self.event_type {
            push(c, "event_type = $?", Box::new(event_type.clone()));
        }
        if let Some(event_id) = &self.event_id {
            push(c, "event_id = $?", Box::new(event_id.clone()));
        }
        if let Some(since) = self.since {
            push(c, "created_at >= $?", Box::new(since));
        }
        if let Some(until) = self.until {
            push(c, "created_at < $?", Box::new(until));
        }
        clauses
    }
}

impl Store {
    /// Logs matching `filter`, newest first, `limit` at most, after `after` (a cursor of
    /// this list). New logs arriving meanwhile sort before the cursor, so a reader paging
    /// on sees neither a duplicate nor a gap among the logs that were there.
    pub async fn list_logs(
        &self,
        filter: &LogFilter,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<LogRow>, StoreError> {
        let (sql, conditions) = list_query(filter, after, limit)?;
        let client = self.read_client().await?;
        let rows = client.query(&sql, &conditions.refs()).await?;
        let rows = rows
            .iter()
            .map(LogRow::from_row)
            .collect::<Result<_, _>>()?;
        Ok(Page::from_rows(rows, limit, LogRow::cursor))
    }

    /// One log with its attempts; `account` limits the search to that account's logs.
    pub async fn get_log(
        &self,
        id: Uuid,
        account: Option<&str>,
    ) -> Result<Option<LogDetail>, StoreError> {
        let client = self.read_client().await?;
        let at = crate::logs::log_time(id);
        let sql = one_log(
            &format!("{LIST_COLUMNS}, {PAYLOAD}, response_body"),
            &format!("{LEGACY_COLUMNS}, payload::text, response_body"),
        );
        let Some(row) = client.query_opt(&sql, &[&id, &account, &at]).await? else {
            return Ok(None);
        };
        let latest = attempts_page(&client, id, None, ATTEMPTS_SHOWN).await?;
        // Counted only when the page does not hold them all.
        let total = match latest.next {
            None => latest.items.len() as u64,
            Some(_) => {
                let count: i64 = client
                    .query_one(
                        "SELECT count(*) FROM webhook_attempts WHERE log_id = $1",
                        &[&id],
                    )
                    .await?
                    .get(0);
                u64::try_from(count).unwrap_or(0)
            }
        };
        let mut attempts = latest.items;
        attempts.reverse();
        Ok(Some(LogDetail {
            log: LogRow::from_row(&row)?,
            payload: row.get("payload"),
            response_body: row.get("response_body"),
            attempts,
            attempts_total: total,
            older_attempts: latest.next,
        }))
    }

    /// The body sent for log `id`, byte for byte: `None` when no such log is visible to
    /// `account`, `Some(None)` when the log outlived its event (a replay's log does).
    pub async fn get_log_payload(
        &self,
        id: Uuid,
        account: Option<&str>,
    ) -> Result<Option<Option<String>>, StoreError> {
        let client = self.read_client().await?;
        let at = crate::logs::log_time(id);
        let row = client
            .query_opt(&one_log(PAYLOAD, "payload::text"), &[&id, &account, &at])
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Attempts of log `id`, newest first, `limit` at most after `after` (a cursor of this
    /// list); `None` when no such log is visible to `account`.
    pub async fn list_attempts(
        &self,
        id: Uuid,
        account: Option<&str>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Option<Page<AttemptRow>>, StoreError> {
        let client = self.read_client().await?;
        let visible = client
            .query_opt(
                "SELECT 1 FROM delivery_logs
                 WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)
                   AND ($3::timestamptz IS NULL OR created_at = $3)
                 UNION ALL
                 SELECT 1 FROM webhook_logs_v8
                 WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)",
                &[&id, &account, &crate::logs::log_time(id)],
            )
            .await?;
        if visible.is_none() {
            return Ok(None);
        }
        Ok(Some(attempts_page(&client, id, after, limit).await?))
    }

    /// The plan PostgreSQL chooses for the very query `list_logs` makes with `filter` and
    /// `after`: for proving that every filter, on any page, is served by an index.
    pub async fn explain_list_logs(
        &self,
        filter: &LogFilter,
        after: Option<&Cursor>,
    ) -> Result<String, StoreError> {
        let (sql, conditions) = list_query(filter, after, 50)?;
        let client = self.read_client().await?;
        let rows = client
            .query(&format!("EXPLAIN {sql}"), &conditions.refs())
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// The list's SQL and its parameters: the filter's conditions, the keyset position after
/// `after`, newest first, one row more than `limit` (to tell whether more follow). The logs
/// of release 8 not moved over yet are read beside the partitioned ones, each side a range of
/// its own index, and the two merged.
fn list_query(
    filter: &LogFilter,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<(String, Conditions), StoreError> {
    let position = after
        .map(|cursor| {
            Uuid::parse_str(&cursor.key)
                .map(|id| (cursor.created_at, id))
                .map_err(|_| StoreError::Invalid("the cursor does not belong to this list".into()))
        })
        .transpose()?;
    let mut conditions = Conditions::new();
    let limit_param = conditions.param(limit as i64 + 1);
    let side = |legacy: bool, conditions: &mut Conditions| {
        let mut clauses = filter.clauses(conditions, legacy);
        if let Some((at, id)) = position {
            let (at, id) = (conditions.param(at), conditions.param(id));
            // The first clause lets PostgreSQL skip the partitions after the cursor, which
            // the row comparison alone does not.
            clauses.push(format!(
                "created_at <= {at} AND (created_at, id) < ({at}, {id})"
            ));
        }
        if clauses.is_empty() {
            "TRUE".to_owned()
        } else {
            clauses.join(" AND ")
        }
    };
    let new_side = side(false, &mut conditions);
    let old_side = side(true, &mut conditions);
    // The `pending` and `retrying` logs are the open deliveries, a few against all the logs:
    // each is looked up by id (in its day's partition), rather than the logs walked for them.
    let logs = match filter.status {
        Some(LogStatus::Pending | LogStatus::Retrying) => {
            "(SELECT o.log_id AS open_id, o.created_at AS open_at FROM open_deliveries o
              OFFSET 0) o
             CROSS JOIN LATERAL (SELECT * FROM delivery_logs l
                                 WHERE l.id = o.open_id AND l.created_at = o.open_at
                                 OFFSET 0) l"
        }
        _ => "delivery_logs l",
    };
    let sql = format!(
        "SELECT * FROM (
            (SELECT {LIST_COLUMNS} FROM {logs} WHERE {new_side}
             ORDER BY created_at DESC, id DESC LIMIT {limit_param})
            UNION ALL
            (SELECT {LEGACY_COLUMNS} FROM webhook_logs_v8 WHERE {old_side}
             ORDER BY created_at DESC, id DESC LIMIT {limit_param})) logs
         ORDER BY created_at DESC, id DESC LIMIT {limit_param}"
    );
    Ok((sql, conditions))
}

/// What one webhook's attempts in a window add up to.
/// One interval of a webhook's attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsBucket {
    pub start: DateTime<Utc>,
    pub attempts: u64,
    /// Attempts answered 2xx.
    pub successes: u64,
    pub p95_duration_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttemptStats {
    /// The window's start, by the database's clock (which stamped the attempts).
    pub since: DateTime<Utc>,
    pub attempts: u64,
    /// Attempts answered 2xx.
    pub successes: u64,
    pub p50_duration_ms: Option<f64>,
    pub p95_duration_ms: Option<f64>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Webhook `id`'s attempts of the last `window`: one range of the attempts'
    /// (webhook_id, started_at) index, never the webhook's whole history.
    /// Webhook `id`'s attempts of the last `window`, in `buckets` intervals of equal length,
    /// oldest first; an interval without attempts is there with zeros.
    pub async fn attempt_series(
        &self,
        id: Uuid,
        window: std::time::Duration,
        buckets: u32,
    ) -> Result<Vec<StatsBucket>, StoreError> {
        let client = self.read_client().await?;
        let rows = client
            .query(
                "WITH w AS (SELECT now() - make_interval(secs => $2::float8) AS since,
                                   $2::float8 / $3::int AS step),
                 a AS (SELECT LEAST(floor(extract(epoch FROM started_at - w.since) / w.step)::int,
                                    $3::int - 1) AS n,
                              duration_ms,
                              COALESCE(response_status BETWEEN 200 AND 299, false) AS ok
                       FROM webhook_attempts, w
                       WHERE webhook_id = $1 AND started_at >= w.since)
                 SELECT w.since + make_interval(secs => g.n * w.step) AS start,
                        count(a.n) AS attempts,
                        count(a.n) FILTER (WHERE a.ok) AS successes,
                        percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms) AS p95
                 FROM w CROSS JOIN generate_series(0, $3::int - 1) AS g(n)
                 LEFT JOIN a ON a.n = g.n
                 GROUP BY g.n, w.since, w.step
                 ORDER BY g.n",
                &[&id, &window.as_secs_f64(), &(buckets.max(1) as i32)],
            )
            .await?;
        let count =
            |r: &tokio_postgres::Row, name: &str| u64::try_from(r.get::<_, i64>(name)).unwrap_or(0);
        Ok(rows
            .iter()
            .map(|r| StatsBucket {
                start: r.get("start"),
                attempts: count(r, "attempts"),
                successes: count(r, "successes"),
                p95_duration_ms: r.get("p95"),
            })
            .collect())
    }

    pub async fn attempt_stats(
        &self,
        id: Uuid,
        window: std::time::Duration,
    ) -> Result<AttemptStats, StoreError> {
        let client = self.read_client().await?;
        let row = client
            .query_one(
                "WITH w AS (SELECT now() - make_interval(secs => $2::float8) AS since)
                 SELECT (SELECT since FROM w) AS since,
                        count(*) AS attempts,
                        count(*) FILTER (WHERE ok) AS successes,
                        percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50,
                        percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95,
                        max(started_at) FILTER (WHERE ok) AS last_success,
                        max(started_at) FILTER (WHERE NOT ok) AS last_failure
                 FROM (SELECT duration_ms, started_at,
                              COALESCE(response_status BETWEEN 200 AND 299, false) AS ok
                       FROM webhook_attempts
                       WHERE webhook_id = $1 AND started_at >= (SELECT since FROM w)) a",
                &[&id, &window.as_secs_f64()],
            )
            .await?;
        let count = |name: &str| u64::try_from(row.get::<_, i64>(name)).unwrap_or(0);
        Ok(AttemptStats {
            since: row.get("since"),
            attempts: count("attempts"),
            successes: count("successes"),
            p50_duration_ms: row.get("p50"),
            p95_duration_ms: row.get("p95"),
            last_success_at: row.get("last_success"),
            last_failure_at: row.get("last_failure"),
        })
    }
}
