//! The fan-out: consumes `{ns}.ingest` in batches, rejects bad events with a reason, writes
//! one `pending` log row per matching webhook in one transaction, publishes one delivery per
//! new row with publisher confirms, and only then acks the batch.
//!
//! Batches form by themselves: while one batch is written, the next events arrive (up to the
//! prefetch) and are taken together, so a busy consumer writes big batches and a quiet one
//! small batches without waiting.
//!
//! This file is the loop and the order of the steps; each step has its own: `intake`
//! (validation and rejection), `plan` (which deliveries, from the subscription index alone),
//! `write` (the log rows, and what the database refuses or already has), `publisher` (the
//! confirm channel and the webhook queues).

mod intake;
mod plan;
mod publisher;
mod write;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::{FutureExt as _, StreamExt as _};
use hookrelay_broker::lapin::message::Delivery;
use hookrelay_broker::lapin::options::{BasicAckOptions, BasicNackOptions};
use hookrelay_broker::lapin::{Channel, Connection};
use hookrelay_broker::{Broker, Outgoing, PublishError, Topology};
use hookrelay_core::ops::OriginKey;
use hookrelay_core::Intake;
use hookrelay_metrics::Metrics;
use hookrelay_store::{NewLog, Store, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::subscriptions::Subscriptions;
use intake::{rejected, validate};
use plan::{Accepted, Planned};
use publisher::Publisher;
use write::{isolate_refused, recover_conflicts};

/// Events taken per batch at most; the prefetch is twice that, so the next batch is already
/// on its way while one is written.
const MAX_BATCH: usize = 256;
const PREFETCH: u16 = 512;
/// Event bytes per batch at most: big events make small batches, bounding the memory a batch
/// takes once fanned out (its payload is shared by all its deliveries, not copied).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

pub struct Context {
    pub topology: Topology,
    pub subscriptions: Arc<Subscriptions>,
    pub catalog: Catalog,
    pub store: Store,
    pub metrics: Metrics,
    /// The limits events are held to; `from_hookrelay` is decided per message.
    pub intake: Intake,
    /// Verifies the origin tag of hookrelay's own events.
    pub origin: OriginKey,
    /// Declares webhook queues, telling one the broker lost from a new one.
    pub recovery: crate::recover::Recovery,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum FanoutError {
    #[error("broker error")]
    Amqp(#[from] hookrelay_broker::lapin::Error),
    #[error("database error")]
    Store(#[from] StoreError),
    #[error("cannot publish")]
    Publish(#[from] PublishError),
    #[error("the broker ended the consumer")]
    ConsumerEnded,
}

/// Runs one fan-out consumer until `shutdown`, reconnecting whenever the broker goes away.
pub async fn run(ctx: Arc<Context>, broker: Broker, shutdown: CancellationToken, worker: usize) {
    let what = format!("fan-out consumer {worker}");
    broker
        .keep_running(&shutdown, &what, |connection| {
            let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
            async move { consume(&ctx, &connection, &shutdown, worker).await }
        })
        .await;
}

async fn consume(
    ctx: &Context,
    connection: &Arc<Connection>,
    shutdown: &CancellationToken,
    worker: usize,
) -> Result<(), FanoutError> {
    let mut publisher = Publisher::open(ctx, connection).await?;
    let channel = match connection.create_channel().await {
        Ok(channel) => channel,
        Err(e) => {
            publisher.inner.close().await;
            return Err(e.into());
        }
    };
    let result = async {
        let mut consumer = hookrelay_broker::consume(
            &channel,
            &ctx.topology.ingest_queue(),
            PREFETCH,
            &format!("hookrelay-fanout-{worker}"),
        )
        .await?;
        info!(worker, queue = %ctx.topology.ingest_queue(), "fan-out consuming");
        consume_batches(ctx, &channel, &mut consumer, &mut publisher, shutdown).await
    }
    .await;
    // However it ended, closing the channels hands every event not yet acked back to the
    // queue at once; a channel left open would hold them until the connection closes.
    let _ = channel.close(200, "fan-out consumer stopping".into()).await;
    publisher.inner.close().await;
    result
}

async fn consume_batches(
    ctx: &Context,
    channel: &Channel,
    consumer: &mut hookrelay_broker::lapin::Consumer,
    publisher: &mut Publisher,
    shutdown: &CancellationToken,
) -> Result<(), FanoutError> {
    let mut failures = 0u32;
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = consumer.next() => next,
        };
        let Some(first) = first else {
            return Err(FanoutError::ConsumerEnded);
        };
        let first = first?;
        let mut bytes = first.data.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match consumer.next().now_or_never() {
                Some(Some(delivery)) => {
                    let delivery = delivery?;
                    bytes += delivery.data.len();
                    batch.push(delivery);
                }
                _ => break,
            }
        }
        let last_tag = batch.last().map_or(0, |d| d.delivery_tag);
        let mut settled = Vec::new();
        match process(ctx, publisher, &batch, &mut settled).await {
            Ok(()) => {
                failures = 0;
                // Deliveries of one channel are acked in order, so one ack covers the batch.
                channel
                    .basic_ack(last_tag, BasicAckOptions { multiple: true })
                    .await?;
            }
            // The channels may be broken: start over with new ones (the batch goes back when
            // the consumer's channel closes).
            Err(
                e @ (FanoutError::Amqp(_)
                | FanoutError::ConsumerEnded
                | FanoutError::Publish(
                    PublishError::Amqp(_) | PublishError::Nacked | PublishError::Unroutable { .. },
                )),
            ) => return Err(e),
            Err(e) => {
                failures += 1;
                let pause = Duration::from_millis(200 * 2u64.pow(failures.min(5)));
                error!(error = %crate::error_chain(&e), retry_in = ?pause, "fan-out batch failed; requeueing its events");
                // Give the database time to come back before the same events return.
                tokio::time::sleep(pause).await;
                // Rejected events are already safe in the rejected queue: acked, so that they
                // are not rejected (and counted) again; the others go back.
                for delivery in &batch {
                    if settled.contains(&delivery.delivery_tag) {
                        channel
                            .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                            .await?;
                    } else {
                        channel
                            .basic_nack(
                                delivery.delivery_tag,
                                BasicNackOptions {
                                    multiple: false,
                                    requeue: true,
                                },
                            )
                            .await?;
                    }
                }
            }
        }
    }
}

/// Handles a batch. `settled` receives the delivery tags of the events already safely
/// rejected, which must be acked even if the rest of the batch fails.
async fn process(
    ctx: &Context,
    publisher: &mut Publisher,
    batch: &[Delivery],
    settled: &mut Vec<u64>,
) -> Result<(), FanoutError> {
    let received_at = Utc::now();
    let mut accepted = Vec::with_capacity(batch.len());
    let mut rejections = Vec::new();
    for delivery in batch {
        match validate(ctx, delivery, received_at).await? {
            Ok(event) => accepted.push(Accepted {
                delivery,
                payload: event.payload().into(),
                event,
                received_at,
                redelivered: delivery.redelivered,
                traceparent: intake::traceparent(delivery),
            }),
            Err(rejection) => rejections.push((delivery, rejection)),
        }
    }
    let refused: Vec<Outgoing> = rejections
        .iter()
        .map(|(delivery, rejection)| rejected(ctx, delivery, rejection))
        .collect();
    publisher.send(ctx, &refused).await?;
    settled.extend(rejections.iter().map(|(d, _)| d.delivery_tag));
    for (_, rejection) in &rejections {
        ctx.metrics.event_rejected(rejection.reason.as_str());
        warn!(reason = rejection.reason.as_str(), error = %rejection.message, "event rejected");
    }

    let mut tests = HashSet::new();
    for a in &accepted {
        ctx.metrics.event_received(a.event.event_type.as_str());
        if let Some((webhook, _)) = a.event.test_target() {
            if test_goes_to(ctx, webhook, a.event.account_id.as_str()).await? {
                tests.insert(webhook);
            }
        }
    }
    let mut planned = plan::plan(&accepted, &ctx.subscriptions, &tests);
    let logs: Vec<NewLog> = planned.iter().map(|p| p.log.clone()).collect();
    let inserted: HashSet<Uuid> = match ctx.store.insert_logs(&logs).await {
        Ok(ids) => ids.into_iter().collect(),
        Err(e) if e.is_refusal() => {
            let (ids, refused) =
                isolate_refused(ctx, publisher, &accepted, &planned, settled).await?;
            planned.retain(|p| !refused.contains(&p.log.event_id));
            ids
        }
        Err(e) => return Err(e.into()),
    };
    let mut to_send: Vec<Planned> = Vec::with_capacity(planned.len());
    let mut conflicts = Vec::new();
    for p in planned {
        if inserted.contains(&p.log.id) {
            to_send.push(p);
        } else {
            conflicts.push(p);
        }
    }
    to_send.extend(recover_conflicts(ctx, &accepted, conflicts).await?);
    publisher.publish_deliveries(ctx, &to_send).await?;
    ctx.metrics.deliveries_enqueued(to_send.len());
    Ok(())
}

/// Whether a test event for `webhook` of `account` is to be delivered. The index of this
/// process may not know yet a webhook created a moment ago through another process: it is
/// read from the database then (the rest of the fan-out relies on the index knowing it).
async fn test_goes_to(ctx: &Context, webhook: Uuid, account: &str) -> Result<bool, StoreError> {
    if ctx.subscriptions.get(webhook).is_none() {
        ctx.subscriptions.reload_one(webhook).await?;
    }
    Ok(ctx
        .subscriptions
        .get(webhook)
        .is_some_and(|w| w.active && w.account_id == account))
}
