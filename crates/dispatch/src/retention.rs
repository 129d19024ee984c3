//! Storage upkeep, once a minute in every process (each step is safe to run from several at
//! once): daily partitions made a few days ahead, days past `log_retention` retired whole,
//! dedupe keys past `dedupe_window` forgotten, the logs of release 8 moved to the new layout,
//! and the requeue jobs of processes that went away forgotten.

use std::time::Duration;

use hookrelay_metrics::Metrics;
use hookrelay_store::{Retired, Store, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Rows per statement: a few milliseconds of work, its locks released at once.
const BATCH: i64 = 2000;
/// Between two batches, room for the pipeline's own statements.
const PAUSE: Duration = Duration::from_millis(20);
/// How often a pass starts.
const EVERY: Duration = Duration::from_secs(60);
/// Days of partitions made ahead: a pass that fails for days on end still leaves the
/// pipeline somewhere to write.
const DAYS_AHEAD: u32 = 3;
/// Room left after a piece of a retired day's storage is freed, per GiB it held. Freeing
/// stalls every fsync on a volume that discards freed blocks at once, for a time that grows
/// with the bytes (see docs/storage.md); room of a few hundred times that stall keeps the
/// stalled share of the time small enough not to move a delivery p99. A day of a million
/// deliveries (about 1 GiB) takes a quarter of a minute, one of fifty million some ten
/// minutes, in a pass with nothing else to do.
const ROOM_PER_GIB: Duration = Duration::from_secs(12);

/// How long what is stored lives.
#[derive(Debug, Clone, Copy)]
pub struct Periods {
    pub logs: Duration,
    pub dedupe: Duration,
}

pub async fn run(store: Store, metrics: Metrics, periods: Periods, shutdown: CancellationToken) {
    loop {
        if let Err(e) = pass(&store, &metrics, periods, &shutdown).await {
            warn!(error = %crate::error_chain(&e), "storage upkeep failed; trying again later");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// One pass of every step.
pub async fn pass(
    store: &Store,
    metrics: &Metrics,
    periods: Periods,
    shutdown: &CancellationToken,
) -> Result<(), StoreError> {
    let made = store.ensure_partitions(DAYS_AHEAD).await?;
    if made > 0 {
        info!(days = made, "log partitions made ahead");
    }
    // Requeue jobs whose process went away without ending them hold claims nobody needs.
    let dead = store.forget_dead_requeue_jobs().await?;
    if dead > 0 {
        info!(jobs = dead, "requeue jobs of stopped processes forgotten");
    }
    // The database's clock stamped the rows.
    let now = store.now().await?;
    let before = |period: Duration| {
        now - chrono::Duration::from_std(period).unwrap_or(chrono::Duration::MAX)
    };
    let (retention_cutoff, dedupe_cutoff) = (before(periods.logs), before(periods.dedupe));
    let mut moved = 0;
    while !shutdown.is_cancelled() {
        let n = store
            .move_legacy_logs(BATCH, retention_cutoff, dedupe_cutoff)
            .await?;
        moved += n;
        if n == 0 {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    if moved > 0 {
        info!(
            logs = moved,
            "logs of the previous layout moved to the partitioned tables"
        );
    }
    let pace = |bytes: u64| async move {
        let room = ROOM_PER_GIB.mul_f64(bytes as f64 / (1u64 << 30) as f64);
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(room) => true,
        }
    };
    let report = |day| match day {
        Retired::Dropped(day) => {
            metrics.log_partition_dropped();
            info!(%day, "a day of logs retired")
        }
        Retired::KeptOpen(day) => {
            warn!(%day, "a day past log_retention is kept: some of its logs are still under way")
        }
    };
    store
        .retire_partitions(retention_cutoff, pace, report)
        .await?;
    while !shutdown.is_cancelled() {
        let forgotten = store.forget_event_keys(dedupe_cutoff, BATCH).await?;
        if forgotten < BATCH as u64 {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    Ok(())
}
