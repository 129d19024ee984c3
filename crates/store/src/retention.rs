//! Storage upkeep: daily partitions made ahead of time, days past `log_retention` retired
//! whole (events, logs and attempts together), dedupe keys past `dedupe_window` forgotten,
//! and the logs of release 8 moved over to the partitioned tables (migration V9).

use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::error::SqlState;

use crate::{Store, StoreError};

/// How a day's retirement went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retired {
    /// Its partitions are dropped.
    Dropped(NaiveDate),
    /// Kept: some of its logs are still under way; they are never lost to retention.
    KeptOpen(NaiveDate),
}

/// The partition of `table` (`events`, `delivery_logs`, `delivery_attempts`) for UTC `day`.
fn partition(table: &str, day: NaiveDate) -> String {
    format!("{table}_p{}", day.format("%Y%m%d"))
}

impl Store {
    /// Makes sure the partitions of yesterday, today and `ahead` days more exist; answers
    /// how many days were added. Waits at most a second for the parents' lock (other DDL
    /// only: the pipeline's reads and writes never hold it up), then leaves it to next time.
    pub async fn ensure_partitions(&self, ahead: u32) -> Result<i32, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL lock_timeout = '1s'").await?;
        // Processes starting together take turns, rather than race to create one table.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('hookrelay.partitions', 0))",
            &[],
        )
        .await?;
        let made: i32 = tx
            .query_one(
                "SELECT hookrelay_ensure_partitions((now() AT TIME ZONE 'UTC')::date - 1,
                                                    (now() AT TIME ZONE 'UTC')::date + $1::int)",
                &[&i32::try_from(ahead).unwrap_or(i32::MAX)],
            )
            .await?
            .get(0);
        tx.commit().await?;
        Ok(made)
    }

    /// Retires every day that ended before `cutoff`: its partitions of events, logs and
    /// attempts are detached (CONCURRENTLY: no lock that would stop the pipeline), then their
    /// storage released a piece at a time, without a row deleted. A day that still holds a
    /// log under way is kept whole, checked before the detach and again after it (a log
    /// queued again by hand meanwhile), when the day is attached back rather than dropped.
    ///
    /// Each piece is one index or one table dropped in a transaction of its own; `pace` is
    /// awaited after each with the bytes it freed, and answers whether to go on. Freeing a
    /// file stalls every fsync on its volume for a time that grows with its size where the
    /// filesystem discards freed blocks at once (ext4's `discard`), and the database's
    /// commits and the broker's confirms wait on those fsyncs: pieces with room between them
    /// spread that stall out instead of taking one long one. A release left unfinished
    /// (stopped, or its process gone) is finished by the next pass.
    ///
    /// Each day is told to `report` as soon as its fate is sealed, so that a pass that fails
    /// later (the database gone half-way) still has it counted; the next pass finishes that
    /// day's release without counting it again.
    pub async fn retire_partitions<F, Fut>(
        &self,
        cutoff: DateTime<Utc>,
        mut pace: F,
        mut report: impl FnMut(Retired),
    ) -> Result<(), StoreError>
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = bool>,
    {
        let client = self.client().await?;
        // One process at a time; the others leave it to the one at it. The lock is the
        // session's (a detach CONCURRENTLY cannot run in a transaction), released below
        // however the work ends.
        let mine: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended('hookrelay.partitions', 1))",
                &[],
            )
            .await?
            .get(0);
        if !mine {
            return Ok(());
        }
        let result = retire_days(&client, cutoff, &mut pace, &mut report).await;
        client
            .execute(
                "SELECT pg_advisory_unlock(hashtextextended('hookrelay.partitions', 1))",
                &[],
            )
            .await?;
        result
    }

    /// Forgets up to `batch` dedupe keys of events received before `cutoff`; answers how
    /// many. An event id seen again after that is a new event.
    pub async fn forget_event_keys(
        &self,
        cutoff: DateTime<Utc>,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "DELETE FROM event_keys WHERE (account_id, event_id) IN (
                    SELECT account_id, event_id FROM event_keys WHERE received_at < $1
                    LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&cutoff, &batch],
            )
            .await?)
    }

    /// Moves up to `batch` logs of release 8 (the newest first, with their attempts and
    /// events) into the partitioned tables, in one short transaction; those created before
    /// `retention_cutoff` are dropped instead, their time being over. Their dedupe keys are
    /// kept when received after `dedupe_cutoff`. Answers how many logs it took (0: none is
    /// left).
    pub async fn move_legacy_logs(
        &self,
        batch: i64,
        retention_cutoff: DateTime<Utc>,
        dedupe_cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let dropped = tx
            .execute(
                "DELETE FROM webhook_logs_v8 WHERE id IN (
                    SELECT id FROM webhook_logs_v8 WHERE created_at < $1
                    ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&retention_cutoff, &batch],
            )
            .await?;
        if dropped > 0 {
            tx.commit().await?;
            return Ok(dropped);
        }
        // The days this batch reaches have their partitions first.
        let span = tx
            .query_one(
                "SELECT (min(created_at) AT TIME ZONE 'UTC')::date - 1,
                        (max(created_at) AT TIME ZONE 'UTC')::date + 1
                 FROM (SELECT created_at FROM webhook_logs_v8
                       ORDER BY created_at DESC LIMIT $1) b",
                &[&batch],
            )
            .await?;
        let (first, last): (Option<NaiveDate>, Option<NaiveDate>) = (span.get(0), span.get(1));
        let (Some(first), Some(last)) = (first, last) else {
            tx.commit().await?;
            return Ok(0);
        };
        tx.execute(
            "SELECT hookrelay_ensure_partitions($1, $2)",
            &[&first, &last],
        )
        .await?;
        // The attempts are read in the statement's snapshot, before the cascade of the
        // logs' deletion removes them.
        let moved: i64 = tx
            .query_one(
                "WITH moved AS (
                    DELETE FROM webhook_logs_v8 WHERE id IN (
                        SELECT id FROM webhook_logs_v8
                        ORDER BY created_at DESC LIMIT $1 FOR UPDATE SKIP LOCKED)
                    RETURNING *, COALESCE(hookrelay_uuid_time(id), created_at) AS log_at),
                 ev AS (
                    INSERT INTO events (account_id, id, event_type, body, occurred_at,
                                        received_at, traceparent)
                    SELECT DISTINCT ON (account_id, created_at, event_id)
                           account_id, event_id, event_type, payload::text, created_at,
                           created_at, traceparent
                    FROM moved ORDER BY account_id, created_at, event_id
                    ON CONFLICT DO NOTHING),
                 keys AS (
                    INSERT INTO event_keys (account_id, event_id, received_at)
                    SELECT account_id, event_id, min(created_at) FROM moved
                    WHERE created_at >= $2 GROUP BY account_id, event_id
                    ON CONFLICT DO NOTHING),
                 logs AS (
                    INSERT INTO delivery_logs (id, webhook_id, account_id, event_id, event_type,
                                               event_at, created_at, status, attempts, requeues,
                                               troubled, response_status, response_body, error,
                                               updated_at, next_attempt_at, delivered_at)
                    SELECT id, webhook_id, account_id, event_id, event_type, created_at, log_at,
                           status, attempts, requeues, status IN ('retrying', 'failed'),
                           response_status, response_body, error, updated_at, next_attempt_at,
                           delivered_at
                    FROM moved),
                 attempts AS (
                    INSERT INTO delivery_attempts (id, log_id, log_created_at, webhook_id,
                                                   attempt, started_at, duration_ms,
                                                   response_status, response_body, error)
                    SELECT a.id, a.log_id, m.log_at, m.webhook_id, a.attempt, a.started_at,
                           a.duration_ms, a.response_status, a.response_body, a.error
                    FROM webhook_attempts_v8 a JOIN moved m ON m.id = a.log_id)
                 SELECT count(*) FROM moved",
                &[&batch, &dedupe_cutoff],
            )
            .await?
            .get(0);
        tx.commit().await?;
        Ok(u64::try_from(moved).unwrap_or(0))
    }
}

/// The work of [`Store::retire_partitions`], on the connection that holds its lock.
async fn retire_days<F, Fut>(
    client: &deadpool_postgres::Object,
    cutoff: DateTime<Utc>,
    pace: &mut F,
    report: &mut impl FnMut(Retired),
) -> Result<(), StoreError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = bool>,
{
    // A pass stopped between a detach and the end of its release left a table that is
    // no partition any more: its day is over, so it goes now (a log table still holding
    // unfinished logs is attached back).
    let orphans = client
        .query(
            "SELECT relname::text FROM pg_class
             WHERE relkind = 'r' AND NOT relispartition
               AND relname ~ '^(events|delivery_logs|delivery_attempts)_p[0-9]{8}$'
             ORDER BY relname",
            &[],
        )
        .await?;
    for row in orphans {
        let name: String = row.get(0);
        let Some((table, day)) = name.rsplit_once("_p").and_then(|(table, day)| {
            Some((
                table.to_owned(),
                NaiveDate::parse_from_str(day, "%Y%m%d").ok()?,
            ))
        }) else {
            continue;
        };
        let (low, high) = day_bounds(day);
        if high > cutoff {
            continue;
        }
        let open = table == "delivery_logs" && day_is_open(client, low, high).await?;
        if open {
            attach(client, &table, &name, low, high).await?;
        } else if !release(client, &name, pace).await? {
            return Ok(());
        }
    }
    for day in partition_days(client).await? {
        let (low, high) = day_bounds(day);
        if high > cutoff {
            break;
        }
        if day_is_open(client, low, high).await? {
            report(Retired::KeptOpen(day));
            continue;
        }
        let logs = partition("delivery_logs", day);
        detach(client, "delivery_logs", &logs).await?;
        // A log queued again meanwhile wrote its row of `open_deliveries` in the statement
        // that reopened it, through the parent: once the detach is over, any such
        // statement has committed.
        if day_is_open(client, low, high).await? {
            attach(client, "delivery_logs", &logs, low, high).await?;
            report(Retired::KeptOpen(day));
            continue;
        }
        let mut detached = vec![logs];
        for table in ["events", "delivery_attempts"] {
            let name = partition(table, day);
            let exists: bool = client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
                .await?
                .get(0);
            if exists {
                detach(client, table, &name).await?;
                detached.push(name);
            }
        }
        // Out of every query now; what is left is giving its storage back.
        report(Retired::Dropped(day));
        for name in detached {
            if !release(client, &name, pace).await? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The days that have partitions, oldest first.
async fn partition_days(client: &deadpool_postgres::Object) -> Result<Vec<NaiveDate>, StoreError> {
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'delivery_logs'::regclass
             ORDER BY c.relname",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name: &str = r.get(0);
            NaiveDate::parse_from_str(name.strip_prefix("delivery_logs_p")?, "%Y%m%d").ok()
        })
        .collect())
}

/// A UTC day's bounds.
fn day_bounds(day: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let low = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    (low, low + chrono::Duration::days(1))
}

/// Drops the detached `table` a piece at a time: each of its indexes, then the table itself
/// (with its TOAST), each in a transaction of its own, `pace` awaited after each with the
/// bytes it freed. Answers false when `pace` stopped it before the end.
async fn release<F, Fut>(
    client: &deadpool_postgres::Object,
    table: &str,
    pace: &mut F,
) -> Result<bool, StoreError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = bool>,
{
    // An index behind a constraint (a primary key) goes with its constraint.
    let indexes = client
        .query(
            "SELECT quote_ident(i.relname), quote_ident(c.conname),
                    pg_relation_size(i.oid)
             FROM pg_index x
             JOIN pg_class i ON i.oid = x.indexrelid
             LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid
             WHERE x.indrelid = to_regclass($1)
             ORDER BY pg_relation_size(i.oid)",
            &[&table],
        )
        .await?;
    for index in indexes {
        let (name, constraint, bytes): (String, Option<String>, i64) =
            (index.get(0), index.get(1), index.get(2));
        let statement = match constraint {
            Some(constraint) => format!("ALTER TABLE {table} DROP CONSTRAINT {constraint}"),
            None => format!("DROP INDEX {name}"),
        };
        client.batch_execute(&statement).await?;
        if !pace(u64::try_from(bytes).unwrap_or(0)).await {
            return Ok(false);
        }
    }
    let bytes: Option<i64> = client
        .query_one("SELECT pg_total_relation_size(to_regclass($1))", &[&table])
        .await?
        .get(0);
    client
        .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
        .await?;
    Ok(pace(bytes.and_then(|b| u64::try_from(b).ok()).unwrap_or(0)).await)
}

/// Whether a log of the day `[low, high)` is still under way: every log that is has its row
/// in `open_deliveries`, written by the statement that opened it.
async fn day_is_open(
    client: &deadpool_postgres::Object,
    low: DateTime<Utc>,
    high: DateTime<Utc>,
) -> Result<bool, StoreError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM open_deliveries
                            WHERE created_at >= $1 AND created_at < $2)",
            &[&low, &high],
        )
        .await?
        .get(0))
}

/// Attaches `child` back to `parent` as the partition of `[low, high)`: its bound constraint
/// spares the scan.
async fn attach(
    client: &deadpool_postgres::Object,
    parent: &str,
    child: &str,
    low: DateTime<Utc>,
    high: DateTime<Utc>,
) -> Result<(), StoreError> {
    Ok(client
        .batch_execute(&format!(
            "ALTER TABLE {parent} ATTACH PARTITION {child} FOR VALUES FROM ('{}') TO ('{}')",
            low.to_rfc3339(),
            high.to_rfc3339()
        ))
        .await?)
}

/// Detaches `child` from `parent` without blocking the pipeline; finishes a detach that an
/// earlier pass began and did not end (its process stopped in between).
async fn detach(
    client: &deadpool_postgres::Object,
    parent: &str,
    child: &str,
) -> Result<(), StoreError> {
    match client
        .batch_execute(&format!(
            "ALTER TABLE {parent} DETACH PARTITION {child} CONCURRENTLY"
        ))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE) => Ok(client
            .batch_execute(&format!(
                "ALTER TABLE {parent} DETACH PARTITION {child} FINALIZE"
            ))
            .await?),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_named_by_utc_day() {
        let day = NaiveDate::from_ymd_opt(2026, 3, 9).unwrap();
        assert_eq!(partition("delivery_logs", day), "delivery_logs_p20260309");
        let (low, high) = day_bounds(day);
        assert_eq!(low.to_rfc3339(), "2026-03-09T00:00:00+00:00");
        assert_eq!(high - low, chrono::Duration::days(1));
    }
}
