//! `webhook_health`: the saved endpoint health of each webhook that has failed lately. The
//! delivery worker of a webhook owns its health in memory and saves it here when it changes
//! state (a run of failures begins, the breaker opens, it recovers), so that the API can show
//! it and a restarted service carries on where the last one stopped.
//!
//! A health belongs to one version of its webhook (its `updated_at`): a row saved for an older
//! version, by a worker that had not yet seen a change, is never read back.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{count, to_int, HealthRow, Store, StoreError};

impl Store {
    /// Saves the health of version `version` of a webhook; a healthy one has no row. Nothing
    /// is saved for a webhook changed or deleted meanwhile.
    pub async fn save_health(
        &self,
        webhook_id: Uuid,
        version: DateTime<Utc>,
        health: &HealthRow,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        if *health == HealthRow::default() {
            client
                .execute(
                    "DELETE FROM webhook_health WHERE webhook_id = $1 AND webhook_version <= $2",
                    &[&webhook_id, &version],
                )
                .await?;
            return Ok(());
        }
        client
            .execute(
                "INSERT INTO webhook_health
                    (webhook_id, failing_since, consecutive_failures, trips, paused_until,
                     webhook_version)
                 SELECT $1, $2, $3, $4, $5, $6
                 WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = $1 AND updated_at = $6)
                 ON CONFLICT (webhook_id) DO UPDATE SET
                    webhook_version = EXCLUDED.webhook_version,
                    failing_since = EXCLUDED.failing_since,
                    consecutive_failures = EXCLUDED.consecutive_failures,
                    trips = EXCLUDED.trips,
                    paused_until = EXCLUDED.paused_until,
                    updated_at = now()",
                &[
                    &webhook_id,
                    &health.failing_since,
                    &to_int(health.consecutive_failures),
                    &to_int(health.trips),
                    &health.paused_until,
                    &version,
                ],
            )
            .await?;
        Ok(())
    }

    /// Every saved health of a webhook's current version, with that version, for the
    /// delivery workers starting up.
    pub async fn load_health(
        &self,
    ) -> Result<HashMap<Uuid, (DateTime<Utc>, HealthRow)>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(CURRENT_HEALTH, &[]).await?;
        Ok(rows.iter().map(health_entry).collect())
    }
}

impl Store {
    /// The saved health of the current version of each of `webhook_ids` that has one: read
    /// by workers that become their queues' active consumer, since another process may have
    /// been running the endpoints' breakers until now.
    pub async fn load_health_of(
        &self,
        webhook_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, (DateTime<Utc>, HealthRow)>, StoreError> {
        let client = self.client().await?;
        let sql = format!("{CURRENT_HEALTH} WHERE h.webhook_id = ANY($1)");
        let rows = client.query(&sql, &[&webhook_ids]).await?;
        Ok(rows.iter().map(health_entry).collect())
    }
}

/// The saved health of webhooks' current versions (a row saved for an older version, by a
/// worker that had not yet seen a change, is never read back), as [`health_entry`] reads it.
const CURRENT_HEALTH: &str = "SELECT h.webhook_id, h.failing_since, h.consecutive_failures,
        h.trips, h.paused_until, h.webhook_version
    FROM webhook_health h
    JOIN webhooks w ON w.id = h.webhook_id AND w.updated_at = h.webhook_version";

/// A row of `webhook_id, failing_since, consecutive_failures, trips, paused_until,
/// webhook_version`.
fn health_entry(r: &tokio_postgres::Row) -> (Uuid, (DateTime<Utc>, HealthRow)) {
    (
        r.get(0),
        (
            r.get(5),
            HealthRow {
                failing_since: r.get(1),
                consecutive_failures: count(r.get(2)),
                trips: count(r.get(3)),
                paused_until: r.get(4),
            },
        ),
    )
}
