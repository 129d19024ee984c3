//! hookrelay's own events (contract §2): what it tells an account about its webhooks. They go
//! into the events exchange like any other event, so a webhook subscribes to them like any
//! other type; one about webhook W is never delivered to W itself.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use uuid::Uuid;

pub const WEBHOOK_DISABLED: &str = "Webhook.disabled";
pub const WEBHOOK_DELIVERY_FAILED: &str = "Webhook.delivery.failed";

/// Whether `event_type` is one of hookrelay's own. A delivery of one that fails for good
/// announces nothing: two dead webhooks subscribed to each other's failures would otherwise
/// notify each other forever.
pub fn is_operational(event_type: &str) -> bool {
    event_type.starts_with("Webhook.")
}

/// An event ready to publish: its id, type (the routing key) and body (contract §1).
#[derive(Debug, Clone, PartialEq)]
pub struct OperationalEvent {
    pub id: String,
    pub event_type: &'static str,
    pub body: Vec<u8>,
}

fn envelope(
    id: String,
    event_type: &'static str,
    account_id: &str,
    at: DateTime<Utc>,
    data: serde_json::Value,
) -> OperationalEvent {
    let body = json!({
        "id": id,
        "type": event_type,
        "account_id": account_id,
        "occurred_at": at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    });
    OperationalEvent {
        id,
        event_type,
        // A tree of strings and numbers always serializes.
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// `Webhook.disabled`: hookrelay disabled a webhook at `at`, its failures having begun
/// `since`. The id is derived from the webhook and `since`, so one decision announced twice
/// (the update failed after the announcement, and is made again) is delivered once.
pub fn webhook_disabled(
    webhook_id: Uuid,
    account_id: &str,
    url: &str,
    reason: &str,
    since: DateTime<Utc>,
    at: DateTime<Utc>,
) -> OperationalEvent {
    envelope(
        format!("whd_{}_{}", webhook_id.simple(), since.timestamp_millis()),
        WEBHOOK_DISABLED,
        account_id,
        at,
        json!({"webhook_id": webhook_id, "url": url, "reason": reason}),
    )
}

/// What `Webhook.delivery.failed` tells about the delivery that exhausted its retries.
#[derive(Debug, Clone)]
pub struct FailedDelivery<'a> {
    pub log_id: Uuid,
    pub webhook_id: Uuid,
    pub account_id: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub attempts: u32,
    pub response_status: Option<u16>,
    pub error: Option<&'a str>,
}

/// `Webhook.delivery.failed`. The id is derived from the log and its last attempt, so the
/// same failure published twice (after a crash) is delivered once, while the failure of a
/// later retry by hand is announced again.
pub fn delivery_failed(failed: &FailedDelivery<'_>, at: DateTime<Utc>) -> OperationalEvent {
    envelope(
        format!("whf_{}_{}", failed.log_id.simple(), failed.attempts),
        WEBHOOK_DELIVERY_FAILED,
        failed.account_id,
        at,
        json!({
            "log_id": failed.log_id,
            "webhook_id": failed.webhook_id,
            "event_id": failed.event_id,
            "event_type": failed.event_type,
            "attempts": failed.attempts,
            "response_status": failed.response_status,
            "error": failed.error,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    #[test]
    fn operational_events_parse_as_events_about_their_webhook() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let webhook = Uuid::from_u128(7);
        let disabled = webhook_disabled(webhook, "acc_1", "https://x.test/h", "gone", at, at);
        let failed = delivery_failed(
            &FailedDelivery {
                log_id: Uuid::from_u128(9),
                webhook_id: webhook,
                account_id: "acc_1",
                event_id: "evt_1",
                event_type: "Contact.created",
                attempts: 8,
                response_status: Some(503),
                error: Some("HTTP 503"),
            },
            at,
        );
        assert_eq!(failed.id, format!("whf_{}_8", Uuid::from_u128(9).simple()));
        for (op, key) in [
            (disabled, WEBHOOK_DISABLED),
            (failed, WEBHOOK_DELIVERY_FAILED),
        ] {
            let event = Event::parse(&op.body, key, 1 << 20, at).unwrap();
            assert_eq!(event.id, op.id);
            assert_eq!(event.account_id.as_str(), "acc_1");
            assert_eq!(event.about_webhook(), Some(webhook));
            assert!(is_operational(event.event_type.as_str()));
        }
        assert!(!is_operational("Contact.created"));
    }
}
