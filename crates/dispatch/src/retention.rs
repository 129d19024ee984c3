//! Log retention: finished logs older than `log_retention` are deleted with their attempts,
//! a small batch at a time, so that no statement holds many row locks or runs long beside
//! the pipeline's own writes. The same job fills in, as small, the webhook of attempts
//! written without one, and forgets the requeue jobs of processes that went away.

use std::time::Duration;

use hookrelay_metrics::Metrics;
use hookrelay_store::Store;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Logs per DELETE: a few milliseconds of work, its locks released at once.
const BATCH: i64 = 500;
/// Between two batches, room for the pipeline's own statements.
const PAUSE: Duration = Duration::from_millis(20);
/// How often a pass starts.
const EVERY: Duration = Duration::from_secs(60);

pub async fn run(store: Store, metrics: Metrics, retention: Duration, shutdown: CancellationToken) {
    loop {
        match pass(&store, &metrics, retention, &shutdown).await {
            Ok(0) => {}
            Ok(deleted) => info!(deleted, "old logs deleted"),
            Err(e) => {
                warn!(error = %crate::error_chain(&e), "log retention pass failed; trying again later")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// One pass: batches until none is full. Answers the logs deleted.
async fn pass(
    store: &Store,
    metrics: &Metrics,
    retention: Duration,
    shutdown: &CancellationToken,
) -> Result<u64, hookrelay_store::StoreError> {
    // Requeue jobs whose process went away without ending them hold claims nobody needs.
    let dead = store.forget_dead_requeue_jobs().await?;
    if dead > 0 {
        info!(jobs = dead, "requeue jobs of stopped processes forgotten");
    }
    // The database's clock stamped the logs.
    let cutoff =
        store.now().await? - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let mut total = 0;
    loop {
        let deleted = store.delete_old_logs(cutoff, BATCH).await?;
        metrics.logs_deleted(deleted);
        total += deleted;
        if deleted < BATCH as u64 || shutdown.is_cancelled() {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    // The same small steps fill in the webhook of attempts written before migration V4 (or
    // by an older release during a rollout), which the statistics read by webhook.
    loop {
        let filled = store.fill_attempt_webhooks(BATCH).await?;
        if filled < BATCH as u64 || shutdown.is_cancelled() {
            return Ok(total);
        }
        tokio::time::sleep(PAUSE).await;
    }
}
