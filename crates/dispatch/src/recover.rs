//! Queueing deliveries again by hand: one log (`POST /v1/logs/{id}/retry`), or every failed
//! log of a window (`…/recover`, `POST /v1/logs/retry`); and by itself, every unfinished log
//! of a webhook whose queue the broker lost ([`Recovery::queue_lost`]), found while running or
//! at start ([`Recovery::remember_unfinished`]).
//!
//! A queued-again delivery carries the log's new `requeues` count: it gets one attempt, keeps
//! its `webhook-id`, and its log goes `pending` → `succeeded` | `failed`. A delivery of the
//! log still on its way from before (a retry waiting in the broker) is now stale, and is acked
//! without being sent when it comes (`hookrelay_core::is_current`): retrying a `retrying` log
//! by hand sends it now instead of later, not twice. The bulk form runs as a background job
//! that takes the logs in batches of at most [`BATCH`], at most `requeue_rate` logs a second,
//! so that ten thousand of them reach the broker as a trickle and each webhook's queue, whose
//! consumer already caps the requests to its endpoint, never sees a flood. A log is taken in a
//! locked batch and marked `pending` only once its delivery is confirmed by the broker: two
//! jobs over the same window never send a log twice, and a job stopped half-way (shutdown,
//! crash) leaves the rest `failed`, ready for the next call.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookrelay_broker::{Broker, Declarer, PublishError, Publisher, Topology};
use hookrelay_core::{ops, DeliveryTask, DeliveryV1};
use hookrelay_metrics::Metrics;
use hookrelay_store::{LogToRequeue, RequeueFilter, Store, StoreError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use uuid::Uuid;

use crate::publish::{self, Routes, WebhookQueues};
use crate::subscriptions::Subscriptions;

/// Logs taken per batch at most.
pub const BATCH: i64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("the broker is not reachable; try again shortly")]
    BrokerDown,
    #[error("the log's webhook was deleted; its deliveries have nowhere to go")]
    WebhookGone,
    #[error("cannot queue the delivery now; try again shortly")]
    Publish(#[from] PublishError),
    #[error("database error")]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Recovery {
    inner: Arc<Parts>,
    /// The webhook queues this process has declared.
    known: Arc<KnownQueues>,
}

/// What recovery works with.
pub struct Parts {
    pub topology: Topology,
    pub subscriptions: Arc<Subscriptions>,
    pub store: Store,
    pub broker: Broker,
    pub metrics: Metrics,
    /// Tags the test events it sends as hookrelay's own.
    pub origin: hookrelay_core::ops::OriginKey,
    /// Logs a second, per job.
    pub rate: u32,
    /// Jobs stop between two batches when it is cancelled, and the tracker waits for them.
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

/// The webhook queues a process has declared, over all its connections and reconnections:
/// one found missing later was lost by the broker. An id per webhook the process serves (16
/// bytes each), until the webhook is deleted and its queue removed.
#[derive(Default)]
struct KnownQueues(std::sync::Mutex<HashSet<Uuid>>);

impl KnownQueues {
    // A poisoned lock still holds a whole set: inserting and looking up cannot leave it
    // half-changed. Reading it as empty would miss every loss.
    fn contains(&self, id: Uuid) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&id)
    }

    fn insert(&self, id: Uuid) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id);
    }

    fn remove(&self, id: Uuid) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }
}

impl Recovery {
    pub fn new(parts: Parts) -> Self {
        Self {
            inner: Arc::new(Parts {
                rate: parts.rate.max(1),
                ..parts
            }),
            known: Arc::default(),
        }
    }

    /// Queues one more attempt of log `id`, whatever its status, at once. `Ok(false)` when no
    /// such log is visible to `account`.
    pub async fn retry_log(&self, id: Uuid, account: Option<String>) -> Result<bool, RecoverError> {
        let filter = RequeueFilter {
            log_id: Some(id),
            account_id: account,
            ..RequeueFilter::default()
        };
        let mut publisher = self.open_publisher().await?;
        let inner = &self.inner;
        let open = &mut publisher;
        let mut queues = WebhookQueues::telling(self.clone());
        let queues = &mut queues;
        let mut dropped = HashSet::new();
        let gone = &mut dropped;
        let taken = inner
            .store
            .requeue_logs(&filter, 1, |logs| async move {
                if logs
                    .iter()
                    .any(|log| inner.subscriptions.get(log.webhook_id).is_none())
                {
                    return Err(RecoverError::WebhookGone);
                }
                Ok(inner.publish(open, queues, &logs, gone).await?)
            })
            .await;
        publisher.close().await;
        inner.end_dropped(&dropped).await;
        let taken = taken??;
        if taken > 0 {
            inner.metrics.deliveries_requeued(taken);
            info!(log_id = %id, "delivery queued again by hand");
        }
        Ok(taken > 0)
    }

    /// Sends `Webhook.test` to webhook `id` alone, through the events exchange and the
    /// fan-out like any event; answers the id its log will have.
    pub async fn send_test(&self, id: Uuid) -> Result<Uuid, RecoverError> {
        let webhook = self
            .inner
            .subscriptions
            .get(id)
            .ok_or(RecoverError::WebhookGone)?;
        let log_id = Uuid::now_v7();
        let event = ops::webhook_test(
            log_id,
            id,
            &webhook.account_id,
            &webhook.url,
            chrono::Utc::now(),
        );
        let message = publish::operational(&self.inner.topology, &self.inner.origin, &event);
        let mut publisher = self.open_publisher().await?;
        let mut queues = WebhookQueues::telling(self.clone());
        let mut routes = Routes::new(&self.inner.topology, &self.inner.subscriptions, &mut queues);
        let sent = publisher.publish_all(&[message], &mut routes).await;
        publisher.close().await;
        sent?;
        info!(webhook_id = %id, %log_id, "test event sent");
        Ok(log_id)
    }

    /// Starts queueing again the `failed` logs that `filter` selects, paced, in the
    /// background; answers how many there are now.
    pub async fn requeue(&self, filter: RequeueFilter) -> Result<i64, RecoverError> {
        self.start_job(RequeueFilter {
            only_failed: true,
            ..filter
        })
        .await
    }

    /// Declares webhook `id`'s queue and binds it (idempotent). One this process has
    /// declared before, on any connection, and now finds missing, the broker lost, with the
    /// deliveries in it: once it is made again, they are queued again from their logs
    /// ([`Recovery::queue_lost`]).
    pub async fn declare_queue(
        &self,
        declarer: &Declarer,
        id: Uuid,
    ) -> Result<(), hookrelay_broker::lapin::Error> {
        let lost = self.check_queue(declarer, id).await? == Some(false);
        self.make_queue(declarer, id, lost).await
    }

    /// As [`Recovery::declare_queue`], for a consumer about to subscribe: a queue this
    /// process has declared and finds there is only checked, which is cheaper than declaring
    /// and binding it again.
    pub async fn ensure_queue(
        &self,
        declarer: &Declarer,
        id: Uuid,
    ) -> Result<(), hookrelay_broker::lapin::Error> {
        match self.check_queue(declarer, id).await? {
            Some(true) => Ok(()),
            checked => self.make_queue(declarer, id, checked == Some(false)).await,
        }
    }

    /// Counts as declared before the queue of every webhook with a delivery not finished:
    /// that queue must exist, so one found missing at its first declaration was lost, even
    /// while no process ran (a broker's disk lost or wiped during a deployment). Run at start,
    /// before anything declares. Answers how many. Checking such a queue costs one passive
    /// declaration; a webhook with nothing unfinished costs nothing.
    pub async fn remember_unfinished(&self) -> Result<usize, StoreError> {
        // Those webhooks' queues, or a delay tier, must hold a delivery for each such log.
        let unfinished = RequeueFilter {
            only_unfinished: true,
            webhook_exists: true,
            ..RequeueFilter::default()
        };
        let ids = self.inner.store.webhooks_to_requeue(&unfinished).await?;
        for &id in &ids {
            self.known.insert(id);
        }
        Ok(ids.len())
    }

    /// The queue of deleted webhook `id` was removed on purpose: not a loss if missing later.
    pub fn forget_queue(&self, id: Uuid) {
        self.known.remove(id);
    }

    /// Whether webhook `id`'s queue exists, for one this process has declared; `None` for
    /// the others, which are not checked.
    async fn check_queue(
        &self,
        declarer: &Declarer,
        id: Uuid,
    ) -> Result<Option<bool>, hookrelay_broker::lapin::Error> {
        if !self.known.contains(id) {
            return Ok(None);
        }
        let queue = self.inner.topology.webhook_queue(&id.to_string());
        match declarer.exists(&queue).await {
            Ok(()) => Ok(Some(true)),
            Err(e) if hookrelay_broker::queue_missing(&e) => Ok(Some(false)),
            Err(e) => Err(e),
        }
    }

    async fn make_queue(
        &self,
        declarer: &Declarer,
        id: Uuid,
        lost: bool,
    ) -> Result<(), hookrelay_broker::lapin::Error> {
        self.inner
            .topology
            .declare_webhook(declarer, &id.to_string())
            .await?;
        self.known.insert(id);
        if lost {
            self.queue_lost(id);
        }
        Ok(())
    }

    /// Webhook `id`'s queue, declared before, was found missing, and declared again: the
    /// broker lost it (a node lost with its disk, the queue deleted by hand) and the
    /// deliveries in it, while their logs still say `pending` or `retrying`. Queues every such
    /// log of the webhook again, in the background, paced like any job. A copy that was not
    /// lost (a retry waiting in a delay tier) is now stale, and is acked without being sent
    /// when it comes.
    fn queue_lost(&self, id: Uuid) {
        self.inner.metrics.webhook_queue_lost();
        let recovery = self.clone();
        self.inner.tracker.spawn(async move {
            let unfinished = RequeueFilter {
                webhook_id: Some(id),
                only_unfinished: true,
                ..RequeueFilter::default()
            };
            match recovery.start_job(unfinished).await {
                Ok(0) => {}
                Ok(logs) => warn!(
                    webhook_id = %id,
                    logs,
                    "a webhook queue was missing (lost by the broker?); queueing its unfinished deliveries again"
                ),
                Err(e) => warn!(
                    webhook_id = %id,
                    error = %crate::error_chain(&e),
                    "a webhook queue was missing (lost by the broker?) and its unfinished deliveries cannot be queued again now; retry them by hand (POST /v1/logs/<log id>/retry)"
                ),
            }
        });
    }

    /// Starts a job that queues again the logs `filter` selects, among those of webhooks that
    /// still exist and that nothing changed since now; answers how many there are.
    async fn start_job(&self, filter: RequeueFilter) -> Result<i64, RecoverError> {
        if !self.inner.broker.is_connected() {
            return Err(RecoverError::BrokerDown);
        }
        let filter = RequeueFilter {
            webhook_exists: true,
            // The database's clock, as the rows' `updated_at` is.
            changed_before: Some(self.inner.store.now().await?),
            ..filter
        };
        let count = self.inner.store.count_requeue(&filter).await?;
        if count > 0 {
            let inner = self.inner.clone();
            // Its queues declared through recovery too: a queue a job finds lost is refilled.
            let queues = WebhookQueues::telling(self.clone());
            self.inner
                .tracker
                .spawn(async move { inner.run_job(filter, count, queues).await });
        }
        Ok(count)
    }

    async fn open_publisher(&self) -> Result<Publisher, RecoverError> {
        let connection = self
            .inner
            .broker
            .connection()
            .ok_or(RecoverError::BrokerDown)?;
        Ok(Publisher::open(&connection)
            .await
            .map_err(PublishError::from)?)
    }
}

impl Parts {
    /// Publishes a delivery for each log and answers the ids of those queued; the webhooks
    /// found deleted meanwhile go to `dropped`, whose logs the caller ends once it holds no
    /// lock on them.
    async fn publish(
        &self,
        publisher: &mut Publisher,
        queues: &mut WebhookQueues,
        logs: &[LogToRequeue],
        dropped: &mut HashSet<Uuid>,
    ) -> Result<Vec<Uuid>, PublishError> {
        let messages: Vec<_> = logs
            .iter()
            .map(|log| publish::delivery(&self.topology, &task_of(log)))
            .collect();
        let mut routes = Routes::new(&self.topology, &self.subscriptions, queues);
        publisher.publish_all(&messages, &mut routes).await?;
        dropped.extend(routes.dropped.iter().copied());
        Ok(logs
            .iter()
            .filter(|log| !routes.dropped.contains(&log.webhook_id))
            .map(|log| log.id)
            .collect())
    }

    async fn end_dropped(&self, dropped: &HashSet<Uuid>) {
        if let Err(e) = publish::end_dropped(&self.store, dropped).await {
            warn!(error = %crate::error_chain(&e), "cannot end the logs of a deleted webhook");
        }
    }

    async fn run_job(&self, filter: RequeueFilter, expected: i64, mut queues: WebhookQueues) {
        info!(
            logs = expected,
            rate = self.rate,
            ?filter,
            "queueing deliveries again"
        );
        let started = Instant::now();
        let batch = BATCH.min(i64::from(self.rate));
        let mut done = 0usize;
        let mut publisher: Option<Publisher> = None;
        let mut failures = 0u32;
        loop {
            if self.shutdown.is_cancelled() {
                warn!(
                    done,
                    "stopping with deliveries left to queue again; call again to finish"
                );
                break;
            }
            let batch_started = Instant::now();
            let mut dropped = HashSet::new();
            let result = async {
                if publisher.is_none() {
                    let connection = self.broker.connection().ok_or(RecoverError::BrokerDown)?;
                    publisher = Some(
                        Publisher::open(&connection)
                            .await
                            .map_err(PublishError::from)?,
                    );
                }
                let Some(open) = publisher.as_mut() else {
                    return Err(RecoverError::BrokerDown);
                };
                let gone = &mut dropped;
                let queues = &mut queues;
                Ok(self
                    .store
                    .requeue_logs(&filter, batch, |logs| async move {
                        self.publish(open, queues, &logs, gone).await
                    })
                    .await??)
            }
            .await;
            self.end_dropped(&dropped).await;
            match result {
                Ok(0) => break,
                Ok(taken) => {
                    failures = 0;
                    done += taken;
                    self.metrics.deliveries_requeued(taken);
                    // At most `rate` a second: each batch takes at least its share of one.
                    let share = Duration::from_secs_f64(taken as f64 / f64::from(self.rate));
                    self.pause(share.saturating_sub(batch_started.elapsed()))
                        .await;
                }
                Err(e) => {
                    failures += 1;
                    if let Some(broken) = publisher.take() {
                        broken.close().await;
                        queues.clear();
                    }
                    let wait = Duration::from_millis(500 * 2u64.pow(failures.min(6)));
                    warn!(error = %crate::error_chain(&e), retry_in = ?wait, "cannot queue deliveries again yet");
                    self.pause(wait).await;
                }
            }
        }
        if let Some(open) = publisher {
            open.close().await;
        }
        info!(
            done,
            seconds = started.elapsed().as_secs_f64(),
            "a job queueing deliveries again ended"
        );
    }

    async fn pause(&self, wait: Duration) {
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The delivery of a log queued again: the same body and `webhook-id`, one attempt more.
fn task_of(log: &LogToRequeue) -> DeliveryTask {
    DeliveryTask::V1(DeliveryV1 {
        log_id: log.id,
        webhook_id: log.webhook_id,
        event_id: log.event_id.clone(),
        event_type: log.event_type.clone(),
        attempt: u32::try_from(log.attempts).unwrap_or(0).saturating_add(1),
        received_at: log.created_at,
        payload: log.payload.clone(),
        requeue: u32::try_from(log.requeues).unwrap_or(0).saturating_add(1),
        traceparent: log.traceparent.clone(),
    })
}
