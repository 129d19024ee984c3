//! The fan-out: consumes `{ns}.ingest` in batches, rejects bad events with a reason, writes
//! one `pending` log row per matching webhook in one transaction, publishes one delivery per
//! new row with publisher confirms, and only then acks the batch.
//!
//! Batches form by themselves: while one batch is written, the next events arrive (up to the
//! prefetch) and are taken together, so a busy consumer writes big batches and a quiet one
//! small batches without waiting.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{FutureExt as _, StreamExt as _};
use hookrelay_broker::lapin::message::Delivery;
use hookrelay_broker::lapin::options::{BasicAckOptions, BasicNackOptions};
use hookrelay_broker::lapin::types::{AMQPValue, FieldTable, LongString};
use hookrelay_broker::lapin::{BasicProperties, Channel, Connection};
use hookrelay_broker::{Broker, Outgoing, PublishError, Topology};
use hookrelay_core::ops::{OriginKey, ORIGIN_HEADER};
use hookrelay_core::{DeliveryTask, DeliveryV1, Event, Intake, RejectReason, Rejection};
use hookrelay_metrics::Metrics;
use hookrelay_store::{NewLog, Store, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::publish::{self, Routes};
use crate::subscriptions::Subscriptions;

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
}

#[derive(Debug, thiserror::Error)]
enum FanoutError {
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
    connection: &Connection,
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
    let _ = channel.close(200, "fan-out consumer stopping").await;
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

struct Accepted<'a> {
    delivery: &'a Delivery,
    event: Event,
    received_at: DateTime<Utc>,
    redelivered: bool,
    payload: Arc<str>,
}

/// One planned delivery: a log row and the message that goes with it.
struct Planned {
    log: NewLog,
    received_at: DateTime<Utc>,
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

    let mut planned: Vec<Planned> = Vec::new();
    for a in &accepted {
        ctx.metrics.event_received(a.event.event_type.as_str());
        let plan = |log_id: Uuid, webhook_id: Uuid| Planned {
            log: NewLog {
                id: log_id,
                webhook_id,
                account_id: a.event.account_id.as_str().to_owned(),
                event_id: a.event.id.clone(),
                event_type: a.event.event_type.as_str().to_owned(),
                payload: a.payload.clone(),
                created_at: a.received_at,
            },
            received_at: a.received_at,
        };
        // A test goes to its one webhook, subscribed or not, under the log id the API has
        // answered already; to nobody if the webhook is gone, disabled or of another account.
        if let Some((webhook, log_id)) = a.event.test_target() {
            if test_goes_to(ctx, webhook, a.event.account_id.as_str()).await? {
                planned.push(plan(log_id, webhook));
            } else {
                warn!(webhook_id = %webhook, %log_id, "test event dropped: the webhook is gone, disabled or of another account");
            }
            continue;
        }
        // hookrelay's news of a webhook goes to the account's other webhooks, never to it.
        let about = a.event.about_webhook();
        for webhook in ctx
            .subscriptions
            .matching(a.event.account_id.as_str(), a.event.event_type.as_str())
            .into_iter()
            .filter(|w| Some(w.id) != about)
        {
            planned.push(plan(Uuid::now_v7(), webhook.id));
        }
    }
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

/// Validation should keep out everything PostgreSQL refuses; should something slip through,
/// it must not stop the consumer. The batch is written again one event at a time, and an
/// event the database refuses is rejected with its reason, like any other bad event. A fault
/// of the database itself (connection, resources, shutdown) fails the batch instead, which
/// goes back to the queue whole.
async fn isolate_refused(
    ctx: &Context,
    publisher: &mut Publisher,
    accepted: &[Accepted<'_>],
    planned: &[Planned],
    settled: &mut Vec<u64>,
) -> Result<(HashSet<Uuid>, HashSet<String>), FanoutError> {
    let mut inserted = HashSet::new();
    let mut refused = HashSet::new();
    for a in accepted {
        let logs: Vec<NewLog> = planned
            .iter()
            .filter(|p| p.log.event_id == a.event.id)
            .map(|p| p.log.clone())
            .collect();
        match ctx.store.insert_logs(&logs).await {
            Ok(ids) => inserted.extend(ids),
            Err(e) if e.is_refusal() => {
                // The database's own text stays in the service log: it may quote the event
                // or name tables, and the rejected queue is read by publishers.
                let rejection = Rejection::new(
                    RejectReason::RefusedByDatabase,
                    format!(
                        "the log table refused the event (SQLSTATE {}); see the hookrelay log \
                         for details",
                        e.sqlstate().unwrap_or("unknown")
                    ),
                );
                publisher
                    .send(ctx, &[rejected(ctx, a.delivery, &rejection)])
                    .await?;
                ctx.metrics.event_rejected(rejection.reason.as_str());
                warn!(event_id = %a.event.id, error = %crate::error_chain(&e), "event rejected by the database");
                refused.insert(a.event.id.clone());
                // Safe in the rejected queue now: acked even if the batch fails later.
                settled.push(a.delivery.delivery_tag);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((inserted, refused))
}

/// A log row that existed already means a duplicate event — or this very event, redelivered
/// after a crash between writing its logs and publishing its deliveries. For a redelivered
/// event, deliveries never attempted are published again (possibly a second time: receivers
/// dedupe on `webhook-id`); for a fresh duplicate, nothing is sent.
async fn recover_conflicts(
    ctx: &Context,
    accepted: &[Accepted<'_>],
    conflicts: Vec<Planned>,
) -> Result<Vec<Planned>, StoreError> {
    let redelivered: HashSet<&str> = accepted
        .iter()
        .filter(|a| a.redelivered)
        .map(|a| a.event.id.as_str())
        .collect();
    let candidates: Vec<Planned> = conflicts
        .into_iter()
        .filter(|p| redelivered.contains(p.log.event_id.as_str()))
        .collect();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<(Uuid, String)> = candidates
        .iter()
        .map(|p| (p.log.webhook_id, p.log.event_id.clone()))
        .collect();
    let existing: HashMap<(Uuid, String), hookrelay_store::ExistingLog> = ctx
        .store
        .existing_logs(&keys)
        .await?
        .into_iter()
        .map(|e| ((e.webhook_id, e.event_id.clone()), e))
        .collect();
    Ok(candidates
        .into_iter()
        .filter_map(|mut p| {
            let found = existing.get(&(p.log.webhook_id, p.log.event_id.clone()))?;
            if found.status != "pending" || found.attempts > 0 {
                return None;
            }
            p.log.id = found.id;
            p.received_at = found.created_at;
            Some(p)
        })
        .collect())
}

async fn validate(
    ctx: &Context,
    delivery: &Delivery,
    received_at: DateTime<Utc>,
) -> Result<Result<Event, Rejection>, StoreError> {
    let intake = Intake {
        from_hookrelay: has_origin_tag(ctx, delivery),
        ..ctx.intake
    };
    let event = match Event::parse(
        &delivery.data,
        delivery.routing_key.as_str(),
        &intake,
        received_at,
    ) {
        Ok(e) => e,
        Err(r) => return Ok(Err(r)),
    };
    if !ctx.catalog.contains(event.event_type.as_str()).await? {
        return Ok(Err(Rejection {
            reason: RejectReason::UnknownEventType,
            message: format!(
                "unknown event type `{}`: not in the catalog (GET /v1/event-types)",
                event.event_type
            ),
        }));
    }
    Ok(Ok(event))
}

/// Whether the message carries a valid tag of hookrelay's own, made for exactly this body.
fn has_origin_tag(ctx: &Context, delivery: &Delivery) -> bool {
    let tag = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(ORIGIN_HEADER).cloned());
    match tag {
        Some(AMQPValue::LongString(tag)) => ctx
            .origin
            .verify(&delivery.data, &String::from_utf8_lossy(tag.as_bytes())),
        _ => false,
    }
}

/// A bad event, unchanged, for `{ns}.events.rejected`, with its reason.
fn rejected(ctx: &Context, delivery: &Delivery, rejection: &Rejection) -> Outgoing {
    // An origin tag is only good for its body; it has no business in a queue publishers read.
    let mut headers = FieldTable::default();
    for (name, value) in delivery
        .properties
        .headers()
        .as_ref()
        .map(|h| h.inner().iter())
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.as_str() != ORIGIN_HEADER)
    {
        headers.insert(name.clone(), value.clone());
    }
    headers.insert(
        "x-hookrelay-error".into(),
        AMQPValue::LongString(LongString::from(rejection.message.clone())),
    );
    headers.insert(
        "x-hookrelay-reason".into(),
        AMQPValue::LongString(LongString::from(rejection.reason.as_str())),
    );
    headers.insert(
        "x-hookrelay-routing-key".into(),
        AMQPValue::LongString(LongString::from(delivery.routing_key.as_str())),
    );
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(content_type) = delivery.properties.content_type() {
        properties = properties.with_content_type(content_type.clone());
    }
    Outgoing {
        exchange: String::new(),
        routing_key: ctx.topology.rejected_queue(),
        body: delivery.data.clone(),
        properties,
    }
}

fn delivery_task(p: &Planned) -> DeliveryTask {
    DeliveryTask::V1(DeliveryV1 {
        log_id: p.log.id,
        webhook_id: p.log.webhook_id,
        event_id: p.log.event_id.clone(),
        event_type: p.log.event_type.clone(),
        attempt: 1,
        received_at: p.received_at,
        payload: p.log.payload.to_string(),
        requeue: 0,
    })
}

/// The fan-out's confirm channel, and the webhook queues it has made sure exist.
struct Publisher {
    inner: hookrelay_broker::Publisher,
    declared: HashSet<Uuid>,
}

impl Publisher {
    async fn open(ctx: &Context, connection: &Connection) -> Result<Self, FanoutError> {
        let inner = hookrelay_broker::Publisher::open(connection).await?;
        ctx.topology.declare_base(inner.channel()).await?;
        Ok(Self {
            inner,
            declared: HashSet::new(),
        })
    }

    /// Publishes `messages` and waits for their confirms, finding a route for any returned.
    async fn send(&mut self, ctx: &Context, messages: &[Outgoing]) -> Result<(), FanoutError> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut routes = Routes::new(&ctx.topology, &ctx.subscriptions, &mut self.declared);
        self.inner.publish_all(messages, &mut routes).await?;
        let dropped = routes.dropped;
        publish::end_dropped(&ctx.store, &dropped).await?;
        Ok(())
    }

    /// Publishes every delivery, confirmed as a batch. A webhook's queue is declared
    /// (idempotently) the first time this channel sends to it, so a webhook created a moment
    /// ago, whose queue the delivery workers have not declared yet, does not lose its first
    /// deliveries.
    async fn publish_deliveries(
        &mut self,
        ctx: &Context,
        planned: &[Planned],
    ) -> Result<(), FanoutError> {
        for p in planned {
            if !self.declared.contains(&p.log.webhook_id) {
                ctx.topology
                    .declare_webhook(self.inner.channel(), &p.log.webhook_id.to_string())
                    .await?;
                self.declared.insert(p.log.webhook_id);
            }
        }
        // A webhook deleted while this batch was planned: declaring its queue above may have
        // brought the queue back after the delivery workers removed it. Remove it again and
        // end its logs instead of sending into it.
        let deleted: HashSet<Uuid> = planned
            .iter()
            .map(|p| p.log.webhook_id)
            .filter(|id| ctx.subscriptions.get(*id).is_none())
            .collect();
        for id in &deleted {
            ctx.topology
                .delete_webhook(self.inner.channel(), &id.to_string())
                .await?;
            ctx.store
                .fail_open_logs(*id, "the webhook was deleted")
                .await?;
            self.declared.remove(id);
        }
        let messages: Vec<Outgoing> = planned
            .iter()
            .filter(|p| !deleted.contains(&p.log.webhook_id))
            .map(|p| publish::delivery(&ctx.topology, &delivery_task(p)))
            .collect();
        self.send(ctx, &messages).await
    }
}
