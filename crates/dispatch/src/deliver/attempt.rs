//! One delivery attempt: POST it, let `hookrelay_core::decide` say what follows, record the
//! attempt, carry the decision out (a retry into the delay tiers, or the
//! `Webhook.delivery.failed` event when the retries are used up), and only then ack.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use hookrelay_broker::lapin::message::Delivery;
use hookrelay_broker::lapin::options::{BasicAckOptions, BasicNackOptions};
use hookrelay_core::ops::{self, FailedDelivery};
use hookrelay_core::{
    decide, is_current, AttemptFacts, DeliveryTask, DeliveryV1, Next, Outcome, RetrySchedule,
};
use hookrelay_store::{AttemptRecord, LogStatus};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::Context;
use crate::batch::BatchPublisher;
use crate::http::AttemptResult;
use crate::publish;

/// The request slots of one attempt, given back once its HTTP exchange is over: the
/// webhook's, the process's, and for a failing endpoint one of the few it may share.
pub type Slots = (
    OwnedSemaphorePermit,
    Option<OwnedSemaphorePermit>,
    OwnedSemaphorePermit,
);

/// What an attempt tells the webhook's endpoint health.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub success: bool,
    /// The endpoint answered 410 Gone: the webhook must be disabled.
    pub gone: bool,
}

const WRITE_RETRY_FIRST: Duration = Duration::from_millis(500);
const WRITE_RETRY_MAX: Duration = Duration::from_secs(30);

fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        requeue: true,
        ..Default::default()
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
/// follow-up, the lookups of the rare paths. In a release build that took a task from 4.2 to
/// 2.2 KB, and a burst at 1 000 webhooks from 308 to 263 MB of peak RSS.
pub async fn run(
    ctx: Arc<Context>,
    publisher: BatchPublisher,
    delivery: Delivery,
    slots: Slots,
    stop: CancellationToken,
    early: Option<mpsc::Sender<Report>>,
) -> Option<Report> {
    let (ctx, publisher, stop) = (&*ctx, &publisher, &stop);
    let task = match DeliveryTask::from_bytes(&delivery.data) {
        Ok(DeliveryTask::V1(task)) => task,
        Err(e) => {
            // Not ours, or from a release that no longer exists: nothing can deliver it, and
            // returning it would loop forever.
            error!(error = %e, "unreadable delivery message dropped");
            let _ = delivery.ack(BasicAckOptions::default()).await;
            return None;
        }
    };
    let Some(webhook) = ctx.subscriptions.get(task.webhook_id) else {
        match Box::pin(
            ctx.store
                .fail_open_logs(task.webhook_id, "the webhook was deleted"),
        )
        .await
        {
            Ok(_) => {
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
            Err(e) => {
                warn!(error = %e, "cannot close the logs of a deleted webhook; will try again");
                tokio::time::sleep(WRITE_RETRY_FIRST).await;
                let _ = delivery.nack(requeue()).await;
            }
        }
        return None;
    };
    if !webhook.active {
        // Disabled while this was prefetched: back to the queue, to wait for re-enabling.
        let _ = delivery.nack(requeue()).await;
        return None;
    }
    // A retry, a delivery queued by hand or one redelivered may have been overtaken (queued
    // again by hand since, or a twin already on record): one look at its log before sending,
    // the hot path of first attempts costing nothing. Should the database be away, the
    // record (which checks again) decides.
    if task.attempt > 1 || task.is_manual() || delivery.redelivered {
        match Box::pin(ctx.store.log_position(task.log_id)).await {
            Ok(Some((attempts, requeues)))
                if !is_current(&task, delivery.redelivered, attempts, requeues) =>
            {
                debug!(log_id = %task.log_id, attempt = task.attempt, "stale delivery dropped unsent");
                let _ = delivery.ack(BasicAckOptions::default()).await;
                return None;
            }
            Ok(None) => {
                warn!(log_id = %task.log_id, "the delivery's log is gone; dropped unsent");
                let _ = delivery.ack(BasicAckOptions::default()).await;
                return None;
            }
            Ok(Some(_)) | Err(_) => {}
        }
    }

    let in_flight = ctx.metrics.attempt_started();
    let started_at = Utc::now();
    let clock = Instant::now();
    let result = Box::pin(ctx.sender.send(&webhook, &task, ctx.request_timeout)).await;
    let elapsed = clock.elapsed();
    drop(in_flight);
    ctx.metrics
        .attempt_finished(result.outcome.as_str(), elapsed);

    let now = Utc::now();
    // A delivery queued again by hand gets one attempt, not a new schedule.
    let no_retries = RetrySchedule::none();
    let (schedule, step) = if task.is_manual() {
        (&no_retries, 1)
    } else {
        (&ctx.policy.schedule, task.attempt)
    };
    let facts = AttemptFacts {
        outcome: result.outcome,
        status: result.status,
        retry_after: result.retry_after,
    };
    let decision = decide(&facts, step, schedule, rand::random::<f64>());
    let report = Report {
        success: result.outcome == Outcome::Success,
        gone: decision.disable,
    };
    if let Some(early) = &early {
        let _ = early.send(report).await;
    }
    drop(slots);
    let due = match decision.next {
        Next::RetryIn(wait) => Some(now + chrono::Duration::from_std(wait).unwrap_or_default()),
        Next::Done | Next::GiveUp => None,
    };
    let status = match decision.next {
        Next::Done => LogStatus::Succeeded,
        Next::RetryIn(_) => LogStatus::Retrying,
        Next::GiveUp => LogStatus::Failed,
    };
    let AttemptResult {
        outcome,
        status: http_status,
        body,
        error,
        retry_after: _,
    } = result;
    let record = AttemptRecord {
        log_id: task.log_id,
        attempt: i32::try_from(task.attempt).unwrap_or(i32::MAX),
        requeue: i32::try_from(task.requeue).unwrap_or(i32::MAX),
        redelivered: delivery.redelivered,
        started_at,
        duration_ms: i32::try_from(elapsed.as_millis()).unwrap_or(i32::MAX),
        response_status: http_status.map(i32::from),
        response_body: body,
        error: error.clone(),
        status,
        next_attempt_at: due,
    };
    match Box::pin(record_attempt(ctx, record, stop)).await {
        Some(true) => {}
        Some(false) => {
            // Overtaken while it was sent: the attempt is on record, but what follows is the
            // current delivery's to decide. This chain ends here.
            debug!(log_id = %task.log_id, attempt = task.attempt, "stale delivery recorded; no follow-up");
            let _ = delivery.ack(BasicAckOptions::default()).await;
            return Some(report);
        }
        None => {
            // Stopping with the database away: the delivery goes back unrecorded and will be
            // sent again (same webhook-id) by whoever takes it.
            let _ = delivery.nack(requeue()).await;
            return Some(report);
        }
    }

    // The record says what happens next; make it so before the ack. Should it fail, the
    // delivery goes back to its queue and is attempted again.
    let follow_up = match (decision.next, due) {
        (Next::RetryIn(_), Some(due)) => {
            let next = DeliveryTask::V1(DeliveryV1 {
                attempt: task.attempt.saturating_add(1),
                ..task.clone()
            });
            Some(publish::delayed(&ctx.topology, &next, due, now))
        }
        (Next::GiveUp, _) if !ops::is_operational(&task.event_type) => {
            let event = ops::delivery_failed(
                &FailedDelivery {
                    log_id: task.log_id,
                    webhook_id: task.webhook_id,
                    account_id: &webhook.account_id,
                    event_id: &task.event_id,
                    event_type: &task.event_type,
                    attempts: task.attempt,
                    response_status: http_status,
                    error: error.as_deref(),
                },
                now,
            );
            Some(publish::operational(&ctx.topology, &ctx.origin, &event))
        }
        _ => None,
    };
    if let Some(message) = follow_up {
        if let Err(e) = Box::pin(publisher.publish(message)).await {
            warn!(log_id = %task.log_id, error = %e, "cannot queue what follows an attempt; the delivery goes back to its queue");
            let _ = delivery.nack(requeue()).await;
            return Some(report);
        }
    }
    let _ = delivery.ack(BasicAckOptions::default()).await;
    match decision.next {
        Next::Done => ctx
            .metrics
            .delivery_succeeded((now - task.received_at).to_std().unwrap_or_default()),
        Next::GiveUp => ctx.metrics.delivery_failed(),
        Next::RetryIn(_) => ctx.metrics.retry_scheduled(),
    }
    debug!(log_id = %task.log_id, outcome = outcome.as_str(), attempt = task.attempt, "attempt recorded");
    Some(report)
}

/// Commits `record`, retrying while the database is away. The receiver has its answer; what
/// remains is to record it, so the delivery is held rather than handed back: that would POST
/// it to the receiver again for every failed write. Answers whether the delivery was still
/// its log's current one; `None` when stopped before it could record.
async fn record_attempt(
    ctx: &Context,
    record: AttemptRecord,
    stop: &CancellationToken,
) -> Option<bool> {
    let mut wait = WRITE_RETRY_FIRST;
    loop {
        match ctx.writer.write(record.clone()).await {
            Ok(current) => return Some(current),
            Err(e) => {
                warn!(log_id = %record.log_id, error = %e, retry_in = ?wait, "cannot record an attempt yet");
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(WRITE_RETRY_MAX);
            }
        }
    }
}
