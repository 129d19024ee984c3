//! The messages the pipeline publishes: a delivery into its webhook's queue, the same into a
//! delay tier (a retry, or a way round a queue that cannot be reached), and hookrelay's own
//! events. Code that needs the time takes `now`, so that what it builds can be checked.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hookrelay_broker::{Durability, Outgoing, Topology};
use hookrelay_core::ops::{OperationalEvent, OriginKey};
use hookrelay_core::{DelayTier, DeliveryTask};

/// How long the deliveries of a webhook whose queue cannot be reached wait before they are
/// tried again, and how long a publisher takes that queue as unreachable without asking the
/// broker: one delay tier exactly (4 s), short beside a node's restart.
pub const UNREACHABLE_WAIT: Duration = Duration::from_secs(4);

/// A delivery into its webhook's queue (the routing key is the webhook id). Transient: its
/// log is the durable record, and a delivery a broker restart took is queued again from it
/// (`crate::recover`), so the broker need not write every delivery to disk and sync it.
pub fn delivery(topology: &Topology, task: &DeliveryTask) -> Result<Outgoing, serde_json::Error> {
    let mut message = Outgoing::json(
        topology.deliveries_exchange(),
        task.v1().webhook_id.to_string(),
        task.to_bytes()?,
    );
    message.durability = Durability::Transient;
    Ok(message)
}

/// `message`, to wait in `tier` until `due`. The routing key stays the webhook id, for the
/// way back.
pub fn into_tier(
    topology: &Topology,
    mut message: Outgoing,
    tier: DelayTier,
    due: DateTime<Utc>,
) -> Outgoing {
    message.exchange = topology.retry_exchange();
    // A tier is the only place that keeps a retry's time.
    message.durability = Durability::Persistent;
    message.headers.tier = Some(tier);
    message.headers.due = Some(due);
    message
}

/// `message`, to wait until `due`: into the delay tier for the wait left at `now`.
pub fn delayed(
    topology: &Topology,
    message: Outgoing,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Outgoing {
    let wait = (due - now).to_std().unwrap_or_default();
    into_tier(topology, message, DelayTier::to_hold(wait), due)
}

/// A delivery for a webhook whose queue cannot be reached: into the delay tiers, to come back
/// to its queue [`UNREACHABLE_WAIT`] after `now`.
pub fn round_unreachable(topology: &Topology, delivery: Outgoing, now: DateTime<Utc>) -> Outgoing {
    let due = now + chrono::Duration::from_std(UNREACHABLE_WAIT).unwrap_or_default();
    delayed(topology, delivery, due, now)
}

/// One of hookrelay's own events, into the events exchange like any other event, tagged so
/// that the fan-out knows it from one an upstream publisher forged.
pub fn operational(topology: &Topology, origin: &OriginKey, event: &OperationalEvent) -> Outgoing {
    let mut message = Outgoing::json(
        topology.events_exchange(),
        event.event_type.clone(),
        event.body.clone(),
    );
    message.headers.origin_tag = Some(origin.tag(&event.body));
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + millis).unwrap()
    }

    #[test]
    fn a_delivery_round_an_unreachable_queue_comes_back_after_one_tier() {
        let topology = Topology::new("ns");
        let message = Outgoing::json(
            topology.deliveries_exchange(),
            "webhook".into(),
            b"{}".to_vec(),
        );
        let round = round_unreachable(&topology, message, at(0));
        assert_eq!(round.exchange, "ns.retry");
        assert_eq!(round.routing_key, "webhook", "the key is the way back");
        assert_eq!(round.headers.due, Some(at(4_000)));
        let tier = round.headers.tier.unwrap();
        assert_eq!(tier.ttl(), UNREACHABLE_WAIT, "one tier exactly");
    }

    #[test]
    fn a_delay_waits_in_the_largest_tier_not_above_it() {
        let topology = Topology::new("ns");
        let message = Outgoing::json("ns.deliveries".into(), "w".into(), Vec::new());
        for (wait_ms, tier_ms) in [
            (0, 250),
            (100, 250),
            (999, 500),
            (1_000, 1_000),
            (70_000, 64_000),
        ] {
            let delayed = delayed(&topology, message.clone(), at(wait_ms), at(0));
            assert_eq!(delayed.headers.due, Some(at(wait_ms)));
            assert_eq!(
                delayed.headers.tier.map(|t| t.ttl().as_millis()),
                Some(tier_ms),
                "a wait of {wait_ms} ms"
            );
        }
    }

    #[test]
    fn hookrelay_events_carry_their_origin_tag() {
        let topology = Topology::new("ns");
        let origin = OriginKey::new([7; hookrelay_core::ops::ORIGIN_KEY_BYTES]);
        let event = hookrelay_core::ops::webhook_test(
            uuid::Uuid::nil(),
            uuid::Uuid::nil(),
            "acc",
            "https://x.test",
            at(0),
        );
        let message = operational(&topology, &origin, &event);
        assert_eq!(message.exchange, "ns.events");
        assert_eq!(message.routing_key, "Webhook.test");
        let tag = message.headers.origin_tag.unwrap();
        assert!(origin.verify(&message.body, &tag));
    }
}
