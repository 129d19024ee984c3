//! The pipeline: events from `{ns}.ingest` are validated, matched and fanned out into the
//! per-webhook queues (`fanout`), and delivery workers POST them, signed, recording every
//! attempt, retrying on the schedule and pausing a failing endpoint (`deliver`). Retries wait
//! in the broker's delay tiers and come back through the retry router (`router`); deliveries
//! are queued again by hand through `recover`, and test events sent through `test_event`.
//! Subscriptions are matched in memory (`subscriptions`), kept current through PostgreSQL
//! LISTEN/NOTIFY. Everything is published through one kind of publisher (`publish`), with
//! the messages of `messages`; webhook queues are declared through one registry (`queues`),
//! which tells a queue the broker lost from a new one. The delivery workers' writer, outbox
//! and health lookup are one generic batching task (`batcher`).
//!
//! Every message is acked only after what it caused is durable: an event after its log rows
//! are committed and its delivery messages confirmed by the broker; a delivery after its
//! attempt is committed. A crash anywhere means redelivery, never a hole. Memory is bounded
//! by prefetch counts, semaphores and bounded channels; nothing queues without limit.

mod attempt_span;
mod batcher;
mod deliver;
mod event_type_cache;
mod fanout;
mod http;
mod lost;
mod messages;
mod publish;
mod queues;
mod recover;
pub mod retention;
mod router;
mod subscriptions;
mod test_event;
pub use test_event::Example;

use std::sync::Arc;
use std::time::Duration;

use hookrelay_broker::{Broker, Declarer, PublishError, QueueType, Topology};
use hookrelay_core::ops::{OriginKey, ORIGIN_KEY_BYTES};
use hookrelay_core::{HealthPolicy, Intake, RetrySchedule};
use hookrelay_metrics::{Metrics, Task};
use hookrelay_store::{RequeueFilter, Store, StoreError, WebhookRow};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use lost::LostCheck;
use publish::Routing;
use queues::QueueRegistry;
use recover::Recovery;
use subscriptions::Subscriptions;

pub(crate) use hookrelay_core::error_chain;

/// How long start-up waits for the broker before going on without it.
const STARTUP_BROKER_PATIENCE: Duration = Duration::from_secs(10);

/// What the pipeline needs to know from the settings.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub namespace: String,
    /// The kind of the queues every event passes through.
    pub queue_type: QueueType,
    /// For the LISTEN connection, which is not pooled.
    pub database_url: String,
    pub max_event_bytes: usize,
    /// Nesting of `data` at most, in arrays and objects.
    pub max_event_depth: usize,
    pub max_in_flight_per_webhook: u16,
    pub max_in_flight_total: usize,
    /// Of those, one account's at most.
    pub max_in_flight_per_account: usize,
    pub request_timeout: Duration,
    pub allow_private_networks: bool,
    pub retry_schedule: RetrySchedule,
    /// Failed attempts in a row that pause a webhook's queue.
    pub breaker_threshold: u32,
    /// How long every attempt may fail before the webhook is disabled.
    pub disable_after: Duration,
    /// Logs a second that a bulk retry queues again, at most.
    pub requeue_rate: u32,
    /// Concurrent fan-out consumers on `{ns}.ingest` in this process.
    pub ingest_workers: usize,
    /// Days of events, logs and attempts older than this are retired.
    pub log_retention: Duration,
    /// How long an event id is remembered for the fan-out's dedupe.
    pub dedupe_window: Duration,
    /// Store events that match no webhook too.
    pub keep_unmatched_events: bool,
}

/// Runs `work` on `tracker`, watched: should it panic (a bug), the panic is logged at error
/// and counted, rather than end the task unnoticed.
pub(crate) fn spawn_watched<F>(tracker: &TaskTracker, metrics: &Metrics, task: Task, work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let running = tracker.spawn(work);
    let metrics = metrics.clone();
    tracker.spawn(async move {
        if let Err(e) = running.await {
            if e.is_panic() {
                tracing::error!(task = task.as_str(), error = %e, "a pipeline task panicked; it stays stopped until the process restarts");
                metrics.task_panicked(task);
            }
        }
    });
}

/// The deployment's key for tagging hookrelay's own events, made on first use.
async fn origin_key(store: &Store) -> Result<[u8; ORIGIN_KEY_BYTES], DispatchError> {
    let mut fresh = [0u8; ORIGIN_KEY_BYTES];
    rand::Rng::fill(&mut rand::rng(), &mut fresh[..]);
    let stored = store.service_key("event_origin", &fresh).await?;
    stored
        .try_into()
        .map_err(|_| DispatchError::BadServiceKey("event_origin"))
}

/// A handle on the running pipeline: for the API to announce its own changes, to queue
/// deliveries again and to send test events.
#[derive(Clone)]
pub struct Dispatcher {
    routing: Arc<Routing>,
    recovery: Recovery,
    broker: Broker,
    origin: OriginKey,
}

/// Why the pipeline could not do what the API asked.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the broker is not reachable; try again shortly")]
    BrokerDown,
    #[error("the webhook was deleted; its deliveries have nowhere to go")]
    WebhookGone,
    #[error("cannot queue the delivery now; try again shortly")]
    Publish(#[from] PublishError),
    #[error("cannot encode a delivery")]
    Encode(#[from] serde_json::Error),
    #[error("database error")]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("cannot build the HTTP client")]
    Http(#[from] reqwest::Error),
    #[error("cannot load the webhooks")]
    Store(#[from] hookrelay_store::StoreError),
    #[error("{0}; add the key that sealed it to old_secret_keys")]
    Unsealable(String),
    #[error("the service key `{0}` in the database is not {ORIGIN_KEY_BYTES} bytes; delete its row in service_keys to have a new one made")]
    BadServiceKey(&'static str),
}

impl Dispatcher {
    /// Loads the subscriptions, then starts the fan-out, the delivery workers and the change
    /// listener on `tracker`. They stop when `shutdown` is cancelled, finishing what is under
    /// way and leaving the rest unacked for the broker to hand out again.
    pub async fn start(
        config: DispatchConfig,
        store: Store,
        broker: Broker,
        metrics: Metrics,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Self, DispatchError> {
        let topology = Topology::with_queue_type(&config.namespace, config.queue_type);
        // With the broker up, the exchanges and the ingest queue exist before start-up ends,
        // so an event published right after is routed, not dropped. With it down, the workers
        // declare them once it is back.
        match broker.wait_connected(STARTUP_BROKER_PATIENCE).await {
            Some(connection) => {
                let declarer = Declarer::new(connection);
                let declared = topology.declare_base(&declarer).await;
                declarer.close().await;
                if let Err(e) = declared {
                    tracing::warn!(error = %error_chain(&e), "cannot declare the broker topology yet");
                }
            }
            None => tracing::warn!("the broker is not reachable yet; starting without it"),
        }
        let origin = OriginKey::new(origin_key(&store).await?);
        let subscriptions = Arc::new(Subscriptions::new(store.clone()));
        subscriptions.reload_all().await?;
        // A key left out of the settings is a deployment mistake: refuse to start rather than
        // fail every delivery of the webhooks it sealed.
        if let Some(first) = subscriptions.unsealable().first() {
            return Err(DispatchError::Unsealable(first.clone()));
        }
        let listen = subscriptions::listen(
            subscriptions.clone(),
            config.database_url.clone(),
            shutdown.clone(),
            tracker.clone(),
        );
        spawn_watched(tracker, &metrics, Task::SubscriptionListener, listen);

        let queues = Arc::new(QueueRegistry::new(topology.clone(), metrics.clone()));
        // Before anything declares: a queue of these found missing was lost.
        let unfinished = queues.remember_unfinished(&store).await?;
        tracing::debug!(
            webhooks = unfinished,
            "webhooks with deliveries under way, whose queues are checked"
        );
        let routing = Arc::new(Routing {
            topology,
            subscriptions: subscriptions.clone(),
            store: store.clone(),
            queues,
            ordered_bound: Default::default(),
        });
        let recovery = Recovery::start(recover::Parts {
            routing: routing.clone(),
            broker: broker.clone(),
            metrics: metrics.clone(),
            rate: config.requeue_rate,
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            lost: LostCheck::for_request_timeout(config.request_timeout),
            quiet: Default::default(),
        });
        let sender = http::Sender::new(config.allow_private_networks, config.max_in_flight_total)?;
        let handoffs = Arc::new(deliver::Handoffs::default());
        let deliver = Arc::new(deliver::Context {
            routing: routing.clone(),
            sender,
            writer: deliver::start_writer(store.clone(), tracker),
            unrecorded: Arc::new(tokio::sync::Semaphore::new(deliver::UNRECORDED)),
            metrics: metrics.clone(),
            request_timeout: config.request_timeout,
            per_webhook: config.max_in_flight_per_webhook,
            global: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight_total)),
            failing: Arc::new(tokio::sync::Semaphore::new(
                (config.max_in_flight_total / 4).max(1),
            )),
            accounts: deliver::AccountSlots::new(config.max_in_flight_per_account),
            policy: HealthPolicy {
                breaker_threshold: config.breaker_threshold,
                disable_after: config.disable_after,
                schedule: config.retry_schedule.clone(),
            },
            health: deliver::HealthBook::default(),
            saved_health: deliver::start_lookup(store.clone(), tracker),
            handoffs: handoffs.clone(),
            origin: origin.clone(),
            tracker: tracker.clone(),
        });
        let delivering = deliver::run(deliver, broker.clone(), shutdown.clone());
        spawn_watched(tracker, &metrics, Task::DeliveryManager, delivering);
        let router = Arc::new(router::Context {
            routing: routing.clone(),
        });
        let routing_retries = router::run(router, broker.clone(), shutdown.clone());
        spawn_watched(tracker, &metrics, Task::RetryRouter, routing_retries);
        let retention = retention::run(
            store.clone(),
            metrics.clone(),
            retention::Periods {
                logs: config.log_retention,
                dedupe: config.dedupe_window,
            },
            shutdown.clone(),
        );
        spawn_watched(tracker, &metrics, Task::Retention, retention);
        let fanout = Arc::new(fanout::Context {
            routing: routing.clone(),
            event_types: event_type_cache::EventTypeCache::new(store),
            metrics,
            intake: Intake {
                max_bytes: config.max_event_bytes,
                max_depth: config.max_event_depth,
                from_hookrelay: false,
            },
            origin: origin.clone(),
            keep_unmatched_events: config.keep_unmatched_events,
            handoffs,
        });
        for worker in 0..config.ingest_workers.max(1) {
            let consuming = fanout::run(
                fanout.clone(),
                broker.clone(),
                shutdown.clone(),
                Some(worker),
            );
            spawn_watched(tracker, &fanout.metrics, Task::Fanout, consuming);
        }
        let ordered = fanout::run(fanout.clone(), broker.clone(), shutdown.clone(), None);
        spawn_watched(tracker, &fanout.metrics, Task::Fanout, ordered);
        let binding = fanout::bind_when_needed(routing.clone(), broker.clone(), shutdown.clone());
        spawn_watched(tracker, &fanout.metrics, Task::Fanout, binding);
        Ok(Self {
            routing,
            recovery,
            broker,
            origin,
        })
    }

    /// Webhook `row` was just written through the API: it matches the very next event, rather
    /// than only once its change notification comes back, and that notification costs no
    /// read of its own.
    pub async fn webhook_written(&self, row: WebhookRow) {
        self.routing.subscriptions.apply_written(row).await;
    }

    /// Webhook `id` was just deleted through the API.
    pub async fn webhook_deleted(&self, id: Uuid) {
        self.routing.subscriptions.remove(id).await;
    }

    /// Queues one more attempt of log `id`, whatever its status. `Ok(false)` when no such
    /// log is visible to `account`.
    pub async fn retry_log(&self, id: Uuid, account: Option<String>) -> Result<bool, RequestError> {
        self.recovery.retry_log(id, account).await
    }

    /// Starts queueing again, paced, the `failed` logs `filter` selects; answers how many.
    pub async fn requeue(&self, filter: RequeueFilter) -> Result<i64, RequestError> {
        self.recovery.requeue(filter).await
    }

    /// Starts delivering to a webhook the stored events it has not received that `replay`
    /// selects, paced; answers how many.
    pub async fn replay(&self, replay: hookrelay_store::Replay) -> Result<i64, RequestError> {
        self.recovery.replay(replay).await
    }

    /// Binds the ordered fan-out's queue, if it is not bound yet: every event published from
    /// now on reaches it.
    pub async fn prepare_fifo(&self) -> Result<(), RequestError> {
        if self.routing.ordered_bound() {
            return Ok(());
        }
        let connection = self.broker.connection().ok_or(RequestError::BrokerDown)?;
        fanout::bind_ordered(&self.routing, &connection)
            .await
            .map_err(|e| RequestError::Publish(PublishError::Broker(e)))
    }

    /// Ends the first delivery of FIFO webhook `id`'s line `failed` and moves the line on;
    /// answers the log ended, `None` when nothing waits.
    pub async fn skip(
        &self,
        id: Uuid,
        account: Option<&str>,
    ) -> Result<Option<Uuid>, RequestError> {
        self.recovery.skip(id, account).await
    }

    /// Sends `Webhook.test`, or `example`, to webhook `id` alone; answers the id its log
    /// will have.
    pub async fn send_test(
        &self,
        id: Uuid,
        example: Option<test_event::Example>,
    ) -> Result<Uuid, RequestError> {
        test_event::send(&self.routing, &self.broker, &self.origin, id, example).await
    }
}
