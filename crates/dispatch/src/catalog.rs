use std::collections::HashSet;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use hookrelay_store::Store;

/// The event type names, cached. A name not found triggers a reload (at most four times a
/// second), so a type added through the API is accepted from its next event on, while a
/// flood of unknown types costs four queries a second, not one per event.
pub struct Catalog {
    store: Store,
    state: tokio::sync::Mutex<Option<Instant>>,
    names: RwLock<HashSet<String>>,
}

const RELOAD_AT_MOST_EVERY: Duration = Duration::from_millis(250);

impl Catalog {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            state: tokio::sync::Mutex::new(None),
            names: RwLock::new(HashSet::new()),
        }
    }

    fn cached(&self, name: &str) -> bool {
        self.names.read().map(|n| n.contains(name)).unwrap_or(false)
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
            if let Ok(mut names) = self.names.write() {
                *names = fresh;
            }
            *last = Some(Instant::now());
        }
        Ok(self.cached(name))
    }
}
