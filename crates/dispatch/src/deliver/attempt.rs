//! One delivery attempt: POST it, let `hookrelay_core::after_attempt` say what follows,
//! record the attempt, carry the decision out (a retry into the delay tiers, or the
//! `Webhook.delivery.failed` event when the retries are used up), and only then ack.
//!
//! An attempt with nothing to follow (the usual success) is acked as soon as its record is
//! queued for the writer, before the commit: a webhook's prefetch then bounds its requests,
//! not its requests and the records waiting for a commit, so one webhook's speed no longer
//! depends on the database's. Nothing is lost by it: until the commit the log still reads
//! `pending` or `retrying`, and should the process die first, the lost-delivery check
//! (`crate::lost`) finds the log with nothing queued for it and queues it again. Memory stays
//! bounded: an attempt acked early holds one of `Context::unrecorded`'s permits until its
//! record is committed, and when none is left (the database away, its records retried) the
//! attempt is acked after its commit again, so the prefetch holds the rest in the broker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hookrelay_broker::{Delivery, Outgoing};
use hookrelay_core::{
    after_attempt, is_current, AfterAttempt, AttemptFacts, Attempted, DeliveryTask, DeliveryV1,
    FollowUp, LogStatus, Outcome, Report,
};
use hookrelay_store::AttemptRecord;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};
use uuid::Uuid;

use super::gate::RateGate;
use super::outbox::Outbox;
use super::Context;
use crate::batcher::BatchError;
use crate::http::AttemptResult;
use crate::messages;
use crate::subscriptions::WebhookConfig;

/// Why what follows an attempt could not be queued.
#[derive(Debug, thiserror::Error)]
enum FollowUpError {
    #[error("cannot encode the retry")]
    Encode(#[from] serde_json::Error),
    #[error("cannot publish")]
    Publish(#[from] BatchError),
}

/// The request slots of one attempt, given back once its HTTP exchange is over: the
/// webhook's, for a failing endpoint one of the few it may share, its account's, and the
/// process's.
pub type Slots = (
    OwnedSemaphorePermit,
    Option<OwnedSemaphorePermit>,
    OwnedSemaphorePermit,
    OwnedSemaphorePermit,
);

const WRITE_RETRY_FIRST: Duration = Duration::from_millis(500);
const WRITE_RETRY_MAX: Duration = Duration::from_secs(30);

/// How attempts tell their consumer what the endpoint answered, as soon as the answer is in.
/// A failure counts as unheard from before its request slot is given back until the consumer
/// has taken it into the endpoint's health: meanwhile the fan-out hands the webhook nothing
/// (`super::local`), as the consumer itself starts nothing before it has read the reports
/// waiting for it. So the breaker opens after the same number of requests either way.
#[derive(Clone)]
pub struct Reporter {
    tx: mpsc::Sender<Report>,
    unheard: Arc<AtomicUsize>,
}

impl Reporter {
    pub fn new(tx: mpsc::Sender<Report>) -> Self {
        Self {
            tx,
            unheard: Arc::default(),
        }
    }

    async fn send(&self, report: Report) {
        if !report.success {
            self.unheard.fetch_add(1, Ordering::SeqCst);
        }
        // The consumer is gone only once it stopped, and then nobody needs the report.
        let _ = self.tx.send(report).await;
    }

    /// Whether a failure was sent that the consumer has not heard yet.
    pub fn failure_unheard(&self) -> bool {
        self.unheard.load(Ordering::SeqCst) > 0
    }

    /// The consumer has taken `report` into the endpoint's health.
    pub fn heard(&self, report: Report) {
        if !report.success {
            self.unheard.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Where a delivery to attempt came from.
// Made once per attempt and moved straight into its task, which holds the message anyway:
// boxing it would cost an allocation per delivery for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Source {
    /// Its webhook queue: acked once done with, handed back to it otherwise.
    Queue(Delivery),
    /// Straight from this process's fan-out (`super::local`): no message to ack, its log is
    /// its only record. It holds one of `Context::unrecorded`'s permits until the attempt
    /// ends, so that attempts started this way stay bounded while they wait for their records
    /// too.
    Local {
        task: Box<DeliveryV1>,
        _unrecorded: OwnedSemaphorePermit,
    },
}

/// Done with: the broker forgets it. An ack that fails means its channel is gone, and the
/// broker has put the delivery back already: it goes out again, with the same `webhook-id`.
async fn ack(delivery: &Delivery, log_id: Option<Uuid>) {
    if let Err(e) = delivery.ack().await {
        warn!(?log_id, error = %crate::error_chain(&e), "cannot ack a delivery; the broker will hand it out again");
    }
}

/// Done with, whatever its source: a delivery handed over by the fan-out has nothing to ack.
async fn settle(delivery: Option<&Delivery>, log_id: Option<Uuid>) {
    if let Some(delivery) = delivery {
        ack(delivery, log_id).await;
    }
}

/// Not done with: back to its queue. A delivery handed over by the fan-out was never in it,
/// and is queued there now; should that fail, its log, unfinished and unchanged, is found by
/// the lost-delivery check, which queues it again.
async fn give_back(ctx: &Context, outbox: &Outbox, delivery: Option<&Delivery>, task: &DeliveryV1) {
    if let Some(delivery) = delivery {
        return nack(delivery, Some(task.log_id)).await;
    }
    let queued = match messages::delivery(&ctx.routing.topology, &DeliveryTask::V1(task.clone())) {
        Ok(message) => outbox.call(message).await.map_err(FollowUpError::from),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = queued {
        warn!(log_id = %task.log_id, error = %crate::error_chain(&e), "cannot queue a delivery back; its log will queue it again");
    }
}

/// Back to its queue. Failing, its channel is gone, which hands it back all the same.
pub(super) async fn nack(delivery: &Delivery, log_id: Option<Uuid>) {
    if let Err(e) = delivery.nack().await {
        debug!(?log_id, error = %crate::error_chain(&e), "cannot hand a delivery back; its channel is gone, which does");
    }
}

/// Delivers one message. `None` when no HTTP attempt was made (an unreadable message, a
/// deleted or disabled webhook), so nothing is to be learnt about the endpoint.
///
/// The report also goes to `early` as soon as the answer is in, before the request slot is
/// given back: the consumer learns of a failure before it can start another request, so the
/// breaker opens after at most the requests already under way, not after a prefetch more.
///
/// Each attempt is a task the size of this state machine, and in a burst thousands of them
/// wait at once for their record (up to the prefetch of every webhook). So it owns what it
/// uses, letting the consumer spawn it without a wrapper that would hold the delivery a
/// second time, and boxes what it awaits once and briefly: the request, the record, the
/// follow-up, the lookups and settlements of the rare paths.
pub async fn run(
    ctx: Arc<Context>,
    outbox: Outbox,
    source: Source,
    slots: Slots,
    gate: Option<Arc<RateGate>>,
    stop: CancellationToken,
    early: Option<Reporter>,
) -> Option<Report> {
    let (ctx, outbox, stop) = (&*ctx, &outbox, &stop);
    // Borrowed from `source` rather than moved out of it: the attempt's state would hold the
    // message twice (an argument's slot is never reused).
    let decoded;
    let (task, delivery, local) = match &source {
        Source::Queue(delivery) => match DeliveryTask::from_bytes(delivery.body()) {
            Ok(DeliveryTask::V1(task)) => {
                decoded = task;
                (&decoded, Some(delivery), false)
            }
            Err(e) => {
                // Not ours, or from a release that no longer exists: nothing can deliver it,
                // and returning it would loop forever.
                error!(error = %e, "unreadable delivery message dropped");
                Box::pin(ack(delivery, None)).await;
                return None;
            }
        },
        Source::Local { task, .. } => (&**task, None, true),
    };
    let redelivered = delivery.is_some_and(Delivery::redelivered);
    let log_id = Some(task.log_id);
    let Some(webhook) = ctx.routing.subscriptions.get(task.webhook_id) else {
        let ended = Box::pin(
            ctx.routing
                .store
                .fail_open_logs(task.webhook_id, "the webhook was deleted"),
        )
        .await;
        match ended {
            Ok(_) => Box::pin(settle(delivery, log_id)).await,
            Err(e) => {
                warn!(error = %crate::error_chain(&e), "cannot close the logs of a deleted webhook; will try again");
                tokio::time::sleep(WRITE_RETRY_FIRST).await;
                Box::pin(give_back(ctx, outbox, delivery, task)).await;
            }
        }
        return None;
    };
    if !webhook.active {
        // Disabled while this was prefetched: back to the queue, to wait for re-enabling.
        Box::pin(give_back(ctx, outbox, delivery, task)).await;
        return None;
    }
    // A retry, a delivery queued by hand or one redelivered may have been overtaken (queued
    // again by hand since, or a twin already on record): one look at its log before sending,
    // the hot path of first attempts costing nothing. Should the database be away, the
    // record (which checks again) decides.
    if task.attempt > 1 || task.is_manual() || redelivered {
        match Box::pin(ctx.routing.store.log_position(task.log_id)).await {
            Ok(Some((attempts, requeues)))
                if !is_current(task, redelivered, attempts, requeues) =>
            {
                debug!(log_id = %task.log_id, attempt = task.attempt, "stale delivery dropped unsent");
                ctx.metrics.delivery_stale();
                Box::pin(settle(delivery, log_id)).await;
                return None;
            }
            Ok(None) => {
                warn!(log_id = %task.log_id, "the delivery's log is gone; dropped unsent");
                Box::pin(settle(delivery, log_id)).await;
                return None;
            }
            Ok(Some(_)) | Err(_) => {}
        }
    }

    // Counted as sent only now: what came before (the look at the log) can take its time.
    if let Some(gate) = gate {
        tokio::select! {
            _ = stop.cancelled() => {
                Box::pin(give_back(ctx, outbox, delivery, task)).await;
                return None;
            }
            _ = Box::pin(gate.admit()) => {}
        }
    }
    let Decided {
        outcome,
        answered_at: now,
        after:
            AfterAttempt {
                status,
                follow_up,
                report,
                ..
            },
        record,
    } = Box::pin(send_and_decide(ctx, &webhook, task, redelivered)).await;
    // Held across the awaits below by every attempt in a burst: what follows goes to the heap,
    // so that the task is no bigger for it.
    let follow_up = follow_up.map(Box::new);
    if let Some(early) = &early {
        Box::pin(early.send(report)).await;
    }
    drop(slots);
    // A delivery from the fan-out has no message to ack, as if acked from the start, and
    // holds its permit of `unrecorded` already.
    let unrecorded = match (local, &follow_up) {
        (false, None) => ctx.unrecorded.clone().try_acquire_owned().ok(),
        _ => None,
    };
    let mut ack_when_queued = unrecorded.as_ref().and(delivery);
    let recorded = Box::pin(record_attempt(ctx, *record, stop, &mut ack_when_queued)).await;
    let acked = local || (unrecorded.is_some() && ack_when_queued.is_none());
    drop(unrecorded);
    match recorded {
        Some(true) => {}
        Some(false) => {
            // Overtaken while it was sent: the attempt is on record, but what follows is the
            // current delivery's to decide. This chain ends here.
            debug!(log_id = %task.log_id, attempt = task.attempt, "stale delivery recorded; no follow-up");
            ctx.metrics.delivery_stale();
            if !acked {
                Box::pin(settle(delivery, log_id)).await;
            }
            return Some(report);
        }
        None if acked => {
            // Stopping with the database away, the delivery already acked (or never a
            // message): its log still reads unfinished, and the lost-delivery check of
            // whichever process runs next queues it again.
            warn!(log_id = %task.log_id, "stopped before the attempt was recorded; its log will queue it again");
            return Some(report);
        }
        None => {
            // Stopping with the database away: the delivery goes back unrecorded and will be
            // sent again (same webhook-id) by whoever takes it.
            Box::pin(give_back(ctx, outbox, delivery, task)).await;
            return Some(report);
        }
    }

    // The record says what happens next; make it so before the ack. Should it fail, the
    // delivery goes back to its queue and is attempted again.
    if let Some(follow_up) = follow_up {
        if let Err(e) = Box::pin(publish_follow_up(ctx, outbox, *follow_up)).await {
            warn!(log_id = %task.log_id, error = %crate::error_chain(&e), "cannot queue what follows an attempt; the delivery goes back to its queue");
            Box::pin(give_back(ctx, outbox, delivery, task)).await;
            return Some(report);
        }
    }
    if !acked {
        Box::pin(settle(delivery, log_id)).await;
    }
    match status {
        LogStatus::Succeeded => ctx
            .metrics
            .delivery_succeeded((now - task.received_at).to_std().unwrap_or_default()),
        LogStatus::Failed => ctx.metrics.delivery_failed(),
        LogStatus::Retrying | LogStatus::Pending => ctx.metrics.retry_scheduled(),
    }
    debug!(log_id = %task.log_id, outcome = outcome.as_str(), attempt = task.attempt, "attempt recorded");
    Some(report)
}

/// An attempt's answer, and what it means.
struct Decided {
    outcome: Outcome,
    /// When the answer came.
    answered_at: DateTime<Utc>,
    after: AfterAttempt,
    /// Boxed: the attempt's task holds it across awaits.
    record: Box<AttemptRecord>,
}

/// Sends `task` to `webhook`, counted and timed, and decides what follows the answer
/// (`hookrelay_core::after_attempt`, pure): the decision, and the attempt's record.
async fn send_and_decide(
    ctx: &Context,
    webhook: &WebhookConfig,
    task: &DeliveryV1,
    redelivered: bool,
) -> Decided {
    let in_flight = ctx.metrics.attempt_started();
    let started_at = Utc::now();
    let clock = Instant::now();
    let result = Box::pin(ctx.sender.send(webhook, task, ctx.request_timeout)).await;
    let elapsed = clock.elapsed();
    drop(in_flight);
    ctx.metrics.attempt_finished(result.outcome, elapsed);
    let now = Utc::now();
    let AttemptResult {
        outcome,
        status: http_status,
        body,
        error,
        retry_after,
    } = result;
    let after = after_attempt(&Attempted {
        task,
        account_id: &webhook.account_id,
        facts: AttemptFacts {
            outcome,
            status: http_status,
            retry_after,
        },
        error: error.as_deref(),
        schedule: &ctx.policy.schedule,
        now,
        unit: rand::random::<f64>(),
    });
    let record = Box::new(AttemptRecord {
        log_id: task.log_id,
        attempt: task.attempt,
        requeue: task.requeue,
        redelivered,
        started_at,
        duration_ms: u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX),
        response_status: http_status,
        response_body: body,
        error,
        status: after.status,
        next_attempt_at: after.next_attempt_at,
    });
    Decided {
        outcome,
        answered_at: now,
        after,
        record,
    }
}

/// What an attempt of the first delivery of a FIFO webhook's line gave.
pub struct LineOutcome {
    pub report: Report,
    pub status: LogStatus,
    /// Whether the delivery was still its log's current one (not skipped or queued again by
    /// hand meanwhile): if not, the line is read again.
    pub current: bool,
}

/// One attempt of `task`, the first delivery of FIFO webhook `webhook`'s line, recorded
/// (committed) before it answers: the line's next delivery must not go out before this
/// one's outcome is on record, or a crash in between would send this one again after it.
/// A retry goes into the delay tiers as a doorbell for the line (`super::consumer::line`).
/// `None` when stopped before the attempt could be recorded.
pub async fn line_attempt(
    ctx: &Context,
    outbox: &Outbox,
    task: DeliveryV1,
    webhook: &WebhookConfig,
    slots: Slots,
    stop: &CancellationToken,
) -> Option<LineOutcome> {
    let Decided {
        answered_at: now,
        after:
            AfterAttempt {
                status,
                follow_up,
                report,
                ..
            },
        record,
        ..
    } = Box::pin(send_and_decide(ctx, webhook, &task, false)).await;
    drop(slots);
    let current = Box::pin(record_attempt(ctx, *record, stop, &mut None)).await?;
    if !current {
        ctx.metrics.delivery_stale();
        return Some(LineOutcome {
            report,
            status,
            current,
        });
    }
    if let Some(follow_up) = follow_up {
        let mut wait = WRITE_RETRY_FIRST;
        // On record already: what follows is tried until it is queued. A retry's doorbell
        // that never goes is found by the lost-delivery check, which rings the line.
        while let Err(e) = Box::pin(publish_follow_up(ctx, outbox, follow_up.clone())).await {
            warn!(log_id = %task.log_id, error = %crate::error_chain(&e), retry_in = ?wait, "cannot queue what follows an attempt yet");
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(WRITE_RETRY_MAX);
        }
    }
    match status {
        LogStatus::Succeeded => ctx
            .metrics
            .delivery_succeeded((now - task.received_at).to_std().unwrap_or_default()),
        LogStatus::Failed => ctx.metrics.delivery_failed(),
        LogStatus::Retrying | LogStatus::Pending => ctx.metrics.retry_scheduled(),
    }
    Some(LineOutcome {
        report,
        status,
        current,
    })
}

/// Publishes what follows an attempt and waits for the broker's confirm.
async fn publish_follow_up(
    ctx: &Context,
    outbox: &Outbox,
    follow_up: FollowUp,
) -> Result<(), FollowUpError> {
    let topology = &ctx.routing.topology;
    let message: Outgoing = match follow_up {
        FollowUp::Retry { task, due, tier } => {
            let delivery = messages::delivery(topology, &DeliveryTask::V1(task))?;
            messages::into_tier(topology, delivery, tier, due)
        }
        FollowUp::Announce(event) => messages::operational(topology, &ctx.origin, &event),
    };
    Ok(outbox.call(message).await?)
}

/// Commits `record`, retrying while the database is away. The receiver has its answer; what
/// remains is to record it, so the delivery is held rather than handed back: that would POST
/// it to the receiver again for every failed write. Answers whether the delivery was still
/// its log's current one; `None` when stopped before it could record.
///
/// `ack_when_queued` is acked (and taken) once the record is first in the writer's queue.
async fn record_attempt(
    ctx: &Context,
    record: AttemptRecord,
    stop: &CancellationToken,
    ack_when_queued: &mut Option<&Delivery>,
) -> Option<bool> {
    let mut wait = WRITE_RETRY_FIRST;
    loop {
        let written = match ctx.writer.submit(record.clone()).await {
            Ok(submitted) => {
                if let Some(delivery) = ack_when_queued.take() {
                    ack(delivery, Some(record.log_id)).await;
                }
                submitted.answer().await
            }
            Err(e) => Err(e),
        };
        match written {
            Ok(current) => return Some(current),
            Err(e) => {
                warn!(log_id = %record.log_id, error = %crate::error_chain(&e), retry_in = ?wait, "cannot record an attempt yet");
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(WRITE_RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The size of the future an async fn of seven arguments returns, without making one.
    fn future_size<A, B, C, D, E, F, G, Fut>(_: fn(A, B, C, D, E, F, G) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn an_attempt_task_stays_small() {
        // In a burst, every webhook's prefetch of attempts waits at once for its record:
        // thousands of these tasks. The bound leaves room for compilers.
        let size = future_size(super::run);
        assert!(size <= 2 * 1024, "an attempt's task takes {size} bytes");
    }
}
