//! The HTTP sinks the service delivers to, in the bench's own process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The sinks: count deliveries and keep each one's publish-to-receipt latency. Paths under
/// `/fail/` answer 503 and those under `/hang/` never answer; they are only counted.
#[derive(Default)]
pub(crate) struct Sink {
    pub(crate) received: AtomicU64,
    /// When each delivery arrived, with its publish-to-receipt latency in µs.
    pub(crate) arrivals: Mutex<Vec<(Instant, u64)>>,
    pub(crate) failed_503: AtomicU64,
    pub(crate) hung: AtomicU64,
}

async fn sink(State(sink): State<Arc<Sink>>, body: Bytes) -> StatusCode {
    let now = now_ns();
    let sent = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["data"]["sent_at_ns"].as_u64());
    if let Some(sent) = sent {
        if let Ok(mut l) = sink.arrivals.lock() {
            l.push((Instant::now(), now.saturating_sub(sent) / 1000));
        }
    }
    sink.received.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

pub(crate) async fn start_sink(sink: Arc<Sink>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new().fallback(sink_route).with_state(sink);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

async fn sink_route(state: State<Arc<Sink>>, uri: axum::http::Uri, body: Bytes) -> StatusCode {
    if uri.path().starts_with("/fail/") {
        state.failed_503.fetch_add(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if uri.path().starts_with("/hang/") {
        state.hung.fetch_add(1, Ordering::Relaxed);
        std::future::pending::<()>().await;
    }
    sink(state, body).await
}
