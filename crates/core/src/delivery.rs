//! What travels through the per-webhook queues, and how an attempt's result is judged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A queued delivery. Versioned and tagged, so a service reading a message left in a queue by
/// the previous release still understands it during a rolling upgrade: a new shape becomes a
/// new variant, and the old one stays readable until no queue can hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum DeliveryTask {
    #[serde(rename = "1")]
    V1(DeliveryV1),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryV1 {
    /// The `webhook_logs` row this delivery updates.
    pub log_id: Uuid,
    pub webhook_id: Uuid,
    /// Sent as `webhook-id`, the same on every attempt.
    pub event_id: String,
    pub event_type: String,
    /// The attempt this message asks for, from 1.
    pub attempt: u32,
    /// When hookrelay received the event, for the publish-to-delivery latency.
    pub received_at: DateTime<Utc>,
    /// The exact body to send (and sign), as built at fan-out.
    pub payload: String,
    /// Queued again by hand (`POST /v1/logs/{id}/retry`, recover): one attempt, no retry
    /// schedule. Absent in messages of earlier releases, which read as `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
}

impl DeliveryTask {
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings, numbers and ids always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn v1(&self) -> &DeliveryV1 {
        match self {
            Self::V1(v1) => v1,
        }
    }
}

/// How one attempt ended: the values of `outcome` on `hookrelay_delivery_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer within the timeout.
    Success,
    /// Any other answer (redirects included: they are not followed).
    HttpError,
    /// No full answer within the timeout.
    Timeout,
    /// Connection refused or reset, DNS failure, TLS failure, a broken answer.
    NetworkError,
    /// The address is not public and private networks are not allowed.
    Blocked,
}

impl Outcome {
    pub fn from_status(status: u16) -> Self {
        if (200..300).contains(&status) {
            Self::Success
        } else {
            Self::HttpError
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::HttpError => "http_error",
            Self::Timeout => "timeout",
            Self::NetworkError => "network_error",
            Self::Blocked => "blocked",
        }
    }
}

/// At most this much of a receiver's answer is kept (contract §3).
pub const MAX_RESPONSE_BODY: usize = 4096;

/// The kept part of an answer body: at most [`MAX_RESPONSE_BODY`] bytes, cut on a character
/// boundary, invalid UTF-8 replaced and NUL bytes (which PostgreSQL text refuses) dropped.
pub fn response_excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_RESPONSE_BODY)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    text.retain(|c| c != '\0');
    while text.len() > MAX_RESPONSE_BODY {
        text.pop();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_round_trip_with_their_version() {
        let task = DeliveryTask::V1(DeliveryV1 {
            log_id: Uuid::nil(),
            webhook_id: Uuid::nil(),
            event_id: "evt".into(),
            event_type: "Contact.created".into(),
            attempt: 1,
            received_at: DateTime::from_timestamp(0, 0).unwrap(),
            payload: r#"{"a":"b"}"#.into(),
            manual: false,
        });
        let bytes = task.to_bytes();
        assert!(String::from_utf8_lossy(&bytes).starts_with(r#"{"version":"1","#));
        assert_eq!(DeliveryTask::from_bytes(&bytes).unwrap(), task);
        assert!(DeliveryTask::from_bytes(br#"{"version":"9"}"#).is_err());
        assert!(
            !String::from_utf8_lossy(&bytes).contains("manual"),
            "an automatic delivery reads as before"
        );
        let DeliveryTask::V1(mut manual) = task;
        manual.manual = true;
        let bytes = DeliveryTask::V1(manual.clone()).to_bytes();
        assert_eq!(DeliveryTask::from_bytes(&bytes).unwrap().v1(), &manual);
    }

    #[test]
    fn outcomes() {
        assert_eq!(Outcome::from_status(200), Outcome::Success);
        assert_eq!(Outcome::from_status(204), Outcome::Success);
        for status in [100, 301, 302, 400, 410, 429, 500, 503] {
            assert_eq!(Outcome::from_status(status), Outcome::HttpError, "{status}");
        }
    }

    #[test]
    fn excerpts() {
        assert_eq!(response_excerpt(b"ok"), "ok");
        assert_eq!(response_excerpt(&[b'a'; 5000]).len(), MAX_RESPONSE_BODY);
        assert_eq!(response_excerpt(b"a\0b\xff"), "ab\u{fffd}");
        let multi = "é".repeat(3000);
        let cut = response_excerpt(multi.as_bytes());
        assert!(cut.len() <= MAX_RESPONSE_BODY && cut.chars().all(|c| c == 'é' || c == '\u{fffd}'));
    }
}
