//! Delivery workers: one consumer per active webhook queue, many consumers to a channel.
//!
//! - `mod.rs` (here) keeps one consumer running per active webhook, across reconnections,
//!   and removes the queues of deleted webhooks (also those deleted while no process ran).
//! - `consumer` consumes one webhook's queue, at full speed or, while the endpoint is failing,
//!   not at all (the circuit breaker): the deliveries wait in RabbitMQ and one probe goes out
//!   after each pause.
//! - `attempt` makes one attempt: sign, POST, decide (pure: `hookrelay_core::after_attempt`),
//!   record, and carry the decision out.
//! - `local` lets the fan-out of this process start an attempt itself when the webhook's
//!   consumer is here with a slot free, without a trip through the broker.
//! - `health` keeps each webhook's endpoint health across consumer restarts and saves it, and
//!   reads what other processes saved.
//! - `writer` records attempts, and `outbox` publishes what follows them, each a batching
//!   task (`crate::batcher`) that thousands of consumers share.
//!
//! At most `max_in_flight_per_webhook` requests to one webhook are under way at once, so a
//! slow or hanging endpoint holds that many and never delays another webhook (isolation); a
//! global semaphore caps the requests of the whole process, and a paused webhook holds none.
//! Requests to endpoints that are failing (a failure since their last success, or a probe)
//! also take one of a quarter of the global slots: a thousand endpoints dying at once, which
//! hang until the timeout before their breakers open, and then on every probe, can never
//! hold more than that quarter; the healthy ones keep the rest. And every request takes one
//! of its account's share (`max_in_flight_per_account`): new webhooks are not known to fail
//! yet, and one account's many hanging ones must not take the slots of every other account.
//!
//! Each attempt's record is committed through the batching writer, its retry (or its
//! `Webhook.delivery.failed` event) confirmed by the broker, and only then is the message
//! acked; a failed write is retried, holding the message. The limit covers the HTTP request
//! only: while one attempt waits for its record to commit, the next request may start, which
//! is what lets a single webhook go faster than one database commit per request slot. The
//! prefetch (twice the limit) bounds both together.

mod attempt;
mod consumer;
mod gate;
mod health;
mod local;
mod outbox;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use hookrelay_broker::{Broker, BrokerError, Connection, ConsumerChannels, Declarer};
use hookrelay_core::HealthPolicy;
use hookrelay_metrics::{Metrics, Task};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};
use uuid::Uuid;

use crate::http::Sender;
use crate::publish::Routing;
use outbox::Outbox;
use writer::AttemptWriter;

pub use health::{start_lookup, HealthBook, HealthLookup};
pub use local::Handoffs;
pub use writer::{start as start_writer, UNRECORDED};

/// How often consumers are checked even without a change (to restart one that died).
const RECONCILE_EVERY: Duration = Duration::from_secs(2);
/// How long a change waits for others before the consumers are reconciled: a reconcile reads
/// every webhook, and a script creating ten thousand webhooks should cost ten thousand
/// index updates, not ten thousand reads of the whole index. A new webhook's consumer starts
/// this much later; its first deliveries wait in its queue meanwhile.
const COALESCE_CHANGES: Duration = Duration::from_millis(200);
/// How often deleted webhooks are looked for even without a change.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Deleted webhooks read per page of a sweep.
const SWEEP_BATCH: i64 = 500;
/// How long a tombstone stays, its queue removed again at every sweep: a consumer of another
/// process that had not yet heard of the deletion may have declared the queue again.
const TOMBSTONE_GRACE: Duration = Duration::from_secs(300);
/// Consumers sharing one channel: 10 000 webhooks take 40 channels of each kind. The
/// broker runs a channel as one process, which this keeps busy but not swamped.
const CONSUMERS_PER_CHANNEL: usize = 250;

pub struct Context {
    /// The topology, the subscriptions, the store, and the registry through which webhook
    /// queues are declared.
    pub routing: Arc<Routing>,
    pub sender: Sender,
    pub writer: AttemptWriter,
    /// Attempts acked before their record was committed, at most (`attempt`): sized like
    /// the writer's queue.
    pub unrecorded: Arc<Semaphore>,
    pub metrics: Metrics,
    pub request_timeout: Duration,
    pub per_webhook: u16,
    pub global: Arc<Semaphore>,
    /// The share of `global` that failing endpoints may hold.
    pub failing: Arc<Semaphore>,
    /// The share of `global` that each account may hold.
    pub accounts: AccountSlots,
    /// The retry schedule, the breaker threshold and the auto-disable delay.
    pub policy: HealthPolicy,
    pub health: HealthBook,
    /// Reads the health other processes saved, for consumers taking a queue over.
    pub saved_health: HealthLookup,
    /// The consumers that take fresh deliveries straight from this process's fan-out.
    pub handoffs: Arc<Handoffs>,
    /// Tags the events hookrelay publishes about webhooks as its own.
    pub origin: hookrelay_core::ops::OriginKey,
    /// Every task the workers start is on it, so that the drain at shutdown waits for them.
    pub tracker: TaskTracker,
}

/// Keeps one consumer running per active webhook until `shutdown`, across reconnections.
pub async fn run(ctx: Arc<Context>, broker: Broker, shutdown: CancellationToken) {
    loop {
        let Some(connection) = broker.next_connection(&shutdown).await else {
            return;
        };
        ctx.health.load(&ctx.routing.store).await;
        // A new connection may follow a broker restart, which dropped the deliveries waiting
        // in the webhook queues (at start too: the broker may have restarted meanwhile).
        ctx.routing.queues.maybe_dropped();
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
/// closes its channel under every request pending on it), so on one channel a process
/// starting with ten thousand webhooks would make 20 000 round trips in a row before its last
/// consumer runs. Webhooks are spread over these by id.
const DECLARERS: usize = 8;

/// What the consumers of one connection share: the channels they consume on, and the
/// channels that declare their queues.
pub struct Lines {
    /// The first also declares the shared objects and removes deleted webhooks' queues.
    declarers: Vec<Declarer>,
    /// Probes of paused endpoints: a prefetch of one.
    pub probes: ConsumerChannels,
    /// Consumers at full speed, by prefetch: twice `max_in_flight_per_webhook`, or for a
    /// webhook with limits of its own a power of two ([`prefetch`]), so that there are a
    /// dozen of these at most, however many values the accounts choose.
    full: std::sync::Mutex<std::collections::HashMap<u16, Arc<ConsumerChannels>>>,
    connection: Connection,
}

/// The prefetch of a webhook consumer at full speed: twice its requests at once, and for a
/// rate-limited webhook no more than its rate, so that no delivery waits in a consumer's
/// hands for more than about a second (the lost-delivery check takes a delivery nobody has
/// touched for two request timeouts for dropped); rounded down to a power of two, which
/// stays at least `max_in_flight`.
pub fn prefetch(max_in_flight: u16, rate_limit: Option<u32>) -> u16 {
    let wanted = u32::from(max_in_flight.max(1)) * 2;
    let wanted = rate_limit.map_or(wanted, |rate| wanted.min(rate.max(1)));
    let rounded = 1u32 << (31 - wanted.leading_zeros());
    u16::try_from(rounded).unwrap_or(1 << 15)
}

impl Lines {
    fn new(connection: &Connection) -> Self {
        Self {
            declarers: (0..DECLARERS)
                .map(|_| Declarer::new(connection.clone()))
                .collect(),
            probes: ConsumerChannels::new(connection.clone(), 1, CONSUMERS_PER_CHANNEL),
            full: Default::default(),
            connection: connection.clone(),
        }
    }

    /// The channels of full-speed consumers with this prefetch, opened as they are needed.
    pub fn with_prefetch(&self, prefetch: u16) -> Arc<ConsumerChannels> {
        // Held for a map lookup that cannot panic; a poisoned map is as good.
        let mut full = self
            .full
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let channels = full.entry(prefetch).or_insert_with(|| {
            Arc::new(ConsumerChannels::new(
                self.connection.clone(),
                prefetch,
                CONSUMERS_PER_CHANNEL,
            ))
        });
        channels.clone()
    }

    /// Makes sure webhook `id`'s queue exists before a consumer subscribes to it: consuming
    /// a missing queue would close a channel shared with hundreds of other consumers, while a
    /// declaration that fails costs the declarer's channel only.
    pub async fn ensure(&self, routing: &Routing, id: Uuid) -> Result<(), BrokerError> {
        routing.queues.ensure(self.declarer(id), id).await
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
        self.probes.close().await;
        let full: Vec<_> = self
            .full
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .map(|(_, channels)| channels)
            .collect();
        for channels in full {
            channels.close().await;
        }
        for declarer in &self.declarers {
            declarer.close().await;
        }
    }
}

/// Each account's share of the process's request slots: one semaphore per account, made when
/// the account first sends and dropped once nothing holds or awaits it.
pub struct AccountSlots {
    per_account: usize,
    by_account: std::sync::Mutex<ByAccount>,
}

#[derive(Default)]
struct ByAccount {
    slots: HashMap<String, Arc<Semaphore>>,
    /// The size at which the map is next cleared of unused semaphores: twice what was left
    /// after the last clearing, so clearing costs a constant share of the insertions.
    prune_at: usize,
}

impl AccountSlots {
    pub fn new(per_account: usize) -> Self {
        Self {
            per_account: per_account.max(1),
            by_account: std::sync::Mutex::default(),
        }
    }

    /// The slots of `account`.
    pub fn of(&self, account: &str) -> Arc<Semaphore> {
        // A poisoned map is still whole: each change is one insert or one retain.
        let mut by_account = self
            .by_account
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slots) = by_account.slots.get(account) {
            return slots.clone();
        }
        if by_account.slots.len() >= by_account.prune_at {
            // Only the map holds it: no permit is out (an owned permit holds its semaphore)
            // and no one is waiting, so a new one later is the same as this one.
            by_account.slots.retain(|_, s| Arc::strong_count(s) > 1);
            by_account.prune_at = (by_account.slots.len() * 2).max(64);
        }
        let slots = Arc::new(Semaphore::new(self.per_account));
        by_account.slots.insert(account.to_owned(), slots.clone());
        slots
    }

    #[cfg(test)]
    fn accounts(&self) -> usize {
        self.by_account
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .slots
            .len()
    }
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

async fn manage(
    ctx: &Arc<Context>,
    connection: &Connection,
    shutdown: &CancellationToken,
) -> Result<(), BrokerError> {
    let lines = Arc::new(Lines::new(connection));
    ctx.routing.topology.declare_base(lines.first()).await?;
    // The delay tiers are declared by the two that use them: the retry router, and the
    // outbox when it opens its channel.
    let outbox = outbox::start(connection.clone(), ctx.routing.clone(), &ctx.tracker);
    let mut changes = ctx.routing.subscriptions.changes();
    let mut running: HashMap<Uuid, Running> = HashMap::new();
    // Every tombstone is swept at once, then every `SWEEP_EVERY`; in between, only the
    // webhooks that have just gone from the index: a full pass per deletion would go through
    // every tombstone of the last `TOMBSTONE_GRACE` again for each one deleted.
    let mut swept: Option<Instant> = None;
    let mut known: HashSet<Uuid> = HashSet::new();
    let result = loop {
        changes.borrow_and_update();
        if !connection.is_connected() {
            break Ok(());
        }
        let ids = reconcile(ctx, &lines, &outbox, &mut running);
        let gone: Vec<Uuid> = known.difference(&ids).copied().collect();
        known = ids;
        if swept.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
            sweep(ctx, &lines).await;
            swept = Some(Instant::now());
        } else {
            remove_deleted(ctx, &lines, gone).await;
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
    for (id, r) in running {
        if let Err(e) = r.task.await {
            report_end(ctx, id, e);
        }
    }
    lines.close().await;
    result
}

/// A consumer's task that ended by a panic (a bug) is logged and counted; its webhook gets a
/// new consumer at the next reconcile, and its deliveries went back to the queue with its
/// channel's.
fn report_end(ctx: &Context, id: Uuid, e: tokio::task::JoinError) {
    if e.is_panic() {
        error!(webhook_id = %id, error = %e, "a webhook consumer panicked; starting a new one");
        ctx.metrics.task_panicked(Task::WebhookConsumer);
    }
}

/// Starts a consumer for each active webhook without one, and stops those of webhooks no
/// longer active. Answers the ids of every webhook in the index, active or not.
fn reconcile(
    ctx: &Arc<Context>,
    lines: &Arc<Lines>,
    outbox: &Outbox,
    running: &mut HashMap<Uuid, Running>,
) -> HashSet<Uuid> {
    let all = ctx.routing.subscriptions.all();
    let active: HashSet<Uuid> = all.iter().filter(|(_, a)| *a).map(|(id, _)| *id).collect();
    running.retain(|id, r| {
        if r.task.is_finished() {
            if let Some(Err(e)) = (&mut r.task).now_or_never() {
                report_end(ctx, *id, e);
            }
            return false;
        }
        let keep = active.contains(id);
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
        let task = ctx.tracker.spawn(consumer::consume_webhook(
            ctx.clone(),
            lines.clone(),
            outbox.clone(),
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
/// A pass takes every tombstone, a page at a time, and removes the queues over all the
/// declaring channels at once: thousands of webhooks deleted together are gone in seconds.
async fn sweep(ctx: &Context, lines: &Lines) {
    let mut after = None;
    loop {
        let page = match ctx.routing.store.tombstones(after, SWEEP_BATCH).await {
            Ok(page) => page,
            Err(e) => {
                warn!(error = %crate::error_chain(&e), "cannot read the deleted webhooks; will try again");
                return;
            }
        };
        after = page.last().copied();
        let full = page.len() as i64 == SWEEP_BATCH;
        remove_deleted(ctx, lines, page).await;
        if !full {
            return;
        }
    }
}

/// Removes the queues of deleted webhooks `ids` and ends their logs, over every declaring
/// channel at once.
async fn remove_deleted(ctx: &Context, lines: &Lines, ids: Vec<Uuid>) {
    futures::stream::iter(ids)
        .for_each_concurrent(DECLARERS, |id| remove_one_deleted(ctx, lines, id))
        .await;
}

/// Removes deleted webhook `id`'s queue and ends its logs; one that fails is tried again at
/// the next sweep.
async fn remove_one_deleted(ctx: &Context, lines: &Lines, id: Uuid) {
    if ctx.routing.subscriptions.get(id).is_some() {
        // Not deleted in this process's view yet: its consumer may still be running.
        return;
    }
    debug!(webhook_id = %id, "webhook deleted; removing its queue");
    let removed = ctx
        .routing
        .topology
        .delete_webhook(lines.declarer(id), &id.to_string())
        .await;
    if let Err(e) = removed {
        warn!(webhook_id = %id, error = %crate::error_chain(&e), "cannot remove a deleted webhook's queue; will try again");
        return;
    }
    ctx.routing.queues.forget(id);
    if let Err(e) = ctx.routing.store.bury(id, TOMBSTONE_GRACE).await {
        warn!(webhook_id = %id, error = %crate::error_chain(&e), "cannot close the logs of a deleted webhook; will try again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefetch_is_a_power_of_two_covering_the_requests_and_within_the_rate() {
        assert_eq!(prefetch(16, None), 32);
        assert_eq!(prefetch(16, Some(10)), 8);
        assert_eq!(prefetch(16, Some(1)), 1);
        assert_eq!(prefetch(3, None), 4);
        for in_flight in 1..=1024u16 {
            let p = prefetch(in_flight, None);
            assert!(p.is_power_of_two() && p >= in_flight, "{in_flight}: {p}");
            for rate in [1u32, 7, 100, 10_000] {
                let p = prefetch(in_flight, Some(rate));
                assert!(
                    p.is_power_of_two() && u32::from(p) <= rate,
                    "{in_flight}/{rate}: {p}"
                );
            }
        }
    }

    #[tokio::test]
    async fn account_slots_are_shared_and_forgotten_when_unused() {
        let slots = AccountSlots::new(2);
        let held = slots.of("a").acquire_owned().await.expect("a permit");
        assert_eq!(
            slots.of("a").available_permits(),
            1,
            "one semaphore per account"
        );
        for n in 0..1000 {
            drop(slots.of(&format!("gone_{n}")));
        }
        assert!(slots.accounts() <= 129, "{} kept", slots.accounts());
        assert_eq!(
            slots.of("a").available_permits(),
            1,
            "an account with a permit out keeps its semaphore"
        );
        drop(held);
    }
}
