//! Declaring queues and exchanges on a channel kept for it, so that a refused declaration
//! closes that channel only, never one that consumers or a publisher share.
//!
//! A queue that already exists with other arguments (made by an earlier release with another
//! `x-queue-version`, or under the other `queue_type`) is kept as it is: the broker refuses
//! the declaration (406 PRECONDITION_FAILED, which closes the channel), the declarer opens a
//! new channel, checks that the queue exists (a passive declaration) and says so in the log:
//! a warning for the first such queue, then one line at debug level for each other, since
//! an upgraded deployment may have ten thousand. Converting it is an operator's choice (a
//! policy, or draining and deleting it), not something a starting process should do on its
//! own.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ExchangeKind};
use tracing::{debug, warn};

/// The AMQP reply code of a declaration that does not match what exists.
const PRECONDITION_FAILED: u16 = 406;

/// The AMQP reply code of a declaration of a queue that exists but cannot be reached.
const NOT_FOUND: u16 = 404;

fn precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == PRECONDITION_FAILED)
}

/// Whether a declaration (or a consume) failed because the queue exists but cannot be
/// reached now: a durable classic queue whose node is down or cut off from this one ("home
/// node … is down or inaccessible"), or whose process the broker stopped. It passes when the
/// node is back; meanwhile a message published to the queue comes back unroutable.
///
/// Any NOT_FOUND but RabbitMQ's "no queue" and "no exchange" (something missing, which
/// declaring again mends): should a broker word these differently, a missing object is
/// taken for an unreachable one and waited for, which heals once anything declares it, where
/// the other mistake would stop the fan-out.
pub fn queue_unavailable(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(e)
        if e.get_id() == NOT_FOUND && !e.get_message().as_str().contains("NOT_FOUND - no "))
}

/// RabbitMQ's answer to a passive declaration of a queue that does not exist.
pub fn queue_missing(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(e)
        if e.get_id() == NOT_FOUND && e.get_message().as_str().starts_with("NOT_FOUND - no queue "))
}

pub struct Declarer {
    connection: Arc<Connection>,
    channel: tokio::sync::Mutex<Option<Channel>>,
    /// Queues already found with other arguments, so that each is logged once and only the
    /// first as a warning.
    kept: Mutex<HashSet<String>>,
}

impl Declarer {
    pub fn new(connection: Arc<Connection>) -> Self {
        Self {
            connection,
            channel: tokio::sync::Mutex::new(None),
            kept: Mutex::new(HashSet::new()),
        }
    }

    /// The open channel, or a new one if the last failed. Callers hold the lock for the whole
    /// request: a refused declaration closes the channel and fails every request pending on
    /// it with the same error, so requests from several tasks must not overlap.
    async fn open(&self, slot: &mut Option<Channel>) -> Result<Channel, lapin::Error> {
        if let Some(channel) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(channel.clone());
        }
        let channel = self.connection.create_channel().await?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    pub async fn exchange(&self, name: &str, kind: ExchangeKind) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let mut slot = self.channel.lock().await;
        self.open(&mut slot)
            .await?
            .exchange_declare(name.into(), kind, durable, FieldTable::default())
            .await
    }

    /// Declares a durable queue with `args`; one that exists with other arguments is used as
    /// it is.
    pub async fn queue(&self, name: &str, args: FieldTable) -> Result<(), lapin::Error> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let mut slot = self.channel.lock().await;
        match self
            .open(&mut slot)
            .await?
            .queue_declare(name.into(), durable, args)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if precondition_failed(&e) => {
                self.passive(&mut slot, name).await?;
                // A poisoned set only means logging again.
                let (new, first) = self
                    .kept
                    .lock()
                    .map(|mut kept| (kept.insert(name.to_owned()), kept.len() == 1))
                    .unwrap_or((true, false));
                if new && first {
                    warn!(queue = name, reason = %e, "queue exists with other arguments; using it as it is (further such queues are logged at debug level)");
                } else if new {
                    debug!(queue = name, reason = %e, "queue exists with other arguments; using it as it is");
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Whether queue `name` exists, told by a passive declaration; `Err` (404) when it does
    /// not, which costs this channel only.
    pub async fn exists(&self, name: &str) -> Result<(), lapin::Error> {
        let mut slot = self.channel.lock().await;
        self.passive(&mut slot, name).await
    }

    async fn passive(&self, slot: &mut Option<Channel>, name: &str) -> Result<(), lapin::Error> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.open(slot)
            .await?
            .queue_declare(name.into(), passive, FieldTable::default())
            .await
            .map(|_| ())
    }

    pub async fn bind(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        args: FieldTable,
    ) -> Result<(), lapin::Error> {
        let mut slot = self.channel.lock().await;
        self.open(&mut slot)
            .await?
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                args,
            )
            .await
    }

    /// Deletes a queue and the messages in it; deleting one that does not exist succeeds.
    pub async fn delete_queue(&self, name: &str) -> Result<(), lapin::Error> {
        let mut slot = self.channel.lock().await;
        self.open(&mut slot)
            .await?
            .queue_delete(name.into(), QueueDeleteOptions::default())
            .await
            .map(|_| ())
    }

    pub async fn delete_exchange(&self, name: &str) -> Result<(), lapin::Error> {
        let mut slot = self.channel.lock().await;
        self.open(&mut slot)
            .await?
            .exchange_delete(name.into(), ExchangeDeleteOptions::default())
            .await
    }

    pub async fn close(&self) {
        if let Some(channel) = self.channel.lock().await.take() {
            let _ = channel.close(200, "declarations done".into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPSoftError};

    use super::*;

    fn refused(kind: AMQPSoftError, text: &str) -> lapin::Error {
        let error = AMQPError::new(AMQPErrorKind::Soft(kind), text.into());
        lapin::ErrorKind::ProtocolError(error).into()
    }

    #[test]
    fn a_queue_whose_node_is_down_is_unavailable_and_a_missing_one_is_not() {
        // As RabbitMQ 3.10 words them.
        let down = "NOT_FOUND - home node 'rabbit@b' of durable queue 'ns.webhook.1' in vhost '/' is down or inaccessible";
        assert!(queue_unavailable(&refused(AMQPSoftError::NOTFOUND, down)));
        let stopped =
            "NOT_FOUND - queue 'ns.webhook.1' in vhost '/' process is stopped by supervisor";
        assert!(queue_unavailable(&refused(
            AMQPSoftError::NOTFOUND,
            stopped
        )));
        for missing in [
            "NOT_FOUND - no queue 'ns.webhook.1' in vhost '/'",
            "NOT_FOUND - no exchange 'ns.deliveries' in vhost '/'",
        ] {
            assert!(!queue_unavailable(&refused(
                AMQPSoftError::NOTFOUND,
                missing
            )));
        }
        let no_queue = refused(
            AMQPSoftError::NOTFOUND,
            "NOT_FOUND - no queue 'ns.webhook.1' in vhost '/'",
        );
        assert!(queue_missing(&no_queue));
        assert!(!queue_missing(&refused(AMQPSoftError::NOTFOUND, down)));
        let other_arguments = "PRECONDITION_FAILED - inequivalent arg 'x-queue-version'";
        let mismatch = refused(AMQPSoftError::PRECONDITIONFAILED, other_arguments);
        assert!(!queue_unavailable(&mismatch) && precondition_failed(&mismatch));
    }
}
