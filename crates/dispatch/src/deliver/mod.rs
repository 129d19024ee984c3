//! Delivery workers: one consumer per active webhook queue, each on its own channel.
//!
//! - `mod.rs` (here) keeps one consumer running per active webhook, across reconnections,
//!   and removes the queues of deleted webhooks.
//! - `consumer` consumes one webhook's queue, at full speed or, while the endpoint is failing,
//!   not at all (the circuit breaker): the deliveries wait in RabbitMQ and one probe goes out
//!   after each pause.
//! - `attempt` makes one attempt: sign, POST, decide (pure, in `hookrelay_core::decide`),
//!   record, and carry the decision out.
//! - `health` keeps each webhook's endpoint health across consumer restarts and saves it.
//!
//! At most `max_in_flight_per_webhook` requests to one webhook are under way at once, so a
//! slow or hanging endpoint holds that many and never delays another webhook (isolation); a
//! global semaphore caps the requests of the whole process, and a paused webhook holds none.
//! Requests to endpoints that are failing (a failure since their last success, or a probe)
//! also take one of a quarter of the global slots: a thousand endpoints dying at once, which
//! hang until the timeout before their breakers open, and then on every probe, can never
//! hold more than that quarter; the healthy ones keep the rest.
//!
//! Each attempt's record is committed through the batching writer, its retry (or its
//! `Webhook.delivery.failed` event) confirmed by the broker, and only then is the message
//! acked; a failed write is retried, holding the message. The limit covers the HTTP request
//! only: while one attempt waits for its record to commit, the next request may start, which
//! is what lets a single webhook go faster than one database commit per request slot. The
//! prefetch (twice the limit) bounds both together.

mod attempt;
mod consumer;
mod health;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use hookrelay_broker::lapin::{Channel, Connection};
use hookrelay_broker::{Broker, Topology};
use hookrelay_core::HealthPolicy;
use hookrelay_metrics::Metrics;
use hookrelay_store::Store;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::batch::BatchPublisher;
use crate::http::Sender;
use crate::subscriptions::Subscriptions;
use crate::writer::AttemptWriter;

pub use health::HealthBook;

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
    /// The share of `global` that failing endpoints may hold.
    pub failing: Arc<Semaphore>,
    /// The retry schedule, the breaker threshold and the auto-disable delay.
    pub policy: HealthPolicy,
    pub health: HealthBook,
    /// Tags the events hookrelay publishes about webhooks as its own.
    pub origin: hookrelay_core::ops::OriginKey,
}

/// Keeps one consumer running per active webhook until `shutdown`, across reconnections.
pub async fn run(ctx: Arc<Context>, broker: Broker, shutdown: CancellationToken) {
    // Every webhook seen, so that one deleted while the broker was away is still cleaned up.
    let mut known: HashSet<Uuid> = HashSet::new();
    loop {
        let Some(connection) = broker.next_connection(&shutdown).await else {
            return;
        };
        ctx.health.load(&ctx.store).await;
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
    // The delay tiers are declared by the two that use them: the retry router, and the
    // batch publisher when it opens its channel.
    let publisher = BatchPublisher::start(
        connection.clone(),
        ctx.topology.clone(),
        ctx.subscriptions.clone(),
        ctx.store.clone(),
    );
    let mut changes = ctx.subscriptions.changes();
    let mut running: HashMap<Uuid, Running> = HashMap::new();
    let result = loop {
        changes.borrow_and_update();
        if !connection.status().connected() {
            break Ok(());
        }
        if let Err(e) = reconcile(ctx, connection, &publisher, &admin, &mut running, known).await {
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
    publisher: &BatchPublisher,
    admin: &Channel,
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
        let task = tokio::spawn(consumer::consume_webhook(
            ctx.clone(),
            connection.clone(),
            publisher.clone(),
            id,
            stop.clone(),
        ));
        running.insert(id, Running { stop, task });
    }
    Ok(())
}
