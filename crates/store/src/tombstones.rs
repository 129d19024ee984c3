//! `webhook_tombstones`: webhooks deleted whose queue and open logs may still need cleaning
//! up. The row is written by a trigger in the deleting transaction (migration V5), so that a
//! webhook deleted while no process ran, or by SQL, is still cleaned up.

use uuid::Uuid;

use crate::{Store, StoreError};

impl Store {
    /// Webhooks deleted whose queue and open logs may still need cleaning up, `limit` at
    /// most, in the order of their ids after `after` (a page at a time, so that a pass sees
    /// each once however many there are).
    pub async fn tombstones(
        &self,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Uuid>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT webhook_id FROM webhook_tombstones
                 WHERE $1::uuid IS NULL OR webhook_id > $1
                 ORDER BY webhook_id LIMIT $2",
                &[&after, &limit],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Ends the open logs of deleted webhook `webhook_id`, and removes its tombstone once it
    /// is older than `grace`, in one transaction: called once its queue is gone.
    pub async fn bury(
        &self,
        webhook_id: Uuid,
        grace: std::time::Duration,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            crate::logs::FAIL_OPEN_LOGS,
            &[&webhook_id, &"the webhook was deleted"],
        )
        .await?;
        let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        tx.execute(
            "DELETE FROM webhook_tombstones
             WHERE webhook_id = $1 AND deleted_at < now() - $2::bigint * interval '1 second'",
            &[&webhook_id, &grace],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
