//! Delivery workers: one consumer per active webhook queue, each on its own channel. At most
//! `max_in_flight_per_webhook` requests to one webhook are under way at once, so a slow or
//! hanging endpoint holds that many and never delays another webhook (isolation); a global
//! semaphore caps the requests of the whole process.
//!
//! Each attempt is signed and POSTed, its record committed through the batching writer, and
//! only then is the message acked; a failed write is retried, holding the message. The limit
//! covers the HTTP request only: while one attempt waits for its record to commit, the next
//! request may start, which is what lets a single webhook go faster than one database commit
//! per request slot. The prefetch (twice the limit) bounds both together.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt as _;
use hookrelay_broker::lapin::message::Delivery;
use hookrelay_broker::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use hookrelay_broker::lapin::types::FieldTable;
use hookrelay_broker::lapin::Connection;
use hookrelay_broker::{Broker, Topology};
use hookrelay_core::{DeliveryTask, Outcome};
use hookrelay_metrics::Metrics;
use hookrelay_store::{AttemptRecord, LogStatus, Store};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::http::{AttemptResult, Sender};
use crate::subscriptions::Subscriptions;
use crate::writer::AttemptWriter;

/// How often consumers are checked even without a change (to restart one that died).
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

pub struct Context {
    pub topology: Topology,
    pub subscriptions: Arc<Subscriptions>,
    pub sender: Sender,
    pub writer: AttemptWriter,
    pub metrics: Metrics,
    pub store: Store,
    pub request_timeout: Duration,
    pub per_webhook: u16,
    pub global: Arc<Semaphore>,
}

/// Keeps one consumer running per active webhook until `shutdown`, across reconnections.
pub async fn run(ctx: Arc<Context>, broker: Broker, shutdown: CancellationToken) {
    // Every webhook seen, so that one deleted while the broker was away is still cleaned up.
    let mut known: HashSet<Uuid> = HashSet::new();
    loop {
        let Some(connection) = broker.next_connection(&shutdown).await else {
            return;
        };
        if let Err(e) = manage(&ctx, &connection, &shutdown, &mut known).await {
            warn!(error = %crate::error_chain(&e), "delivery workers stopped; restarting");
        }
        if shutdown.is_cancelled() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

async fn manage(
    ctx: &Arc<Context>,
    connection: &Arc<Connection>,
    shutdown: &CancellationToken,
    known: &mut HashSet<Uuid>,
) -> Result<(), hookrelay_broker::lapin::Error> {
    let admin = connection.create_channel().await?;
    ctx.topology.declare_base(&admin).await?;
    let mut changes = ctx.subscriptions.changes();
    let mut running: HashMap<Uuid, Running> = HashMap::new();
    let result = loop {
        changes.borrow_and_update();
        if !connection.status().connected() {
            break Ok(());
        }
        if let Err(e) = reconcile(ctx, connection, &admin, &mut running, known).await {
            break Err(e);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = changes.changed() => {}
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
        }
    };
    // Stop every consumer and wait for the attempts under way: they ack on this connection.
    for r in running.values() {
        r.stop.cancel();
    }
    for (_, r) in running {
        let _ = r.task.await;
    }
    let _ = admin.close(200, "stopping").await;
    result
}

async fn reconcile(
    ctx: &Arc<Context>,
    connection: &Arc<Connection>,
    admin: &hookrelay_broker::lapin::Channel,
    running: &mut HashMap<Uuid, Running>,
    known: &mut HashSet<Uuid>,
) -> Result<(), hookrelay_broker::lapin::Error> {
    let all = ctx.subscriptions.all();
    let active: HashSet<Uuid> = all.iter().filter(|(_, a)| *a).map(|(id, _)| *id).collect();
    let now_known: HashSet<Uuid> = all.iter().map(|(id, _)| *id).collect();

    running.retain(|id, r| {
        let keep = active.contains(id) && !r.task.is_finished();
        if !keep {
            r.stop.cancel();
        }
        keep
    });
    let gone: Vec<Uuid> = known.difference(&now_known).copied().collect();
    for id in gone {
        // Deleted: its queue and what is still in it go, and its open logs end. On failure it
        // stays known, to be tried again at the next reconcile.
        info!(webhook_id = %id, "webhook deleted; removing its queue");
        ctx.topology.delete_webhook(admin, &id.to_string()).await?;
        match ctx
            .store
            .fail_open_logs(id, "the webhook was deleted")
            .await
        {
            Ok(_) => {
                known.remove(&id);
            }
            Err(e) => {
                warn!(webhook_id = %id, error = %e, "cannot close the logs of a deleted webhook")
            }
        }
    }
    known.extend(now_known);
    for id in active {
        if running.contains_key(&id) {
            continue;
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(consume_webhook(
            ctx.clone(),
            connection.clone(),
            id,
            stop.clone(),
        ));
        running.insert(id, Running { stop, task });
    }
    Ok(())
}

/// Consumes one webhook's queue until `stop`, then waits for its attempts under way and
/// closes its channel, which hands every message not yet acked back to the queue.
async fn consume_webhook(
    ctx: Arc<Context>,
    connection: Arc<Connection>,
    id: Uuid,
    stop: CancellationToken,
) {
    let result = async {
        let channel = connection.create_channel().await?;
        // Declared on this webhook's own channel: should it fail (a queue made by hand with
        // other arguments, a broker limit), only this webhook waits, retried by reconcile.
        ctx.topology
            .declare_webhook(&channel, &id.to_string())
            .await?;
        channel
            .basic_qos(
                ctx.per_webhook.saturating_mul(2),
                BasicQosOptions::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                &ctx.topology.webhook_queue(&id.to_string()),
                &format!("hookrelay-{}", Uuid::new_v4().simple()),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, hookrelay_broker::lapin::Error>((channel, consumer))
    }
    .await;
    let (channel, mut consumer) = match result {
        Ok(pair) => pair,
        Err(e) => {
            warn!(webhook_id = %id, error = %e, "cannot consume a webhook queue");
            return;
        }
    };
    debug!(webhook_id = %id, "consuming");
    let attempts = TaskTracker::new();
    let requests = Arc::new(Semaphore::new(usize::from(ctx.per_webhook)));
    loop {
        let delivery = tokio::select! {
            _ = stop.cancelled() => break,
            next = consumer.next() => match next {
                Some(Ok(d)) => d,
                _ => break,
            },
        };
        // Waiting for a slot here stops reading the queue, so the broker holds the rest.
        let slots = tokio::select! {
            _ = stop.cancelled() => break,
            s = async {
                let local = requests.clone().acquire_owned().await.ok()?;
                let global = ctx.global.clone().acquire_owned().await.ok()?;
                Some((local, global))
            } => match s {
                Some(s) => s,
                None => break,
            },
        };
        attempts.spawn(attempt(ctx.clone(), delivery, slots, stop.clone()));
    }
    attempts.close();
    attempts.wait().await;
    let _ = channel.close(200, "consumer stopped").await;
    debug!(webhook_id = %id, "stopped consuming");
}

/// The per-webhook and global request slots of one attempt, given back once its HTTP
/// exchange is over.
type Slots = (OwnedSemaphorePermit, OwnedSemaphorePermit);

async fn attempt(ctx: Arc<Context>, delivery: Delivery, slots: Slots, stop: CancellationToken) {
    let task = match DeliveryTask::from_bytes(&delivery.data) {
        Ok(t) => t,
        Err(e) => {
            // Not ours, or from a release that no longer exists: nothing can deliver it, and
            // returning it would loop forever.
            error!(error = %e, "unreadable delivery message dropped");
            let _ = delivery.ack(BasicAckOptions::default()).await;
            return;
        }
    };
    let task = task.v1();
    let Some(webhook) = ctx.subscriptions.get(task.webhook_id) else {
        match ctx
            .store
            .fail_open_logs(task.webhook_id, "the webhook was deleted")
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
        return;
    };
    if !webhook.active {
        // Disabled while this was prefetched: back to the queue, to wait for re-enabling.
        let _ = delivery.nack(requeue()).await;
        return;
    }

    let in_flight = ctx.metrics.attempt_started();
    let started_at = Utc::now();
    let clock = Instant::now();
    let result = ctx.sender.send(&webhook, task, ctx.request_timeout).await;
    let elapsed = clock.elapsed();
    drop(in_flight);
    drop(slots);
    ctx.metrics
        .attempt_finished(result.outcome.as_str(), elapsed);

    let status = next_status(&result);
    let AttemptResult {
        outcome,
        status: http_status,
        body,
        error,
    } = result;
    let record = AttemptRecord {
        log_id: task.log_id,
        attempt: i32::try_from(task.attempt).unwrap_or(i32::MAX),
        started_at,
        duration_ms: i32::try_from(elapsed.as_millis()).unwrap_or(i32::MAX),
        response_status: http_status.map(i32::from),
        response_body: body,
        error,
        status,
        next_attempt_at: None,
    };
    // The receiver has its answer; what remains is to record it. A failed write is retried
    // here, holding the delivery, rather than handing the delivery back: that would POST it
    // to the receiver again for every failed write while the database is away.
    let mut wait = WRITE_RETRY_FIRST;
    loop {
        match ctx.writer.write(record.clone()).await {
            Ok(()) => break,
            Err(e) => {
                warn!(log_id = %task.log_id, error = %e, retry_in = ?wait, "cannot record an attempt yet");
                tokio::select! {
                    _ = stop.cancelled() => {
                        // Stopping with the database away: the delivery goes back unrecorded
                        // and will be sent again (same webhook-id) by whoever takes it.
                        let _ = delivery.nack(requeue()).await;
                        return;
                    }
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(WRITE_RETRY_MAX);
            }
        }
    }
    let _ = delivery.ack(BasicAckOptions::default()).await;
    match status {
        LogStatus::Succeeded => ctx
            .metrics
            .delivery_succeeded((Utc::now() - task.received_at).to_std().unwrap_or_default()),
        LogStatus::Failed => ctx.metrics.delivery_failed(),
        LogStatus::Pending | LogStatus::Retrying => {}
    }
    debug!(log_id = %task.log_id, outcome = outcome.as_str(), "attempt recorded");
}

const WRITE_RETRY_FIRST: Duration = Duration::from_millis(500);
const WRITE_RETRY_MAX: Duration = Duration::from_secs(30);

fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        requeue: true,
        ..Default::default()
    }
}

/// Where a log goes after an attempt. The retry schedule plugs in here: for now every
/// failure is final.
fn next_status(result: &AttemptResult) -> LogStatus {
    if result.outcome == Outcome::Success {
        LogStatus::Succeeded
    } else {
        LogStatus::Failed
    }
}
