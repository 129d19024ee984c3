//! What the pipeline publishes, and where a returned message finds its route again.
//!
//! Every publisher of the pipeline (fan-out, retry router, delivery workers, recovery) sends
//! through a `hookrelay_broker::Publisher` with [`Routes`] as its return handler: a delivery
//! whose webhook queue is missing gets the queue declared and is sent again, unless its webhook
//! was deleted (then the message is dropped, and the caller ends the webhook's open logs once
//! it holds no lock on them: [`end_dropped`]); anything else whose queue is missing gets the
//! namespace's topology declared again.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use hookrelay_broker::lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use hookrelay_broker::lapin::BasicProperties;
use hookrelay_broker::{
    Declarer, Outgoing, Reroute, ReturnHandler, Topology, DUE_HEADER, TIER_HEADER,
};
use hookrelay_core::ops::{OperationalEvent, OriginKey, ORIGIN_HEADER};
use hookrelay_core::{DelayTier, DeliveryTask};
use hookrelay_store::{Store, StoreError};
use tracing::error;
use uuid::Uuid;

use crate::subscriptions::Subscriptions;

/// The return handler of every pipeline publisher. `declared` remembers the webhook queues
/// declared on this publisher's channel, for the caller to skip declaring them again.
pub struct Routes<'a> {
    pub topology: &'a Topology,
    pub subscriptions: &'a Subscriptions,
    pub declared: &'a mut HashSet<Uuid>,
    /// Webhooks whose deliveries were dropped because the webhook is gone.
    pub dropped: HashSet<Uuid>,
}

impl<'a> Routes<'a> {
    pub fn new(
        topology: &'a Topology,
        subscriptions: &'a Subscriptions,
        declared: &'a mut HashSet<Uuid>,
    ) -> Self {
        Self {
            topology,
            subscriptions,
            declared,
            dropped: HashSet::new(),
        }
    }
}

/// Ends the open logs of webhooks whose deliveries were dropped because they are gone.
pub async fn end_dropped(store: &Store, dropped: &HashSet<Uuid>) -> Result<(), StoreError> {
    for id in dropped {
        store.fail_open_logs(*id, "the webhook was deleted").await?;
    }
    Ok(())
}

impl ReturnHandler for Routes<'_> {
    type Error = hookrelay_broker::lapin::Error;

    async fn reroute(
        &mut self,
        declarer: &Declarer,
        returned: &Outgoing,
    ) -> Result<Reroute, Self::Error> {
        let exchange = returned.exchange.as_str();
        if exchange == self.topology.deliveries_exchange() {
            let key = returned.routing_key.as_str();
            let Ok(webhook_id) = Uuid::parse_str(key) else {
                error!(
                    routing_key = key,
                    "a returned delivery has no webhook id; dropped"
                );
                return Ok(Reroute::Drop);
            };
            if self.subscriptions.get(webhook_id).is_none() {
                self.dropped.insert(webhook_id);
                return Ok(Reroute::Drop);
            }
            self.topology.declare_webhook(declarer, key).await?;
            self.declared.insert(webhook_id);
        } else if exchange == self.topology.retry_exchange() {
            self.topology.declare_retry(declarer).await?;
        } else {
            // The events exchange's ingest queue, or the rejected queue.
            self.topology.declare_base(declarer).await?;
        }
        Ok(Reroute::Resend)
    }
}

/// A delivery into its webhook's queue.
pub fn delivery(topology: &Topology, task: &DeliveryTask) -> Outgoing {
    Outgoing {
        exchange: topology.deliveries_exchange(),
        routing_key: task.v1().webhook_id.to_string(),
        body: task.to_bytes(),
        properties: hookrelay_broker::persistent_json(),
    }
}

/// A delivery that must wait until `due`: into the delay tier for the wait left at `now`. The
/// routing key stays the webhook id, for the way back.
pub fn delayed(
    topology: &Topology,
    task: &DeliveryTask,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Outgoing {
    let wait = (due - now).to_std().unwrap_or_default();
    let mut message = delivery(topology, task);
    message.exchange = topology.retry_exchange();
    message.properties = with_delay_headers(message.properties, due, wait);
    message
}

/// Puts the tier and due-time headers on a message, for a wait of `wait` until `due`.
pub fn with_delay_headers(
    properties: BasicProperties,
    due: DateTime<Utc>,
    wait: std::time::Duration,
) -> BasicProperties {
    // A zero wait still takes the shortest tier: the router, not the publisher, sends due
    // messages on, so there is one path.
    let tier = DelayTier::for_wait(wait).unwrap_or(DelayTier::SHORTEST);
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(
        ShortString::from(TIER_HEADER),
        AMQPValue::LongString(LongString::from(tier.name())),
    );
    headers.insert(
        ShortString::from(DUE_HEADER),
        AMQPValue::LongLongInt(due.timestamp_millis()),
    );
    properties.with_headers(headers)
}

/// When a delayed message is due, from its header; `None` for a message without one.
pub fn due_at(headers: Option<&FieldTable>) -> Option<DateTime<Utc>> {
    let value = headers?.inner().get(DUE_HEADER)?;
    let millis = match value {
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok()?,
        _ => return None,
    };
    DateTime::from_timestamp_millis(millis)
}

/// One of hookrelay's own events, into the events exchange like any other event, tagged so
/// that the fan-out knows it from one an upstream publisher forged.
pub fn operational(topology: &Topology, origin: &OriginKey, event: &OperationalEvent) -> Outgoing {
    let properties = hookrelay_broker::persistent_json();
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(
        ShortString::from(ORIGIN_HEADER),
        AMQPValue::LongString(LongString::from(origin.tag(&event.body))),
    );
    Outgoing {
        exchange: topology.events_exchange(),
        routing_key: event.event_type.to_owned(),
        body: event.body.clone(),
        properties: properties.with_headers(headers),
    }
}
