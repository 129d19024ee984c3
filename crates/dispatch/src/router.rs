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

use chrono::{DateTime, Utc};
use hookrelay_broker::{
    BatchLimits, Broker, BrokerError, Connection, Delivery, Durability, Outgoing, PublishError,
    Topology,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::messages;
use crate::publish::{Declare, Relay, Routing};

const LIMITS: BatchLimits = BatchLimits {
    prefetch: 512,
    max_count: 256,
    // Retries carry one delivery each; the count bounds a batch well before its bytes do.
    max_bytes: usize::MAX,
};

pub struct Context {
    pub routing: Arc<Routing>,
}

#[derive(Debug, thiserror::Error)]
enum RouterError {
    #[error("broker error")]
    Broker(#[from] BrokerError),
    #[error("cannot publish")]
    Publish(#[from] PublishError),
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
    connection: &Connection,
    shutdown: &CancellationToken,
) -> Result<(), RouterError> {
    let topology = &ctx.routing.topology;
    let due_queue = topology.due_queue();
    let name = "hookrelay-router";
    let mut relay = Relay::open(
        &ctx.routing,
        connection,
        Declare::WithRetries,
        &due_queue,
        LIMITS,
        name,
    )
    .await?;
    info!(queue = %due_queue, "retry router consuming");
    let result = async {
        while let Some(batch) = relay.batches.next(shutdown).await? {
            let now = Utc::now();
            let onward: Vec<Outgoing> = batch
                .deliveries()
                .iter()
                .map(|d| onward(topology, d, now))
                .collect();
            if let Err(e) = relay.publisher.publish(&onward).await {
                // Back to the queue, in order, for the next try; the publisher's channel may
                // be broken, so the whole router starts over.
                if let Err(nack) = batch.nack().await {
                    debug!(error = %crate::error_chain(&nack), "cannot hand the batch back; closing the channel does");
                }
                return Err(e.into());
            }
            batch.ack().await?;
        }
        Ok(())
    }
    .await;
    relay.close("retry router stopping").await;
    result
}

/// Where a message from the due queue goes next, at `now`: its webhook queue when due (or
/// when it carries no due time: better early than never), else the tier for the wait left.
fn onward(topology: &Topology, delivery: &Delivery, now: DateTime<Utc>) -> Outgoing {
    let mut message = delivery.to_outgoing();
    match message.headers.due.filter(|due| *due > now) {
        Some(due) => messages::delayed(topology, message, due, now),
        None => {
            // On as the fan-out sent it, without the delay's bookkeeping (RabbitMQ's
            // dead-letter history grows with every hop).
            message.headers.forget_delay();
            message.exchange = topology.deliveries_exchange();
            // Into its webhook queue as any delivery: its log is the record from here on.
            message.durability = Durability::Transient;
            message
        }
    }
}

#[cfg(test)]
mod tests {
    use hookrelay_broker::Headers;
    use hookrelay_core::DelayTier;

    use super::*;

    fn at(millis: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + millis).unwrap()
    }

    fn waiting(due: Option<DateTime<Utc>>) -> Delivery {
        let headers = Headers {
            tier: Some(DelayTier::SHORTEST),
            due,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            ..Headers::default()
        };
        Delivery::detached("ns.retry.expired", "webhook-1", b"{}".to_vec(), &headers)
    }

    #[test]
    fn a_due_delivery_goes_on_to_its_webhook_queue_without_the_delay() {
        let topology = Topology::new("ns");
        for (due, now) in [
            (Some(at(1_000)), at(1_000)),
            (Some(at(0)), at(5)),
            (None, at(0)),
        ] {
            let next = onward(&topology, &waiting(due), now);
            assert_eq!(next.exchange, "ns.deliveries", "{due:?} at {now}");
            assert_eq!(next.routing_key, "webhook-1");
            assert_eq!(next.body, b"{}");
            assert_eq!((next.headers.tier, next.headers.due), (None, None));
            assert!(next.headers.traceparent.is_some(), "other headers stay");
        }
    }

    #[test]
    fn a_delivery_not_yet_due_waits_in_the_tier_for_what_is_left() {
        let topology = Topology::new("ns");
        let next = onward(&topology, &waiting(Some(at(70_000))), at(0));
        assert_eq!(next.exchange, "ns.retry");
        assert_eq!(next.routing_key, "webhook-1", "the key is the way back");
        assert_eq!(next.headers.due, Some(at(70_000)));
        assert_eq!(next.headers.tier.map(|t| t.ttl().as_millis()), Some(64_000));
        // What is left after that tier is less than the smallest: one more short hop.
        let last = onward(&topology, &waiting(Some(at(70_000))), at(69_900));
        assert_eq!(last.headers.tier, Some(DelayTier::SHORTEST));
    }
}
