//! The HTTP side: the admin API under `/v1` (contract §4), `/healthz`, `/readyz` and
//! `/metrics`, on one listener.
//!
//! Handlers validate every input with `hookrelay-core`'s newtypes before touching the store,
//! and every failure, including malformed JSON and unknown routes, answers the contract's
//! error shape `{"error":{"code","message","field"}}`. The webhook secret never leaves this
//! crate in an answer: views carry `has_secret` only.

mod api_keys;
mod auth;
mod console;
mod error;
mod event_types;
mod extract;
mod health;
mod listener;
mod logs;
mod openapi;
mod pagination;
mod portal;
mod state;
mod stats;
mod test_event;
mod webhooks;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{delete, get, patch, post};
use axum::Router;

pub use error::ApiError;
pub use listener::{serve, ListenerLimits, MAX_HEAD_BYTES};
pub use openapi::ApiDoc;
pub use pagination::MAX_PAGE_BYTES;
pub use state::{ApiConfig, AppState, Example, Pipeline, PipelineError};

/// The longest URL (path and query) a request may have; no route needs more than a cursor
/// and a few filters.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) a request may bring.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// How long a client may take to send a request's body: one that trickles it holds a
/// connection slot no longer than this. Long enough for the default `max_request_bytes`
/// (1 MiB) at 100 KiB/s; a deployment raising that asks its clients for more speed. The
/// handler's own work is not cut short: a rotation cancelled after its commit would lose the
/// secret it answers once.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route(
            "/event-types",
            get(event_types::list).post(event_types::create),
        )
        .route(
            "/event-types/openapi.json",
            get(event_types::receivers_document),
        )
        .route("/event-types/{name}", patch(event_types::update))
        .route(
            "/portal-sessions",
            post(portal::create).delete(portal::revoke),
        )
        .route("/api-keys", post(api_keys::create))
        .route("/api-keys/{id}", delete(api_keys::revoke))
        .route("/whoami", get(auth::whoami))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/webhooks/filter-test", post(webhooks::filter_test))
        .route(
            "/webhooks/{id}",
            get(webhooks::read)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route("/webhooks/{id}/enable", post(webhooks::enable))
        .route("/webhooks/{id}/disable", post(webhooks::disable))
        .route(
            "/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route("/webhooks/{id}/recover", post(webhooks::recover))
        .route("/webhooks/{id}/replay", post(webhooks::replay))
        .route("/webhooks/{id}/skip", post(webhooks::skip))
        .route("/webhooks/{id}/stats", get(stats::stats))
        .route("/webhooks/{id}/test", post(test_event::send))
        .route("/logs", get(logs::list))
        .route("/logs/retry", post(logs::retry_bulk))
        .route("/logs/{id}", get(logs::read))
        .route("/logs/{id}/attempts", get(logs::attempts))
        .route("/logs/{id}/payload", get(logs::payload))
        .route("/logs/{id}/retry", post(logs::retry));
    Router::new()
        .nest("/v1", v1)
        .merge(console::routes())
        .merge(openapi::routes())
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(state.inner.max_request_bytes))
        .layer(middleware::from_fn(limit_request))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Oversized URLs and headers answer in the contract's error shape, with 400 like every
/// other malformed request (hyper refuses heads beyond [`MAX_HEAD_BYTES`], or of more than
/// 100 headers, on its own, with a bare 431).
async fn limit_request(request: Request, next: Next) -> Response {
    let url_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if url_bytes > MAX_URL_BYTES {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "url_too_long",
            format!("the request URL is {url_bytes} bytes, over the limit of {MAX_URL_BYTES}"),
        )
        .into_response();
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "headers_too_large",
            format!(
                "the request headers are {header_bytes} bytes, over the limit of \
                 {MAX_HEADER_BYTES}"
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// One line per request, without headers or bodies (they may hold tokens and secrets).
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if status >= 500 {
        tracing::warn!(%method, %path, status, elapsed_ms, "request failed");
    } else {
        tracing::debug!(%method, %path, status, elapsed_ms, "request");
    }
    response
}
