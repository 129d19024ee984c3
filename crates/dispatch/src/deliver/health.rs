//! Where each webhook's endpoint health lives while its consumer is not running: loaded from
//! `webhook_health` when the workers first start (so a restart neither forgets a pause nor
//! hammers an endpoint that was paused), handed to a consumer when it starts, and given back
//! when it stops (on a reconnection, say).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use hookrelay_core::EndpointHealth;
use hookrelay_store::{HealthRow, Store};
use tracing::warn;
use uuid::Uuid;

#[derive(Default)]
struct Book {
    loaded: bool,
    by_id: HashMap<Uuid, EndpointHealth>,
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
                for (id, row) in rows {
                    book.by_id.entry(id).or_insert_with(|| from_row(&row, now));
                }
                book.loaded = true;
            }
            Err(e) => {
                warn!(error = %crate::error_chain(&e), "cannot read the saved endpoint health; starting every webhook healthy")
            }
        }
    }

    /// The health of a webhook whose consumer starts; healthy when nothing is known.
    pub async fn take(&self, id: Uuid) -> EndpointHealth {
        self.book.lock().await.by_id.remove(&id).unwrap_or_default()
    }

    /// Keeps the health of a consumer that stops, for its next start.
    pub async fn put(&self, id: Uuid, health: EndpointHealth) {
        self.book.lock().await.by_id.insert(id, health);
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
