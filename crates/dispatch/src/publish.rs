//! What the pipeline publishes, and where a returned message finds its route again.
//!
//! Every publisher of the pipeline (fan-out, retry router, delivery workers, recovery) sends
//! through a `hookrelay_broker::Publisher` with [`Routes`] as its return handler: a delivery
//! whose webhook queue is missing gets the queue declared and is sent again, unless its webhook
//! was deleted (then the message is dropped, and the caller ends the webhook's open logs once
//! it holds no lock on them: [`end_dropped`]); anything else whose queue is missing gets the
//! namespace's topology declared again. Webhook queues are declared through recovery, which
//! tells a queue the broker lost from a new one ([`Recovery::declare_queue`]).
//!
//! A webhook queue that exists but cannot be reached (on a cluster, a classic queue lives on
//! one node, and that node is down) takes no message: one published to it comes back, and
//! declaring it fails. Its deliveries then wait in the delay tiers, which are shared and, with
//! `queue_type = quorum`, replicated, and come back to it every [`UNREACHABLE_WAIT`] until
//! its node is back. So the other webhooks' deliveries, and the events that carry them, never
//! wait for that node, and the broker holds every delivery it confirmed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hookrelay_broker::lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use hookrelay_broker::lapin::BasicProperties;
use hookrelay_broker::{
    Declarer, Outgoing, Reroute, ReturnHandler, Topology, DUE_HEADER, TIER_HEADER,
};
use hookrelay_core::ops::{OperationalEvent, OriginKey, ORIGIN_HEADER};
use hookrelay_core::{DelayTier, DeliveryTask};
use hookrelay_store::{Store, StoreError};
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::recover::Recovery;
use crate::subscriptions::Subscriptions;

/// How long the deliveries of a webhook whose queue cannot be reached wait before they are
/// tried again, and how long a publisher takes that queue as unreachable without asking the
/// broker: one delay tier exactly (4 s), short beside a node's restart.
pub const UNREACHABLE_WAIT: Duration = Duration::from_secs(4);

/// What one publisher knows of the webhook queues: those it declared (skipped from then on)
/// and those it found unreachable, and when.
pub struct WebhookQueues {
    declared: HashSet<Uuid>,
    unreachable: HashMap<Uuid, Instant>,
    /// Whether the delay tiers have been declared on this publisher's channel, which the
    /// first delivery it sends round an unreachable queue needs.
    tiers: bool,
    /// Declares the queues, telling a lost one from a new one ([`Recovery::declare_queue`]).
    recovery: Recovery,
}

impl WebhookQueues {
    /// Knows nothing yet, and declares queues through `recovery`.
    pub fn telling(recovery: Recovery) -> Self {
        Self {
            declared: HashSet::new(),
            unreachable: HashMap::new(),
            tiers: false,
            recovery,
        }
    }

    /// Makes sure webhook `id`'s queue exists; `false` when it cannot be reached, now or
    /// less than [`UNREACHABLE_WAIT`] ago. Declaring is idempotent, so a webhook created a
    /// moment ago, whose queue the delivery workers have not declared yet, loses nothing.
    pub async fn ensure(
        &mut self,
        topology: &Topology,
        declarer: &Declarer,
        id: Uuid,
    ) -> Result<bool, hookrelay_broker::lapin::Error> {
        if self.declared.contains(&id) {
            return Ok(true);
        }
        if self
            .unreachable
            .get(&id)
            .is_some_and(|since| since.elapsed() < UNREACHABLE_WAIT)
        {
            return Ok(false);
        }
        match self.recovery.declare_queue(declarer, id).await {
            Ok(()) => {
                self.declared.insert(id);
                if self.unreachable.remove(&id).is_some() {
                    info!(webhook_id = %id, "webhook queue reachable again");
                }
                Ok(true)
            }
            Err(e) if hookrelay_broker::queue_unavailable(&e) => {
                if !self.tiers {
                    topology.declare_retry(declarer).await?;
                    self.tiers = true;
                }
                if self.unreachable.insert(id, Instant::now()).is_none() {
                    warn!(webhook_id = %id, reason = %e, "webhook queue cannot be reached (its RabbitMQ node is down?); its deliveries wait in the delay tiers until it can");
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Forgets that `id`'s queue was declared: it is declared again before the next use.
    pub fn forget(&mut self, id: Uuid) {
        self.declared.remove(&id);
    }

    /// Forgets everything, for a new channel.
    pub fn clear(&mut self) {
        self.declared.clear();
        self.unreachable.clear();
        self.tiers = false;
    }
}

/// The return handler of every pipeline publisher.
pub struct Routes<'a> {
    pub topology: &'a Topology,
    pub subscriptions: &'a Subscriptions,
    pub queues: &'a mut WebhookQueues,
    /// Webhooks whose deliveries were dropped because the webhook is gone.
    pub dropped: HashSet<Uuid>,
}

impl<'a> Routes<'a> {
    pub fn new(
        topology: &'a Topology,
        subscriptions: &'a Subscriptions,
        queues: &'a mut WebhookQueues,
    ) -> Self {
        Self {
            topology,
            subscriptions,
            queues,
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
            // It came back, so whatever this publisher knew of its queue no longer holds.
            self.queues.forget(webhook_id);
            if !self
                .queues
                .ensure(self.topology, declarer, webhook_id)
                .await?
            {
                return Ok(Reroute::Instead(Box::new(round_unreachable(
                    self.topology,
                    returned,
                ))));
            }
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
    into_tier(topology, delivery(topology, task), due, wait)
}

/// A delivery for a webhook whose queue cannot be reached: into the delay tiers, to come
/// back to its queue in [`UNREACHABLE_WAIT`].
pub fn round_unreachable(topology: &Topology, delivery: &Outgoing) -> Outgoing {
    let due = Utc::now()
        + chrono::Duration::from_std(UNREACHABLE_WAIT).unwrap_or(chrono::Duration::zero());
    into_tier(topology, delivery.clone(), due, UNREACHABLE_WAIT)
}

fn into_tier(
    topology: &Topology,
    mut message: Outgoing,
    due: DateTime<Utc>,
    wait: Duration,
) -> Outgoing {
    message.exchange = topology.retry_exchange();
    message.properties = with_delay_headers(message.properties, due, wait);
    message
}

/// Puts the tier and due-time headers on a message, for a wait of `wait` until `due`.
pub fn with_delay_headers(
    properties: BasicProperties,
    due: DateTime<Utc>,
    wait: Duration,
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
