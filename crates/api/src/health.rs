use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use hookrelay_metrics::Dependency;

use crate::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Alive: the process answers. Says nothing about its dependencies.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Whether the database and the broker answer now.
struct Checks {
    database: bool,
    broker: bool,
}

impl Checks {
    async fn run(state: &AppState) -> Self {
        // Callers answer the public only which check failed; the cause goes to the log.
        let database = match tokio::time::timeout(CHECK_TIMEOUT, state.store().ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %hookrelay_core::error_chain(&e), "readiness: database check failed");
                false
            }
            Err(_) => {
                tracing::warn!("readiness: the database did not answer within 2s");
                false
            }
        };
        let checks = Self {
            database,
            broker: state.pipeline().broker_ready(),
        };
        // Every check also updates the gauge, so alerts see what /readyz answers.
        let metrics = &state.inner.metrics;
        metrics.dependency_checked(Dependency::Database, checks.database);
        metrics.dependency_checked(Dependency::Broker, checks.broker);
        checks
    }
}

fn word(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "unavailable"
    }
}

/// Ready: 200 only when the database and the broker both answer now; 503 otherwise, with
/// which of them failed.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let checks = Checks::run(&state).await;
    let ready = checks.database && checks.broker;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": {"database": word(checks.database), "broker": word(checks.broker)},
    });
    (status, Json(body))
}

/// The Prometheus text, with `hookrelay_dependency_up` checked at the scrape.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    Checks::run(&state).await;
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
