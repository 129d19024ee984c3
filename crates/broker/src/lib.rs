//! RabbitMQ: the supervised connection, the topology under the deployment's namespace,
//! publishing with confirms (`Publisher`), and consuming (`Batches`, `ConsumerChannels`).
//! Knows nothing of webhooks or the database.
//!
//! The rest of hookrelay sees this crate's own types only: a [`Connection`], a [`Delivery`]
//! received (its body, typed [`Headers`], `ack` and `nack`), an [`Outgoing`] message, a
//! [`BrokerError`] that says what it means (`queue_unavailable`, …). The AMQP client, its
//! properties and field tables, and how headers are encoded stay in here.
//!
//! The connection is owned by a supervisor task that reconnects with exponential backoff
//! (`backon`) whenever the broker goes away; users ask for the current connection and get
//! `None` while there is none, instead of blocking.
//!
//! `amqp_url` may name several nodes of one cluster, separated by commas: each (re)connection
//! tries them in turn, from the one after the node last connected to, so that a process whose
//! node stopped goes on with another instead of waiting for that one.

mod batches;
mod channels;
mod declarer;
mod message;
mod publisher;
mod topology;

pub use batches::{Batch, BatchLimits, Batches};
pub use channels::{ConsumerChannels, Consuming};
pub use declarer::Declarer;
pub use message::{Delivery, Durability, Headers, OtherHeaders, Outgoing, Rejected};
pub use publisher::{NoRoutes, PublishError, Publisher, Reroute, ReturnHandler};
pub use topology::{QueueType, Topology};

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use lapin::ConnectionProperties;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Log directives (`tracing_subscriber::EnvFilter` syntax) for the AMQP client's own logging.
/// It logs every channel the broker closes as an error: a queue kept as found after an
/// upgrade, or a webhook queue whose node is down, refused once per webhook and per retry, ten
/// thousand lines where one says it all. The same failure reaches hookrelay as an `Err`, which
/// it logs with what it means. So that target is off; with it go the client's lines for a
/// connection the broker closed and for protocol violations, which hookrelay sees as the
/// connection lost and logs as such ("lost the broker connection", with the reason).
pub const CLIENT_LOG_FILTER: &str = "lapin=warn,lapin::channel=off,amq_protocol=warn";

/// The AMQP reply code of a declaration that does not match what exists.
const PRECONDITION_FAILED: u16 = 406;

/// The AMQP reply code of a declaration of a queue that does not exist, or cannot be reached.
const NOT_FOUND: u16 = 404;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid amqp_url: {0}")]
    Config(String),
    #[error("broker error")]
    Amqp(#[source] AmqpError),
    #[error("the broker ended the consumer")]
    ConsumerEnded,
}

/// An error of the AMQP client. Opaque: callers ask [`BrokerError`] what it means rather than
/// read its codes.
#[derive(Debug)]
pub struct AmqpError(lapin::Error);

impl std::fmt::Display for AmqpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for AmqpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<lapin::Error> for BrokerError {
    fn from(e: lapin::Error) -> Self {
        Self::Amqp(AmqpError(e))
    }
}

impl BrokerError {
    /// The broker's refusal, with its reply code and text, if that is what this is.
    fn refusal(&self) -> Option<(u16, &str)> {
        match self {
            Self::Amqp(AmqpError(e)) => match e.kind() {
                lapin::ErrorKind::ProtocolError(e) => Some((e.get_id(), e.get_message().as_str())),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether a declaration (or a consume) failed because the queue exists but cannot be
    /// reached now: a durable classic queue whose node is down or cut off from this one
    /// ("home node … is down or inaccessible"), or whose process the broker stopped. It
    /// passes when the node is back; meanwhile a message published to the queue comes back
    /// unroutable.
    ///
    /// Any NOT_FOUND but RabbitMQ's "no queue" and "no exchange" (something missing, which
    /// declaring again mends): should a broker word these differently, a missing object is
    /// taken for an unreachable one and waited for, which heals once anything declares it,
    /// where the other mistake would stop the fan-out.
    pub fn queue_unavailable(&self) -> bool {
        self.refusal()
            .is_some_and(|(code, text)| code == NOT_FOUND && !text.contains("NOT_FOUND - no "))
    }

    /// RabbitMQ's answer to a passive declaration of a queue that does not exist.
    pub fn queue_missing(&self) -> bool {
        self.refusal().is_some_and(|(code, text)| {
            code == NOT_FOUND && text.starts_with("NOT_FOUND - no queue ")
        })
    }

    /// A declaration that does not match what exists (other arguments).
    pub(crate) fn precondition_failed(&self) -> bool {
        self.refusal()
            .is_some_and(|(code, _)| code == PRECONDITION_FAILED)
    }
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
            // The client's message may quote the URL, and with it a password.
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

/// A connection to the broker; cheap to clone.
#[derive(Clone)]
pub struct Connection(Arc<lapin::Connection>);

impl Connection {
    pub fn is_connected(&self) -> bool {
        self.0.status().connected()
    }

    /// Closes it, for short-lived tools; the supervised one closes at shutdown.
    pub async fn close(&self) -> Result<(), BrokerError> {
        self.0.close(200, "done".into()).await?;
        Ok(())
    }

    pub(crate) async fn channel(&self) -> Result<lapin::Channel, BrokerError> {
        Ok(self.0.create_channel().await?)
    }
}

/// A handle on the supervised broker connection; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    current: watch::Receiver<Option<Connection>>,
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
    pub fn connection(&self) -> Option<Connection> {
        self.current
            .borrow()
            .as_ref()
            .filter(|c| c.is_connected())
            .cloned()
    }

    pub fn is_connected(&self) -> bool {
        self.connection().is_some()
    }

    /// The next live connection, or `None` once `shutdown` is cancelled.
    pub async fn next_connection(&self, shutdown: &CancellationToken) -> Option<Connection> {
        let mut rx = self.current.clone();
        let found = tokio::select! {
            _ = shutdown.cancelled() => None,
            c = rx.wait_for(|c| c.as_ref().is_some_and(Connection::is_connected)) => {
                c.ok().and_then(|c| c.clone())
            }
        };
        found
    }

    /// Waits until connected, or for at most `deadline`.
    pub async fn wait_connected(&self, deadline: Duration) -> Option<Connection> {
        let mut rx = self.current.clone();
        let wait = rx.wait_for(|c| c.as_ref().is_some_and(Connection::is_connected));
        let found = match tokio::time::timeout(deadline, wait).await {
            Ok(Ok(conn)) => conn.clone(),
            _ => None,
        };
        found
    }

    /// Runs `work` on each live connection until it ends well or `shutdown` is cancelled.
    /// A failure (the broker went away, a channel broke) is logged as `what` stopping, and
    /// `work` starts over on the next connection a second later.
    pub async fn keep_running<F, Fut, E>(
        &self,
        shutdown: &CancellationToken,
        what: &str,
        mut work: F,
    ) where
        F: FnMut(Connection) -> Fut,
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

/// Closes `channel`. One closed already (by the broker, or with its connection) has nothing
/// left to hand back, so a failure only says so at debug level.
pub(crate) async fn close_channel(channel: &lapin::Channel, why: &str) {
    if let Err(e) = channel.close(200, why.into()).await {
        tracing::debug!(error = %e, why, "the channel was closed already");
    }
}

/// Consumes `queue` on `channel` with a prefetch of `prefetch`, under a consumer tag that
/// starts with `name` (shown by `rabbitmqctl list_consumers`) and is unique.
async fn consume(
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
    let (connection, _) = connect_any(&urls, 0, "hookrelay-client").await?;
    Ok(Connection(Arc::new(connection)))
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
) -> Result<(lapin::Connection, usize), lapin::Error> {
    let mut last = None;
    for i in (0..urls.len()).map(|k| (first + k) % urls.len()) {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let attempt = tokio::time::timeout(
            CONNECT_TIMEOUT,
            lapin::Connection::connect(urls[i].as_str(), properties),
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

/// How often the connection's state is read besides its events: the client closes a
/// connection without an error event in some cases (a broker's close with a code it does not
/// know).
const STATUS_CHECK: Duration = Duration::from_secs(2);

/// Resolves when the connection is gone. The listener is taken by the caller right after
/// connecting, since the client drops the events that come while nobody listens.
///
/// The client reports a channel's error on the same stream as the connection's, so an
/// error counts only once the connection itself no longer says it is connected.
async fn connection_lost(
    conn: Arc<lapin::Connection>,
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
    current: watch::Sender<Option<Connection>>,
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
        current.send_replace(Some(Connection(conn.clone())));
        tokio::select! {
            _ = shutdown.cancelled() => {
                current.send_replace(None);
                if let Err(e) = conn.close(200, "hookrelay is shutting down".into()).await {
                    warn!(error = %e, "cannot close the broker connection cleanly");
                }
                return;
            }
            _ = lost => {
                current.send_replace(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPSoftError};

    use super::*;

    fn refused(kind: AMQPSoftError, text: &str) -> BrokerError {
        let error = AMQPError::new(AMQPErrorKind::Soft(kind), text.into());
        lapin::Error::from(lapin::ErrorKind::ProtocolError(error)).into()
    }

    #[test]
    fn a_queue_whose_node_is_down_is_unavailable_and_a_missing_one_is_not() {
        // As RabbitMQ 3.10 words them.
        let down = "NOT_FOUND - home node 'rabbit@b' of durable queue 'ns.webhook.1' in vhost '/' is down or inaccessible";
        assert!(refused(AMQPSoftError::NOTFOUND, down).queue_unavailable());
        let stopped =
            "NOT_FOUND - queue 'ns.webhook.1' in vhost '/' process is stopped by supervisor";
        assert!(refused(AMQPSoftError::NOTFOUND, stopped).queue_unavailable());
        for missing in [
            "NOT_FOUND - no queue 'ns.webhook.1' in vhost '/'",
            "NOT_FOUND - no exchange 'ns.deliveries' in vhost '/'",
        ] {
            assert!(!refused(AMQPSoftError::NOTFOUND, missing).queue_unavailable());
        }
        let no_queue = refused(
            AMQPSoftError::NOTFOUND,
            "NOT_FOUND - no queue 'ns.webhook.1' in vhost '/'",
        );
        assert!(no_queue.queue_missing());
        assert!(!refused(AMQPSoftError::NOTFOUND, down).queue_missing());
        let other_arguments = "PRECONDITION_FAILED - inequivalent arg 'x-queue-version'";
        let mismatch = refused(AMQPSoftError::PRECONDITIONFAILED, other_arguments);
        assert!(!mismatch.queue_unavailable() && mismatch.precondition_failed());
        assert!(!BrokerError::ConsumerEnded.queue_unavailable());
    }
}
