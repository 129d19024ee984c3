//! Events in through RabbitMQ, deliveries out over HTTP, rows in PostgreSQL.

use std::collections::HashSet;
use std::time::Duration;

use hookrelay_tests::receiver::{hang_up_server, refusing_address, Behaviour, Receiver};
use hookrelay_tests::{verify_signature, wait_for, wait_for_count};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

const PLAIN_SECRET: &str = "a-plain-secret-of-24-bytes";
const WHSEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const DEADLINE: Duration = Duration::from_secs(20);

async fn logs_of_event(app: &TestApp, event_id: &str) -> Vec<tokio_postgres::Row> {
    let db = app.db.connect().await;
    db.query(
        "SELECT id::text, webhook_id::text, account_id, event_type, payload, status, attempts,
                response_status, delivered_at IS NOT NULL AS delivered
         FROM webhook_logs WHERE event_id = $1 ORDER BY webhook_id",
        &[&event_id],
    )
    .await
    .expect("logs")
}

/// Waits until every log of `event_id` has left `pending`, and returns them.
async fn settled_logs(app: &TestApp, event_id: &str, expected: usize) -> Vec<tokio_postgres::Row> {
    wait_for("logs to settle", DEADLINE, || async {
        let rows = logs_of_event(app, event_id).await;
        let done = rows.len() == expected
            && rows
                .iter()
                .all(|r| r.get::<_, String>("status") != "pending");
        done.then_some(rows)
    })
    .await
}

#[tokio::test]
async fn an_event_reaches_exactly_the_subscribed_webhooks_of_its_account_signed() {
    let app = spawn_app().await;
    let plain = Receiver::start().await;
    let whsec = Receiver::start().await;
    let other_type = Receiver::start().await;
    let other_account = Receiver::start().await;
    let plain_id = app
        .webhook(
            "acc_a",
            &format!("{}/in/plain", plain.url),
            &["Contact.created"],
            json!({"secret": PLAIN_SECRET, "headers": {"X-Api-Key": "k_123", "Authorization": "Bearer abc"}}),
        )
        .await;
    let whsec_id = app
        .webhook(
            "acc_a",
            &whsec.url,
            &["Contact.created", "Message.received"],
            json!({"secret": WHSEC_SECRET}),
        )
        .await;
    app.webhook("acc_a", &other_type.url, &["Message.received"], json!({}))
        .await;
    app.webhook("acc_b", &other_account.url, &["Contact.created"], json!({}))
        .await;

    let data = json!({"contact": {"id": 42, "name": "Ada", "tags": ["x"]}});
    let ids = app
        .publish("Contact.created", "acc_a", data.clone(), 1)
        .await;
    let event_id = &ids[0];

    for (receiver, secret) in [(&plain, PLAIN_SECRET), (&whsec, WHSEC_SECRET)] {
        let got = receiver.wait_for(1, DEADLINE).await;
        let request = &got[0];
        let body = request.json();
        assert_eq!(body["id"], json!(event_id));
        assert_eq!(body["type"], "Contact.created");
        assert_eq!(body["account_id"], "acc_a");
        assert_eq!(body["data"], data);
        let timestamp = body["timestamp"].as_str().expect("a timestamp");
        assert!(
            chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
            "{timestamp}"
        );
        assert_eq!(
            body.as_object().map(|o| o.len()),
            Some(5),
            "exactly id, type, account_id, timestamp, data: {body}"
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert!(request
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("hookrelay/")));
        assert_eq!(request.header("webhook-id"), Some(event_id.as_str()));
        let ts = request
            .header("webhook-timestamp")
            .expect("webhook-timestamp");
        let ts_num: i64 = ts.parse().expect("unix seconds");
        assert!((chrono::Utc::now().timestamp() - ts_num).abs() < 60);
        let signature = request.header("webhook-signature").expect("a signature");
        assert!(
            verify_signature(secret, event_id, ts, &request.body, signature),
            "signature {signature} does not verify with {secret}"
        );
        assert!(!verify_signature(
            "wrong",
            event_id,
            ts,
            &request.body,
            signature
        ));
    }
    let request = &plain.received()[0];
    assert_eq!(request.path, "/in/plain");
    assert_eq!(request.header("x-api-key"), Some("k_123"));
    assert_eq!(request.header("authorization"), Some("Bearer abc"));

    let rows = settled_logs(&app, event_id, 2).await;
    let webhooks: HashSet<String> = rows.iter().map(|r| r.get("webhook_id")).collect();
    assert_eq!(
        webhooks,
        HashSet::from([plain_id.clone(), whsec_id.clone()]),
        "only acc_a's Contact.created webhooks"
    );
    for row in &rows {
        assert_eq!(row.get::<_, String>("status"), "succeeded");
        assert_eq!(row.get::<_, i32>("attempts"), 1);
        assert_eq!(row.get::<_, Option<i32>>("response_status"), Some(200));
        assert!(row.get::<_, bool>("delivered"));
        assert_eq!(row.get::<_, String>("account_id"), "acc_a");
        assert_eq!(row.get::<_, String>("event_type"), "Contact.created");
        let payload: Value = row.get("payload");
        assert_eq!(
            payload["data"], data,
            "the payload column holds the body sent"
        );
    }
    let db = app.db.connect().await;
    let attempts = db
        .query(
            "SELECT a.attempt, a.response_status, a.duration_ms, a.error FROM webhook_attempts a
             JOIN webhook_logs l ON l.id = a.log_id WHERE l.event_id = $1",
            &[event_id],
        )
        .await
        .expect("attempts");
    assert_eq!(attempts.len(), 2, "one attempt per delivery");
    for a in attempts {
        assert_eq!(a.get::<_, i32>(0), 1);
        assert_eq!(a.get::<_, Option<i32>>(1), Some(200));
        assert!(a.get::<_, i32>(2) >= 0);
        assert_eq!(a.get::<_, Option<String>>(3), None);
    }
    assert_eq!(other_type.count(), 0);
    assert_eq!(other_account.count(), 0);

    let metrics = app.call("GET", "/metrics", None, None).await.text;
    assert!(
        metrics.contains("hookrelay_events_received_total{event_type=\"Contact.created\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("hookrelay_deliveries_enqueued_total 2"));
    assert!(metrics.contains("hookrelay_deliveries_completed_total{status=\"succeeded\"} 2"));
    assert!(metrics.contains("hookrelay_delivery_attempts_total{outcome=\"success\"} 2"));
    assert!(!metrics.contains(&plain_id), "no per-webhook labels");
}

#[tokio::test]
async fn the_same_event_id_twice_is_delivered_once_per_webhook() {
    // One fan-out consumer handles events in order, so once the marker arrives, the duplicate
    // published before it has been handled too.
    let app = spawn_app_with(|s| s.ingest_workers = 1).await;
    let receiver = Receiver::start().await;
    app.webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    for _ in 0..3 {
        app.publish_raw(
            "Contact.created",
            br#"{"id":"evt_dup","account_id":"acc","data":{"n":1}}"#,
        )
        .await;
    }
    app.publish_raw(
        "Contact.created",
        br#"{"id":"evt_marker","account_id":"acc","data":{}}"#,
    )
    .await;
    wait_for("the marker", DEADLINE, || async {
        receiver
            .received()
            .iter()
            .any(|r| r.json()["id"] == "evt_marker")
            .then_some(())
    })
    .await;
    let dup_count = receiver
        .received()
        .iter()
        .filter(|r| r.json()["id"] == "evt_dup")
        .count();
    assert_eq!(dup_count, 1);
    assert_eq!(logs_of_event(&app, "evt_dup").await.len(), 1);
}

#[tokio::test]
async fn bad_events_are_rejected_with_a_reason_and_the_next_one_is_delivered() {
    let app = spawn_app_with(|s| s.max_event_bytes = 2048).await;
    let receiver = Receiver::start().await;
    app.webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let big = format!(
        r#"{{"id":"big","account_id":"acc","data":"{}"}}"#,
        "x".repeat(3000)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("Contact.created", b"not json".to_vec(), "not_json"),
        (
            "Contact.created",
            br#"{"account_id":"acc","data":1}"#.to_vec(),
            "missing_field",
        ),
        (
            "Contact.created",
            br#"{"id":"e1","data":1}"#.to_vec(),
            "missing_field",
        ),
        (
            "Contact.created",
            br#"{"id":"e2","account_id":"acc"}"#.to_vec(),
            "missing_field",
        ),
        (
            "Contact.created",
            br#"{"id":5,"account_id":"acc","data":1}"#.to_vec(),
            "invalid_field",
        ),
        (
            "Contact.created",
            br#"{"id":"e3","account_id":"acc","data":1,"type":"Message.received"}"#.to_vec(),
            "type_mismatch",
        ),
        (
            "Contact.deleted",
            br#"{"id":"e4","account_id":"acc","data":1}"#.to_vec(),
            "unknown_event_type",
        ),
        ("Contact.created", big.into_bytes(), "too_large"),
        (
            "Contact.created",
            b"{\"id\":\"\xff\",\"account_id\":\"acc\",\"data\":1}".to_vec(),
            "not_utf8",
        ),
        (
            "Contact.created",
            br#"{"id":"e5","account_id":"acc","data":{"x":"\u0000"}}"#.to_vec(),
            "invalid_field",
        ),
        (
            "Contact.created",
            br#"{"id":"e6","account_id":"acc","data":{"x":"\ud800"}}"#.to_vec(),
            "refused_by_database",
        ),
    ];
    for (key, body, _) in &cases {
        app.publish_raw(key, body).await;
    }
    let good = app
        .publish("Contact.created", "acc", json!({"ok": true}), 1)
        .await;
    let got = receiver.wait_for(1, DEADLINE).await;
    assert_eq!(got[0].json()["id"], json!(good[0]));

    let rejected = wait_for("every bad event in the rejected queue", DEADLINE, {
        let app = &app;
        let mut seen = Vec::new();
        move || {
            let fut = app.rejected_messages();
            let mut taken = std::mem::take(&mut seen);
            async move {
                taken.extend(fut.await);
                if taken.len() >= 11 {
                    Some(taken)
                } else {
                    None
                }
            }
        }
    })
    .await;
    assert_eq!(rejected.len(), cases.len());
    for (_, body, reason) in &cases {
        let found = rejected
            .iter()
            .find(|(_, _, b)| b == body)
            .unwrap_or_else(|| panic!("{reason}: not in the rejected queue"));
        assert_eq!(found.0, *reason, "error: {}", found.1);
        assert!(
            !found.1.is_empty() && !found.1.contains('\n'),
            "{}",
            found.1
        );
    }
    // Validation does not know every value PostgreSQL refuses (a lone surrogate here): the
    // batch is retried event by event and only the refused one is rejected.
    let surrogate = rejected
        .iter()
        .find(|(_, _, b)| b.windows(6).any(|w| w == br"\ud800"))
        .expect("the lone surrogate event");
    // The database's own words stay in the service log: the header gives the SQLSTATE only.
    assert!(
        surrogate.1.contains("refused") && surrogate.1.contains("SQLSTATE 22"),
        "{}",
        surrogate.1
    );
    assert!(
        !surrogate.1.contains("db error") && !surrogate.1.contains("Unicode"),
        "{}",
        surrogate.1
    );
    let metrics = app.call("GET", "/metrics", None, None).await.text;
    for (_, _, reason) in &cases {
        assert!(
            metrics.contains(&format!(
                "hookrelay_events_rejected_total{{reason=\"{reason}\"}} "
            )),
            "{reason} not counted"
        );
    }
    assert_eq!(receiver.count(), 1, "nothing bad was delivered");
}

/// A service whose requests time out only after the tests end, a receiver that never answers
/// and one that answers at once.
async fn hanging_and_healthy() -> (TestApp, Receiver, Receiver) {
    let app = spawn_app_with(|s| {
        s.request_timeout = hookrelay::settings::HumanDuration(Duration::from_secs(60));
        s.shutdown_timeout = hookrelay::settings::HumanDuration(Duration::from_secs(1));
    })
    .await;
    let hanging = Receiver::start().await;
    hanging.answer(Behaviour::Hang);
    (app, hanging, Receiver::start().await)
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_delay_other_webhooks() {
    let (app, hanging, healthy) = hanging_and_healthy().await;
    app.webhook("acc", &hanging.url, &["Message.received"], json!({}))
        .await;
    app.webhook("acc", &healthy.url, &["Message.received"], json!({}))
        .await;
    app.publish("Message.received", "acc", json!({"n": 1}), 100)
        .await;
    // All 100 reach the healthy endpoint while the other holds its deliveries open.
    healthy.wait_for(100, DEADLINE).await;
    let held = hanging.count();
    assert!(held >= 1, "the hanging endpoint was tried");
    assert!(
        held <= 16,
        "at most max_in_flight_per_webhook requests to one webhook, saw {held}"
    );
}

/// Once a webhook's consumer has had a delivery, its fresh deliveries go from the fan-out
/// straight to it while it has a request slot free, without a trip through the broker. A
/// webhook of the same events whose endpoint hangs takes as many as it has slots, and the rest
/// of its deliveries wait in its queue, not in the fan-out: the fast one keeps its pace.
#[tokio::test]
async fn fresh_deliveries_go_straight_to_a_free_consumer_and_a_hanging_ones_wait_in_its_queue() {
    const EVENTS: usize = 300;
    let (app, hanging, healthy) = hanging_and_healthy().await;
    let hanging_id = app
        .webhook("acc", &hanging.url, &["Message.received"], json!({}))
        .await;
    app.webhook("acc", &healthy.url, &["Message.received"], json!({}))
        .await;
    // The first of each goes through its queue: that is how a consumer learns it is the
    // queue's active one.
    app.publish("Message.received", "acc", json!({"n": 0}), 1)
        .await;
    healthy.wait_for(1, DEADLINE).await;
    hanging.wait_for(1, DEADLINE).await;

    app.publish("Message.received", "acc", json!({"n": 1}), EVENTS)
        .await;
    healthy.wait_for(1 + EVENTS, DEADLINE).await;
    // The hanging one's 15 other slots were free: as many went straight to it, and the rest
    // into its queue, where they wait (its consumer holds a prefetch of them), beside the first,
    // unacked while its request hangs.
    let queue = format!("{}.webhook.{hanging_id}", app.namespace);
    wait_for(
        "the hanging endpoint's deliveries in its queue",
        DEADLINE,
        || async {
            let (ready, unacked) = hookrelay_tests::queue_counts(&queue).await?;
            (ready + unacked == (EVENTS - 15 + 1) as u64).then_some(())
        },
    )
    .await;
    assert_eq!(hanging.count(), 16, "max_in_flight_per_webhook requests");
    let metrics = app.call("GET", "/metrics", None, None).await.text;
    let handed = hookrelay_tests::metric(&metrics, "hookrelay_deliveries_handed_off_total");
    assert!(
        handed >= 31.0,
        "15 to the hanging endpoint and at least the 16 slots of the healthy one, saw {handed}"
    );
}

#[tokio::test]
async fn failed_attempts_are_recorded_with_their_cause() {
    // No retries: each delivery's one attempt is final.
    let app = spawn_app_with(|s| {
        s.request_timeout = hookrelay::settings::HumanDuration(Duration::from_secs(1));
        s.retry_schedule = hookrelay_core::RetrySchedule::none();
    })
    .await;
    let erroring = Receiver::start().await;
    erroring.answer(Behaviour::Body(500, "é".repeat(10_000)));
    let slow = Receiver::start().await;
    slow.answer(Behaviour::Hang);
    let redirecting = Receiver::start().await;
    redirecting.answer(Behaviour::Status(302));
    let hang_up = hang_up_server().await;
    let refused = refusing_address().await;
    let cases = [
        (erroring.url.clone(), "failed", Some(500), "HTTP 500"),
        (slow.url.clone(), "failed", None, "timed out"),
        (redirecting.url.clone(), "failed", Some(302), "HTTP 302"),
        (hang_up.clone(), "failed", None, "error"),
        (refused.clone(), "failed", None, "error"),
    ];
    let mut ids = Vec::new();
    for (url, _, _, _) in &cases {
        ids.push(
            app.webhook("acc", url, &["Template.status"], json!({}))
                .await,
        );
    }
    let event = app
        .publish("Template.status", "acc", json!({}), 1)
        .await
        .remove(0);
    let rows = settled_logs(&app, &event, cases.len()).await;
    let db = app.db.connect().await;
    for ((url, status, code, error_part), id) in cases.iter().zip(&ids) {
        let row = rows
            .iter()
            .find(|r| &r.get::<_, String>("webhook_id") == id)
            .expect("a log per webhook");
        assert_eq!(row.get::<_, String>("status"), *status, "{url}");
        assert_eq!(row.get::<_, Option<i32>>("response_status"), *code, "{url}");
        let log: tokio_postgres::Row = db
            .query_one(
                "SELECT error, response_body FROM webhook_logs WHERE webhook_id = $1::text::uuid",
                &[id],
            )
            .await
            .expect("the log");
        let error: Option<String> = log.get(0);
        let error = error.unwrap_or_default();
        assert!(
            error.to_lowercase().contains(&error_part.to_lowercase()),
            "{url}: {error}"
        );
        let body: Option<String> = log.get(1);
        assert!(
            body.is_none_or(|b| b.len() <= 4096),
            "{url}: the kept body is capped"
        );
    }
    let metrics = app.call("GET", "/metrics", None, None).await.text;
    assert!(
        metrics.contains("hookrelay_delivery_attempts_total{outcome=\"timeout\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("hookrelay_delivery_attempts_total{outcome=\"http_error\"} 2"));
    assert!(metrics.contains("hookrelay_delivery_attempts_total{outcome=\"network_error\"} 2"));
    assert!(metrics.contains("hookrelay_deliveries_completed_total{status=\"failed\"} 5"));
    assert_eq!(redirecting.count(), 1, "redirects are not followed");
}

#[tokio::test]
async fn subscription_changes_take_effect_without_a_restart() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let id = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;

    // Through the API: effective at once.
    app.admin(
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(json!({"events": ["Contact.updated"]})),
    )
    .await;
    let updated = app.publish("Contact.updated", "acc", json!({}), 1).await;
    let got = receiver.wait_for(1, DEADLINE).await;
    assert_eq!(got[0].json()["id"], json!(updated[0]));

    // By hand in psql, as an admin might: the NOTIFY trigger carries it to the service.
    let db = app.db.connect().await;
    db.execute(
        "UPDATE webhooks SET events = ARRAY['Message.received'] WHERE id = $1::text::uuid",
        &[&id],
    )
    .await
    .expect("an update");
    let before = std::time::Instant::now();
    let mut published = 0;
    wait_for("the change to be picked up", Duration::from_secs(5), || {
        published += 1;
        let app = &app;
        let receiver = &receiver;
        async move {
            app.publish("Message.received", "acc", json!({}), 1).await;
            (receiver.count() > 1).then_some(())
        }
    })
    .await;
    eprintln!(
        "a change made in psql took effect within {:?} ({published} events)",
        before.elapsed()
    );

    // Disabled: no new deliveries. Deleted: nothing more arrives. A second webhook on the
    // same events witnesses that each event was fanned out before the checks.
    let witness = Receiver::start().await;
    let witness_id = app
        .webhook("acc", &witness.url, &["Message.received"], json!({}))
        .await;
    let fanned_out = |event: String| {
        let app = &app;
        let witness_id = witness_id.clone();
        async move {
            let rows = wait_for("the witness log", DEADLINE, || async {
                let rows = logs_of_event(app, &event).await;
                rows.iter()
                    .any(|r| r.get::<_, String>("webhook_id") == witness_id)
                    .then_some(rows)
            })
            .await;
            rows.iter()
                .map(|r| r.get::<_, String>("webhook_id"))
                .collect::<Vec<_>>()
        }
    };
    app.admin("POST", &format!("/v1/webhooks/{id}/disable"), None)
        .await;
    let while_disabled = app.publish("Message.received", "acc", json!({}), 1).await;
    assert_eq!(
        fanned_out(while_disabled[0].clone()).await,
        vec![witness_id.clone()],
        "a disabled webhook matches nothing"
    );
    app.admin("POST", &format!("/v1/webhooks/{id}/enable"), None)
        .await;
    let count = receiver.count();
    let enabled = app.publish("Message.received", "acc", json!({}), 1).await;
    let got = receiver.wait_for(count + 1, DEADLINE).await;
    assert!(got.iter().any(|r| r.json()["id"] == json!(enabled[0])));

    app.admin("DELETE", &format!("/v1/webhooks/{id}"), None)
        .await;
    let after_delete = app.publish("Message.received", "acc", json!({}), 1).await;
    assert_eq!(
        fanned_out(after_delete[0].clone()).await,
        vec![witness_id.clone()]
    );
}

#[tokio::test]
async fn a_webhook_queue_lost_behind_the_services_back_is_recreated_without_loss() {
    // One fan-out consumer: it has declared the queue once and will not again.
    let app = spawn_app_with(|s| s.ingest_workers = 1).await;
    let receiver = Receiver::start().await;
    let id = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let first = app.publish("Contact.created", "acc", json!({}), 1).await;
    receiver.wait_for(1, DEADLINE).await;

    // The fan-out has declared this queue already and will not declare it again: what it
    // publishes now comes back unroutable and must be sent again, not dropped.
    delete_webhook_queue(&app.amqp_url, &app.namespace, &id).await;

    let mut ids = first;
    ids.extend(app.publish("Contact.created", "acc", json!({}), 50).await);
    receiver.wait_for_events(&ids, DEADLINE).await;
}

/// Deletes webhook `id`'s queue, with what it holds, as a broker that lost it would.
async fn delete_webhook_queue(amqp_url: &str, namespace: &str, id: &str) {
    let connection = hookrelay_broker::connect(amqp_url)
        .await
        .expect("a connection");
    let declarer = hookrelay_broker::Declarer::new(connection.clone());
    hookrelay_broker::Topology::new(namespace)
        .delete_webhook(&declarer, id)
        .await
        .expect("queue deleted");
    declarer.close().await;
    let _ = connection.close().await;
}

/// Waits until webhook `id`'s queue holds `n` deliveries ready.
async fn wait_for_ready(app: &TestApp, id: &str, n: u32) {
    let connection = hookrelay_tests::amqp_connection(&app.amqp_url).await;
    let queue = hookrelay_broker::Topology::new(&app.namespace).webhook_queue(id);
    wait_for(
        &format!("{n} deliveries in the queue"),
        DEADLINE,
        || async {
            let channel = connection.create_channel().await.ok()?;
            let passive = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let declared = channel
                .queue_declare(queue.as_str().into(), passive, Default::default())
                .await
                .ok()?;
            let _ = channel.close(200, "counted".into()).await;
            (declared.message_count() == n).then_some(())
        },
    )
    .await;
    let _ = connection.close(200, "done".into()).await;
}

/// Ops see the loss. Each part of a process that finds the queue missing counts it (and
/// queues its logs again, the extra copies stale): at least once.
async fn assert_queue_lost_counted(app: &TestApp) {
    let text = crate::retries::metrics(app).await;
    let lost = hookrelay_tests::metric(&text, "hookrelay_webhook_queues_lost_total");
    assert!(lost >= 1.0, "the lost queue was not counted: {lost}");
}

/// Twenty deliveries to one webhook of a service, whose receiver holds the first request:
/// one request held, one delivery prefetched, the other 18 ready in the webhook's queue.
struct Backlog {
    receiver: Receiver,
    id: String,
    db: tokio_postgres::Client,
    events: Vec<String>,
}

impl Backlog {
    async fn start() -> (TestApp, Self) {
        let app = spawn_app_with(|s| s.max_in_flight_per_webhook = 1).await;
        let receiver = Receiver::start().await;
        receiver.answer(Behaviour::Held(200));
        let id = app
            .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
            .await;
        let db = app.db.connect().await;
        let events = app.publish("Contact.created", "acc", json!({}), 20).await;
        receiver.wait_for(1, DEADLINE).await;
        wait_for_ready(&app, &id, 18).await;
        let backlog = Self {
            receiver,
            id,
            db,
            events,
        };
        (app, backlog)
    }

    /// Lets the receiver answer, and waits until every event has arrived and every log
    /// has `succeeded`; answers how many logs were queued again once.
    async fn release(&self) -> i64 {
        self.receiver.answer(Behaviour::Status(200));
        self.receiver.release();
        self.receiver.wait_for_events(&self.events, DEADLINE).await;
        wait_for_count(
            &self.db,
            "every log succeeded",
            DEADLINE,
            "SELECT count(*) FROM webhook_logs WHERE status = 'succeeded'",
            &[],
            20,
        )
        .await;
        self.db
            .query_one("SELECT count(*) FROM webhook_logs WHERE requeues = 1", &[])
            .await
            .expect("a count")
            .get(0)
    }
}

#[tokio::test]
async fn deliveries_in_a_webhook_queue_the_broker_lost_are_sent_from_their_logs() {
    let (app, backlog) = Backlog::start().await;

    // The broker loses the queue and the 18 deliveries in it (a node lost with its disk,
    // say). hookrelay finds the queue it had declared gone, declares it again, and sends
    // every unfinished delivery again from its log.
    delete_webhook_queue(&app.amqp_url, &app.namespace, &backlog.id).await;
    let requeued = backlog.release().await;
    assert!(requeued >= 18, "{requeued} logs queued again");
    assert_queue_lost_counted(&app).await;
    // Only what was in flight when the queue went (one request, one prefetched) may have
    // gone out twice.
    let received = backlog.receiver.count();
    assert!(received <= 20 + 2, "{received} requests for 20 events");
}

#[tokio::test]
async fn a_webhook_queue_lost_while_no_process_ran_is_refilled_at_start() {
    let (app, backlog) = Backlog::start().await;

    // The service stops, the held request cut at the shutdown timeout, and its deliveries go
    // back to the queue. While no process runs, the broker loses that queue. The new process
    // has declared nothing yet, but the webhook's logs say deliveries are under way: it finds
    // the queue missing and sends them again from their logs.
    let (amqp_url, namespace) = (app.amqp_url.clone(), app.namespace.clone());
    let app = app
        .restart_after(delete_webhook_queue(&amqp_url, &namespace, &backlog.id))
        .await;
    let requeued = backlog.release().await;
    assert!(requeued >= 19, "{requeued} logs queued again");
    assert_queue_lost_counted(&app).await;
    // Only the request cut by the stop may have gone out twice.
    let received = backlog.receiver.count();
    assert!(received <= 20 + 1, "{received} requests for 20 events");
    drop(app);
}

#[tokio::test]
async fn deliveries_queued_for_a_disabled_webhook_wait_and_a_deleted_one_ends_them() {
    let app = spawn_app_with(|s| s.max_in_flight_per_webhook = 1).await;
    let receiver = Receiver::start().await;
    // One slow request at a time: most deliveries are still queued when it is disabled.
    receiver.answer(Behaviour::Delay(Duration::from_millis(200), 200));
    let id = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let ids = app.publish("Contact.created", "acc", json!({}), 20).await;
    receiver.wait_for(1, DEADLINE).await;
    app.admin("POST", &format!("/v1/webhooks/{id}/disable"), None)
        .await;
    let db = app.db.connect().await;
    let pending: i64 = db
        .query_one(
            "SELECT count(*) FROM webhook_logs WHERE status = 'pending'",
            &[],
        )
        .await
        .expect("a count")
        .get(0);
    assert!(
        pending > 5,
        "deliveries were still queued when disabled ({pending})"
    );

    receiver.answer(Behaviour::Status(200));
    app.admin("POST", &format!("/v1/webhooks/{id}/enable"), None)
        .await;
    receiver.wait_for_events(&ids, DEADLINE).await;

    // Deleting a webhook with deliveries queued: its queue goes, its open logs end.
    receiver.answer(Behaviour::Hang);
    let more = app.publish("Contact.created", "acc", json!({}), 10).await;
    wait_for_count(
        &db,
        "the new logs",
        DEADLINE,
        "SELECT count(*) FROM webhook_logs WHERE event_id = ANY($1)",
        &[&more],
        10,
    )
    .await;
    app.admin("DELETE", &format!("/v1/webhooks/{id}"), None)
        .await;
    wait_for_count(
        &db,
        "the open logs to end",
        DEADLINE,
        "SELECT count(*) FROM webhook_logs WHERE status IN ('pending', 'retrying')",
        &[],
        0,
    )
    .await;
    let failed = db
        .query_one(
            "SELECT count(*), min(error) FROM webhook_logs WHERE event_id = ANY($1) AND status = 'failed'",
            &[&more],
        )
        .await
        .expect("a count");
    assert!(failed.get::<_, i64>(0) >= 9, "the queued ones ended failed");
    assert_eq!(
        failed.get::<_, Option<String>>(1).as_deref(),
        Some("the webhook was deleted")
    );
    let connection = hookrelay_tests::amqp_connection(&app.amqp_url).await;
    let channel = connection.create_channel().await.expect("a channel");
    let queue = hookrelay_broker::Topology::new(&app.namespace).webhook_queue(&id);
    let passive = channel
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await;
    assert!(passive.is_err(), "the deleted webhook's queue is gone");
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test]
async fn a_new_webhook_gets_its_queue_and_consumer_before_any_event() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let id = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let connection = hookrelay_tests::amqp_connection(&app.amqp_url).await;
    let queue = hookrelay_broker::Topology::new(&app.namespace).webhook_queue(&id);
    let consumers = wait_for("a consumer on the new queue", DEADLINE, || async {
        // A passive declare fails on a missing queue and closes its channel: a fresh one each time.
        let channel = connection.create_channel().await.ok()?;
        let queue = channel
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .ok()?;
        (queue.consumer_count() == 1).then_some(queue.consumer_count())
    })
    .await;
    assert_eq!(consumers, 1);
    let _ = connection.close(200, "done".into()).await;
}
