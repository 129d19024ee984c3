//! The retry router: durable delays that never hold a message unacked.
//!
//! A retry waits in the broker, not in a process: it is published (with confirms, before the
//! failed delivery is acked) into the delay tier for its wait (`hookrelay_core::DelayTier`),
//! a queue whose TTL dead-letters it into `{ns}.retry.due`. This router consumes that queue:
//! a message that is due goes on to its webhook's queue (its routing key is the webhook id);
//! one that still has to wait goes into the next tier. Every hop is published with confirms
//! before the ack, so a crash or a broker restart at any point loses nothing (at worst a hop
//! is taken twice, and the delivery goes out twice with the same `webhook-id`).
//!
//! Why this and not DESIGN's one hop from the nearest tier straight back to the webhook
//! queue: a wait is met exactly (never early, late by less than the smallest tier), so a
//! `Retry-After` clamp holds; and a webhook queue only ever holds deliveries that are due, so
//! a paused webhook's probe is a real delivery and a retry never waits behind a backlog it
//! is not yet part of. The price is a hop through this queue per tier used: about one per
//! doubling of the wait, on retries only.
//!
//! With `queue_type = classic`, RabbitMQ dead-letters from the tiers at most once, so a
//! broker that crashes (not one that stops) in the very moment a retry expires may drop it,
//! and its log stays `retrying` until retried by hand. With `quorum` the tiers dead-letter at
//! least once (`x-dead-letter-strategy`), and that gap closes.

use std::sync::Arc;

use chrono::Utc;
use futures::{FutureExt as _, StreamExt as _};
use hookrelay_broker::lapin::message::Delivery;
use hookrelay_broker::lapin::options::{BasicAckOptions, BasicNackOptions};
use hookrelay_broker::lapin::types::FieldTable;
use hookrelay_broker::lapin::Connection;
use hookrelay_broker::{
    Broker, Outgoing, PublishError, Publisher, Topology, DUE_HEADER, TIER_HEADER,
};
use hookrelay_store::Store;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::publish::{self, Routes, WebhookQueues};
use crate::subscriptions::Subscriptions;

const MAX_BATCH: usize = 256;
const PREFETCH: u16 = 512;

pub struct Context {
    pub topology: Topology,
    pub subscriptions: Arc<Subscriptions>,
    pub store: Store,
    pub recovery: crate::recover::Recovery,
}

#[derive(Debug, thiserror::Error)]
enum RouterError {
    #[error("broker error")]
    Amqp(#[from] hookrelay_broker::lapin::Error),
    #[error("cannot publish")]
    Publish(#[from] PublishError),
    #[error("the broker ended the consumer")]
    ConsumerEnded,
}

/// Routes due retries until `shutdown`, reconnecting whenever the broker goes away.
pub async fn run(ctx: Arc<Context>, broker: Broker, shutdown: CancellationToken) {
    broker
        .keep_running(&shutdown, "retry router", |connection| {
            let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
            async move { route(&ctx, &connection, &shutdown).await }
        })
        .await;
}

async fn route(
    ctx: &Context,
    connection: &Arc<Connection>,
    shutdown: &CancellationToken,
) -> Result<(), RouterError> {
    let mut publisher = Publisher::open(connection).await?;
    let channel = match connection.create_channel().await {
        Ok(channel) => channel,
        Err(e) => {
            publisher.close().await;
            return Err(e.into());
        }
    };
    let result = async {
        ctx.topology.declare_base(publisher.declarer()).await?;
        ctx.topology.declare_retry(publisher.declarer()).await?;
        let mut consumer = hookrelay_broker::consume(
            &channel,
            &ctx.topology.due_queue(),
            PREFETCH,
            "hookrelay-router",
        )
        .await?;
        info!(queue = %ctx.topology.due_queue(), "retry router consuming");
        let mut queues = WebhookQueues::telling(ctx.recovery.clone());
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = consumer.next() => next,
            };
            let first = first.ok_or(RouterError::ConsumerEnded)??;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match consumer.next().now_or_never() {
                    Some(Some(delivery)) => batch.push(delivery?),
                    _ => break,
                }
            }
            let onward: Vec<Outgoing> = batch.iter().map(|d| onward(&ctx.topology, d)).collect();
            let last = batch.last().map_or(0, |d| d.delivery_tag);
            let mut routes = Routes::new(&ctx.topology, &ctx.subscriptions, &mut queues);
            let published = publisher.publish_all(&onward, &mut routes).await;
            let dropped = routes.dropped;
            match published {
                Ok(()) => {
                    if let Err(e) = publish::end_dropped(&ctx.store, &dropped).await {
                        warn!(error = %crate::error_chain(&e), "cannot end the logs of a deleted webhook");
                    }
                    channel
                        .basic_ack(last, BasicAckOptions { multiple: true })
                        .await?;
                }
                Err(e) => {
                    // Back to the queue, in order, for the next try; the publisher's channel
                    // may be broken, so the whole router starts over.
                    let _ = channel
                        .basic_nack(
                            last,
                            BasicNackOptions {
                                multiple: true,
                                requeue: true,
                            },
                        )
                        .await;
                    return Err(e.into());
                }
            }
        }
    }
    .await;
    // However it ended, closing the channel hands every message not yet acked back at once.
    let _ = channel.close(200, "retry router stopping".into()).await;
    publisher.close().await;
    result
}

/// Where a message from the due queue goes next: its webhook queue when due (or when it
/// carries no due time: better early than never), else the tier for the wait left.
fn onward(topology: &Topology, delivery: &Delivery) -> Outgoing {
    let due = publish::due_at(delivery.properties.headers().as_ref());
    let wait = due
        .and_then(|due| (due - Utc::now()).to_std().ok())
        .filter(|w| !w.is_zero());
    let (exchange, properties) = match (due, wait) {
        (Some(due), Some(wait)) => (
            topology.retry_exchange(),
            publish::with_delay_headers(delivery.properties.clone(), due, wait),
        ),
        // Due: the delivery goes on as the fan-out sent it, without the delay's bookkeeping
        // (RabbitMQ's x-death history grows with every hop).
        _ => {
            let mut kept = FieldTable::default();
            if let Some(headers) = delivery.properties.headers() {
                for (name, value) in headers.inner() {
                    let delay_only = [TIER_HEADER, DUE_HEADER, "x-death"].contains(&name.as_str())
                        || name.as_str().starts_with("x-first-death")
                        || name.as_str().starts_with("x-last-death");
                    if !delay_only {
                        kept.insert(name.clone(), value.clone());
                    }
                }
            }
            (
                topology.deliveries_exchange(),
                delivery.properties.clone().with_headers(kept),
            )
        }
    };
    Outgoing {
        exchange,
        routing_key: delivery.routing_key.to_string(),
        body: delivery.data.clone(),
        properties,
    }
}
