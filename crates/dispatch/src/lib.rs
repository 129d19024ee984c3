//! The pipeline: events from `{ns}.ingest` are validated, matched and fanned out into the
//! per-webhook queues (`fanout`), and delivery workers POST them, signed, recording every
//! attempt (`deliver`). Subscriptions are matched in memory (`subscriptions`), kept current
//! through PostgreSQL LISTEN/NOTIFY.
//!
//! Every message is acked only after what it caused is durable: an event after its log rows
//! are committed and its delivery messages confirmed by the broker; a delivery after its
//! attempt is committed. A crash anywhere means redelivery, never a hole. Memory is bounded
//! by prefetch counts, semaphores and bounded channels; nothing queues without limit.

mod catalog;
mod deliver;
mod fanout;
mod http;
mod subscriptions;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use hookrelay_broker::{Broker, Topology};
use hookrelay_core::RetrySchedule;
use hookrelay_metrics::Metrics;
use hookrelay_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use subscriptions::Subscriptions;

pub(crate) use hookrelay_core::error_chain;

/// How long start-up waits for the broker before going on without it.
const STARTUP_BROKER_PATIENCE: Duration = Duration::from_secs(10);

/// What the pipeline needs to know from the settings.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub namespace: String,
    /// For the LISTEN connection, which is not pooled.
    pub database_url: String,
    pub max_event_bytes: usize,
    pub max_in_flight_per_webhook: u16,
    pub max_in_flight_total: usize,
    pub request_timeout: Duration,
    pub allow_private_networks: bool,
    pub retry_schedule: RetrySchedule,
    /// Concurrent fan-out consumers on `{ns}.ingest` in this process.
    pub ingest_workers: usize,
}

/// A handle on the running pipeline, for the API to announce its own changes.
#[derive(Clone)]
pub struct Dispatcher {
    subscriptions: Arc<Subscriptions>,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("cannot build the HTTP client")]
    Http(#[from] reqwest::Error),
    #[error("cannot load the webhooks")]
    Store(#[from] hookrelay_store::StoreError),
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
        let topology = Topology::new(&config.namespace);
        // With the broker up, the exchanges and the ingest queue exist before start-up ends,
        // so an event published right after is routed, not dropped. With it down, the workers
        // declare them once it is back.
        match broker.wait_connected(STARTUP_BROKER_PATIENCE).await {
            Some(connection) => {
                let declared = async {
                    let channel = connection.create_channel().await?;
                    topology.declare_base(&channel).await?;
                    channel.close(200, "declared").await
                };
                if let Err(e) = declared.await {
                    tracing::warn!(error = %e, "cannot declare the broker topology yet");
                }
            }
            None => tracing::warn!("the broker is not reachable yet; starting without it"),
        }
        let subscriptions = Arc::new(Subscriptions::new(store.clone()));
        subscriptions.reload_all().await?;
        tracker.spawn(subscriptions::listen(
            subscriptions.clone(),
            config.database_url.clone(),
            shutdown.clone(),
        ));

        let sender = http::Sender::new(config.allow_private_networks, config.max_in_flight_total)?;
        let writer = writer::AttemptWriter::start(store.clone(), tracker);
        let deliver = Arc::new(deliver::Context {
            topology: topology.clone(),
            subscriptions: subscriptions.clone(),
            sender,
            writer,
            metrics: metrics.clone(),
            store: store.clone(),
            request_timeout: config.request_timeout,
            per_webhook: config.max_in_flight_per_webhook,
            global: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight_total)),
        });
        tracker.spawn(deliver::run(deliver, broker.clone(), shutdown.clone()));

        let fanout = Arc::new(fanout::Context {
            topology,
            subscriptions: subscriptions.clone(),
            catalog: catalog::Catalog::new(store.clone()),
            store,
            metrics,
            max_event_bytes: config.max_event_bytes,
        });
        for worker in 0..config.ingest_workers.max(1) {
            tracker.spawn(fanout::run(
                fanout.clone(),
                broker.clone(),
                shutdown.clone(),
                worker,
            ));
        }
        Ok(Self { subscriptions })
    }

    /// Applies a change to webhook `id` made by this process at once, rather than when its
    /// notification comes back: a webhook created through the API matches the very next event.
    pub async fn webhook_changed(&self, id: Uuid) {
        if let Err(e) = self.subscriptions.reload_one(id).await {
            tracing::warn!(webhook_id = %id, error = %e, "cannot refresh a changed webhook; the listener will");
        }
    }
}
