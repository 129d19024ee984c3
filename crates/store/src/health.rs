//! `webhook_health`: the saved endpoint health of each webhook that has failed lately. The
//! delivery worker of a webhook owns its health in memory and saves it here when it changes
//! state (a run of failures begins, the breaker opens, it recovers), so that the API can show
//! it and a restarted service carries on where the last one stopped.

use std::collections::HashMap;

use uuid::Uuid;

use crate::{HealthRow, Store, StoreError};

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl Store {
    /// Saves a webhook's health; a healthy one has no row. A webhook deleted meanwhile is
    /// skipped (the foreign key would refuse it).
    pub async fn save_health(
        &self,
        webhook_id: Uuid,
        health: &HealthRow,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        if *health == HealthRow::default() {
            client
                .execute(
                    "DELETE FROM webhook_health WHERE webhook_id = $1",
                    &[&webhook_id],
                )
                .await?;
            return Ok(());
        }
        client
            .execute(
                "INSERT INTO webhook_health
                    (webhook_id, failing_since, consecutive_failures, trips, paused_until)
                 SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = $1)
                 ON CONFLICT (webhook_id) DO UPDATE SET
                    failing_since = EXCLUDED.failing_since,
                    consecutive_failures = EXCLUDED.consecutive_failures,
                    trips = EXCLUDED.trips,
                    paused_until = EXCLUDED.paused_until,
                    updated_at = now()",
                &[
                    &webhook_id,
                    &health.failing_since,
                    &to_i32(health.consecutive_failures),
                    &to_i32(health.trips),
                    &health.paused_until,
                ],
            )
            .await?;
        Ok(())
    }

    /// Every saved health, for the delivery workers starting up.
    pub async fn load_health(&self) -> Result<HashMap<Uuid, HealthRow>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT webhook_id, failing_since, consecutive_failures, trips, paused_until
                 FROM webhook_health",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let count = |i: usize| u32::try_from(r.get::<_, i32>(i)).unwrap_or(0);
                (
                    r.get(0),
                    HealthRow {
                        failing_since: r.get(1),
                        consecutive_failures: count(2),
                        trips: count(3),
                        paused_until: r.get(4),
                    },
                )
            })
            .collect())
    }
}
