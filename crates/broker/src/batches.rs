//! Consuming a queue in batches, for the consumers that handle many messages at once (the
//! fan-out, the retry router): wait for one delivery, then take whatever else has arrived
//! already, without waiting for more. Batches form by themselves: while one is handled, the
//! next deliveries arrive (up to the prefetch) and are taken together, so a busy consumer
//! handles big batches and a quiet one small batches, without a timer.

use futures::{FutureExt as _, StreamExt as _};
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::{Channel, Consumer};
use tokio_util::sync::CancellationToken;

use crate::{BrokerError, Connection, Delivery};

/// How big batches may grow, and how many deliveries the broker sends ahead.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Deliveries sent ahead and not yet settled, at most.
    pub prefetch: u16,
    /// Deliveries per batch at most.
    pub max_count: usize,
    /// Body bytes per batch at most (the delivery that crosses it is the last taken).
    pub max_bytes: usize,
}

/// One queue consumed on a channel of its own.
pub struct Batches {
    channel: Channel,
    consumer: Consumer,
    limits: BatchLimits,
}

impl Batches {
    /// Starts consuming `queue` under a unique consumer tag that starts with `name` (shown by
    /// `rabbitmqctl list_consumers`).
    pub async fn open(
        connection: &Connection,
        queue: &str,
        limits: BatchLimits,
        name: &str,
    ) -> Result<Self, BrokerError> {
        let channel = connection.channel().await?;
        match crate::consume(&channel, queue, limits.prefetch, name).await {
            Ok(consumer) => Ok(Self {
                channel,
                consumer,
                limits,
            }),
            Err(e) => {
                crate::close_channel(&channel, "cannot consume").await;
                Err(e.into())
            }
        }
    }

    /// The next batch; `None` once `stop` is cancelled. An error means the channel or the
    /// consumer is gone: start over on a new one.
    pub async fn next(&mut self, stop: &CancellationToken) -> Result<Option<Batch>, BrokerError> {
        let first = tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            next = self.consumer.next() => next,
        };
        let first = first.ok_or(BrokerError::ConsumerEnded)??;
        let mut bytes = first.data.len();
        let mut deliveries = vec![Delivery::new(first)];
        while deliveries.len() < self.limits.max_count && bytes < self.limits.max_bytes {
            match self.consumer.next().now_or_never() {
                Some(Some(delivery)) => {
                    let delivery = delivery?;
                    bytes += delivery.data.len();
                    deliveries.push(Delivery::new(delivery));
                }
                _ => break,
            }
        }
        Ok(Some(Batch {
            deliveries,
            channel: self.channel.clone(),
        }))
    }

    /// Closes the channel: every delivery not yet settled goes back to the queue at once,
    /// rather than when the connection closes.
    pub async fn close(self, why: &str) {
        crate::close_channel(&self.channel, why).await;
    }
}

/// Deliveries taken together, in the order the queue gave them.
pub struct Batch {
    deliveries: Vec<Delivery>,
    channel: Channel,
}

impl Batch {
    pub fn deliveries(&self) -> &[Delivery] {
        &self.deliveries
    }

    fn last_tag(&self) -> u64 {
        self.deliveries.last().map_or(0, Delivery::tag)
    }

    /// Acks the whole batch at once: a channel's deliveries are acked in order, and this
    /// channel has one consumer, so one `multiple` ack covers them all.
    pub async fn ack(&self) -> Result<(), BrokerError> {
        self.channel
            .basic_ack(self.last_tag(), BasicAckOptions { multiple: true })
            .await?;
        Ok(())
    }

    /// Hands the whole batch back to the queue, in order.
    pub async fn nack(&self) -> Result<(), BrokerError> {
        let requeue = BasicNackOptions {
            multiple: true,
            requeue: true,
        };
        self.channel.basic_nack(self.last_tag(), requeue).await?;
        Ok(())
    }
}
