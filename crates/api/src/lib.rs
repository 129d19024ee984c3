//! The HTTP side: the admin API under `/v1` (contract §4), `/healthz`, `/readyz` and
//! `/metrics`, on one listener.
//!
//! Handlers validate every input with `hookrelay-core`'s newtypes before touching the store,
//! and every failure, including malformed JSON and unknown routes, answers the contract's
//! error shape `{"error":{"code","message","field"}}`. The webhook secret never leaves this
//! crate in an answer: views carry `has_secret` only.

mod api_keys;
mod auth;
mod error;
mod event_types;
mod extract;
mod health;
mod logs;
mod pagination;
mod state;
mod webhooks;

use std::future::IntoFuture;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use state::{ApiConfig, AppState, Pipeline, PipelineError};

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route(
            "/event-types",
            get(event_types::list).post(event_types::create),
        )
        .route("/api-keys", post(api_keys::create))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
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
        .route("/logs/retry", post(logs::retry_bulk))
        .route("/logs/{id}/retry", post(logs::retry));
    Router::new()
        .nest("/v1", v1)
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
        .layer(middleware::from_fn(log_request))
        .with_state(state)
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

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets requests under way
/// finish for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    drain: Duration,
) -> std::io::Result<()> {
    let stop = shutdown.clone();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        stop.cancelled().await;
    });
    let server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = server => result,
        // Graceful shutdown waits for every open connection, keep-alive ones included; a
        // client that never hangs up must not hold the process past the drain deadline.
        _ = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => Ok(()),
    }
}
