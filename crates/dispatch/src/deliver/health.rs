//! Where each webhook's endpoint health lives while its consumer is not running: loaded from
//! `webhook_health` when the workers first start (so a restart neither forgets a pause nor
//! hammers an endpoint that was paused), handed to a consumer when it starts, and given back
//! when it stops (on a reconnection, say).
//!
//! Health belongs to one edit of a webhook, told by its `updated_at`: any change made to
//! it (enabled again, a new URL) starts it healthy, in memory as in the table, whose row the
//! store deletes with every change.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use hookrelay_core::EndpointHealth;
use hookrelay_store::{HealthRow, Store};
use tokio_util::task::TaskTracker;
use tracing::warn;
use uuid::Uuid;

use crate::batcher::{BatchError, Batcher, Handler};

/// The webhook's `updated_at` that a health belongs to.
pub type EditedAt = Option<DateTime<Utc>>;

#[derive(Default)]
struct Book {
    loaded: bool,
    by_id: HashMap<Uuid, (EditedAt, EndpointHealth)>,
}

/// Endpoint health of the webhooks whose consumer is not running, by webhook id.
#[derive(Default)]
pub struct HealthBook {
    // An async mutex: it is held only to move an entry in or out, never across IO, and it
    // cannot be poisoned.
    book: tokio::sync::Mutex<Book>,
}

impl HealthBook {
    /// Reads the saved health once. On failure the workers start as if every endpoint were
    /// healthy (a paused one gets its probe early) and the next reconnection tries again.
    pub async fn load(&self, store: &Store) {
        let mut book = self.book.lock().await;
        if book.loaded {
            return;
        }
        match store.load_health().await {
            Ok(rows) => {
                let now = Utc::now();
                for (id, (edited_at, row)) in rows {
                    book.by_id
                        .entry(id)
                        .or_insert_with(|| (Some(edited_at), from_row(&row, now)));
                }
                book.loaded = true;
            }
            Err(e) => {
                warn!(error = %crate::error_chain(&e), "cannot read the saved endpoint health; starting every webhook healthy")
            }
        }
    }

    /// The health of a webhook as edited at `edited_at`, whose consumer starts; healthy when
    /// nothing is known of that edit.
    pub async fn take(&self, id: Uuid, edited_at: EditedAt) -> EndpointHealth {
        match self.book.lock().await.by_id.remove(&id) {
            Some((kept, health)) if kept == edited_at => health,
            _ => EndpointHealth::default(),
        }
    }

    /// Keeps the health of a consumer that stops, for its next start.
    pub async fn put(&self, id: Uuid, edited_at: EditedAt, health: EndpointHealth) {
        self.book.lock().await.by_id.insert(id, (edited_at, health));
    }
}

pub fn to_row(health: &EndpointHealth) -> HealthRow {
    HealthRow {
        failing_since: health.failing_since,
        consecutive_failures: health.consecutive_failures,
        trips: health.trips,
        paused_until: health.paused_until,
    }
}

pub fn from_row(row: &HealthRow, now: DateTime<Utc>) -> EndpointHealth {
    EndpointHealth::restore(
        row.consecutive_failures,
        row.trips,
        row.failing_since,
        row.paused_until,
        now,
    )
}

/// A saved health and the edit of the webhook it belongs to (its `updated_at`).
pub type Saved = Option<(DateTime<Utc>, HealthRow)>;

/// Reads the saved health of webhooks whose consumer has just got its first delivery, many
/// at a time: after a reconnection, or with ten thousand webhooks and a burst of events, that
/// is thousands of consumers at once, and one query each would crowd out the attempt writer.
pub type HealthLookup = Batcher<Uuid, Saved>;

/// Webhooks looked up per query at most.
const LOOKUP_BATCH: usize = 1000;

/// Starts the lookup; it ends when the last handle is dropped.
pub fn start_lookup(store: Store, tracker: &TaskTracker) -> HealthLookup {
    Batcher::start(
        "the endpoint health lookup",
        Lookup(store),
        LOOKUP_BATCH,
        LOOKUP_BATCH,
        tracker,
    )
}

struct Lookup(Store);

impl Handler for Lookup {
    type Item = Uuid;
    type Output = Saved;

    async fn handle(&mut self, ids: Vec<Uuid>) -> Vec<Result<Saved, BatchError>> {
        match self.0.load_health_of(&ids).await {
            Ok(found) => ids.iter().map(|id| Ok(found.get(id).cloned())).collect(),
            Err(e) => BatchError::for_all(ids.len(), BatchError::failed(e)),
        }
    }
}
