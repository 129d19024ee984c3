//! Delivery workers: one consumer per active webhook queue, many consumers to a channel.
//!
//! - `mod.rs` (here) keeps one consumer running per active webhook, across reconnections,
//!   and removes the queues of deleted webhooks (also those deleted while no process ran).
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
use std::time::{Duration, Instant};

use hookrelay_broker::lapin::Connection;
use hookrelay_broker::{Broker, ConsumerChannels, Declarer, Topology};
use hookrelay_core::HealthPolicy;
use hookrelay_metrics::Metrics;
use hookrelay_store::Store;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::batch::BatchPublisher;
use crate::http::Sender;
use crate::recover::Recovery;
use crate::subscriptions::Subscriptions;
use crate::writer::AttemptWriter;

pub use health::{HealthBook, HealthLookup};

/// How often consumers are checked even without a change (to restart one that died).
const RECONCILE_EVERY: Duration = Duration::from_secs(2);
/// How long a change waits for others before the consumers are reconciled: a reconcile reads
/// every webhook, and a script creating ten thousand webhooks should cost ten thousand
/// index updates, not ten thousand reads of the whole index. A new webhook's consumer starts
/// this much later; its first deliveries wait in its queue meanwhile.
const COALESCE_CHANGES: Duration = Duration::from_millis(200);
/// How often deleted webhooks are looked for even without a change.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Deleted webhooks cleaned up per sweep at most.
const SWEEP_BATCH: i64 = 500;
/// How long a tombstone stays, its queue removed again at every sweep: a consumer of another
/// process that had not yet heard of the deletion may have declared the queue again.
const TOMBSTONE_GRACE: Duration = Duration::from_secs(300);
/// Consumers sharing one channel: 10 000 webhooks take 40 channels of each kind. The
/// broker runs a channel as one process, which this keeps busy but not swamped.
const CONSUMERS_PER_CHANNEL: usize = 250;

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
    /// Reads the health other processes saved, for consumers taking a queue over.
    pub saved_health: HealthLookup,
    /// Tags the events hookrelay publishes about webhooks as its own.
    pub origin: hookrelay_core::ops::OriginKey,
    /// Declares webhook queues, telling one the broker lost from a new one.
    pub recovery: Recovery,
}

/// Keeps one consumer running per active webhook until `shutdown`, across reconnections.
pub async fn run(ctx: Arc<Context>, broker: Broker, shutdown: CancellationToken) {
    loop {
        let Some(connection) = broker.next_connection(&shutdown).await else {
            return;
        };
        ctx.health.load(&ctx.store).await;
        if let Err(e) = manage(&ctx, &connection, &shutdown).await {
            warn!(error = %crate::error_chain(&e), "delivery workers stopped; restarting");
        }
        if shutdown.is_cancelled() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Channels that declare webhook queues. A declarer does one request at a time (a refusal
/// closes its channel under every request pending on it), so a process starting with ten
/// thousand webhooks made 20 000 round trips in a row on one: its consumers were all running
/// only after 29 to 36 s. Webhooks are spread over these by id.
const DECLARERS: usize = 8;

/// What the consumers of one connection share: the channels they consume on, and the
/// channels that declare their queues.
pub struct Lines {
    /// The first also declares the shared objects and removes deleted webhooks' queues.
    declarers: Vec<Declarer>,
    /// Consumers at full speed: a prefetch of twice `max_in_flight_per_webhook`.
    pub full: ConsumerChannels,
    /// Probes of paused endpoints: a prefetch of one.
    pub probes: ConsumerChannels,
}

impl Lines {
    fn new(connection: &Arc<Connection>, per_webhook: u16) -> Self {
        Self {
            declarers: (0..DECLARERS)
                .map(|_| Declarer::new(connection.clone()))
                .collect(),
            full: ConsumerChannels::new(
                connection.clone(),
                per_webhook.saturating_mul(2),
                CONSUMERS_PER_CHANNEL,
            ),
            probes: ConsumerChannels::new(connection.clone(), 1, CONSUMERS_PER_CHANNEL),
        }
    }

    /// Makes sure webhook `id`'s queue exists before a consumer subscribes to it: consuming
    /// a missing queue would close a channel shared with hundreds of other consumers, while a
    /// declaration that fails costs the declarer's channel only.
    pub async fn ensure(
        &self,
        recovery: &Recovery,
        id: Uuid,
    ) -> Result<(), hookrelay_broker::lapin::Error> {
        recovery.ensure_queue(self.declarer(id), id).await
    }

    /// The channel that declares webhook `id`'s queue.
    fn declarer(&self, id: Uuid) -> &Declarer {
        &self.declarers[(id.as_u128() % DECLARERS as u128) as usize]
    }

    /// The channel for everything else.
    fn first(&self) -> &Declarer {
        &self.declarers[0]
    }

    async fn close(&self) {
        self.full.close().await;
        self.probes.close().await;
        for declarer in &self.declarers {
            declarer.close().await;
        }
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
) -> Result<(), hookrelay_broker::lapin::Error> {
    let lines = Arc::new(Lines::new(connection, ctx.per_webhook));
    ctx.topology.declare_base(lines.first()).await?;
    // The delay tiers are declared by the two that use them: the retry router, and the
    // batch publisher when it opens its channel.
    let publisher = BatchPublisher::start(
        connection.clone(),
        ctx.topology.clone(),
        ctx.subscriptions.clone(),
        ctx.store.clone(),
        ctx.recovery.clone(),
    );
    let mut changes = ctx.subscriptions.changes();
    let mut running: HashMap<Uuid, Running> = HashMap::new();
    // Swept at once, then when a webhook has gone from the index, and every `SWEEP_EVERY`:
    // not on every change, which would read the tombstones once per webhook created.
    let mut swept: Option<Instant> = None;
    let mut known: HashSet<Uuid> = HashSet::new();
    let result = loop {
        changes.borrow_and_update();
        if !connection.status().connected() {
            break Ok(());
        }
        let ids = reconcile(ctx, &lines, &publisher, &mut running);
        let deleted = known.iter().any(|id| !ids.contains(id));
        known = ids;
        if deleted || swept.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
            sweep(ctx, &lines).await;
            swept = Some(Instant::now());
        }
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = changes.changed() => tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                _ = tokio::time::sleep(COALESCE_CHANGES) => {}
            },
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
    lines.close().await;
    result
}

/// Starts a consumer for each active webhook without one, and stops those of webhooks no
/// longer active. Answers the ids of every webhook in the index, active or not.
fn reconcile(
    ctx: &Arc<Context>,
    lines: &Arc<Lines>,
    publisher: &BatchPublisher,
    running: &mut HashMap<Uuid, Running>,
) -> HashSet<Uuid> {
    let all = ctx.subscriptions.all();
    let active: HashSet<Uuid> = all.iter().filter(|(_, a)| *a).map(|(id, _)| *id).collect();
    running.retain(|id, r| {
        let keep = active.contains(id) && !r.task.is_finished();
        if !keep {
            r.stop.cancel();
        }
        keep
    });
    for id in active {
        if running.contains_key(&id) {
            continue;
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(consumer::consume_webhook(
            ctx.clone(),
            lines.clone(),
            publisher.clone(),
            id,
            stop.clone(),
        ));
        running.insert(id, Running { stop, task });
    }
    all.into_iter().map(|(id, _)| id).collect()
}

/// Removes the queues of deleted webhooks, with the deliveries still in them, and ends their
/// open logs. Their tombstones (migration V5) make this work for webhooks deleted while no
/// process ran, and let any process of a deployment do it; removing a queue twice is harmless.
async fn sweep(ctx: &Context, lines: &Lines) {
    let gone = match ctx.store.tombstones(SWEEP_BATCH).await {
        Ok(gone) => gone,
        Err(e) => {
            warn!(error = %crate::error_chain(&e), "cannot read the deleted webhooks; will try again");
            return;
        }
    };
    for id in gone {
        if ctx.subscriptions.get(id).is_some() {
            // Not deleted in this process's view yet: its consumer may still be running.
            continue;
        }
        debug!(webhook_id = %id, "webhook deleted; removing its queue");
        // One that fails is tried again at the next sweep; the others go on.
        if let Err(e) = ctx
            .topology
            .delete_webhook(lines.first(), &id.to_string())
            .await
        {
            warn!(webhook_id = %id, error = %e, "cannot remove a deleted webhook's queue; will try again");
            continue;
        }
        ctx.recovery.forget_queue(id);
        if let Err(e) = ctx.store.bury(id, TOMBSTONE_GRACE).await {
            warn!(webhook_id = %id, error = %crate::error_chain(&e), "cannot close the logs of a deleted webhook; will try again");
        }
    }
}
