//! Outages: the database or the broker goes away under load; nothing is lost, and the
//! service recovers by itself.

use std::time::Duration;

use hookrelay_tests::broker::TestBroker;
use hookrelay_tests::receiver::{Behaviour, Receiver};
use hookrelay_tests::{wait_for, wait_for_count, Outage, TestVhost};
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

const DEADLINE: Duration = Duration::from_secs(60);

async fn wait_all_delivered(app: &TestApp, receiver: &Receiver, ids: &[String]) {
    receiver.wait_for_events(ids, DEADLINE).await;
    let db = app.db.connect().await;
    let counts = wait_for("every log succeeded", DEADLINE, || async {
        let row = db
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') FROM webhook_logs",
                &[],
            )
            .await
            .ok()?;
        let (all, ok): (i64, i64) = (row.get(0), row.get(1));
        (all == ok && all == ids.len() as i64).then_some((all, ok))
    })
    .await;
    assert_eq!(
        counts.0,
        ids.len() as i64,
        "one log per event, no duplicates"
    );
}

#[tokio::test]
async fn a_database_outage_loses_nothing_and_sends_nothing_twice() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    // Slow answers, so that the outage begins while deliveries are under way.
    receiver.answer(Behaviour::Delay(Duration::from_millis(300), 200));
    app.webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let mut ids = app
        .publish("Contact.created", "acc", json!({"phase": "before"}), 40)
        .await;
    receiver.wait_for(1, DEADLINE).await;

    let outage = Outage::begin(&app.db.name).await;
    wait_for("readiness to notice", DEADLINE, || async {
        (app.call("GET", "/readyz", None, None).await.status == 503).then_some(())
    })
    .await;
    ids.extend(
        app.publish("Contact.created", "acc", json!({"phase": "during"}), 30)
            .await,
    );
    // Events published now wait in the broker: nothing is delivered without its log row.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let early: Vec<String> = receiver
        .received()
        .iter()
        .filter(|r| r.json()["data"]["phase"] == "during")
        .map(|r| r.json()["id"].to_string())
        .collect();
    assert!(
        early.is_empty(),
        "delivered during the outage, without a log: {early:?}"
    );
    outage.end().await;

    wait_all_delivered(&app, &receiver, &ids).await;
    // Attempts that ended while their record could not be written were held, not handed
    // back: the receivers got each event once.
    assert_eq!(receiver.count(), ids.len(), "no delivery was sent twice");
}

#[tokio::test]
async fn a_lost_broker_connection_is_recovered_without_loss() {
    let vhost = TestVhost::create().await;
    let app = spawn_app_with(|s| s.amqp_url = vhost.url()).await;
    let receiver = Receiver::start().await;
    app.webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let mut ids = app
        .publish("Contact.created", "acc", json!({"phase": "before"}), 50)
        .await;

    vhost.close_connections().await;
    ids.extend(
        app.publish("Contact.created", "acc", json!({"phase": "after"}), 50)
            .await,
    );
    wait_all_delivered(&app, &receiver, &ids).await;
    let ready = wait_for("readiness after reconnecting", DEADLINE, || async {
        let answer = app.call("GET", "/readyz", None, None).await;
        (answer.status == 200).then_some(answer)
    })
    .await;
    assert_eq!(ready.body["checks"]["broker"], "ok");
}

/// Waits until `n` logs have `status`.
async fn wait_for_logs(app: &TestApp, status: &str, n: i64, deadline: Duration) {
    let db = app.db.connect().await;
    wait_for_count(
        &db,
        &format!("{n} logs {status}"),
        deadline,
        "SELECT count(*) FROM webhook_logs WHERE status = $1",
        &[&status],
        n,
    )
    .await;
}

#[tokio::test]
async fn retries_waiting_in_the_broker_survive_its_restart() {
    const EVENTS: usize = 200;
    let broker = TestBroker::start().await;
    let app = spawn_app_with(|s| {
        s.amqp_url = broker.url();
        // Long enough that every first attempt fails before the first retry is due.
        s.retry_schedule = hookrelay_core::RetrySchedule::parse("10s").expect("a schedule");
        s.breaker_threshold = 10_000;
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.script(std::iter::repeat_n(Behaviour::Status(503), EVENTS));
    app.webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let ids = app
        .publish("Contact.created", "acc", json!({}), EVENTS)
        .await;
    // Every first attempt failed: the retries wait in the delay tiers.
    wait_for_logs(&app, "retrying", EVENTS as i64, DEADLINE).await;
    assert_eq!(receiver.count(), EVENTS);

    broker.restart().await;

    wait_for_logs(&app, "succeeded", EVENTS as i64, Duration::from_secs(120)).await;
    let delivered: std::collections::HashSet<String> = receiver.received()[EVENTS..]
        .iter()
        .filter_map(|r| r.json()["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        delivered,
        ids.into_iter().collect(),
        "every retry went out after the restart"
    );
}

/// A counter's value on the service's `/metrics`.
async fn counter(app: &TestApp, name: &str) -> f64 {
    let text = app.call("GET", "/metrics", None, None).await.text;
    let value = hookrelay_tests::metric(&text, name);
    assert!(!value.is_nan(), "{name} missing from\n{text}");
    value
}

#[tokio::test]
async fn deliveries_a_broker_restart_dropped_are_queued_again_from_their_logs() {
    const QUEUED: usize = 100;
    const RETRIES: usize = 40;
    let broker = TestBroker::start().await;
    let app = spawn_app_with(|s| {
        s.amqp_url = broker.url();
        // The lost-delivery check waits two request timeouts between its looks at a queue.
        s.request_timeout = hookrelay::settings::HumanDuration(Duration::from_secs(2));
        s.max_in_flight_per_webhook = 1;
        s.retry_schedule = hookrelay_core::RetrySchedule::parse("10s").expect("a schedule");
        s.breaker_threshold = 10_000;
    })
    .await;
    // One webhook slow enough that its deliveries queue up in the broker…
    let slow = Receiver::start().await;
    slow.answer(Behaviour::Delay(Duration::from_millis(300), 200));
    app.webhook("acc", &slow.url, &["Contact.created"], json!({}))
        .await;
    // …and one whose first attempts all fail, so that their retries wait in the delay tiers.
    let failing = Receiver::start().await;
    failing.script(std::iter::repeat_n(Behaviour::Status(503), RETRIES));
    app.webhook("acc", &failing.url, &["Message.received"], json!({}))
        .await;
    let queued = app
        .publish("Contact.created", "acc", json!({}), QUEUED)
        .await;
    let retried = app
        .publish("Message.received", "acc", json!({}), RETRIES)
        .await;
    wait_for_logs(&app, "retrying", RETRIES as i64, DEADLINE).await;
    let db = app.db.connect().await;
    let all = (QUEUED + RETRIES) as i64;
    wait_for_count(
        &db,
        "every log written",
        DEADLINE,
        "SELECT count(*) FROM webhook_logs",
        &[],
        all,
    )
    .await;
    slow.wait_for(2, DEADLINE).await;
    let before_restart = slow.count();
    assert!(
        before_restart < QUEUED / 2,
        "most deliveries must still be queued: {before_restart}"
    );

    // The restart drops the transient deliveries in the webhook queue; the persistent retries
    // in the tiers stay.
    broker.restart().await;
    slow.answer(Behaviour::Status(200));

    wait_for_logs(
        &app,
        "succeeded",
        (QUEUED + RETRIES) as i64,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(slow.event_ids(), queued.iter().cloned().collect());
    assert_eq!(failing.event_ids(), retried.iter().cloned().collect());
    // Each retry went out once after the restart, from its tier.
    assert_eq!(failing.count(), 2 * RETRIES, "no retry was sent twice");
    // A delivery is sent twice only if it was in a consumer's hands at the restart (its
    // request, and the one prefetched behind it).
    let duplicates = slow.count() - QUEUED;
    assert!(duplicates <= 2, "{duplicates} deliveries sent twice");
    let lost = counter(&app, "hookrelay_deliveries_lost_total").await;
    assert!(
        lost >= (QUEUED - before_restart - 2) as f64 && lost <= QUEUED as f64,
        "{lost} deliveries found lost, with {before_restart} sent before the restart"
    );
}

#[tokio::test]
async fn a_delivery_in_a_consumers_hands_is_not_taken_for_lost() {
    let app = spawn_app_with(|s| {
        // The check runs every 9 s and takes logs older than 5 s.
        s.request_timeout = hookrelay::settings::HumanDuration(Duration::from_secs(2));
        s.max_in_flight_per_webhook = 1;
    })
    .await;
    // Three slow webhooks whose queues empty one after the other, from about 12 s to 21 s:
    // all that while some webhook's last deliveries are in its consumer's hands, its queue
    // empty and their logs untouched for longer than 5 s, and at least one check runs then.
    let mut sent = Vec::new();
    for (event_type, events) in [
        ("Contact.created", 10),
        ("Contact.updated", 12),
        ("Message.received", 14),
    ] {
        let receiver = Receiver::start().await;
        receiver.answer(Behaviour::Delay(Duration::from_millis(1_500), 200));
        app.webhook("acc", &receiver.url, &[event_type], json!({}))
            .await;
        sent.push((receiver, event_type, events));
    }
    let mut published = Vec::new();
    for (_, event_type, events) in &sent {
        published.push(app.publish(event_type, "acc", json!({}), *events).await);
    }
    wait_for_logs(&app, "succeeded", 10 + 12 + 14, DEADLINE).await;
    // One more check after the last delivery, so that a wrong one would have run.
    hookrelay_tests::let_pass(Duration::from_secs(10)).await;
    for ((receiver, event_type, events), ids) in sent.iter().zip(published) {
        assert_eq!(receiver.event_ids(), ids.into_iter().collect());
        assert_eq!(
            receiver.count(),
            *events,
            "a {event_type} delivery was sent twice"
        );
    }
    assert_eq!(counter(&app, "hookrelay_deliveries_lost_total").await, 0.0);
}
