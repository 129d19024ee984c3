//! RabbitMQ: the supervised connection, the topology under the deployment's namespace, and
//! publishing with confirms (`Publisher`). Knows nothing of webhooks or the database.
//!
//! The connection is owned by a supervisor task that reconnects with exponential backoff
//! (`backon`) whenever the broker goes away; users ask for the current connection and get
//! `None` while there is none, instead of blocking.
//!
//! `amqp_url` may name several nodes of one cluster, separated by commas: each (re)connection
//! tries them in turn, from the one after the node last connected to, so that a process whose
//! node stopped goes on with another instead of waiting for that one.

mod channels;
mod declarer;
mod publisher;
mod topology;

pub use channels::{ConsumerChannels, Consuming};
pub use declarer::{queue_missing, queue_unavailable, Declarer};
pub use lapin;
pub use publisher::{NoRoutes, Outgoing, PublishError, Publisher, Reroute, ReturnHandler};
pub use topology::{QueueType, Topology, DUE_HEADER, TIER_HEADER};

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid amqp_url: {0}")]
    Config(String),
    #[error("broker error")]
    Amqp(#[from] lapin::Error),
}

/// Checks an `amqp_url` (one AMQP URL, or several separated by commas) without connecting.
/// The error never repeats a URL, which may hold a password.
pub fn validate_url(amqp_url: &str) -> Result<(), BrokerError> {
    urls(amqp_url).map(|_| ())
}

/// The URLs of an `amqp_url`, each checked. A comma inside a password is written `%2C`:
/// a raw one splits the URL in two, which the error then hints at.
fn urls(amqp_url: &str) -> Result<Vec<String>, BrokerError> {
    let pieces: Vec<&str> = amqp_url.split(',').map(str::trim).collect();
    let count = pieces.len();
    let which = |i: usize| match count {
        1 => String::new(),
        _ => format!(
            "URL {} of {count} (several are separated by commas; a comma in a password is \
             written %2C): ",
            i + 1
        ),
    };
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, url)| {
            if url.is_empty() {
                return Err(BrokerError::Config(format!("{}empty", which(i))));
            }
            // lapin's message may quote the URL, and with it a password.
            lapin::uri::AMQPUri::from_str(url)
                .map(|_| url.to_owned())
                .map_err(|e| {
                    let e = e.replace(url, "<the URL>");
                    BrokerError::Config(format!("{}{e}", which(i)))
                })
        })
        .collect()
}

/// Where a URL points, without its user or password, for the logs.
fn node_of(url: &str) -> String {
    match lapin::uri::AMQPUri::from_str(url) {
        Ok(uri) => format!("{}:{}", uri.authority.host, uri.authority.port),
        Err(_) => "<unparsable>".into(),
    }
}

/// A handle on the supervised broker connection; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    current: watch::Receiver<Option<Arc<Connection>>>,
}

impl Broker {
    /// Starts the supervisor on `tracker`; it closes the connection and ends when `shutdown`
    /// is cancelled.
    /// `name` shows in the broker's connection list (`rabbitmqctl list_connections`).
    pub fn start(
        amqp_url: &str,
        name: &str,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Self, BrokerError> {
        let urls = urls(amqp_url)?;
        let (tx, rx) = watch::channel(None);
        tracker.spawn(supervise(urls, name.to_owned(), tx, shutdown));
        Ok(Self { current: rx })
    }

    /// The live connection, if there is one now.
    pub fn connection(&self) -> Option<Arc<Connection>> {
        self.current
            .borrow()
            .as_ref()
            .filter(|c| c.status().connected())
            .cloned()
    }

    pub fn is_connected(&self) -> bool {
        self.connection().is_some()
    }

    /// The next live connection, or `None` once `shutdown` is cancelled.
    pub async fn next_connection(&self, shutdown: &CancellationToken) -> Option<Arc<Connection>> {
        let mut rx = self.current.clone();
        let found = tokio::select! {
            _ = shutdown.cancelled() => None,
            c = rx.wait_for(|c| c.as_ref().is_some_and(|c| c.status().connected())) => {
                c.ok().and_then(|c| c.clone())
            }
        };
        found
    }

    /// Waits until connected, or for at most `deadline`.
    pub async fn wait_connected(&self, deadline: Duration) -> Option<Arc<Connection>> {
        let mut rx = self.current.clone();
        let wait = rx.wait_for(|c| c.as_ref().is_some_and(|c| c.status().connected()));
        let found = match tokio::time::timeout(deadline, wait).await {
            Ok(Ok(conn)) => conn.clone(),
            _ => None,
        };
        found
    }
}

impl Broker {
    /// Runs `work` on each live connection until it ends well or `shutdown` is cancelled.
    /// A failure (the broker went away, a channel broke) is logged as `what` stopping, and
    /// `work` starts over on the next connection a second later.
    pub async fn keep_running<F, Fut, E>(
        &self,
        shutdown: &CancellationToken,
        what: &str,
        mut work: F,
    ) where
        F: FnMut(Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: std::error::Error,
    {
        loop {
            let Some(connection) = self.next_connection(shutdown).await else {
                return;
            };
            match work(connection).await {
                Ok(()) => return,
                Err(e) => {
                    warn!(error = %hookrelay_core::error_chain(&e), "{what} stopped; restarting");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}

/// Consumes `queue` on `channel` with a prefetch of `prefetch`, under a consumer tag that
/// starts with `name` (shown by `rabbitmqctl list_consumers`) and is unique.
pub async fn consume(
    channel: &lapin::Channel,
    queue: &str,
    prefetch: u16,
    name: &str,
) -> Result<lapin::Consumer, lapin::Error> {
    channel
        .basic_qos(prefetch, lapin::options::BasicQosOptions::default())
        .await?;
    channel
        .basic_consume(
            queue.into(),
            format!("{name}-{}", uuid::Uuid::new_v4().simple()).into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
}

/// Properties of every message hookrelay publishes: persistent (survives a broker restart
/// in a durable queue) and JSON.
pub fn persistent_json() -> lapin::BasicProperties {
    lapin::BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

/// How every reconnect loop waits: from 200 ms, doubling to 10 s at most, jittered so that
/// many copies of the service do not knock on a returning broker or database together.
pub fn reconnect_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
}

/// One unsupervised connection, for short-lived tools such as `hookrelay publish`: to the
/// first of `amqp_url`'s nodes that answers.
pub async fn connect(amqp_url: &str) -> Result<Connection, BrokerError> {
    let urls = urls(amqp_url)?;
    Ok(connect_any(&urls, 0, "hookrelay-client").await?.0)
}

/// How long one node may take to accept a connection before the next is tried: a node
/// whose machine is gone may never refuse it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Connects to the first of `urls` that answers, trying them in turn from `first`; answers
/// the connection and the index of its URL, or the last error.
async fn connect_any(
    urls: &[String],
    first: usize,
    name: &str,
) -> Result<(Connection, usize), lapin::Error> {
    let mut last = None;
    for i in (0..urls.len()).map(|k| (first + k) % urls.len()) {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let attempt = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect(urls[i].as_str(), properties),
        );
        match attempt.await {
            Ok(Ok(connection)) => return Ok((connection, i)),
            Ok(Err(e)) => {
                if urls.len() > 1 {
                    warn!(node = %node_of(&urls[i]), error = %e, "cannot reach this broker node; trying the next");
                }
                last = Some(e);
            }
            Err(_) => {
                warn!(node = %node_of(&urls[i]), timeout = ?CONNECT_TIMEOUT, "this broker node did not answer in time");
                last = Some(lapin::Error::from(lapin::ErrorKind::IOError(Arc::new(
                    std::io::Error::from(std::io::ErrorKind::TimedOut),
                ))));
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed).into()
    }))
}

/// How often the connection's state is read besides its events: lapin closes a connection
/// without an error event in some cases (a broker's close with a code it does not know).
const STATUS_CHECK: Duration = Duration::from_secs(2);

/// Resolves when the connection is gone. The listener is taken by the caller right after
/// connecting, since lapin drops the events that come while nobody listens.
///
/// lapin reports a channel's error on the same stream as the connection's, so an
/// error counts only once the connection itself no longer says it is connected.
async fn connection_lost(
    conn: Arc<Connection>,
    events: impl futures::Stream<Item = lapin::Event> + Send,
) {
    let mut events = std::pin::pin!(events);
    let mut check = tokio::time::interval(STATUS_CHECK);
    loop {
        if !conn.status().connected() {
            let status = conn.status();
            warn!(
                closed = status.closed(),
                errored = status.errored(),
                "lost the broker connection"
            );
            return;
        }
        tokio::select! {
            event = events.next() => match event {
                Some(lapin::Event::Error(err)) if !conn.status().connected() => {
                    warn!(error = %err, "lost the broker connection");
                    return;
                }
                Some(_) => {}
                None => {
                    warn!("lost the broker connection: its event stream ended");
                    return;
                }
            },
            _ = check.tick() => {}
        }
    }
}

async fn supervise(
    urls: Vec<String>,
    name: String,
    current: watch::Sender<Option<Arc<Connection>>>,
    shutdown: CancellationToken,
) {
    let backoff = reconnect_backoff();
    // The node tried first: after a loss, the one after the node lost, which is likely down.
    let mut first = 0;
    loop {
        let attempt = (|| connect_any(&urls, first, &name))
            .retry(backoff)
            .notify(|err, delay| warn!(error = %err, retry_in = ?delay, "cannot reach the broker"));
        let conn = tokio::select! {
            _ = shutdown.cancelled() => return,
            conn = attempt => match conn {
                Ok((conn, at)) => {
                    first = (at + 1) % urls.len();
                    info!(node = %node_of(&urls[at]), "connected to the broker");
                    Arc::new(conn)
                }
                // `without_max_times` retries forever; this arm only satisfies the types.
                Err(_) => continue,
            },
        };
        // One listener per connection (the stream's receivers compete for events), taken
        // before anything else can go wrong on it.
        let lost = connection_lost(conn.clone(), conn.events_listener());
        current.send_replace(Some(conn.clone()));
        tokio::select! {
            _ = shutdown.cancelled() => {
                current.send_replace(None);
                let _ = conn.close(200, "hookrelay is shutting down".into()).await;
                return;
            }
            _ = lost => {
                current.send_replace(None);
            }
        }
    }
}
