use hookrelay_tests::wait_for;
use std::time::Duration;

use crate::helpers::spawn_app;

#[tokio::test]
async fn health_ready_and_metrics() {
    let app = spawn_app().await;
    let health = app.call("GET", "/healthz", None, None).await;
    assert_eq!(health.status, 200);
    // The broker connection is made in the background just after start.
    let ready = wait_for("readiness", Duration::from_secs(10), || async {
        let answer = app.call("GET", "/readyz", None, None).await;
        (answer.status == 200).then_some(answer)
    })
    .await;
    assert_eq!(ready.body["checks"]["database"], "ok");
    assert_eq!(ready.body["checks"]["broker"], "ok");

    let metrics = app.call("GET", "/metrics", None, None).await;
    assert_eq!(metrics.status, 200);
    for name in [
        "hookrelay_deliveries_enqueued_total",
        "hookrelay_delivery_attempts_total{outcome=\"success\"}",
        "hookrelay_inflight_deliveries",
        "hookrelay_webhooks_disabled_total",
    ] {
        assert!(metrics.text.contains(name), "{name} missing from /metrics");
    }

    let unknown = app.call("GET", "/nope", None, None).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error().0, "not_found");
    let wrong_method = app.call("PUT", "/v1/webhooks", None, None).await;
    assert_eq!(wrong_method.status, 405);
    wrong_method.error();
}

#[tokio::test]
async fn readyz_answers_503_when_the_database_is_gone() {
    let app = spawn_app().await;
    wait_for("readiness", Duration::from_secs(10), || async {
        (app.call("GET", "/readyz", None, None).await.status == 200).then_some(())
    })
    .await;
    app.db.drop_now().await;
    let answer = wait_for("unreadiness", Duration::from_secs(10), || async {
        let answer = app.call("GET", "/readyz", None, None).await;
        (answer.status == 503).then_some(answer)
    })
    .await;
    assert_eq!(answer.body["status"], "unavailable");
    let db_check = answer.body["checks"]["database"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(db_check, "unavailable", "the cause is logged, not answered");
    assert_eq!(answer.body["checks"]["broker"], "ok");
    // Still alive, just not ready.
    assert_eq!(app.call("GET", "/healthz", None, None).await.status, 200);
}
