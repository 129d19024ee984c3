//! The event type names the fan-out accepts, cached from the catalog in the database.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hookrelay_store::Store;

/// The event type names, cached. A name not found triggers a reload (at most four times a
/// second), so a type added through the API is accepted from its next event on, while a
/// flood of unknown types costs four queries a second, not one per event. The set is swapped
/// whole, so a reader never meets a lock (nor a poisoned one, which would make every type
/// unknown).
pub struct EventTypeCache {
    store: Store,
    state: tokio::sync::Mutex<Option<Instant>>,
    names: ArcSwap<HashSet<String>>,
}

const RELOAD_AT_MOST_EVERY: Duration = Duration::from_millis(250);

impl EventTypeCache {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            state: tokio::sync::Mutex::new(None),
            names: ArcSwap::from_pointee(HashSet::new()),
        }
    }

    fn cached(&self, name: &str) -> bool {
        self.names.load().contains(name)
    }

    pub async fn contains(&self, name: &str) -> Result<bool, hookrelay_store::StoreError> {
        if self.cached(name) {
            return Ok(true);
        }
        let mut last = self.state.lock().await;
        if self.cached(name) {
            return Ok(true);
        }
        if last.is_none_or(|t| t.elapsed() >= RELOAD_AT_MOST_EVERY) {
            let fresh: HashSet<String> = self.store.event_type_names().await?.into_iter().collect();
            self.names.store(Arc::new(fresh));
            *last = Some(Instant::now());
        }
        Ok(self.cached(name))
    }
}
