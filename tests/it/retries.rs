//! Retries with backoff, `Retry-After`, auto-disable and hookrelay's own events, against a
//! real receiver, with short schedules.

use std::time::{Duration, Instant};

use hookrelay::settings::HumanDuration;
use hookrelay_core::RetrySchedule;
use hookrelay_tests::receiver::{Behaviour, Receiver};
use hookrelay_tests::{let_pass, wait_for};
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp};

const DEADLINE: Duration = Duration::from_secs(30);

pub fn schedule(raw: &str) -> RetrySchedule {
    RetrySchedule::parse(raw).expect("a schedule")
}

/// The log of `event_id` at `webhook_id`: (id, status, attempts, next_attempt_at is set).
pub async fn log_state(
    app: &TestApp,
    webhook_id: &str,
    event_id: &str,
) -> Option<(String, String, i32, bool)> {
    let db = app.db.connect().await;
    let row = db
        .query_opt(
            "SELECT id::text, status, attempts, next_attempt_at IS NOT NULL FROM webhook_logs
             WHERE webhook_id = $1::text::uuid AND event_id = $2",
            &[&webhook_id, &event_id],
        )
        .await
        .expect("a query")?;
    Some((row.get(0), row.get(1), row.get(2), row.get(3)))
}

/// Waits until the log of `event_id` at `webhook_id` has `status`, and answers its id and
/// attempts.
pub async fn wait_for_status(
    app: &TestApp,
    webhook_id: &str,
    event_id: &str,
    status: &str,
) -> (String, i32) {
    wait_for(
        &format!("log {event_id} to be {status}"),
        DEADLINE,
        || async {
            let (id, now, attempts, _) = log_state(app, webhook_id, event_id).await?;
            (now == status).then_some((id, attempts))
        },
    )
    .await
}

/// The attempts on record for a log: (attempt, response status), in order.
pub async fn attempt_rows(app: &TestApp, log_id: &str) -> Vec<(i32, Option<i32>)> {
    let db = app.db.connect().await;
    db.query(
        "SELECT attempt, response_status FROM webhook_attempts
         WHERE log_id = $1::text::uuid ORDER BY attempt",
        &[&log_id],
    )
    .await
    .expect("attempts")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

pub async fn metrics(app: &TestApp) -> String {
    app.call("GET", "/metrics", None, None).await.text
}

#[tokio::test]
async fn a_delivery_is_retried_until_it_succeeds_with_the_same_webhook_id() {
    let app = spawn_app_with(|s| s.retry_schedule = schedule("1s,1s,1s")).await;
    let receiver = Receiver::start().await;
    receiver.script([Behaviour::Status(500), Behaviour::Status(500)]);
    let webhook = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let event = app
        .publish("Contact.created", "acc", json!({"n": 1}), 1)
        .await
        .remove(0);

    // Between attempts the log says so, with the time of the next one.
    let retrying = wait_for("the log to be retrying", DEADLINE, || async {
        let state = log_state(&app, &webhook, &event).await?;
        (state.1 == "retrying").then_some(state)
    })
    .await;
    assert!(retrying.3, "a retrying log has next_attempt_at");
    let (log_id, attempts) = wait_for_status(&app, &webhook, &event, "succeeded").await;
    assert_eq!(attempts, 3);

    let got = receiver.received();
    assert_eq!(got.len(), 3, "three attempts in all");
    for request in &got {
        assert_eq!(request.header("webhook-id"), Some(event.as_str()));
        assert_eq!(request.body, got[0].body, "the same body every time");
    }
    for pair in got.windows(2) {
        let gap = pair[1].at - pair[0].at;
        // 1 s jittered by ±20 %, never early.
        assert!(gap >= Duration::from_millis(780), "retried after {gap:?}");
    }
    assert_eq!(
        attempt_rows(&app, &log_id).await,
        vec![(1, Some(500)), (2, Some(500)), (3, Some(200))]
    );
    let db = app.db.connect().await;
    let row = db
        .query_one(
            "SELECT next_attempt_at IS NULL, delivered_at IS NOT NULL, response_status
             FROM webhook_logs WHERE id = $1::text::uuid",
            &[&log_id],
        )
        .await
        .expect("the log");
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1));
    assert_eq!(row.get::<_, Option<i32>>(2), Some(200));
    let text = metrics(&app).await;
    assert!(
        text.contains("hookrelay_delivery_retries_total 2"),
        "{text}"
    );
    assert!(text.contains("hookrelay_deliveries_completed_total{status=\"succeeded\"} 1"));
    assert!(text.contains("hookrelay_deliveries_completed_total{status=\"failed\"} 0"));
}

#[tokio::test]
async fn retries_used_up_end_failed_and_the_account_is_told() {
    let app = spawn_app_with(|s| s.retry_schedule = schedule("1s,1s,1s")).await;
    let failing = Receiver::start().await;
    failing.answer(Behaviour::Body(503, "down for maintenance".into()));
    let watcher = Receiver::start().await;
    let other_account = Receiver::start().await;
    // The failing webhook listens for failures too: it must never hear of its own.
    let failing_id = app
        .webhook(
            "acc",
            &failing.url,
            &["Contact.created", "Webhook.delivery.failed"],
            json!({}),
        )
        .await;
    app.webhook("acc", &watcher.url, &["Webhook.delivery.failed"], json!({}))
        .await;
    app.webhook(
        "other",
        &other_account.url,
        &["Webhook.delivery.failed"],
        json!({}),
    )
    .await;
    let event = app
        .publish("Contact.created", "acc", json!({"n": 1}), 1)
        .await
        .remove(0);

    let (log_id, attempts) = wait_for_status(&app, &failing_id, &event, "failed").await;
    assert_eq!(attempts, 4, "1 + len(schedule) attempts");
    let notice = watcher.wait_for(1, DEADLINE).await.remove(0).json();
    assert_eq!(notice["type"], "Webhook.delivery.failed");
    assert_eq!(notice["account_id"], "acc");
    let data = &notice["data"];
    assert_eq!(data["log_id"], json!(log_id));
    assert_eq!(data["webhook_id"], json!(failing_id));
    assert_eq!(data["event_id"], json!(event));
    assert_eq!(data["event_type"], "Contact.created");
    assert_eq!(data["attempts"], 4);
    assert_eq!(data["response_status"], 503);
    assert_eq!(data["error"], "HTTP 503");

    // The notice went through the pipeline like any event: it has a log of its own.
    let notice_id = notice["id"].as_str().expect("an id").to_owned();
    let db = app.db.connect().await;
    let logged: i64 = db
        .query_one(
            "SELECT count(*) FROM webhook_logs WHERE event_id = $1",
            &[&notice_id],
        )
        .await
        .expect("a count")
        .get(0);
    assert_eq!(logged, 1, "to the watcher only");
    assert_eq!(failing.count(), 4, "four attempts, and no news of itself");
    assert!(failing
        .received()
        .iter()
        .all(|r| r.json()["type"] == "Contact.created"));
    assert_eq!(other_account.count(), 0, "another account hears nothing");
    let text = metrics(&app).await;
    assert!(text.contains("hookrelay_deliveries_completed_total{status=\"failed\"} 1"));
}

#[tokio::test]
async fn retry_after_is_honoured_within_its_clamp() {
    let app = spawn_app_with(|s| s.retry_schedule = schedule("1s,1s,1s")).await;
    let receiver = Receiver::start().await;
    receiver.script([
        // Asks for 30 s: twice the scheduled delay at most, 2 s.
        Behaviour::Headers(503, vec![("retry-after", "30".into())]),
        // Asks for nothing: the scheduled delay at least, 1 s.
        Behaviour::Headers(429, vec![("retry-after", "0".into())]),
        Behaviour::Status(200),
    ]);
    let webhook = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let event = app
        .publish("Contact.created", "acc", json!({}), 1)
        .await
        .remove(0);
    wait_for_status(&app, &webhook, &event, "succeeded").await;
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    let first = got[1].at - got[0].at;
    let second = got[2].at - got[1].at;
    // Never early; late by the smallest delay tier and the machine's load at most.
    assert!(
        first >= Duration::from_millis(1980) && first < Duration::from_millis(4000),
        "Retry-After 30 on a 1 s delay waited {first:?}, not 2 s"
    );
    assert!(
        second >= Duration::from_millis(980) && second < Duration::from_millis(3000),
        "Retry-After 0 on a 1 s delay waited {second:?}, not 1 s"
    );
}

#[tokio::test]
async fn a_410_disables_the_webhook_and_its_waiting_deliveries_go_out_after_enable() {
    let app = spawn_app_with(|s| {
        s.retry_schedule = schedule("1s,1s,1s,1s,1s");
        s.max_in_flight_per_webhook = 1;
    })
    .await;
    let gone = Receiver::start().await;
    // The first answer waits until every delivery is queued, so that all are queued when the
    // webhook is disabled (an event fanned out after that matches nothing).
    gone.script([Behaviour::Held(410)]);
    gone.answer(Behaviour::Status(410));
    let watcher = Receiver::start().await;
    let gone_id = app
        .webhook(
            "acc",
            &gone.url,
            &["Contact.created", "Webhook.disabled"],
            json!({}),
        )
        .await;
    app.webhook("acc", &watcher.url, &["Webhook.disabled"], json!({}))
        .await;
    let events = app.publish("Contact.created", "acc", json!({}), 10).await;
    let db = app.db.connect().await;
    let open_logs = || async {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM webhook_logs WHERE webhook_id = $1::text::uuid
                 AND status IN ('pending', 'retrying')",
                &[&gone_id],
            )
            .await
            .expect("a count")
            .get(0);
        n
    };
    wait_for("every delivery queued", DEADLINE, || async {
        (open_logs().await == 10).then_some(())
    })
    .await;
    gone.release();

    let webhook = wait_for("the webhook to be disabled", DEADLINE, || async {
        let answer = app
            .admin("GET", &format!("/v1/webhooks/{gone_id}"), None)
            .await;
        (answer.body["status"] == "disabled").then_some(answer.body)
    })
    .await;
    let reason = webhook["disabled_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("410"), "{reason}");
    let notice = watcher.wait_for(1, DEADLINE).await.remove(0).json();
    assert_eq!(notice["type"], "Webhook.disabled");
    assert_eq!(notice["data"]["webhook_id"], json!(gone_id));
    assert_eq!(notice["data"]["url"], webhook["url"]);
    assert!(notice["data"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("410")));
    assert!(metrics(&app)
        .await
        .contains("hookrelay_webhooks_disabled_total 1"));

    // Disabled: every delivery waits, none is lost, none goes out. Give the retries of the
    // refused ones time to come due, then check that nothing more arrived.
    let before = gone.count();
    assert!(
        before <= 3,
        "one request in flight at a time, stopped on the first 410: {before}"
    );
    assert_eq!(open_logs().await, 10, "every delivery is still to do");
    let_pass(Duration::from_secs(3)).await;
    assert_eq!(
        gone.count(),
        before,
        "nothing is sent to a disabled webhook"
    );

    gone.answer(Behaviour::Status(200));
    let enabled = app
        .admin("POST", &format!("/v1/webhooks/{gone_id}/enable"), None)
        .await;
    assert_eq!(enabled.body["status"], "active");
    assert_eq!(enabled.body["disabled_reason"], Value::Null);
    gone.wait_for_events(&events, DEADLINE).await;
    for event in &events {
        wait_for_status(&app, &gone_id, event, "succeeded").await;
    }
    assert!(
        gone.received()
            .iter()
            .all(|r| r.json()["type"] == "Contact.created"),
        "no news of itself"
    );
}

#[tokio::test]
async fn a_webhook_failing_for_disable_after_is_disabled() {
    let app = spawn_app_with(|s| {
        s.retry_schedule = schedule("500ms,500ms,500ms,500ms,500ms,500ms,500ms,500ms,500ms,500ms");
        s.disable_after = HumanDuration(Duration::from_secs(2));
        s.breaker_threshold = 1000;
    })
    .await;
    let failing = Receiver::start().await;
    failing.answer(Behaviour::Status(500));
    let id = app
        .webhook("acc", &failing.url, &["Contact.created"], json!({}))
        .await;
    let started = Instant::now();
    app.publish("Contact.created", "acc", json!({}), 1).await;
    let webhook = wait_for("the webhook to be disabled", DEADLINE, || async {
        let answer = app.admin("GET", &format!("/v1/webhooks/{id}"), None).await;
        (answer.body["status"] == "disabled").then_some(answer.body)
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not before disable_after"
    );
    assert_eq!(
        webhook["disabled_reason"],
        "every delivery attempt failed for 2s"
    );
    // Enabling starts the clock again.
    let enabled = app
        .admin("POST", &format!("/v1/webhooks/{id}/enable"), None)
        .await;
    assert_eq!(enabled.body["failing_since"], Value::Null);
    assert_eq!(enabled.body["health"], "healthy");
}
