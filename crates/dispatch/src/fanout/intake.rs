//! The fan-out's door: an event is checked (format, limits, catalog, origin of reserved
//! types) before anything else touches it, and a bad one goes to the rejected queue as it
//! came, with its reason.

use chrono::{DateTime, Utc};
use hookrelay_broker::{Delivery, Headers, Outgoing, Rejected};
use hookrelay_core::{Event, Intake, RejectReason, Rejection, Traceparent};
use hookrelay_store::StoreError;

use super::Context;
use crate::event_type_cache::Lookup;

pub(super) async fn validate(
    ctx: &Context,
    delivery: &Delivery,
    headers: &Headers,
    received_at: DateTime<Utc>,
) -> Result<Result<Event, Rejection>, StoreError> {
    let intake = Intake {
        from_hookrelay: has_origin_tag(ctx, delivery, headers),
        ..ctx.intake
    };
    let event = match Event::parse(
        delivery.body(),
        delivery.routing_key(),
        &intake,
        received_at,
    ) {
        Ok(e) => e,
        Err(r) => return Ok(Err(r)),
    };
    let schema = match ctx.event_types.lookup(event.event_type.as_str()).await? {
        Lookup::Unknown => {
            return Ok(Err(Rejection {
                reason: RejectReason::UnknownEventType,
                message: format!(
                    "unknown event type `{}`: not in the catalog (GET /v1/event-types)",
                    event.event_type
                ),
            }))
        }
        Lookup::Known(schema) => schema,
    };
    if let Some(schema) = schema {
        // Read only for a type with a schema: the others cost nothing.
        let data: serde_json::Value =
            serde_json::from_str(event.data.get()).unwrap_or(serde_json::Value::Null);
        if let Err(mismatch) = schema.check(&data) {
            return Ok(Err(Rejection::new(
                RejectReason::SchemaMismatch,
                format!(
                    "`data` does not match the schema of `{}`: {mismatch}",
                    event.event_type
                ),
            )));
        }
    }
    Ok(Ok(event))
}

/// The event's W3C `traceparent` header. A malformed one is dropped, not the event: tracing
/// is the publisher's aid, and a delivery should not fail for it.
pub(super) fn traceparent(headers: &Headers) -> Option<Traceparent> {
    let raw = headers.traceparent.as_deref()?;
    match Traceparent::parse(raw) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::debug!(reason = %e.message, "event with a malformed traceparent; ignored");
            None
        }
    }
}

/// Whether the message carries a valid tag of hookrelay's own, made for exactly this body.
fn has_origin_tag(ctx: &Context, delivery: &Delivery, headers: &Headers) -> bool {
    headers
        .origin_tag
        .as_deref()
        .is_some_and(|tag| ctx.origin.verify(delivery.body(), tag))
}

/// A bad event, unchanged, for `{ns}.events.rejected`, with its reason.
pub(super) fn rejected(ctx: &Context, delivery: &Delivery, rejection: &Rejection) -> Outgoing {
    let mut message = delivery.to_outgoing();
    // The default exchange routes by queue name.
    message.exchange = String::new();
    message.routing_key = ctx.routing.topology.rejected_queue();
    // An origin tag is only good for its body; it has no business in a queue publishers read.
    message.headers.forget_origin_tag();
    message.headers.rejected = Some(Rejected {
        reason: rejection.reason,
        error: rejection.message.clone(),
        routing_key: delivery.routing_key().to_owned(),
    });
    message
}
