use std::sync::Arc;

use futures::future::BoxFuture;
use hookrelay_metrics::Metrics;
use hookrelay_store::{RequeueFilter, Store, StoreError, WebhookRow};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The settings the API reads.
#[derive(Clone, Default)]
pub struct ApiConfig {
    /// `None` refuses every `/v1` call (contract §6).
    pub admin_token: Option<String>,
    /// Accept webhook URLs on loopback and private networks (development and tests).
    pub allow_private_networks: bool,
    /// The largest request body read; a larger one answers 400 `body_too_large`.
    pub max_request_bytes: usize,
    /// Webhooks one account may have at most (429 `quota_exceeded` past it).
    pub max_webhooks_per_account: u32,
    /// Requests under way at once for one account in a process (`max_in_flight_per_account`,
    /// at most `max_in_flight_total`): no webhook's `max_in_flight` may exceed it, since its
    /// account could not use more, and every request allowed is twice that many deliveries
    /// a process may hold ahead in memory.
    pub max_in_flight_per_account: usize,
    /// Signs and checks portal session tokens: the `portal_sessions` service key, the same in
    /// every process.
    pub portal_key: Vec<u8>,
    /// Where the portal's links point: `{public_url}/portal#token=…`.
    pub public_url: String,
    /// The origins that may frame the portal (the CSP's `frame-ancestors`); none: `'none'`.
    pub portal_frame_ancestors: Vec<String>,
}

/// What the API asks of the running pipeline. The binary implements it over
/// `hookrelay-dispatch`, so that this crate knows nothing of the pipeline's insides.
pub trait Pipeline: Send + Sync + 'static {
    /// Whether the broker is connected now, for `/readyz`.
    fn broker_ready(&self) -> bool;

    /// Webhook `row` was just written through the API (created or changed): apply it now,
    /// not when its notification comes back, so that a webhook created a moment ago matches
    /// the very next event; the row is handed over so that nobody reads it again.
    fn webhook_written(&self, row: WebhookRow) -> BoxFuture<'_, ()>;

    /// Webhook `id` was just deleted through the API.
    fn webhook_deleted(&self, id: Uuid) -> BoxFuture<'_, ()>;

    /// Queues one more attempt of log `id`, whatever its status. `Ok(false)` when no such
    /// log is visible to `account`.
    fn retry_log(
        &self,
        id: Uuid,
        account: Option<String>,
    ) -> BoxFuture<'_, Result<bool, PipelineError>>;

    /// Starts queueing again, paced, the `failed` logs `filter` selects; answers how many.
    fn requeue(&self, filter: RequeueFilter) -> BoxFuture<'_, Result<i64, PipelineError>>;

    /// Starts delivering to a webhook, paced, the stored events it has not received that
    /// `replay` selects; answers how many.
    fn replay(&self, replay: hookrelay_store::Replay) -> BoxFuture<'_, Result<i64, PipelineError>>;

    /// Makes sure the ordered fan-out receives every event from now on (its queue bound):
    /// called before a webhook is written FIFO, so that no event published after it exists
    /// can miss it.
    fn prepare_fifo(&self) -> BoxFuture<'_, Result<(), PipelineError>>;

    /// Ends the first delivery of FIFO webhook `id`'s line `failed`, so that the line moves
    /// on; answers the log ended, `None` when nothing waits.
    fn skip(
        &self,
        id: Uuid,
        account: Option<String>,
    ) -> BoxFuture<'_, Result<Option<Uuid>, PipelineError>>;

    /// Sends `Webhook.test`, or `example`, to webhook `id` alone through the pipeline;
    /// answers the id its log will have.
    fn send_test(
        &self,
        id: Uuid,
        example: Option<Example>,
    ) -> BoxFuture<'_, Result<Uuid, PipelineError>>;
}

/// An event of a catalog type with the type's example as its `data`, sent by hand in place
/// of `Webhook.test`.
#[derive(Debug, Clone)]
pub struct Example {
    pub event_type: String,
    pub data: serde_json::Value,
}

/// Why the pipeline could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The broker is away: try again shortly (503).
    #[error("{0}")]
    Unavailable(String),
    /// The request cannot be carried out as things are (409).
    #[error("{0}")]
    Conflict(String),
    /// The pipeline failed in a way the caller can do nothing about (500); the details go
    /// to the service log.
    #[error("{0}")]
    Internal(String),
    #[error("database error")]
    Store(#[from] StoreError),
}

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub store: Store,
    pub metrics: Metrics,
    pub pipeline: Arc<dyn Pipeline>,
    /// Only the digest is kept, and compared digest to digest, so a comparison's timing says
    /// nothing about the token.
    pub admin_token_sha256: Option<[u8; 32]>,
    pub allow_private_networks: bool,
    pub max_request_bytes: usize,
    pub max_webhooks_per_account: u32,
    pub max_in_flight_per_account: usize,
    pub portal_key: Vec<u8>,
    pub public_url: String,
    pub portal_frame_ancestors: Vec<String>,
    /// Ended portal sessions, by account, cached (`crate::portal`).
    pub revocations: crate::portal::Revocations,
}

impl AppState {
    pub fn new(
        store: Store,
        metrics: Metrics,
        pipeline: Arc<dyn Pipeline>,
        config: ApiConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                metrics,
                pipeline,
                admin_token_sha256: config.admin_token.as_deref().map(sha256),
                allow_private_networks: config.allow_private_networks,
                max_request_bytes: config.max_request_bytes,
                max_webhooks_per_account: config.max_webhooks_per_account,
                max_in_flight_per_account: config.max_in_flight_per_account,
                portal_key: config.portal_key,
                public_url: config.public_url.trim_end_matches('/').to_owned(),
                portal_frame_ancestors: config.portal_frame_ancestors,
                revocations: Default::default(),
            }),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn pipeline(&self) -> &dyn Pipeline {
        self.inner.pipeline.as_ref()
    }
}

pub(crate) fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}
