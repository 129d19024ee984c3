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
    /// How many times the log had been queued again by hand when this delivery was made:
    /// 0 from the fan-out and its retries; `n` for the `n`-th retry by hand (log retry,
    /// recover), which gets one attempt and no schedule. Absent in messages of earlier
    /// releases, which read as 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub requeue: u32,
    /// The event's W3C `traceparent`, as its publisher sent it; each attempt sends a child
    /// of it. Absent when the event came without one, and in messages of earlier releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl DeliveryV1 {
    /// Queued again by hand: one attempt, no retry schedule.
    pub fn is_manual(&self) -> bool {
        self.requeue > 0
    }
}

/// Whether a delivery is still the log's current one when its attempt is made or recorded,
/// given the log's `attempts` and `requeues` at that moment.
///
/// It is not when the log was queued again by hand since (a newer `requeues`: the older
/// chain of retries gives way), nor when its attempt, or a later one, is on record already
/// (a second chain born of a retry published twice) — unless the broker redelivered it: then
/// it may be this very delivery, recorded just before a crash, whose follow-up (its retry)
/// must still be published. Stale deliveries are acked without an attempt, so duplicate
/// chains die at their next step instead of sending every retry twice.
pub fn is_current(
    task: &DeliveryV1,
    redelivered: bool,
    log_attempts: u32,
    log_requeues: u32,
) -> bool {
    is_current_attempt(
        task.attempt,
        task.requeue,
        redelivered,
        log_attempts,
        log_requeues,
    )
}

/// [`is_current`], from the numbers alone (the store checks records with it).
pub fn is_current_attempt(
    attempt: u32,
    requeue: u32,
    redelivered: bool,
    log_attempts: u32,
    log_requeues: u32,
) -> bool {
    requeue >= log_requeues && (attempt > log_attempts || (attempt == log_attempts && redelivered))
}

impl DeliveryTask {
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
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

/// The states of a delivery's log (contract §3): `pending` until its first attempt, or
/// queued again by hand; `retrying` while a retry waits; then `succeeded` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStatus {
    Pending,
    Retrying,
    Succeeded,
    Failed,
}

impl LogStatus {
    pub const ALL: [LogStatus; 4] = [Self::Pending, Self::Retrying, Self::Succeeded, Self::Failed];

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for LogStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    pub const ALL: [Outcome; 5] = [
        Self::Success,
        Self::HttpError,
        Self::Timeout,
        Self::NetworkError,
        Self::Blocked,
    ];

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
            requeue: 0,
            traceparent: None,
        });
        let bytes = task.to_bytes().unwrap();
        assert!(String::from_utf8_lossy(&bytes).starts_with(r#"{"version":"1","#));
        assert_eq!(DeliveryTask::from_bytes(&bytes).unwrap(), task);
        assert!(DeliveryTask::from_bytes(br#"{"version":"9"}"#).is_err());
        assert!(
            !String::from_utf8_lossy(&bytes).contains("requeue")
                && !String::from_utf8_lossy(&bytes).contains("traceparent"),
            "an automatic delivery without a trace reads as before"
        );
        let DeliveryTask::V1(mut manual) = task;
        manual.requeue = 2;
        let bytes = DeliveryTask::V1(manual.clone()).to_bytes().unwrap();
        assert_eq!(DeliveryTask::from_bytes(&bytes).unwrap().v1(), &manual);
        assert!(manual.is_manual());
    }

    #[test]
    fn stale_deliveries() {
        let task = |attempt, requeue| DeliveryV1 {
            log_id: Uuid::nil(),
            webhook_id: Uuid::nil(),
            event_id: "evt".into(),
            event_type: "Contact.created".into(),
            attempt,
            received_at: DateTime::from_timestamp(0, 0).unwrap(),
            payload: "{}".into(),
            requeue,
            traceparent: None,
        };
        // (attempt, requeue, redelivered, log attempts, log requeues, current)
        let cases = [
            (1, 0, false, 0, 0, true),  // the first attempt
            (3, 0, false, 2, 0, true),  // the next retry
            (2, 0, false, 2, 0, false), // a second chain: its twin is on record
            (2, 0, true, 2, 0, true),   // redelivered after a crash: its retry is still due
            (1, 0, true, 2, 0, false),  // older than what is on record
            (3, 0, false, 2, 1, false), // the log was queued again by hand since
            (3, 1, false, 2, 1, true),  // the delivery queued by hand
            (3, 1, false, 3, 2, false), // queued by hand twice: the first one gives way
        ];
        for (attempt, requeue, redelivered, attempts, requeues, current) in cases {
            assert_eq!(
                is_current(&task(attempt, requeue), redelivered, attempts, requeues),
                current,
                "{attempt} {requeue} {redelivered} {attempts} {requeues}"
            );
        }
    }

    #[test]
    fn log_statuses_read_back() {
        for status in LogStatus::ALL {
            assert_eq!(LogStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
        }
        assert_eq!(LogStatus::parse("Pending"), None);
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
