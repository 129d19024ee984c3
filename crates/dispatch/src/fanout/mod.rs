//! The fan-out: consumes `{ns}.ingest` in batches, rejects bad events with a reason, writes
//! one `pending` log row per matching webhook in one transaction, publishes one delivery per
//! new row with publisher confirms (or hands it straight to this process's consumer of its
//! webhook, when that has a slot free), and only then acks the batch.
//!
//! Batches form by themselves (`hookrelay_broker::Batches`): a busy consumer writes big
//! batches and a quiet one small batches, without waiting.
//!
//! This file is the loop and the order of the steps; each step has its own: `intake`
//! (validation and rejection), `plan` (which deliveries, from the subscription index alone),
//! `write` (the log rows, and what the database refuses or already has), `deliveries` (the
//! deliveries into their webhook queues, or to their consumers).
//!
//! Two sides run this loop (`plan::Side`): the competing consumers of `{ns}.ingest`, for
//! every webhook but the FIFO ones, and the ordered fan-out, for those (`ordered`).

mod deliveries;
mod intake;
mod ordered;
mod plan;
mod write;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hookrelay_broker::{
    BatchLimits, Broker, BrokerError, Connection, Delivery, Outgoing, PublishError,
};
use hookrelay_core::ops::OriginKey;
use hookrelay_core::Intake;
use hookrelay_metrics::Metrics;
use hookrelay_store::{NewEvent, NewLog, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::event_type_cache::EventTypeCache;
use crate::publish::{Declare, PipelinePublisher, Relay, Routing};
use intake::{rejected, validate};
pub use ordered::{bind_ordered, bind_when_needed};
pub use plan::Side;
use plan::{Accepted, Planned};
use write::{isolate_refused, recover_conflicts};

/// Events taken per batch at most; the prefetch is twice that, so the next batch is already
/// on its way while one is written. Event bytes per batch are bounded too: big events make
/// small batches, bounding the memory a batch takes once fanned out (its payload is shared by
/// all its deliveries, not copied).
const LIMITS: BatchLimits = BatchLimits {
    prefetch: 512,
    max_count: 256,
    max_bytes: 4 * 1024 * 1024,
};

pub struct Context {
    /// The topology, the subscriptions and the store.
    pub routing: Arc<Routing>,
    pub event_types: EventTypeCache,
    pub metrics: Metrics,
    /// The limits events are held to; `from_hookrelay` is decided per message.
    pub intake: Intake,
    /// Verifies the origin tag of hookrelay's own events.
    pub origin: OriginKey,
    /// Store the events that match no webhook too.
    pub keep_unmatched_events: bool,
    /// This process's consumers that take fresh deliveries without the broker.
    pub handoffs: Arc<crate::deliver::Handoffs>,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum FanoutError {
    #[error("broker error")]
    Broker(#[from] BrokerError),
    #[error("database error")]
    Store(#[from] StoreError),
    #[error("cannot publish")]
    Publish(#[from] PublishError),
    #[error("cannot encode a delivery")]
    Encode(#[from] serde_json::Error),
}

/// Runs one fan-out consumer until `shutdown`, reconnecting whenever the broker goes away.
/// `worker`: a competing consumer of `{ns}.ingest`, numbered; `None`: the ordered fan-out,
/// on `{ns}.ingest.ordered` (`ordered`'s module doc).
pub async fn run(
    ctx: Arc<Context>,
    broker: Broker,
    shutdown: CancellationToken,
    worker: Option<usize>,
) {
    let what = match worker {
        Some(worker) => format!("fan-out consumer {worker}"),
        None => "ordered fan-out".to_owned(),
    };
    broker
        .keep_running(&shutdown, &what, |connection| {
            let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
            async move { consume(&ctx, &connection, &shutdown, worker).await }
        })
        .await;
}

async fn consume(
    ctx: &Context,
    connection: &Connection,
    shutdown: &CancellationToken,
    worker: Option<usize>,
) -> Result<(), FanoutError> {
    let topology = &ctx.routing.topology;
    let (queue, name) = match worker {
        Some(worker) => (
            topology.ingest_queue(),
            format!("hookrelay-fanout-{worker}"),
        ),
        None => {
            ordered::declare(ctx, connection).await?;
            (
                topology.ordered_queue(),
                "hookrelay-fanout-ordered".to_owned(),
            )
        }
    };
    let mut relay = Relay::open(
        &ctx.routing,
        connection,
        Declare::Base,
        &queue,
        LIMITS,
        &name,
    )
    .await?;
    info!(?worker, %queue, "fan-out consuming");
    let result = consume_batches(ctx, connection, &mut relay, shutdown, worker.is_none()).await;
    relay.close("fan-out consumer stopping").await;
    result
}

async fn consume_batches(
    ctx: &Context,
    connection: &Connection,
    relay: &mut Relay,
    shutdown: &CancellationToken,
    ordered: bool,
) -> Result<(), FanoutError> {
    let mut failures = 0u32;
    while let Some(batch) = relay.batches.next(shutdown).await? {
        let mut settled = HashSet::new();
        // A FIFO webhook known to this process is left to the ordered side only once its
        // queue is bound: bound here first if no one has yet (the binder may be just behind).
        if !ordered && ctx.routing.subscriptions.has_fifo() && !ctx.routing.ordered_bound() {
            ordered::declare(ctx, connection).await?;
        }
        let side = match ordered {
            true => Side::Ordered,
            false => Side::Competing {
                ordered_bound: ctx.routing.ordered_bound(),
            },
        };
        let processed = process(
            ctx,
            side,
            &mut relay.publisher,
            batch.deliveries(),
            &mut settled,
        )
        .await;
        match processed {
            Ok(()) => {
                failures = 0;
                batch.ack().await?;
            }
            // The channels may be broken: start over with new ones (the batch goes back when
            // the consumer's channel closes).
            Err(
                e @ (FanoutError::Broker(_)
                | FanoutError::Publish(
                    PublishError::Broker(_)
                    | PublishError::Nacked
                    | PublishError::Unroutable { .. },
                )),
            ) => return Err(e),
            Err(e) => {
                failures += 1;
                let pause = Duration::from_millis(200 * 2u64.pow(failures.min(5)));
                error!(error = %crate::error_chain(&e), retry_in = ?pause, "fan-out batch failed; requeueing its events");
                // Give the database time to come back before the same events return.
                tokio::time::sleep(pause).await;
                if ordered {
                    // Handing back this batch alone would let the events prefetched behind
                    // it go first: the channel closes instead, and every event goes back in
                    // its place.
                    return Err(e);
                }
                // Rejected events are already safe in the rejected queue: acked, so that they
                // are not rejected (and counted) again; the others go back.
                for (i, delivery) in batch.deliveries().iter().enumerate() {
                    match settled.contains(&i) {
                        true => delivery.ack().await?,
                        false => delivery.nack().await?,
                    }
                }
            }
        }
    }
    Ok(())
}

/// Handles a batch. `settled` receives the positions in the batch of the events already
/// safely rejected, which must be acked even if the rest of the batch fails.
async fn process(
    ctx: &Context,
    side: Side,
    publisher: &mut PipelinePublisher,
    batch: &[Delivery],
    settled: &mut HashSet<usize>,
) -> Result<(), FanoutError> {
    let received_at = Utc::now();
    let mut accepted = Vec::with_capacity(batch.len());
    let mut rejections = Vec::new();
    for (index, delivery) in batch.iter().enumerate() {
        let headers = delivery.headers();
        // A microsecond apart, in the batch's order: the order events were received in is
        // the order a replay sends them in.
        let received_at = received_at + chrono::Duration::microseconds(index as i64);
        match validate(ctx, delivery, &headers, received_at).await? {
            Ok(event) => accepted.push(Accepted {
                index,
                delivery,
                payload: event.payload().into(),
                event,
                received_at,
                redelivered: delivery.redelivered(),
                traceparent: intake::traceparent(&headers),
            }),
            Err(rejection) => rejections.push((index, delivery, rejection)),
        }
    }
    // The competing side rejects, and counts, what the ordered side drops: every event
    // reaches both.
    let competing = side != Side::Ordered;
    if competing {
        let refused: Vec<Outgoing> = rejections
            .iter()
            .map(|(_, delivery, rejection)| rejected(ctx, delivery, rejection))
            .collect();
        publisher.publish(&refused).await?;
        for (_, _, rejection) in &rejections {
            ctx.metrics.event_rejected(rejection.reason);
            warn!(reason = rejection.reason.as_str(), error = %rejection.message, "event rejected");
        }
    }
    settled.extend(rejections.iter().map(|(index, _, _)| *index));
    if side == Side::Ordered && !accepted.iter().any(|a| ordered::concerns(ctx, a)) {
        // No FIFO webhook of these events' accounts: nothing to write.
        return Ok(());
    }

    let mut tests = HashSet::new();
    for a in &accepted {
        if competing {
            ctx.metrics.event_received(a.event.event_type.as_str());
        }
        if let Some((webhook, _)) = a.event.test_target() {
            if test_goes_to(ctx, side, webhook, a.event.account_id.as_str()).await? {
                tests.insert(webhook);
            }
        }
    }
    let plan::Plan {
        events,
        mut planned,
        filtered,
    } = plan::plan(
        &accepted,
        &ctx.routing.subscriptions,
        &tests,
        side,
        competing && ctx.keep_unmatched_events,
    );
    ctx.metrics.deliveries_filtered(filtered);
    if side == Side::Ordered {
        let seqs = ctx.routing.store.take_seqs(planned.len()).await?;
        for (p, seq) in planned.iter_mut().zip(seqs) {
            p.log.seq = Some(seq);
        }
    }
    let logs: Vec<NewLog> = planned.iter().map(|p| p.log.clone()).collect();
    let mut inserted: HashMap<Uuid, Option<Arc<NewEvent>>> =
        match ctx.routing.store.insert_logs(&events, &logs).await {
            Ok(ids) => ids.into_iter().collect(),
            Err(e) if e.is_refusal() => {
                let (ids, refused) =
                    isolate_refused(ctx, side, publisher, &accepted, &events, &planned, settled)
                        .await?;
                planned.retain(|p| !refused.contains(&p.log.event.id));
                ids
            }
            Err(e) => return Err(e.into()),
        };
    let mut to_send: Vec<Planned> = Vec::with_capacity(planned.len());
    let mut conflicts = Vec::new();
    for mut p in planned {
        match inserted.remove(&p.log.id) {
            // A duplicate of an event stored before, new to this webhook: it gets the event
            // as first stored.
            Some(Some(stored)) => {
                p.received_at = stored.received_at;
                p.log.event = stored;
                to_send.push(p);
            }
            Some(None) => to_send.push(p),
            None => conflicts.push(p),
        }
    }
    to_send.extend(recover_conflicts(ctx, &accepted, conflicts).await?);
    deliveries::publish(ctx, publisher, &to_send).await?;
    ctx.metrics.deliveries_enqueued(to_send.len());
    Ok(())
}

/// Whether a test event for `webhook` of `account` is to be delivered by `side`. The index
/// of this process may not know yet a webhook created a moment ago through another process:
/// it is read from the database then (the rest of the fan-out relies on the index knowing
/// it).
async fn test_goes_to(
    ctx: &Context,
    side: Side,
    webhook: Uuid,
    account: &str,
) -> Result<bool, StoreError> {
    if ctx.routing.subscriptions.get(webhook).is_none() {
        ctx.routing.subscriptions.reload_one(webhook).await?;
    }
    Ok(ctx
        .routing
        .subscriptions
        .get(webhook)
        .is_some_and(|w| w.active && w.account_id == account && side.serves(&w, Utc::now())))
}
