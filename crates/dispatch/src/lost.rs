//! Deliveries the broker dropped from a webhook queue that survived. A delivery in its
//! webhook queue is a transient message (`crate::messages::delivery`): its durable record is
//! its log, and a broker node that restarts brings its queues back without them. No message
//! says so, and a queue that kept its deliveries looks the same, so the logs are asked
//! instead, every [`LostCheck::every`] and whenever deliveries may just have been dropped (a
//! connection made again, a consumer ended by the broker, a queue reachable again:
//! `QueueRegistry::maybe_dropped`):
//!
//! 1. Which active webhooks have unfinished logs older than [`LostCheck::idle`]?
//! 2. Which of their queues hold no message ready? A delivery waiting in such a queue would be
//!    counted there, so one of those logs is either lost or in the hands of a consumer.
//! 3. After [`LostCheck::settle`], longer than a delivery stays in a consumer's hands, the
//!    queues still empty are taken again. Their logs that are due (`pending`, or `retrying`
//!    with the retry's time past) and unchanged since before the first look were lost: a
//!    delivery a consumer held has been attempted since, and its log changed.
//!
//! Those logs are queued again by a requeue job, paced like any and claimed so that two
//! processes checking at once queue each log once. A delivery the check took for lost when it
//! was not (held for longer than `settle`) is sent once more: its copy queued again makes the
//! original stale, and the stale one is dropped, or recorded without a follow-up, and counted
//! (`hookrelay_deliveries_stale_total`). A whole queue the broker lost is found sooner, at its
//! declaration (`crate::queues`).
//!
//! A webhook whose queue was empty with nothing lost is left out of the checks for a while,
//! longer each time ([`QUIET_LONGEST`] at most), until deliveries may have been dropped again.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hookrelay_broker::Declarer;
use hookrelay_store::RequeueFilter;
use rand::seq::SliceRandom as _;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::recover::Recovery;
use crate::RequestError;

/// How the check for lost deliveries runs.
#[derive(Debug, Clone, Copy)]
pub struct LostCheck {
    /// How often.
    pub every: Duration,
    /// How long a log stays unchanged before its delivery may be taken for lost.
    pub idle: Duration,
    /// How long after the first look at a queue the second is.
    pub settle: Duration,
}

/// Webhooks whose queues one check looks at, at most: a look costs a passive declaration.
const WEBHOOKS_PER_CHECK: usize = 1_000;
/// How long a webhook found with an empty queue and nothing lost is left alone at most. Such
/// a webhook is usually one whose deliveries all wait in the delay tiers (a dead endpoint),
/// and looking through its thousands of retries at every check would cost the database more
/// than everything else the check does. Doubled at each such finding from `every`; forgotten
/// when deliveries may have been dropped.
const QUIET_LONGEST: Duration = Duration::from_secs(600);

/// A webhook left out of the checks until `until`.
pub(crate) struct Quiet {
    until: Instant,
    wait: Duration,
}

/// The webhooks left out of the checks for now: at most one entry per webhook with deliveries
/// under way since before the last check.
pub(crate) type QuietBook = Mutex<HashMap<Uuid, Quiet>>;

/// A poisoned book still holds whole entries; at worst a webhook is checked early.
fn lock(book: &QuietBook) -> std::sync::MutexGuard<'_, HashMap<Uuid, Quiet>> {
    book.lock().unwrap_or_else(PoisonError::into_inner)
}

/// After a webhook's check found `lost` logs: one that lost none is left alone for twice as
/// long as the last time (from `every`, to [`QUIET_LONGEST`]); one that lost some is checked
/// as any other next time.
fn quieten(book: &QuietBook, id: Uuid, lost: i64, every: Duration) {
    let mut book = lock(book);
    if lost > 0 {
        book.remove(&id);
        return;
    }
    let wait = book
        .get(&id)
        .map_or(every, |q| (q.wait * 2).min(QUIET_LONGEST));
    book.insert(
        id,
        Quiet {
            until: Instant::now() + wait,
            wait,
        },
    );
}

/// Deliveries may just have been dropped: every webhook is checked again.
pub(crate) fn forget_quiet(book: &QuietBook) {
    lock(book).clear();
}

impl LostCheck {
    /// For requests that take at most `request_timeout`. A delivery a consumer has received
    /// waits for at most the requests of its prefetch ahead of it (twice the per-webhook
    /// limit), each bounded by the timeout, then for its own and its record: two timeouts
    /// and a margin.
    pub fn for_request_timeout(request_timeout: Duration) -> Self {
        let settle = request_timeout.saturating_mul(2) + Duration::from_secs(5);
        Self {
            every: settle.min(Duration::from_secs(15)),
            idle: Duration::from_secs(5),
            settle,
        }
    }
}

impl Recovery {
    /// One check: answers how many deliveries were found lost and are being queued again.
    pub(crate) async fn check_lost(&self, check: LostCheck) -> Result<i64, RequestError> {
        let parts = self.parts();
        let store = &parts.routing.store;
        let first_look: DateTime<Utc> = store.now().await?;
        let idle = chrono::Duration::from_std(check.idle).unwrap_or_default();
        let cutoff = first_look - idle;
        let candidates = store.webhooks_with_open_deliveries(cutoff).await?;
        let subscriptions = &parts.routing.subscriptions;
        let now = Instant::now();
        let mut candidates: Vec<Uuid> = {
            let mut quiet = lock(&parts.quiet);
            // A webhook with nothing old under way any more needs no entry.
            let under_way: HashSet<&Uuid> = candidates.iter().collect();
            quiet.retain(|id, _| under_way.contains(id));
            candidates
                .into_iter()
                // A disabled webhook's deliveries wait for it in its queue, unconsumed; those
                // it lost are found once it is enabled again.
                .filter(|id| subscriptions.get(*id).is_some_and(|w| w.active))
                .filter(|id| quiet.get(id).is_none_or(|q| q.until <= now))
                .collect()
        };
        // More than one check's share: a random one, so that queues with a backlog, which
        // are looked at and left, do not take every check's share.
        candidates.shuffle(&mut rand::rng());
        candidates.truncate(WEBHOOKS_PER_CHECK);
        if candidates.is_empty() {
            return Ok(0);
        }
        let Some(connection) = parts.broker.connection() else {
            return Err(RequestError::BrokerDown);
        };
        let declarer = Declarer::new(connection);
        let empty = self.empty_queues(&declarer, candidates).await;
        let empty = if empty.is_empty() {
            empty
        } else {
            tokio::select! {
                _ = parts.shutdown.cancelled() => HashSet::new(),
                _ = tokio::time::sleep(check.settle) => {
                    self.empty_queues(&declarer, empty.into_iter().collect()).await
                }
            }
        };
        declarer.close().await;
        let mut found = 0;
        for webhook_id in empty {
            if self.is_fifo(webhook_id) {
                // A FIFO webhook's deliveries wait in its line, not in its queue: an empty
                // queue with a first delivery due and untouched means its consumer was not
                // woken (its doorbell dropped), and one doorbell wakes it.
                let stuck = store
                    .line(webhook_id, 1)
                    .await?
                    .first()
                    .is_some_and(|head| head.next_attempt_at.is_none_or(|at| at <= cutoff));
                if stuck && self.ring(webhook_id).await? {
                    debug!(webhook_id = %webhook_id, "rang a FIFO webhook's line, found waiting with nothing in its queue");
                }
                // Never left out of the checks: a look at its line's head is cheap, and a
                // doorbell that came before its delivery was visible (a requeue publishes
                // before it commits) is found at the next check.
                continue;
            }
            let lost = RequeueFilter {
                webhook_id: Some(webhook_id),
                only_unfinished: true,
                changed_before: Some(cutoff),
                due_before: Some(cutoff),
                ..RequeueFilter::default()
            };
            let logs = self.start_job(lost).await?;
            quieten(&parts.quiet, webhook_id, logs, check.every);
            if logs > 0 {
                warn!(
                    webhook_id = %webhook_id,
                    logs,
                    "deliveries missing from their webhook queue (dropped by a broker restart?); queueing them again from their logs"
                );
                parts.metrics.deliveries_lost(logs.unsigned_abs());
                found += logs;
            }
        }
        Ok(found)
    }

    /// Those of `webhooks` whose queue exists and holds no message ready. A queue that cannot
    /// be asked (its node is down) is left for a later check.
    async fn empty_queues(&self, declarer: &Declarer, webhooks: Vec<Uuid>) -> HashSet<Uuid> {
        let topology = &self.parts().routing.topology;
        let mut empty = HashSet::new();
        for id in webhooks {
            match declarer
                .ready(&topology.webhook_queue(&id.to_string()))
                .await
            {
                Ok(0) => {
                    empty.insert(id);
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(webhook_id = %id, error = %e, "cannot count a webhook queue's messages; checking it later")
                }
            }
        }
        empty
    }
}
