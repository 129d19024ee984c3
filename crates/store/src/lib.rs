//! PostgreSQL: the connection pool, the migrations of `migrations/`, and every query hookrelay
//! makes. Other crates never write SQL; they call the functions here with validated values
//! from `hookrelay-core` and get plain row structs back.

mod api_keys;
mod cursor;
mod error;
mod event_types;
mod health;
mod listen;
mod log_reads;
mod logs;
mod migrate;
mod pool;
mod portal;
mod retention;
mod service_keys;
mod tombstones;
mod webhooks;

pub use api_keys::ApiKeyRow;
pub use cursor::{Cursor, Page};
pub use error::StoreError;
pub use event_types::{EventTypePatch, EventTypeRow};
pub use listen::{listen_webhook_changes, WebhookChange, WebhookListener};
pub use log_reads::{
    AttemptRow, AttemptStats, LogDetail, LogFilter, LogRow, StatsBucket, ATTEMPTS_SHOWN,
};
pub use logs::{
    new_log_id, AttemptRecord, ExistingLog, InLine, LogToRequeue, NewEvent, NewLog, Replay,
    RequeueFilter, MAX_REPLAY_EVENTS,
};
pub use migrate::{ensure_database, migrate, migrate_to};
pub use pool::{describe_database_url, validate_database_url, PoolOptions, Store};
pub use retention::Retired;
pub use webhooks::{
    HealthRow, NewWebhook, OpenedSecret, PreviousSecret, WebhookFilter, WebhookPatch, WebhookRow,
    MAX_PREVIOUS_SECRETS,
};

/// A count read from an `int` column; a negative one (edited by hand) reads as 0.
pub(crate) fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// A count written to an `int` column, saturating.
pub(crate) fn to_int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A log's `status`, which a CHECK constraint keeps to the known four.
pub(crate) fn log_status(raw: &str) -> Result<hookrelay_core::LogStatus, StoreError> {
    hookrelay_core::LogStatus::parse(raw)
        .ok_or_else(|| StoreError::Corrupt(format!("a log has the unknown status `{raw}`")))
}

/// A webhook's `status`, which a CHECK constraint keeps to `active` and `disabled`. Should
/// another get in (the constraint dropped, the row edited by hand), the webhook reads as
/// disabled: its deliveries wait, none is lost, and the log says why.
pub(crate) fn webhook_status(id: uuid::Uuid, raw: &str) -> hookrelay_core::WebhookStatus {
    hookrelay_core::WebhookStatus::parse(raw).unwrap_or_else(|_| {
        tracing::error!(webhook_id = %id, status = raw, "a webhook has an unknown status; it reads as disabled until fixed");
        hookrelay_core::WebhookStatus::Disabled
    })
}

/// The LISTEN/NOTIFY channel on which every change to `webhooks` is announced (by a trigger,
/// so that edits made by hand in psql are seen too). The payload is
/// `{"op": "insert"|"update", "id": "<uuid>", "version": n}` (the webhook's `version` after
/// the change, migration V7) or `{"op": "delete", "id": "<uuid>"}`.
pub const WEBHOOK_CHANGES_CHANNEL: &str = "hookrelay_webhooks";
