//! Log retention: finished logs past `log_retention` deleted a small batch at a time, and the
//! backfill of the webhook of attempts written without one.

use chrono::{DateTime, Utc};
use hookrelay_core::LogStatus;

use crate::{Store, StoreError};

impl Store {
    /// Deletes up to `batch` finished logs (`succeeded` or `failed`) created before
    /// `cutoff`, oldest first, with their attempts (the foreign key cascades); answers how
    /// many. Logs still under way stay whatever their age: their deliveries still need them.
    /// One status at a time, each a range of the (status, created_at) index, so that old
    /// logs still pending are never walked over again. Rows another process is deleting are
    /// skipped, not waited for.
    pub async fn delete_old_logs(
        &self,
        cutoff: DateTime<Utc>,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let mut deleted = 0;
        for status in [LogStatus::Succeeded, LogStatus::Failed] {
            let left = batch - deleted as i64;
            if left <= 0 {
                break;
            }
            deleted += client
                .execute(
                    "DELETE FROM webhook_logs WHERE id IN (
                        SELECT id FROM webhook_logs
                        WHERE status = $1 AND created_at < $2
                        ORDER BY created_at
                        LIMIT $3
                        FOR UPDATE SKIP LOCKED)",
                    &[&status.as_str(), &cutoff, &left],
                )
                .await?;
        }
        Ok(deleted)
    }

    /// Gives up to `batch` attempts written without their webhook (before migration V4, or
    /// by an older release during a rollout) the webhook of their log; answers how many.
    pub async fn fill_attempt_webhooks(&self, batch: i64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE webhook_attempts a SET webhook_id = l.webhook_id
                 FROM webhook_logs l
                 WHERE a.id IN (SELECT id FROM webhook_attempts WHERE webhook_id IS NULL
                                LIMIT $1 FOR UPDATE SKIP LOCKED)
                   AND l.id = a.log_id",
                &[&batch],
            )
            .await?)
    }
}
