//! hookrelay's own events (contract §2): what it tells an account about its webhooks. They go
//! into the events exchange like any other event, so a webhook subscribes to them like any
//! other type; one about webhook W is never delivered to W itself.

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use uuid::Uuid;

pub const WEBHOOK_DISABLED: &str = "Webhook.disabled";
pub const WEBHOOK_DELIVERY_FAILED: &str = "Webhook.delivery.failed";
pub const WEBHOOK_TEST: &str = "Webhook.test";
/// The id prefix of a test event: the rest is the id its log is to have, so the API can
/// answer the log id before the fan-out has written it.
const TEST_ID_PREFIX: &str = "wht_";

/// Whether `event_type` is one of hookrelay's own. A delivery of one that fails for good
/// announces nothing: two dead webhooks subscribed to each other's failures would otherwise
/// notify each other forever.
pub fn is_operational(event_type: &str) -> bool {
    event_type.starts_with("Webhook.")
}

/// The AMQP header that proves an event of the `Webhook.` family was published by hookrelay.
/// Upstream publishers share the events exchange, so the type alone proves nothing: without a
/// valid tag, such an event is rejected like any other forged input.
pub const ORIGIN_HEADER: &str = "x-hookrelay-origin";

/// The key that tags hookrelay's own events. It is shared by every process of a deployment
/// (kept in the database) and by nobody else; its `Debug` never shows it.
#[derive(Clone)]
pub struct OriginKey([u8; ORIGIN_KEY_BYTES]);

/// One SHA-256 block: the longest HMAC key that is used as it is.
pub const ORIGIN_KEY_BYTES: usize = 64;

impl OriginKey {
    pub fn new(key: [u8; ORIGIN_KEY_BYTES]) -> Self {
        Self(key)
    }

    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&self.0.into());
        mac.update(b"hookrelay-origin.v1.");
        mac.update(body);
        mac
    }

    /// The value of [`ORIGIN_HEADER`] for an event body.
    pub fn tag(&self, body: &[u8]) -> String {
        let digest = self.mac(body).finalize().into_bytes();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    }

    /// Whether `tag` was made by [`OriginKey::tag`] for exactly this body (in constant time).
    pub fn verify(&self, body: &[u8], tag: &str) -> bool {
        let Some(encoded) = tag.strip_prefix("v1,") else {
            return false;
        };
        let Ok(digest) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        self.mac(body).verify_slice(&digest).is_ok()
    }
}

impl std::fmt::Debug for OriginKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginKey(<redacted>)")
    }
}

/// An event ready to publish: its id, type (the routing key) and body (contract §1).
#[derive(Debug, Clone, PartialEq)]
pub struct OperationalEvent {
    pub id: String,
    /// One of the `Webhook.` family, or any catalog type for an example sent by hand.
    pub event_type: String,
    pub body: Vec<u8>,
}

/// The envelope field that sends a test event to one webhook alone. Read only from a message
/// with hookrelay's origin tag (which covers the body, so the field too); ignored otherwise,
/// as any field the contract does not name.
pub const TEST_WEBHOOK_FIELD: &str = "x_hookrelay_test_webhook";

fn envelope(
    id: String,
    event_type: &str,
    account_id: &str,
    at: DateTime<Utc>,
    data: serde_json::Value,
) -> OperationalEvent {
    build(id, event_type, account_id, at, data, None)
}

fn build(
    id: String,
    event_type: &str,
    account_id: &str,
    at: DateTime<Utc>,
    data: serde_json::Value,
    test_webhook: Option<Uuid>,
) -> OperationalEvent {
    let mut body = json!({
        "id": id,
        "type": event_type,
        "account_id": account_id,
        "occurred_at": at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    });
    if let Some(webhook) = test_webhook {
        body[TEST_WEBHOOK_FIELD] = json!(webhook);
    }
    OperationalEvent {
        id,
        event_type: event_type.to_owned(),
        // A JSON value writes itself out without failing, unlike a type's serialization.
        body: body.to_string().into_bytes(),
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

/// `Webhook.test`, sent by hand to webhook `webhook_id` alone (whatever it subscribes to),
/// its delivery logged as `log_id`.
pub fn webhook_test(
    log_id: Uuid,
    webhook_id: Uuid,
    account_id: &str,
    url: &str,
    at: DateTime<Utc>,
) -> OperationalEvent {
    build(
        format!("{TEST_ID_PREFIX}{}", log_id.simple()),
        WEBHOOK_TEST,
        account_id,
        at,
        json!({
            "webhook_id": webhook_id,
            "url": url,
            "message": "A test event sent from hookrelay.",
        }),
        Some(webhook_id),
    )
}

/// An event of `event_type` with `example` as its data, sent by hand to webhook `webhook_id`
/// alone, as [`webhook_test`] is: what a receiver gets for that type, to build against.
pub fn example(
    log_id: Uuid,
    webhook_id: Uuid,
    account_id: &str,
    event_type: &str,
    example: serde_json::Value,
    at: DateTime<Utc>,
) -> OperationalEvent {
    build(
        format!("{TEST_ID_PREFIX}{}", log_id.simple()),
        event_type,
        account_id,
        at,
        example,
        Some(webhook_id),
    )
}

/// The log id a test event's id carries.
pub fn test_log_id(event_id: &str) -> Option<Uuid> {
    Uuid::parse_str(event_id.strip_prefix(TEST_ID_PREFIX)?).ok()
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
            let intake = crate::Intake {
                max_bytes: 1 << 20,
                max_depth: 64,
                from_hookrelay: true,
            };
            let event = Event::parse(&op.body, key, &intake, at).unwrap();
            assert_eq!(event.id, op.id);
            assert_eq!(event.account_id.as_str(), "acc_1");
            assert_eq!(event.about_webhook(), Some(webhook));
            assert!(is_operational(event.event_type.as_str()));
        }
        assert!(!is_operational("Contact.created"));
    }

    #[test]
    fn a_test_event_names_its_webhook_and_log() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let (log, webhook) = (Uuid::from_u128(3), Uuid::from_u128(4));
        let op = webhook_test(log, webhook, "acc_1", "https://x.test/h", at);
        let intake = crate::Intake {
            max_bytes: 1 << 20,
            max_depth: 64,
            from_hookrelay: true,
        };
        let event = Event::parse(&op.body, WEBHOOK_TEST, &intake, at).unwrap();
        assert_eq!(event.test_target(), Some((webhook, log)));
        assert_eq!(
            event.about_webhook(),
            None,
            "a test goes to its webhook, not around it"
        );
        assert_eq!(test_log_id("whd_x"), None);
    }

    #[test]
    fn an_example_goes_to_its_webhook_only_when_hookrelay_sent_it() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let (log, webhook) = (Uuid::from_u128(3), Uuid::from_u128(4));
        let op = example(
            log,
            webhook,
            "acc_1",
            "Contact.created",
            json!({"name": "Ann"}),
            at,
        );
        let mut intake = crate::Intake {
            max_bytes: 1 << 20,
            max_depth: 64,
            from_hookrelay: true,
        };
        let event = Event::parse(&op.body, "Contact.created", &intake, at).unwrap();
        assert_eq!(event.test_target(), Some((webhook, log)));
        assert_eq!(event.data.get(), r#"{"name":"Ann"}"#);
        assert!(
            !event.payload().contains(TEST_WEBHOOK_FIELD),
            "receivers get the contract's fields only"
        );
        // The same body from a publisher: an ordinary event, to every subscriber.
        intake.from_hookrelay = false;
        let event = Event::parse(&op.body, "Contact.created", &intake, at).unwrap();
        assert_eq!(event.test_target(), None);
    }

    #[test]
    fn origin_tags_hold_only_for_the_same_key_and_body() {
        let key = OriginKey::new([7; 64]);
        let tag = key.tag(b"{\"a\":1}");
        assert!(key.verify(b"{\"a\":1}", &tag));
        assert!(!key.verify(b"{\"a\":2}", &tag), "another body");
        assert!(!OriginKey::new([8; 64]).verify(b"{\"a\":1}", &tag));
        for forged in ["", "v1,", "v1,!!!", &tag[3..], "v2,AAAA"] {
            assert!(!key.verify(b"{\"a\":1}", forged), "{forged}");
        }
        assert_eq!(format!("{key:?}"), "OriginKey(<redacted>)");
    }
}
