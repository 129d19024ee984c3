//! The API and the console answer through axum's `oneshot`, with no broker and no pipeline:
//! only PostgreSQL is real here; the pipeline is the one seam the binary fills in.

// A test that cannot set up its world should stop there, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::future::BoxFuture;
use hookrelay_api::{ApiConfig, AppState, Pipeline, PipelineError};
use hookrelay_store::{PoolOptions, RequeueFilter, Store, WebhookRow};
use tower::ServiceExt as _;
use uuid::Uuid;

/// A pipeline that is not running: the broker is away, and nothing can be queued.
struct Stopped;

impl Pipeline for Stopped {
    fn broker_ready(&self) -> bool {
        false
    }
    fn webhook_written(&self, _: WebhookRow) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn webhook_deleted(&self, _: Uuid) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn retry_log(&self, _: Uuid, _: Option<String>) -> BoxFuture<'_, Result<bool, PipelineError>> {
        Box::pin(async { Err(PipelineError::Unavailable("stopped".into())) })
    }
    fn requeue(&self, _: RequeueFilter) -> BoxFuture<'_, Result<i64, PipelineError>> {
        Box::pin(async { Err(PipelineError::Unavailable("stopped".into())) })
    }
    fn replay(&self, _: hookrelay_store::Replay) -> BoxFuture<'_, Result<i64, PipelineError>> {
        Box::pin(async { Err(PipelineError::Unavailable("stopped".into())) })
    }
    fn prepare_fifo(&self) -> BoxFuture<'_, Result<(), PipelineError>> {
        Box::pin(async { Err(PipelineError::Unavailable("stopped".into())) })
    }

    fn skip(
        &self,
        _: Uuid,
        _: Option<String>,
    ) -> BoxFuture<'_, Result<Option<Uuid>, PipelineError>> {
        Box::pin(async { Err(PipelineError::Unavailable("stopped".into())) })
    }

    fn send_test(
        &self,
        _: Uuid,
        _: Option<hookrelay_api::Example>,
    ) -> BoxFuture<'_, Result<Uuid, PipelineError>> {
        Box::pin(async { Err(PipelineError::Unavailable("stopped".into())) })
    }
}

async fn get(router: &axum::Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn the_api_and_console_answer_without_a_broker() {
    let db = hookrelay_tests::TestDb::new();
    hookrelay_store::migrate(&db.url()).await.unwrap();
    let store = Store::connect(&db.url(), &PoolOptions::default()).unwrap();
    let state = AppState::new(
        store,
        hookrelay_metrics::Metrics::new().unwrap(),
        Arc::new(Stopped),
        ApiConfig {
            admin_token: Some("oneshot-admin-token".into()),
            allow_private_networks: true,
            max_request_bytes: 1 << 20,
            max_webhooks_per_account: 100,
            max_in_flight_per_account: 256,
            portal_key: b"oneshot-portal-key".to_vec(),
            public_url: "http://127.0.0.1:8080".into(),
            portal_frame_ancestors: Vec::new(),
        },
    );
    let router = hookrelay_api::router(state);
    let (status, page) = get(&router, "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Webhook Logs"));
    let (status, ready) = get(&router, "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert!(ready.contains(r#""broker":"unavailable""#), "{ready}");
    assert!(ready.contains(r#""database":"ok""#), "{ready}");
    let (status, me) = get(&router, "/v1/whoami", Some("oneshot-admin-token")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(me.contains("admin"), "{me}");
    let (status, logs) = get(&router, "/v1/logs", Some("oneshot-admin-token")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(logs, r#"{"items":[],"next_cursor":null}"#);
}
