use std::sync::Arc;

use hookrelay_broker::Broker;
use hookrelay_dispatch::Dispatcher;
use hookrelay_metrics::Metrics;
use hookrelay_store::Store;
use sha2::{Digest, Sha256};

/// The settings the API reads.
#[derive(Clone, Default)]
pub struct ApiConfig {
    /// `None` refuses every `/v1` call (contract §6).
    pub admin_token: Option<String>,
    /// Accept webhook URLs on loopback and private networks (development and tests).
    pub allow_private_networks: bool,
}

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub store: Store,
    pub metrics: Metrics,
    pub broker: Broker,
    pub dispatcher: Dispatcher,
    /// Only the digest is kept, and compared digest to digest, so a comparison's timing says
    /// nothing about the token.
    pub admin_token_sha256: Option<[u8; 32]>,
    pub allow_private_networks: bool,
}

impl AppState {
    pub fn new(
        store: Store,
        metrics: Metrics,
        broker: Broker,
        dispatcher: Dispatcher,
        config: ApiConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                metrics,
                broker,
                dispatcher,
                admin_token_sha256: config.admin_token.as_deref().map(sha256),
                allow_private_networks: config.allow_private_networks,
            }),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }
}

pub(crate) fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}
