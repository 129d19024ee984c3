//! The `hookrelay` binary's library half: settings, and the wiring of store, broker and API
//! into one running service. `main.rs` only parses the command line, installs logging and
//! signal handlers, and calls in here, so tests start the very same service in-process.

pub mod otlp;
mod pipeline;
pub mod publish;
pub mod settings;

use std::time::Duration;

use anyhow::Context as _;
use backon::{ExponentialBuilder, Retryable};
use hookrelay_api::{ApiConfig, AppState, ListenerLimits};
use hookrelay_broker::Broker;
use hookrelay_dispatch::{DispatchConfig, Dispatcher};
use hookrelay_metrics::Metrics;
use hookrelay_store::{PoolOptions, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use hookrelay_core::error_chain;
pub use settings::Settings;

/// How long start-up keeps retrying an unreachable database before giving up.
const STARTUP_DB_PATIENCE: Duration = Duration::from_secs(20);

/// Applies the migrations, retrying for a short while if the database is not up yet.
pub async fn migrate(settings: &Settings) -> anyhow::Result<usize> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(3))
        .with_total_delay(Some(STARTUP_DB_PATIENCE))
        .without_max_times();
    (|| hookrelay_store::migrate(&settings.database_url))
        .retry(backoff)
        // Only while the server cannot be reached or is starting: a wrong password or a
        // missing permission will not fix itself.
        .when(|e| match e {
            hookrelay_store::StoreError::Db(db) => {
                db.as_db_error().is_none()
                    || db.code() == Some(&tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW)
            }
            _ => false,
        })
        .notify(|e, delay| {
            warn!(error = %error_chain(e), retry_in = ?delay, "cannot migrate the database yet");
        })
        .await
        .with_context(|| {
            format!(
                "cannot prepare the database at {} (is PostgreSQL running? \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`)",
                settings.database_display()
            )
        })
}

fn sealer(settings: &Settings) -> anyhow::Result<hookrelay_core::sealing::Sealer> {
    // `Settings::load` checked the keys already; this only fails for settings built in code.
    settings
        .sealer()
        .map_err(|(key, invalid)| anyhow::anyhow!("invalid setting {key}: {}", invalid.message))
}

/// `hookrelay reencrypt`: every webhook secret stored as the current keys would store it,
/// sealed under `secret_key` (or plain when it is unset), so that an old key can go. Answers
/// (rows rewritten, rows seen).
pub async fn reencrypt(settings: &Settings) -> anyhow::Result<(u64, u64)> {
    migrate(settings).await?;
    let store = Store::connect(&settings.database_url, &PoolOptions::default())?
        .with_sealer(sealer(settings)?);
    store
        .reencrypt_secrets()
        .await
        .context("cannot re-encrypt the webhook secrets")
}

/// Raises the soft limit on open files to the hard one, and refuses to start when even that
/// cannot hold what the settings allow at once: with too few descriptors, a burst of inbound
/// connections would leave deliveries failing with "Too many open files". The listener's
/// `max_connections` keeps inbound sockets inside their share.
fn ensure_descriptors(settings: &Settings) -> anyhow::Result<()> {
    let needed = settings.descriptors_needed();
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .context("cannot read or raise the open file limit (RLIMIT_NOFILE)")?;
    if limit < needed {
        anyhow::bail!(
            "the process may open {limit} files (RLIMIT_NOFILE), but max_connections ({}), \
             max_in_flight_total ({}, twice: under way and pooled) and database_pool_size ({}) \
             with a reserve of 128 need {needed}: lower those settings or raise the limit \
             (`ulimit -n`, LimitNOFILE= in a systemd unit)",
            settings.max_connections,
            settings.max_in_flight_total,
            settings.database_pool_size,
        );
    }
    info!(limit, needed, "open file limit");
    Ok(())
}

/// The longest a read on the replica runs: a replica that cannot answer (stuck, or far behind
/// in a recovery conflict) gives the reader an error rather than a hang.
const READ_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A service ready to run: migrated, listening, connected (or connecting) to the broker.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    limits: ListenerLimits,
    metrics: Metrics,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    shutdown_timeout: Duration,
}

impl Application {
    /// Builds the service. It stops when `shutdown` is cancelled.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        ensure_descriptors(&settings)?;
        migrate(&settings).await?;
        let pool = PoolOptions {
            max_size: settings.database_pool_size,
            ..PoolOptions::default()
        };
        let mut store =
            Store::connect(&settings.database_url, &pool)?.with_sealer(sealer(&settings)?);
        if let Some(url) = &settings.database_read_url {
            store = store.with_read_replica(url, &pool, READ_STATEMENT_TIMEOUT)?;
        }
        let metrics = Metrics::new().context("cannot register the metrics")?;
        // Types admins added to the catalog get their zero series too (the built-in ones
        // have them already).
        match store.event_type_names().await {
            Ok(names) => metrics.known_event_types(names.iter().map(String::as_str)),
            Err(e) => {
                warn!(error = %error_chain(&e), "cannot read the event type catalog for the metrics")
            }
        }
        // Bind before starting anything that runs in the background, so a taken port fails
        // start-up without leaving tasks behind.
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let tracker = TaskTracker::new();
        let broker = Broker::start(
            &settings.amqp_url,
            &format!("hookrelay {}", settings.namespace),
            shutdown.clone(),
            &tracker,
        )?;
        let dispatcher = Dispatcher::start(
            DispatchConfig {
                namespace: settings.namespace.clone(),
                database_url: settings.database_url.clone(),
                max_event_bytes: settings.max_event_bytes,
                max_event_depth: settings.max_event_depth,
                max_in_flight_per_webhook: settings.max_in_flight_per_webhook,
                max_in_flight_total: settings.max_in_flight_total,
                max_in_flight_per_account: settings.in_flight_per_account(),
                request_timeout: settings.request_timeout.0,
                allow_private_networks: settings.allow_private_networks,
                retry_schedule: settings.retry_schedule.clone(),
                breaker_threshold: settings.breaker_threshold,
                disable_after: settings.disable_after.0,
                requeue_rate: settings.requeue_rate,
                ingest_workers: settings.ingest_workers,
                log_retention: settings.log_retention.0,
                dedupe_window: settings.dedupe_window.0,
                keep_unmatched_events: settings.keep_unmatched_events,
                queue_type: settings.queue_type,
            },
            store.clone(),
            broker.clone(),
            metrics.clone(),
            shutdown.clone(),
            &tracker,
        )
        .await
        .context("cannot start the pipeline")?;
        // Every process signs and checks portal sessions with the same key.
        // 244 random bits from two v4 UUIDs, drawn from the OS's generator.
        let fresh: Vec<u8> = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
            .iter()
            .flat_map(|u| *u.as_bytes())
            .collect();
        let portal_key = store
            .service_key("portal_sessions", &fresh)
            .await
            .context("cannot read the portal session key")?;
        let state = AppState::new(
            store,
            metrics.clone(),
            std::sync::Arc::new(pipeline::DispatchPipeline { dispatcher, broker }),
            ApiConfig {
                admin_token: settings.admin_token.clone(),
                allow_private_networks: settings.allow_private_networks,
                max_request_bytes: settings.max_request_bytes,
                max_webhooks_per_account: settings.max_webhooks_per_account,
                max_in_flight_per_account: settings.in_flight_per_account(),
                portal_key,
                public_url: settings.public_url(),
                // Checked when the settings were read.
                portal_frame_ancestors: settings.frame_ancestors().unwrap_or_default(),
            },
        );
        if settings.admin_token.is_none() {
            warn!(
                "no admin_token is set: every /v1 call will answer 401 (set HOOKRELAY_ADMIN_TOKEN)"
            );
        }
        if settings.allow_private_networks {
            warn!(
                "allow_private_networks is on: webhooks may target loopback and private addresses"
            );
        }
        Ok(Self {
            listener,
            router: hookrelay_api::router(state),
            limits: ListenerLimits {
                max_connections: settings.max_connections,
                max_requests_per_client: settings.max_requests_per_client,
                header_read_timeout: settings.header_read_timeout.0,
            },
            metrics,
            tracker,
            shutdown,
            shutdown_timeout: settings.shutdown_timeout.0,
        })
    }

    /// The port actually bound, for settings that asked for port 0.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Runs until the shutdown token is cancelled, then drains: requests and background tasks
    /// under way get up to `shutdown_timeout` to finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        info!(address = %self.listener.local_addr()?, "hookrelay is listening");
        let mut server = tokio::spawn(hookrelay_api::serve(
            self.listener,
            self.router,
            self.limits,
            self.metrics,
            self.shutdown.clone(),
            self.shutdown_timeout,
        ));
        let server_result = tokio::select! {
            // The listener can end on its own (an IO error): stop everything else then too.
            result = &mut server => Some(result),
            _ = self.shutdown.cancelled() => None,
        };
        self.shutdown.cancel();
        // One deadline for the whole drain, HTTP and pipeline together.
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        let server_result = match server_result {
            Some(result) => Some(result),
            None => tokio::time::timeout_at(deadline, &mut server).await.ok(),
        };
        self.tracker.close();
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("work under way did not finish within the shutdown timeout; the broker will hand it out again");
        }
        if let Some(result) = server_result {
            result
                .context("the HTTP listener panicked")?
                .context("the HTTP listener failed")?;
        }
        info!("hookrelay stopped");
        Ok(())
    }
}
