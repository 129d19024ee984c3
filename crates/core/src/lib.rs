//! The domain of hookrelay, without IO: what an event type, a webhook URL, a header set or a
//! secret may be, and the pure decisions made about them (retry decisions, delay tiers,
//! endpoint health, address checks, signing).
//!
//! Everything here is deterministic and synchronous: no sockets, no clock reads, no runtime.
//! Callers pass `now` and random values in, so every decision is table-testable. The IO crates
//! (`store`, `broker`, `api`, `dispatch`) validate at their edge with the newtypes below and
//! never re-check afterwards.

mod attempt;
mod delivery;
mod event;
mod event_schema;
mod event_type;
mod filter;
mod health;
mod invalid;
pub mod net;
pub mod ops;
pub mod portal;
mod rate;
mod retry;
pub mod sealing;
pub mod signing;
mod tiers;
mod time;
mod trace;
mod webhook;

pub use attempt::{after_attempt, AfterAttempt, Attempted, FollowUp, Report};
pub use delivery::{
    is_current, is_current_attempt, response_excerpt, DeliveryTask, DeliveryV1, LogStatus, Outcome,
    MAX_RESPONSE_BODY,
};
pub use event::{check_event_id, Event, Intake, RejectReason, Rejection};
pub use event_schema::{check_storable, EventSchema, Mismatch, MAX_SCHEMA_BYTES};
pub use event_type::{EventType, BUILTIN_EVENT_TYPES, OWN_EVENT_TYPES, SEEDED_EVENT_TYPES};
pub use filter::{
    Filter, MAX_FILTER_BYTES, MAX_FILTER_DEPTH, MAX_FILTER_TESTS, MAX_IN_VALUES, MAX_PATH_SEGMENTS,
    MAX_REGEXES, MAX_REGEX_CHARS,
};
pub use health::{pause_after, BreakerState, Effects, EndpointHealth, HealthPolicy};
pub use invalid::Invalid;
pub use rate::{RateWindow, MAX_RATE_LIMIT, RATE_WINDOW};
pub use retry::{
    decide, jitter, parse_duration, parse_retry_after, AttemptFacts, Decision, Next, RetrySchedule,
    JITTER,
};
pub use tiers::{DelayTier, TIER_BASE, TIER_COUNT};
pub use time::{check_time, MAX_YEAR, MIN_YEAR};
pub use trace::{Traceparent, TRACEPARENT_HEADER};
/// `err` and all its causes on one line, for logs and recorded errors.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

pub use webhook::{
    AccountId, Description, EventList, HeaderSet, Ordering, Secret, WebhookStatus, WebhookUrl,
    MAX_DESCRIPTION_CHARS, MAX_EVENTS_PER_WEBHOOK, MAX_HEADERS, MAX_HEADERS_BYTES,
    RESERVED_HEADERS,
};
