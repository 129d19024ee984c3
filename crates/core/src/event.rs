//! The event envelope of contract §1, and the payload hookrelay sends for it (§2).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{AccountId, EventType};

const MAX_EVENT_ID_CHARS: usize = 128;

/// What an event id may be: 1 to 128 characters and no control characters, since it becomes
/// the `webhook-id` header and a text column. The API's `event_id` filter holds to it too.
pub fn check_event_id(id: &str) -> Result<(), crate::Invalid> {
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_EVENT_ID_CHARS {
        return Err(crate::Invalid::new(
            "invalid_event_id",
            format!("an event id is 1 to {MAX_EVENT_ID_CHARS} characters"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(crate::Invalid::new(
            "invalid_event_id",
            "an event id cannot hold control characters",
        ));
    }
    Ok(())
}

/// Why an event was refused. `reason()` is the label of
/// `hookrelay_events_rejected_total{reason}`: a small fixed set, never the event's own text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    /// One line, for the `x-hookrelay-error` header.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    TooLarge,
    NotUtf8,
    NotJson,
    MissingField,
    InvalidField,
    TypeMismatch,
    UnknownEventType,
    TooDeep,
    ReservedEventType,
    RefusedByDatabase,
    SchemaMismatch,
}

impl RejectReason {
    pub const ALL: [RejectReason; 11] = [
        Self::TooLarge,
        Self::NotUtf8,
        Self::NotJson,
        Self::MissingField,
        Self::InvalidField,
        Self::TypeMismatch,
        Self::UnknownEventType,
        Self::TooDeep,
        Self::ReservedEventType,
        Self::RefusedByDatabase,
        Self::SchemaMismatch,
    ];

    /// The reason of that [`RejectReason::as_str`].
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == raw)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::NotUtf8 => "not_utf8",
            Self::NotJson => "not_json",
            Self::MissingField => "missing_field",
            Self::InvalidField => "invalid_field",
            Self::TypeMismatch => "type_mismatch",
            Self::UnknownEventType => "unknown_event_type",
            Self::TooDeep => "too_deep",
            Self::ReservedEventType => "reserved_event_type",
            Self::RefusedByDatabase => "refused_by_database",
            Self::SchemaMismatch => "schema_mismatch",
        }
    }
}

impl Rejection {
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Self {
        // A header value is one line; the reason may quote the event, so fold it.
        let message: String = message
            .into()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(500)
            .collect();
        Self { reason, message }
    }
}

/// What an event may be, and who sent it: the limits of the settings, and whether the message
/// carried hookrelay's own origin tag (checked by the caller, who holds the key).
#[derive(Debug, Clone, Copy)]
pub struct Intake {
    pub max_bytes: usize,
    /// Nesting of arrays and objects in `data`, at most. PostgreSQL's jsonb parser recurses
    /// and refuses deep documents with an error of its own; this keeps them out before.
    pub max_depth: usize,
    /// The message is hookrelay's own (a valid `x-hookrelay-origin`): only then may its type
    /// be of the reserved `Webhook.` family.
    pub from_hookrelay: bool,
}

/// A valid event, as received.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub event_type: EventType,
    pub account_id: AccountId,
    pub occurred_at: DateTime<Utc>,
    pub data: Box<RawValue>,
    /// The one webhook a test event or an example goes to (`ops::TEST_WEBHOOK_FIELD`), read
    /// from hookrelay's own messages only.
    test_webhook: Option<uuid::Uuid>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    event_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    account_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    occurred_at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    // Taken raw: in a publisher's event it means nothing, and must not make it invalid.
    #[serde(borrow, default, rename = "x_hookrelay_test_webhook")]
    test_webhook: Option<&'a RawValue>,
}

/// A field's value as a string, or why it is not one.
fn string_field(raw: Option<&RawValue>, name: &str) -> Result<Option<String>, Rejection> {
    let Some(raw) = raw else { return Ok(None) };
    match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(serde_json::Value::String(s)) => Ok(Some(s)),
        Ok(serde_json::Value::Null) => Ok(None),
        _ => Err(Rejection::new(
            RejectReason::InvalidField,
            format!("`{name}` must be a string"),
        )),
    }
}

impl Event {
    /// Validates an event body received with `routing_key`. `received_at` stands in for a
    /// missing `occurred_at`.
    pub fn parse(
        body: &[u8],
        routing_key: &str,
        intake: &Intake,
        received_at: DateTime<Utc>,
    ) -> Result<Self, Rejection> {
        let max_bytes = intake.max_bytes;
        if body.len() > max_bytes {
            return Err(Rejection::new(
                RejectReason::TooLarge,
                format!(
                    "the event is {} bytes, over the limit of {max_bytes}",
                    body.len()
                ),
            ));
        }
        let text = std::str::from_utf8(body).map_err(|e| {
            Rejection::new(
                RejectReason::NotUtf8,
                format!("the event is not UTF-8: {e}"),
            )
        })?;
        // serde reads a struct from an array too (positionally): insist on an object.
        if !text.trim_start().starts_with('{') {
            return Err(Rejection::new(
                RejectReason::NotJson,
                "the event is not a JSON object",
            ));
        }
        let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
            // A data error names serde's own types ("expected struct Envelope"): say what is
            // wrong in the sender's terms instead. Syntax errors only give a position.
            if e.is_data() {
                Rejection::new(RejectReason::NotJson, "the event is not a JSON object")
            } else {
                Rejection::new(RejectReason::NotJson, format!("the event is not JSON: {e}"))
            }
        })?;

        let missing = |name: &str| {
            Rejection::new(RejectReason::MissingField, format!("`{name}` is required"))
        };
        let id = string_field(envelope.id, "id")?.ok_or_else(|| missing("id"))?;
        check_event_id(&id).map_err(|e| {
            Rejection::new(RejectReason::InvalidField, format!("`id`: {}", e.message))
        })?;
        let account = string_field(envelope.account_id, "account_id")?
            .ok_or_else(|| missing("account_id"))?;
        let account_id = AccountId::parse(&account).map_err(|e| {
            Rejection::new(RejectReason::InvalidField, format!("`account_id`: {e}"))
        })?;
        let declared = string_field(envelope.event_type, "type")?;
        let name = match (routing_key, declared.as_deref()) {
            ("", None) => return Err(Rejection::new(
                RejectReason::MissingField,
                "the event type is missing: publish with the type as routing key, or set `type`",
            )),
            ("", Some(t)) => t.to_owned(),
            (key, None) => key.to_owned(),
            (key, Some(t)) if t == key => key.to_owned(),
            (key, Some(t)) => {
                return Err(Rejection::new(
                    RejectReason::TypeMismatch,
                    format!("`type` is `{t}` but the routing key is `{key}`"),
                ))
            }
        };
        let event_type = EventType::parse(&name).map_err(|e| {
            Rejection::new(RejectReason::UnknownEventType, format!("event type: {e}"))
        })?;
        if crate::ops::is_operational(event_type.as_str()) && !intake.from_hookrelay {
            return Err(Rejection::new(
                RejectReason::ReservedEventType,
                format!(
                    "`{event_type}`: event types of the `Webhook.` family are hookrelay's own \
                     and cannot be published"
                ),
            ));
        }
        let occurred_at = match string_field(envelope.occurred_at, "occurred_at")? {
            None => received_at,
            Some(raw) => {
                let at = DateTime::parse_from_rfc3339(&raw)
                    .map_err(|e| {
                        Rejection::new(
                            RejectReason::InvalidField,
                            format!("`occurred_at` is not an RFC 3339 time: {e}"),
                        )
                    })?
                    .with_timezone(&Utc);
                // Sent on as `timestamp`, in UTC with a four-digit year (contract §2).
                crate::check_time(at).map_err(|e| {
                    Rejection::new(RejectReason::InvalidField, format!("`occurred_at`: {e}"))
                })?
            }
        };
        let data = match envelope.data {
            Some(raw) if raw.get() != "null" => raw.to_owned(),
            _ => return Err(missing("data")),
        };
        if exceeds_depth(data.get(), intake.max_depth) {
            return Err(Rejection::new(
                RejectReason::TooDeep,
                format!(
                    "`data` nests arrays and objects more than {} levels deep",
                    intake.max_depth
                ),
            ));
        }
        if has_nul_escape(data.get()) {
            return Err(Rejection::new(
                RejectReason::InvalidField,
                "`data` holds a \\u0000 character, which the log table (PostgreSQL jsonb) cannot store",
            ));
        }
        Ok(Self {
            id,
            event_type,
            account_id,
            occurred_at,
            data,
            test_webhook: envelope
                .test_webhook
                .filter(|_| intake.from_hookrelay)
                .and_then(|raw| serde_json::from_str(raw.get()).ok()),
        })
    }

    /// For hookrelay's own events about a webhook (`Webhook.disabled`,
    /// `Webhook.delivery.failed`), that webhook: it must not receive news of itself.
    pub fn about_webhook(&self) -> Option<uuid::Uuid> {
        #[derive(Deserialize)]
        struct About {
            webhook_id: Option<uuid::Uuid>,
        }
        let name = self.event_type.as_str();
        if name != crate::ops::WEBHOOK_DISABLED && name != crate::ops::WEBHOOK_DELIVERY_FAILED {
            return None;
        }
        serde_json::from_str::<About>(self.data.get())
            .ok()
            .and_then(|a| a.webhook_id)
    }

    /// For a test event or an example sent by hand (hookrelay's own), the one webhook it goes
    /// to and the id of its log.
    pub fn test_target(&self) -> Option<(uuid::Uuid, uuid::Uuid)> {
        #[derive(Deserialize)]
        struct Target {
            webhook_id: uuid::Uuid,
        }
        let webhook = match self.test_webhook {
            Some(webhook) => webhook,
            // Published by a version before the envelope field, and still queued.
            None if self.event_type.as_str() == crate::ops::WEBHOOK_TEST => {
                serde_json::from_str::<Target>(self.data.get())
                    .ok()?
                    .webhook_id
            }
            None => return None,
        };
        Some((webhook, crate::ops::test_log_id(&self.id)?))
    }

    /// The body every webhook receives for this event (contract §2). Built once per event
    /// and shared by all its deliveries, so the signed bytes are the same everywhere.
    pub fn payload(&self) -> String {
        #[derive(Serialize)]
        struct Payload<'a> {
            id: &'a str,
            #[serde(rename = "type")]
            event_type: &'a str,
            account_id: &'a str,
            timestamp: String,
            data: &'a RawValue,
        }
        let payload = Payload {
            id: &self.id,
            event_type: self.event_type.as_str(),
            account_id: self.account_id.as_str(),
            timestamp: self
                .occurred_at
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
            data: &self.data,
        };
        // Serializing borrowed strings and a RawValue cannot fail.
        serde_json::to_string(&payload).unwrap_or_default()
    }
}

/// Whether valid JSON text nests arrays and objects deeper than `max`. One pass, no
/// recursion and no allocation, so a hostile document costs no more than its length.
fn exceeds_depth(json: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Whether JSON text holds the escape `\u0000`, which PostgreSQL's jsonb refuses. An escaped
/// backslash followed by `u0000` (`\\u0000`) is six ordinary characters and does not count.
fn has_nul_escape(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes[i + 1..].starts_with(b"u0000") {
                return true;
            }
            // Skip the escaped character, whatever it is.
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    const INTAKE: Intake = Intake {
        max_bytes: 1024,
        max_depth: 8,
        from_hookrelay: false,
    };

    fn parse(body: &str, key: &str) -> Result<Event, Rejection> {
        Event::parse(body.as_bytes(), key, &INTAKE, now())
    }

    #[test]
    fn a_valid_event_and_its_payload() {
        let e = parse(
            r#"{"id":"evt_1","account_id":"acc_1","data":{"b":1,"a":[true]},"extra":"ignored"}"#,
            "Contact.created",
        )
        .unwrap();
        assert_eq!(e.event_type.as_str(), "Contact.created");
        assert_eq!(e.occurred_at, now());
        assert_eq!(
            e.payload(),
            r#"{"id":"evt_1","type":"Contact.created","account_id":"acc_1","timestamp":"2026-01-02T03:04:05Z","data":{"b":1,"a":[true]}}"#
        );
        let e = parse(
            r#"{"id":"e","type":"Message.received","account_id":"a","occurred_at":"2025-05-06T07:08:09.5+02:00","data":null2}"#,
            "",
        );
        assert_eq!(e.unwrap_err().reason, RejectReason::NotJson);
        let e = parse(
            r#"{"id":"e","type":"Message.received","account_id":"a","occurred_at":"2025-05-06T07:08:09.5+02:00","data":0}"#,
            "",
        )
        .unwrap();
        assert_eq!(
            e.event_type.as_str(),
            "Message.received",
            "type stands in for an empty key"
        );
        assert!(
            e.payload()
                .contains(r#""timestamp":"2025-05-06T05:08:09.500Z""#),
            "{}",
            e.payload()
        );
    }

    #[test]
    fn every_bad_event_has_a_reason() {
        let cases = [
            ("not json", "K.k", RejectReason::NotJson),
            ("[1]", "K.k", RejectReason::NotJson),
            (
                r#"{"account_id":"a","data":1}"#,
                "K.k",
                RejectReason::MissingField,
            ),
            (r#"{"id":"e","data":1}"#, "K.k", RejectReason::MissingField),
            (
                r#"{"id":"e","account_id":"a"}"#,
                "K.k",
                RejectReason::MissingField,
            ),
            (
                r#"{"id":"e","account_id":"a","data":null}"#,
                "K.k",
                RejectReason::MissingField,
            ),
            (
                r#"{"id":"e","account_id":"a","data":1}"#,
                "",
                RejectReason::MissingField,
            ),
            (
                r#"{"id":7,"account_id":"a","data":1}"#,
                "K.k",
                RejectReason::InvalidField,
            ),
            (
                r#"{"id":"","account_id":"a","data":1}"#,
                "K.k",
                RejectReason::InvalidField,
            ),
            (
                r#"{"id":"e","account_id":["a"],"data":1}"#,
                "K.k",
                RejectReason::InvalidField,
            ),
            (
                r#"{"id":"e","account_id":"","data":1}"#,
                "K.k",
                RejectReason::InvalidField,
            ),
            (
                r#"{"id":"e","account_id":"a","data":1,"occurred_at":"yesterday"}"#,
                "K.k",
                RejectReason::InvalidField,
            ),
            (
                r#"{"id":"e","account_id":"a","data":1,"occurred_at":"9999-12-31T23:59:59-23:59"}"#,
                "K.k",
                RejectReason::InvalidField,
            ),
            (
                r#"{"id":"e","account_id":"a","data":1,"type":"A.b"}"#,
                "K.k",
                RejectReason::TypeMismatch,
            ),
            (
                r#"{"id":"e","account_id":"a","data":1}"#,
                "bad key",
                RejectReason::UnknownEventType,
            ),
        ];
        for (body, key, reason) in cases {
            let err = parse(body, key).unwrap_err();
            assert_eq!(err.reason, reason, "{body} / {key}: {}", err.message);
            assert!(!err.message.contains('\n'));
        }
        let nul_data = r#"{"id":"e","account_id":"a","data":{"x":"a\u0000b"}}"#;
        assert_eq!(
            parse(nul_data, "K.k").unwrap_err().reason,
            RejectReason::InvalidField
        );
        let escaped_backslash = r#"{"id":"e","account_id":"a","data":{"x":"a\\u0000b"}}"#;
        assert!(
            parse(escaped_backslash, "K.k").is_ok(),
            "an escaped backslash is fine"
        );
        let nul_id = r#"{"id":"a\u0000","account_id":"a","data":1}"#;
        assert_eq!(
            parse(nul_id, "K.k").unwrap_err().reason,
            RejectReason::InvalidField
        );
        let long_id = format!(
            r#"{{"id":"{}","account_id":"a","data":1}}"#,
            "x".repeat(129)
        );
        assert_eq!(
            parse(&long_id, "K.k").unwrap_err().reason,
            RejectReason::InvalidField
        );
        let big = format!(
            r#"{{"id":"e","account_id":"a","data":"{}"}}"#,
            "x".repeat(2000)
        );
        assert_eq!(
            parse(&big, "K.k").unwrap_err().reason,
            RejectReason::TooLarge
        );
        let latin1 = b"{\"id\":\"\xe9\",\"account_id\":\"a\",\"data\":1}";
        assert_eq!(
            Event::parse(latin1, "K.k", &INTAKE, now())
                .unwrap_err()
                .reason,
            RejectReason::NotUtf8
        );
    }

    #[test]
    fn deep_data_is_refused_before_anything_else_sees_it() {
        let nested = |depth: usize| {
            format!(
                r#"{{"id":"e","account_id":"a","data":{}1{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        assert!(parse(&nested(8), "K.k").is_ok());
        let err = parse(&nested(9), "K.k").unwrap_err();
        assert_eq!(err.reason, RejectReason::TooDeep, "{}", err.message);
        // serde_json skips over `data` without its recursion limit: the depth check is what
        // stops 20 000 levels, which PostgreSQL would refuse.
        let intake = Intake {
            max_bytes: 1 << 20,
            ..INTAKE
        };
        let deep = nested(20_000);
        let err = Event::parse(deep.as_bytes(), "K.k", &intake, now()).unwrap_err();
        assert_eq!(err.reason, RejectReason::TooDeep);
        // Brackets inside strings, escaped quotes included, are text.
        let text = r#"{"id":"e","account_id":"a","data":{"s":"[[[[[[[[[[\"[[[[[[[[[[{{{{"}}"#;
        assert!(parse(text, "K.k").is_ok());
    }

    #[test]
    fn the_webhook_family_is_reserved_to_hookrelay() {
        let body = r#"{"id":"e","account_id":"a","data":{"webhook_id":"x"}}"#;
        for key in [
            "Webhook.disabled",
            "Webhook.delivery.failed",
            "Webhook.test",
            "Webhook.x",
        ] {
            let err = parse(body, key).unwrap_err();
            assert_eq!(err.reason, RejectReason::ReservedEventType, "{key}");
            let own = Intake {
                from_hookrelay: true,
                ..INTAKE
            };
            assert!(
                Event::parse(body.as_bytes(), key, &own, now()).is_ok(),
                "{key}"
            );
        }
        // By `type` with an empty routing key, too.
        let typed = r#"{"id":"e","type":"Webhook.disabled","account_id":"a","data":1}"#;
        assert_eq!(
            parse(typed, "").unwrap_err().reason,
            RejectReason::ReservedEventType
        );
    }

    #[test]
    fn messages_never_name_internal_types() {
        for body in ["null", "[]", "1", "\"s\"", r#"{"id":{"x":1}}"#] {
            if let Err(err) = parse(body, "K.k") {
                assert!(
                    !err.message.contains("struct") && !err.message.contains("Envelope"),
                    "{body}: {}",
                    err.message
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), key in "\\PC{0,20}") {
            let intake = Intake { max_bytes: 150, ..INTAKE };
            let _ = Event::parse(&body, &key, &intake, now());
        }
    }
}
