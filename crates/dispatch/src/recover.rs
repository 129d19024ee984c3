//! Queueing deliveries again by hand: one log (`POST /v1/logs/{id}/retry`), or every failed
//! log of a window (`…/recover`, `POST /v1/logs/retry`); and by itself, every unfinished log
//! of a webhook whose queue the broker lost (found by `crate::queues`).
//!
//! A queued-again delivery carries the log's new `requeues` count: it gets one attempt, keeps
//! its `webhook-id`, and its log goes `pending` → `succeeded` | `failed`. A delivery of the
//! log still on its way from before (a retry waiting in the broker) is now stale, and is acked
//! without being sent when it comes (`hookrelay_core::is_current`): retrying a `retrying` log
//! by hand sends it now instead of later, not twice. The bulk form runs as a background job
//! that takes the logs in batches of at most [`BATCH`], at most `requeue_rate` logs a second
//! for every job of the deployment together (a budget in the database that every process's
//! jobs draw on), so that ten thousand of them reach the broker as a trickle and each
//! webhook's queue, whose consumer already caps the requests to its endpoint, never sees a
//! flood. A job claims its logs when it is asked for: its answer counts what it will queue,
//! and a second call over the same logs claims none of them. A log is taken in a locked batch
//! and marked `pending` only once its delivery is confirmed by the broker: two jobs never
//! send a log twice, and a job stopped half-way (shutdown, crash) leaves the rest `failed`,
//! ready for the next call once its claims lapse.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookrelay_broker::{Broker, PublishError};
use hookrelay_core::{DeliveryTask, DeliveryV1};
use hookrelay_metrics::{Metrics, Task};
use hookrelay_store::{InLine, LogToRequeue, Replay, RequeueFilter};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use uuid::Uuid;

use crate::lost::{LostCheck, QuietBook};
use crate::messages;
use crate::publish::{Declare, PipelinePublisher, Routing};
use crate::RequestError;

/// Logs taken per batch at most.
pub const BATCH: i64 = 100;

#[derive(Clone)]
pub struct Recovery {
    inner: Arc<Parts>,
}

/// What recovery works with.
pub struct Parts {
    pub routing: Arc<Routing>,
    pub broker: Broker,
    pub metrics: Metrics,
    /// Logs a second, per job.
    pub rate: u32,
    /// Jobs stop between two batches when it is cancelled, and the tracker waits for them.
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    /// How deliveries the broker dropped are looked for.
    pub lost: LostCheck,
    /// The webhooks the check leaves alone for now.
    pub quiet: QuietBook,
}

impl Recovery {
    /// Ready to queue deliveries again, and from now on refilling every webhook queue the
    /// registry finds lost and queueing again the deliveries the broker dropped.
    pub fn start(parts: Parts) -> Self {
        let recovery = Self {
            inner: Arc::new(Parts {
                rate: parts.rate.max(1),
                ..parts
            }),
        };
        let refills = recovery.clone();
        let inner = &recovery.inner;
        crate::spawn_watched(
            &inner.tracker,
            &inner.metrics,
            Task::QueueRefill,
            async move { refills.refill_lost_queues().await },
        );
        recovery
    }

    /// Queues one more attempt of log `id`, whatever its status, at once. `Ok(false)` when no
    /// such log is visible to `account`.
    pub async fn retry_log(&self, id: Uuid, account: Option<String>) -> Result<bool, RequestError> {
        let filter = RequeueFilter {
            log_id: Some(id),
            account_id: account,
            ..RequeueFilter::default()
        };
        let inner = &self.inner;
        let mut publisher = inner.open_publisher().await?;
        let open = &mut publisher;
        let mut dropped = HashSet::new();
        let gone = &mut dropped;
        let taken = inner
            .routing
            .store
            .requeue_logs(&filter, 1, |logs| async move {
                if logs
                    .iter()
                    .any(|log| inner.routing.subscriptions.get(log.webhook_id).is_none())
                {
                    return Err(RequestError::WebhookGone);
                }
                inner.publish(open, &logs, gone).await
            })
            .await;
        publisher.end_dropped(&dropped).await;
        publisher.close().await;
        let taken = taken??;
        if taken > 0 {
            inner.metrics.deliveries_requeued(taken);
            info!(log_id = %id, "delivery queued again by hand");
        }
        Ok(taken > 0)
    }

    /// Starts queueing again the `failed` logs that `filter` selects, paced, in the
    /// background; answers how many there are now.
    pub async fn requeue(&self, filter: RequeueFilter) -> Result<i64, RequestError> {
        self.start_job(RequeueFilter {
            only_failed: true,
            ..filter
        })
        .await
    }

    /// Starts delivering to one webhook, paced like a bulk retry, the stored events `replay`
    /// selects that it has not received; answers how many. Their logs are written and
    /// claimed now, so a second call finds them received and sends none of them again.
    pub async fn replay(&self, replay: Replay) -> Result<i64, RequestError> {
        if !self.inner.broker.is_connected() {
            return Err(RequestError::BrokerDown);
        }
        let store = &self.inner.routing.store;
        let job = Uuid::now_v7();
        let count = store.claim_replay(job, &replay).await?;
        if count == 0 {
            return Ok(0);
        }
        let filter = RequeueFilter {
            webhook_id: Some(replay.webhook_id),
            webhook_exists: true,
            // After the claim: the logs it wrote are older than this.
            changed_before: Some(store.now().await?),
            claimed_by: Some(job),
            ..RequeueFilter::default()
        };
        let inner = self.inner.clone();
        self.inner
            .tracker
            .spawn(async move { inner.run_job(job, filter, count).await });
        Ok(count)
    }

    pub(crate) fn parts(&self) -> &Parts {
        &self.inner
    }

    /// Refills every webhook queue the registry finds lost, and checks for deliveries the
    /// broker dropped, until shutdown.
    async fn refill_lost_queues(&self) {
        let inner = &self.inner;
        let refills = async {
            loop {
                let id = tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    id = inner.routing.queues.next_lost() => id,
                };
                self.refill(id).await;
            }
        };
        let checks = async {
            loop {
                let early = tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(inner.lost.every) => false,
                    _ = inner.routing.queues.dropped_maybe() => true,
                };
                if early {
                    crate::lost::forget_quiet(&inner.quiet);
                    // The deliveries queued just before the drop are not yet old enough.
                    tokio::select! {
                        _ = inner.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(inner.lost.idle) => {}
                    }
                }
                if let Err(e) = self.check_lost(inner.lost).await {
                    warn!(error = %crate::error_chain(&e), "cannot check for deliveries the broker dropped; checking again later");
                }
            }
        };
        tokio::join!(refills, checks);
    }

    /// Webhook `id`'s queue, declared before, was found missing and declared again: the
    /// broker lost it (a node lost with its disk, the queue deleted by hand) and the
    /// deliveries in it, while their logs still say `pending` or `retrying`. Queues every such
    /// log of the webhook again, in the background, paced like any job. A copy that was not
    /// lost (a retry waiting in a delay tier) is now stale, and is acked without being sent
    /// when it comes.
    async fn refill(&self, id: Uuid) {
        if self.is_fifo(id) {
            // Its line is in its logs: one doorbell brings it all back, in order.
            if let Err(e) = self.ring(id).await {
                warn!(webhook_id = %id, error = %crate::error_chain(&e), "a FIFO webhook's queue was missing and cannot be rung now; the lost-delivery check will");
            }
            return;
        }
        let unfinished = RequeueFilter {
            webhook_id: Some(id),
            only_unfinished: true,
            ..RequeueFilter::default()
        };
        match self.start_job(unfinished).await {
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
    }

    /// Whether webhook `id` is FIFO (its deliveries are its line in the database, and its
    /// queue only rings it: `crate::deliver`).
    pub(crate) fn is_fifo(&self, id: Uuid) -> bool {
        self.inner
            .routing
            .subscriptions
            .get(id)
            .is_some_and(|w| w.ordering.is_fifo())
    }

    /// Rings FIFO webhook `id`'s line: one message into its queue, which wakes its consumer
    /// to send what its line holds. The message is its first delivery's next attempt, so
    /// that it is a valid delivery should the webhook be unordered by the time it comes.
    /// Answers whether the line held anything.
    pub(crate) async fn ring(&self, id: Uuid) -> Result<bool, RequestError> {
        let inner = &self.inner;
        let Some(head) = inner.routing.store.line(id, 1).await?.into_iter().next() else {
            return Ok(false);
        };
        let task = DeliveryTask::V1(line_task(&head));
        let message = messages::delivery(&inner.routing.topology, &task)?;
        let mut publisher = inner.open_publisher().await?;
        let (published, gone) = publisher.publish_leaving_dropped(&[message]).await;
        publisher.end_dropped(&gone).await;
        publisher.close().await;
        published?;
        Ok(true)
    }

    /// Ends the first delivery of FIFO webhook `id`'s line, `failed`, and rings the line so
    /// that the next goes; answers the log ended, `None` when the line was empty.
    pub async fn skip(
        &self,
        id: Uuid,
        account: Option<&str>,
    ) -> Result<Option<Uuid>, RequestError> {
        let skipped = self
            .inner
            .routing
            .store
            .skip_head(id, account, "skipped by hand (POST /v1/webhooks/{id}/skip)")
            .await?;
        if let Some(log_id) = skipped {
            info!(webhook_id = %id, %log_id, "a FIFO webhook's first delivery skipped by hand");
            self.ring(id).await?;
        }
        Ok(skipped)
    }

    /// Starts a job that queues again the logs `filter` selects, among those of webhooks that
    /// still exist and that nothing changed since now (or since the filter's
    /// `changed_before`); answers how many there are.
    pub(crate) async fn start_job(&self, filter: RequeueFilter) -> Result<i64, RequestError> {
        if !self.inner.broker.is_connected() {
            return Err(RequestError::BrokerDown);
        }
        let store = &self.inner.routing.store;
        let changed_before = match filter.changed_before {
            Some(before) => before,
            // The database's clock, as the rows' `updated_at` is.
            None => store.now().await?,
        };
        let filter = RequeueFilter {
            webhook_exists: true,
            changed_before: Some(changed_before),
            ..filter
        };
        // The logs are claimed now, so that the answer counts what this call will queue, and
        // a second call over the same logs counts (and queues) none of them again.
        let job = Uuid::now_v7();
        let count = store.claim_requeue(job, &filter).await?;
        if count == 0 {
            return Ok(0);
        }
        let filter = RequeueFilter {
            claimed_by: Some(job),
            ..filter
        };
        let inner = self.inner.clone();
        self.inner
            .tracker
            .spawn(async move { inner.run_job(job, filter, count).await });
        Ok(count)
    }
}

impl Parts {
    async fn open_publisher(&self) -> Result<PipelinePublisher, RequestError> {
        let connection = self.broker.connection().ok_or(RequestError::BrokerDown)?;
        PipelinePublisher::open(&self.routing, &connection, Declare::Nothing)
            .await
            .map_err(|e| RequestError::Publish(PublishError::from(e)))
    }

    /// Publishes a delivery for each log and answers the ids of those queued; the webhooks
    /// found deleted meanwhile go to `dropped`, whose logs the caller ends once it holds no
    /// lock on them.
    async fn publish(
        &self,
        publisher: &mut PipelinePublisher,
        logs: &[LogToRequeue],
        dropped: &mut HashSet<Uuid>,
    ) -> Result<Vec<Uuid>, RequestError> {
        let topology = &self.routing.topology;
        let messages = logs
            .iter()
            .map(|log| messages::delivery(topology, &task_of(log)))
            .collect::<Result<Vec<_>, _>>()?;
        let (published, gone) = publisher.publish_leaving_dropped(&messages).await;
        dropped.extend(gone.iter().copied());
        published?;
        Ok(logs
            .iter()
            .filter(|log| !gone.contains(&log.webhook_id))
            .map(|log| log.id)
            .collect())
    }

    /// Queues the logs job `job` claimed, drawing on the deployment's budget: `rate` logs a
    /// second for every job of every process together.
    async fn run_job(&self, job: Uuid, filter: RequeueFilter, expected: i64) {
        info!(
            logs = expected,
            rate = self.rate,
            ?filter,
            "queueing deliveries again"
        );
        let started = Instant::now();
        let batch = BATCH.min(i64::from(self.rate));
        let mut done = 0usize;
        let mut publisher: Option<PipelinePublisher> = None;
        let mut failures = 0u32;
        loop {
            if self.shutdown.is_cancelled() {
                warn!(
                    done,
                    "stopping with deliveries left to queue again; call again to finish"
                );
                break;
            }
            let mut dropped = HashSet::new();
            let result = async {
                let store = &self.routing.store;
                let (granted, wait) = store
                    .take_requeue_budget(job, batch as u32, self.rate)
                    .await?;
                if granted == 0 {
                    return Ok(Step::Wait(wait));
                }
                if publisher.is_none() {
                    publisher = Some(self.open_publisher().await?);
                }
                let Some(open) = publisher.as_mut() else {
                    return Err(RequestError::BrokerDown);
                };
                let gone = &mut dropped;
                let taken = store
                    .requeue_logs(&filter, i64::from(granted), |logs| async move {
                        self.publish(open, &logs, gone).await
                    })
                    .await??;
                Ok(Step::Took(taken))
            }
            .await;
            if let Some(open) = &publisher {
                open.end_dropped(&dropped).await;
            }
            match result {
                Ok(Step::Wait(until_one)) => {
                    failures = 0;
                    // Other jobs wait for the same tokens: each waits a random share of a
                    // batch's refill beyond the first token, so that they take turns rather
                    // than all knock at once.
                    let batch_refill = batch as f64 / f64::from(self.rate);
                    let spread = Duration::from_secs_f64(batch_refill * rand::random::<f64>());
                    self.pause(until_one + spread).await;
                }
                Ok(Step::Took(0)) => break,
                Ok(Step::Took(taken)) => {
                    failures = 0;
                    done += taken;
                    self.metrics.deliveries_requeued(taken);
                }
                Err(e) => {
                    failures += 1;
                    if let Some(broken) = publisher.take() {
                        broken.close().await;
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
        // Claims left (logs changed meanwhile, or the job stopped) are let go; should that
        // fail, they are free once the job stops beating.
        if let Err(e) = self.routing.store.end_requeue_job(job).await {
            warn!(error = %crate::error_chain(&e), "cannot end a requeue job's claims; they go once it stops beating");
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

/// What one turn of a requeue job did.
enum Step {
    /// The deployment's budget is spent: a token comes after this long.
    Wait(Duration),
    /// It queued this many logs (0: none left).
    Took(usize),
}

/// The next attempt of a delivery in a FIFO webhook's line: as it stands, not queued again.
pub(crate) fn line_task(entry: &InLine) -> DeliveryV1 {
    let log = &entry.log;
    DeliveryV1 {
        log_id: log.id,
        webhook_id: log.webhook_id,
        event_id: log.event_id.clone(),
        event_type: log.event_type.clone(),
        attempt: log.attempts.saturating_add(1),
        received_at: entry.received_at,
        payload: log.payload.clone(),
        requeue: log.requeues,
        traceparent: log.traceparent.clone(),
    }
}

/// The delivery of a log queued again: the same body and `webhook-id`, one attempt more.
fn task_of(log: &LogToRequeue) -> DeliveryTask {
    DeliveryTask::V1(DeliveryV1 {
        log_id: log.id,
        webhook_id: log.webhook_id,
        event_id: log.event_id.clone(),
        event_type: log.event_type.clone(),
        attempt: log.attempts.saturating_add(1),
        received_at: log.created_at,
        payload: log.payload.clone(),
        requeue: log.requeues.saturating_add(1),
        traceparent: log.traceparent.clone(),
    })
}
