//! The fan-out's door: an event is checked (format, limits, catalog, origin of reserved
//! types) before anything else touches it, and a bad one goes to the rejected queue as it
//! came, with its reason.

use chrono::{DateTime, Utc};
use hookrelay_broker::lapin::message::Delivery;
use hookrelay_broker::lapin::types::{AMQPValue, FieldTable, LongString};
use hookrelay_broker::lapin::BasicProperties;
use hookrelay_broker::Outgoing;
use hookrelay_core::ops::ORIGIN_HEADER;
use hookrelay_core::{Event, Intake, RejectReason, Rejection, Traceparent, TRACEPARENT_HEADER};
use hookrelay_store::StoreError;

use super::Context;

pub(super) async fn validate(
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

/// The event's W3C `traceparent` header. A malformed one is dropped, not the event: tracing
/// is the publisher's aid, and a delivery should not fail for it.
pub(super) fn traceparent(delivery: &Delivery) -> Option<Traceparent> {
    let raw = text_header(delivery, TRACEPARENT_HEADER)?;
    match Traceparent::parse(&raw) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::debug!(reason = %e.message, "event with a malformed traceparent; ignored");
            None
        }
    }
}

/// Whether the message carries a valid tag of hookrelay's own, made for exactly this body.
fn has_origin_tag(ctx: &Context, delivery: &Delivery) -> bool {
    text_header(delivery, ORIGIN_HEADER).is_some_and(|tag| ctx.origin.verify(&delivery.data, &tag))
}

/// A text header of the message (a long or short string), if it has one.
fn text_header(delivery: &Delivery, name: &str) -> Option<String> {
    match delivery.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A bad event, unchanged, for `{ns}.events.rejected`, with its reason.
pub(super) fn rejected(ctx: &Context, delivery: &Delivery, rejection: &Rejection) -> Outgoing {
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
