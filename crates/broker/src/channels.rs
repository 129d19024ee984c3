//! Channels shared by many consumers: AMQP lets a channel carry any number of consumers,
//! each with its own prefetch (`basic.qos` without `global` applies to every consumer made
//! on the channel afterwards), so ten thousand webhook queues need a few dozen channels, not
//! ten thousand (the broker's `channel_max` is 2 047 per connection, and every channel is a
//! process on the broker and a task in the client).
//!
//! Sharing has one rule that a channel per consumer did not: a consumer that stops must give
//! back, one by one, the deliveries it received and did not start, since closing the channel
//! would take its neighbours' too. [`Consuming::stop`] does it, and the deliveries it hands
//! back keep their place at the head of the queue. Acks and nacks are always for one delivery
//! tag, never `multiple`, which on a shared channel would settle other consumers' deliveries.
//!
//! A channel that fails (the broker closed it) ends every consumer on it; their owners start
//! them again, on a channel that works.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use tracing::{debug, warn};

use crate::{BrokerError, Connection, Delivery};

/// How long a stopping consumer waits for the broker to confirm the cancel and for the
/// deliveries sent before it.
const CANCEL_PATIENCE: Duration = Duration::from_secs(10);

struct Shared {
    channel: Channel,
    /// One count per consumer on the channel.
    users: Arc<()>,
}

/// The channels of one connection that consumers of one prefetch share.
pub struct ConsumerChannels {
    connection: Connection,
    prefetch: u16,
    per_channel: usize,
    open: tokio::sync::Mutex<Vec<Shared>>,
}

impl ConsumerChannels {
    /// Channels for consumers with a prefetch of `prefetch`, at most `per_channel` on each.
    pub fn new(connection: Connection, prefetch: u16, per_channel: usize) -> Self {
        Self {
            connection,
            prefetch,
            per_channel: per_channel.max(1),
            open: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    /// Starts consuming `queue` under a unique consumer tag that starts with `name` (shown by
    /// `rabbitmqctl list_consumers`).
    pub async fn consume(&self, queue: &str, name: &str) -> Result<Consuming, BrokerError> {
        let (channel, user) = self.lease().await?;
        let tag = format!("{name}-{}", uuid::Uuid::new_v4().simple());
        let consumer = channel
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Consuming {
            consumer,
            channel,
            _user: user,
        })
    }

    /// A channel with room for one more consumer, opened if none has.
    async fn lease(&self) -> Result<(Channel, Arc<()>), BrokerError> {
        let mut open = self.open.lock().await;
        open.retain(|s| s.channel.status().connected());
        // Counted while the lock is held, so two leases never both take the last place.
        if let Some(shared) = open
            .iter()
            .find(|s| Arc::strong_count(&s.users) <= self.per_channel)
        {
            return Ok((shared.channel.clone(), shared.users.clone()));
        }
        let channel = self.connection.channel().await?;
        if let Err(e) = channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
        {
            crate::close_channel(&channel, "cannot set the prefetch").await;
            return Err(e.into());
        }
        let users = Arc::new(());
        open.push(Shared {
            channel: channel.clone(),
            users: users.clone(),
        });
        Ok((channel, users))
    }

    /// Closes every channel: whatever their consumers had not acked goes back to its queue.
    pub async fn close(&self) {
        let open = std::mem::take(&mut *self.open.lock().await);
        for shared in open {
            crate::close_channel(&shared.channel, "consumers stopped").await;
        }
    }
}

/// One consumer on a shared channel.
pub struct Consuming {
    consumer: Consumer,
    channel: Channel,
    _user: Arc<()>,
}

impl Consuming {
    /// The next delivery; `None` once the consumer has ended (its queue deleted, its channel
    /// closed): its owner starts a new one.
    pub async fn next(&mut self) -> Option<Delivery> {
        match self.consumer.next().await? {
            Ok(delivery) => Some(Delivery::new(delivery)),
            Err(e) => {
                debug!(error = %e, "a webhook consumer ended");
                None
            }
        }
    }

    /// Cancels the consumer and hands back to the queue each delivery it had received and not
    /// taken from the stream. Deliveries already taken are their holders' to settle.
    pub async fn stop(mut self) {
        let tag = self.consumer.tag().to_string();
        let drained = async {
            if self
                .channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await
                .is_err()
            {
                // The channel is gone, and the broker has put back all it had sent.
                return;
            }
            // After the cancel's confirmation the stream holds what came before it, then ends.
            while let Some(Ok(delivery)) = self.consumer.next().await {
                if let Err(e) = Delivery::new(delivery).nack().await {
                    // Its channel is gone: the broker has put it back already.
                    debug!(error = %e, "cannot hand a delivery back");
                }
            }
        };
        if tokio::time::timeout(CANCEL_PATIENCE, drained)
            .await
            .is_err()
        {
            // A broker that does not answer within this long is in trouble; closing the
            // channel hands everything back, the neighbours' deliveries too, and they
            // start again.
            warn!("the broker did not confirm a consumer's cancel; closing its shared channel");
            crate::close_channel(&self.channel, "cancel not confirmed").await;
        }
    }
}
