//! The registry of declared webhook queues: every webhook queue a process declares goes
//! through here, so that one the broker lost (a node lost with its disk, a queue deleted by
//! hand) is told from one that is new. A queue this process has declared before, on any
//! connection, and now finds missing was lost, with the deliveries in it; the registry makes
//! it again and reports it ([`QueueRegistry::next_lost`]), and recovery queues its unfinished
//! deliveries again from their logs.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use hookrelay_broker::{BrokerError, Declarer, Topology};
use hookrelay_metrics::Metrics;
use hookrelay_store::{RequeueFilter, Store, StoreError};
use tokio::sync::Notify;
use uuid::Uuid;

pub struct QueueRegistry {
    topology: Topology,
    metrics: Metrics,
    /// The webhook queues declared, over all connections and reconnections: an id per
    /// webhook the process serves (16 bytes each), until the webhook is deleted.
    declared: Mutex<HashSet<Uuid>>,
    /// Queues found lost and made again, whose deliveries are still to be queued again. A
    /// set, so that it holds each webhook once however often its queue is found missing.
    lost: Mutex<HashSet<Uuid>>,
    found_lost: Notify,
    /// Told when deliveries may just have been dropped (a connection made again, a queue
    /// reachable again after its node was down): the lost-delivery check runs at once.
    maybe_dropped: Notify,
}

/// A poisoned lock still holds a whole set: inserting, removing and looking up cannot leave
/// it half-changed. Reading it as empty would miss every loss.
fn lock(set: &Mutex<HashSet<Uuid>>) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
    set.lock().unwrap_or_else(PoisonError::into_inner)
}

impl QueueRegistry {
    pub fn new(topology: Topology, metrics: Metrics) -> Self {
        Self {
            topology,
            metrics,
            declared: Mutex::default(),
            lost: Mutex::default(),
            found_lost: Notify::new(),
            maybe_dropped: Notify::new(),
        }
    }

    /// Declares webhook `id`'s queue and binds it (idempotent), telling a lost one from a
    /// new one.
    pub async fn declare(&self, declarer: &Declarer, id: Uuid) -> Result<(), BrokerError> {
        let lost = self.check(declarer, id).await? == Some(false);
        self.make(declarer, id, lost).await
    }

    /// As [`QueueRegistry::declare`], for a consumer about to subscribe: a queue this process
    /// has declared and finds there is only checked, which is cheaper than declaring and
    /// binding it again.
    pub async fn ensure(&self, declarer: &Declarer, id: Uuid) -> Result<(), BrokerError> {
        match self.check(declarer, id).await? {
            Some(true) => Ok(()),
            checked => self.make(declarer, id, checked == Some(false)).await,
        }
    }

    /// Counts as declared before the queue of every webhook with a delivery not finished:
    /// that queue must exist, so one found missing at its first declaration was lost, even
    /// while no process ran (a broker's disk lost or wiped during a deployment). Run at start,
    /// before anything declares. Answers how many. Checking such a queue costs one passive
    /// declaration; a webhook with nothing unfinished costs nothing.
    pub async fn remember_unfinished(&self, store: &Store) -> Result<usize, StoreError> {
        // Those webhooks' queues, or a delay tier, must hold a delivery for each such log.
        let unfinished = RequeueFilter {
            only_unfinished: true,
            webhook_exists: true,
            ..RequeueFilter::default()
        };
        let ids = store.webhooks_to_requeue(&unfinished).await?;
        lock(&self.declared).extend(ids.iter().copied());
        Ok(ids.len())
    }

    /// The queue of deleted webhook `id` was removed on purpose: not a loss if missing later.
    pub fn forget(&self, id: Uuid) {
        lock(&self.declared).remove(&id);
    }

    /// Deliveries may just have been dropped by the broker: a node restarted, or this
    /// process could not see. Stores a permit when nobody waits.
    pub fn maybe_dropped(&self) {
        self.maybe_dropped.notify_one();
    }

    /// Until deliveries may have been dropped.
    pub async fn dropped_maybe(&self) {
        self.maybe_dropped.notified().await;
    }

    /// The next webhook whose queue was found lost and made again.
    pub async fn next_lost(&self) -> Uuid {
        loop {
            let next = {
                let mut lost = lock(&self.lost);
                let next = lost.iter().next().copied();
                next.inspect(|id| {
                    lost.remove(id);
                })
            };
            if let Some(id) = next {
                return id;
            }
            self.found_lost.notified().await;
        }
    }

    /// Whether webhook `id`'s queue exists, for one this process has declared; `None` for
    /// the others, which are not checked.
    async fn check(&self, declarer: &Declarer, id: Uuid) -> Result<Option<bool>, BrokerError> {
        if !lock(&self.declared).contains(&id) {
            return Ok(None);
        }
        let queue = self.topology.webhook_queue(&id.to_string());
        match declarer.exists(&queue).await {
            Ok(()) => Ok(Some(true)),
            Err(e) if e.queue_missing() => Ok(Some(false)),
            Err(e) => Err(e),
        }
    }

    async fn make(&self, declarer: &Declarer, id: Uuid, lost: bool) -> Result<(), BrokerError> {
        self.topology
            .declare_webhook(declarer, &id.to_string())
            .await?;
        lock(&self.declared).insert(id);
        if lost {
            self.metrics.webhook_queue_lost();
            lock(&self.lost).insert(id);
            // Stores a permit when nobody waits, so a loss is never missed.
            self.found_lost.notify_one();
        }
        Ok(())
    }
}
