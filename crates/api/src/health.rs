use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Alive: the process answers. Says nothing about its dependencies.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready: 200 only when the database and the broker both answer now; 503 otherwise, with
/// which of them failed.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    // The answer is public, so it says only which check failed; the cause goes to the log.
    let database = match tokio::time::timeout(CHECK_TIMEOUT, state.store().ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(error = %hookrelay_core::error_chain(&e), "readiness: database check failed");
            "unavailable"
        }
        Err(_) => {
            tracing::warn!("readiness: the database did not answer within 2s");
            "unavailable"
        }
    };
    let broker = if state.pipeline().broker_ready() {
        "ok"
    } else {
        "unavailable"
    };
    let ready = database == "ok" && broker == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": {"database": database, "broker": broker},
    });
    (status, Json(body))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match state.inner.metrics.render() {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("cannot render metrics: {e}"),
        ),
    }
}
