//! The event type catalog the fan-out accepts, with each type's compiled schema, cached from
//! the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use hookrelay_core::EventSchema;
use hookrelay_store::{Store, StoreError};
use tracing::warn;

/// A type of the catalog: its schema compiled, if it has one, and the edit it belongs to.
#[derive(Clone)]
struct Known {
    schema: Option<Arc<EventSchema>>,
    updated_at: DateTime<Utc>,
}

/// The catalog, cached. A name not found triggers a reload (at most four times a second), so
/// a type added through the API is accepted from its next event on, while a flood of unknown
/// types costs four queries a second, not one per event. A schema changed through the API
/// applies within [`FRESH_FOR`]: the catalog is read again at the first event after that, and
/// a schema is compiled again only when its type changed. The map is swapped whole, so a
/// reader never meets a lock (nor a poisoned one, which would make every type unknown).
pub struct EventTypeCache {
    store: Store,
    state: tokio::sync::Mutex<Option<Instant>>,
    types: ArcSwap<HashMap<String, Known>>,
}

const RELOAD_AT_MOST_EVERY: Duration = Duration::from_millis(250);
/// How long a read of the catalog is used before the next event reads it again.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// What the catalog says of an event type.
pub enum Lookup {
    Unknown,
    Known(Option<Arc<EventSchema>>),
}

impl EventTypeCache {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            state: tokio::sync::Mutex::new(None),
            types: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    fn cached(&self, name: &str) -> Option<Lookup> {
        self.types
            .load()
            .get(name)
            .map(|k| Lookup::Known(k.schema.clone()))
    }

    /// Whether `name` is in the catalog, and its schema.
    pub async fn lookup(&self, name: &str) -> Result<Lookup, StoreError> {
        let stale = self
            .state
            .try_lock()
            .is_ok_and(|last| last.is_some_and(|t| t.elapsed() >= FRESH_FOR));
        if !stale {
            if let Some(found) = self.cached(name) {
                return Ok(found);
            }
        }
        let mut last = self.state.lock().await;
        let fresh = last.is_some_and(|t| t.elapsed() < FRESH_FOR);
        if fresh {
            if let Some(found) = self.cached(name) {
                return Ok(found);
            }
        }
        if last.is_none_or(|t| t.elapsed() >= RELOAD_AT_MOST_EVERY) {
            self.reload().await?;
            *last = Some(Instant::now());
        }
        Ok(self.cached(name).unwrap_or(Lookup::Unknown))
    }

    /// Reads the catalog again, compiling the schemas of the types changed since.
    async fn reload(&self) -> Result<(), StoreError> {
        let held = self.types.load();
        let rows = self.store.all_event_types().await?;
        let mut types = HashMap::with_capacity(rows.len());
        for row in rows {
            let known = match held.get(&row.name).filter(|k| k.updated_at == row.updated_at) {
                Some(same) => same.clone(),
                None => Known {
                    schema: row.schema.as_ref().and_then(|source| {
                        match EventSchema::parse(source) {
                            Ok(schema) => Some(Arc::new(schema)),
                            // Checked when saved; one edited by hand past the rules checks
                            // nothing rather than rejecting every event of its type.
                            Err(e) => {
                                warn!(event_type = %row.name, error = %e.message, "the stored schema of an event type does not compile; its events are not checked");
                                None
                            }
                        }
                    }),
                    updated_at: row.updated_at,
                },
            };
            types.insert(row.name, known);
        }
        self.types.store(Arc::new(types));
        Ok(())
    }
}
