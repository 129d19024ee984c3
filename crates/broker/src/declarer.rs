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
use std::sync::Mutex;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};
use tracing::{debug, warn};

use crate::{BrokerError, Connection};

/// A channel kept for declaring, and deleting, queues and exchanges.
pub struct Declarer {
    connection: Connection,
    channel: tokio::sync::Mutex<Option<Channel>>,
    /// Queues already found with other arguments, so that each is logged once and only the
    /// first as a warning.
    kept: Mutex<HashSet<String>>,
}

impl Declarer {
    pub fn new(connection: Connection) -> Self {
        Self {
            connection,
            channel: tokio::sync::Mutex::new(None),
            kept: Mutex::new(HashSet::new()),
        }
    }

    /// The open channel, or a new one if the last failed. Callers hold the lock for the whole
    /// request: a refused declaration closes the channel and fails every request pending on
    /// it with the same error, so requests from several tasks must not overlap.
    async fn open(&self, slot: &mut Option<Channel>) -> Result<Channel, BrokerError> {
        if let Some(channel) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(channel.clone());
        }
        let channel = self.connection.channel().await?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    pub(crate) async fn exchange(&self, name: &str, kind: ExchangeKind) -> Result<(), BrokerError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let mut slot = self.channel.lock().await;
        self.open(&mut slot)
            .await?
            .exchange_declare(name.into(), kind, durable, FieldTable::default())
            .await?;
        Ok(())
    }

    /// Declares a durable queue with `args`; one that exists with other arguments is used as
    /// it is.
    pub(crate) async fn queue(&self, name: &str, args: FieldTable) -> Result<(), BrokerError> {
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
            .map_err(BrokerError::from)
        {
            Ok(_) => Ok(()),
            Err(e) if e.precondition_failed() => {
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
    pub async fn exists(&self, name: &str) -> Result<(), BrokerError> {
        self.ready(name).await.map(drop)
    }

    /// How many messages queue `name` holds ready for a consumer (not those delivered and
    /// unacked); `Err` (404) when it does not exist, as [`Declarer::exists`].
    pub async fn ready(&self, name: &str) -> Result<u32, BrokerError> {
        let mut slot = self.channel.lock().await;
        self.passive(&mut slot, name).await
    }

    async fn passive(&self, slot: &mut Option<Channel>, name: &str) -> Result<u32, BrokerError> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let queue = self
            .open(slot)
            .await?
            .queue_declare(name.into(), passive, FieldTable::default())
            .await?;
        Ok(queue.message_count())
    }

    pub(crate) async fn bind(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        args: FieldTable,
    ) -> Result<(), BrokerError> {
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
            .await?;
        Ok(())
    }

    /// Deletes a queue and the messages in it; deleting one that does not exist succeeds.
    pub async fn delete_queue(&self, name: &str) -> Result<(), BrokerError> {
        let mut slot = self.channel.lock().await;
        self.open(&mut slot)
            .await?
            .queue_delete(name.into(), QueueDeleteOptions::default())
            .await?;
        Ok(())
    }

    pub async fn delete_exchange(&self, name: &str) -> Result<(), BrokerError> {
        let mut slot = self.channel.lock().await;
        self.open(&mut slot)
            .await?
            .exchange_delete(name.into(), ExchangeDeleteOptions::default())
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(channel) = self.channel.lock().await.take() {
            crate::close_channel(&channel, "declarations done").await;
        }
    }
}
