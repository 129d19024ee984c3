//! Deliveries the broker dropped from a webhook queue that survived. A delivery in its
//! webhook queue is a transient message (`crate::messages::delivery`): its durable record is
//! its log, and a broker node that restarts brings its queues back without them. No message
//! says so, and a queue that kept its deliveries looks the same, so the logs are asked
//! instead, every [`LostCheck::every`] and whenever deliveries may just have been dropped (a
//! connection made again, a queue reachable again: `QueueRegistry::maybe_dropped`):
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

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookrelay_broker::Declarer;
use hookrelay_store::RequeueFilter;
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
/// The next check takes the next ones (the candidates come in no fixed order).
const WEBHOOKS_PER_CHECK: usize = 1_000;

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
        let candidates = store
            .webhooks_to_requeue(&RequeueFilter {
                only_unfinished: true,
                webhook_exists: true,
                until: Some(cutoff),
                ..RequeueFilter::default()
            })
            .await?;
        let subscriptions = &parts.routing.subscriptions;
        let candidates: Vec<Uuid> = candidates
            .into_iter()
            // A disabled webhook's deliveries wait for it in its queue, unconsumed; those it
            // lost are found once it is enabled again.
            .filter(|id| subscriptions.get(*id).is_some_and(|w| w.active))
            .take(WEBHOOKS_PER_CHECK)
            .collect();
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
            let lost = RequeueFilter {
                webhook_id: Some(webhook_id),
                only_unfinished: true,
                changed_before: Some(cutoff),
                due_before: Some(cutoff),
                ..RequeueFilter::default()
            };
            let logs = self.start_job(lost).await?;
            if logs > 0 {
                warn!(
                    webhook_id = %webhook_id,
                    logs,
                    "deliveries missing from their webhook queue (dropped by a broker restart?); queueing them again from their logs"
                );
                parts.metrics.deliveries_lost(logs);
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
