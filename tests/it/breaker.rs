//! Endpoint health: a dead endpoint's queue is paused and probed, not stormed, while the
//! other webhooks keep flowing; when it comes back its whole backlog drains.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hookrelay_tests::receiver::{Behaviour, Receiver};
use hookrelay_tests::{let_pass, wait_for, wait_for_count};
use serde_json::json;

use crate::helpers::{spawn_app_with, TestApp};
use crate::retries::{metrics, schedule, wait_for_status};

const DEADLINE: Duration = Duration::from_secs(60);
const HEALTHY_ACCOUNTS: usize = 20;
const WEBHOOKS_PER_ACCOUNT: usize = 10;

async fn health(app: &TestApp, id: &str) -> serde_json::Value {
    app.admin("GET", &format!("/v1/webhooks/{id}"), None)
        .await
        .body
}

#[tokio::test]
async fn a_dead_endpoint_is_paused_and_probed_while_the_others_flow() {
    let app = spawn_app_with(|s| {
        // Enough retries that none of the backlog runs out of them while the endpoint is down.
        s.retry_schedule = schedule(&vec!["1s"; 30].join(","));
        s.breaker_threshold = 5;
    })
    .await;
    let dead = Receiver::start().await;
    dead.answer(Behaviour::Status(503));
    let healthy = Receiver::start().await;
    let dead_id = app
        .webhook("acc_dead", &dead.url, &["Message.received"], json!({}))
        .await;
    for n in 0..HEALTHY_ACCOUNTS * WEBHOOKS_PER_ACCOUNT {
        app.webhook(
            &format!("acc_{}", n / WEBHOOKS_PER_ACCOUNT),
            &format!("{}/w/{n}", healthy.url),
            &["Message.received"],
            json!({}),
        )
        .await;
    }
    // Every healthy webhook delivers once before the measure: their consumers are running.
    for account in 0..HEALTHY_ACCOUNTS {
        app.publish("Message.received", &format!("acc_{account}"), json!({}), 1)
            .await;
    }
    let warm_up = HEALTHY_ACCOUNTS * WEBHOOKS_PER_ACCOUNT;
    healthy.wait_for(warm_up, DEADLINE).await;
    let backlog = app
        .publish("Message.received", "acc_dead", json!({}), 50)
        .await;

    let paused = wait_for("the breaker to open", DEADLINE, || async {
        let webhook = health(&app, &dead_id).await;
        (webhook["health"] == "paused").then_some(webhook)
    })
    .await;
    assert!(paused["paused_until"].is_string(), "{paused}");
    assert!(paused["failing_since"].is_string(), "{paused}");
    // The gauge counts it once the requests in flight when it opened have ended.
    wait_for("the paused gauge", DEADLINE, || async {
        metrics(&app)
            .await
            .contains("hookrelay_webhooks_paused 1")
            .then_some(())
    })
    .await;
    // Opened by the fifth failure, after which no request starts: at most the 16 that may
    // be under way at once, and one more after each of the four failures before it.
    let at_trip = dead.count();
    assert!(
        at_trip <= 16 + 4,
        "{at_trip} requests before the breaker opened"
    );

    // Four seconds of traffic to the 200 healthy webhooks while the dead one is paused.
    let window = Instant::now();
    let sent = publish_steadily(&app, Duration::from_secs(4)).await;
    let expected = sent.len() * WEBHOOKS_PER_ACCOUNT;
    healthy.wait_for(warm_up + expected, DEADLINE).await;
    let window = window.elapsed();
    let probes = dead.count() - at_trip;
    // Paused for about a second at a time: one probe per pause, not the 50 deliveries a
    // second that retries alone would send.
    let most = window.as_secs() as usize + 2;
    assert!(
        probes <= most,
        "{probes} requests to the dead endpoint in {window:?}"
    );

    let mut latencies: Vec<Duration> = healthy
        .received()
        .iter()
        .filter_map(|r| {
            let id = r.json()["id"].as_str()?.to_owned();
            Some(r.at.saturating_duration_since(*sent.get(&id)?))
        })
        .collect();
    assert_eq!(latencies.len(), expected, "each delivered once");
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "healthy webhooks while one is paused: {} deliveries, p50 {:?}, p99 {:?}; {probes} probes in {window:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        p99
    );
    // The figure to watch is the benchmark's (make bench); here, with the rest of the
    // suite sharing two cores, only a stall would cross this line.
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");

    // Back up: the next probe succeeds and the whole backlog drains.
    dead.answer(Behaviour::Status(200));
    dead.wait_for_events(&backlog, DEADLINE).await;
    for event in &backlog {
        wait_for_status(&app, &dead_id, event, "succeeded").await;
    }
    let back = health(&app, &dead_id).await;
    assert_eq!(back["health"], "healthy");
    assert_eq!(back["paused_until"], serde_json::Value::Null);
    assert_eq!(back["failing_since"], serde_json::Value::Null);
    assert!(metrics(&app).await.contains("hookrelay_webhooks_paused 0"));
}

/// Publishes events to the healthy accounts in turn, one every 50 ms (200 deliveries a
/// second), for `during`; answers when each was published (confirmed), by event id. At 500
/// a second, the debug build beside another test on two cores fell behind now and then (p50
/// 1.05 s in one run): the load measured the machine, not the dead endpoint's reach.
async fn publish_steadily(app: &TestApp, during: Duration) -> HashMap<String, Instant> {
    let (connection, mut publisher) = app.publisher().await;
    let exchange = hookrelay_broker::Topology::new(&app.namespace).events_exchange();
    let mut sent = HashMap::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut n = 0;
    while started.elapsed() < during {
        tick.tick().await;
        n += 1;
        {
            let account = n % HEALTHY_ACCOUNTS;
            let id = uuid::Uuid::new_v4().to_string();
            let body = json!({"id": id, "account_id": format!("acc_{account}"), "data": {}});
            let at = Instant::now();
            let message = hookrelay_broker::Outgoing::json(
                exchange.clone(),
                "Message.received".into(),
                serde_json::to_vec(&body).expect("JSON"),
            );
            publisher
                .publish(&message, &mut hookrelay_broker::NoRoutes)
                .await
                .expect("published and confirmed");
            sent.insert(id, at);
        }
    }
    publisher.close().await;
    let _ = connection.close().await;
    sent
}

#[tokio::test]
async fn a_pause_outlives_a_restart() {
    let app = spawn_app_with(|s| {
        s.retry_schedule = schedule("1h");
        s.breaker_threshold = 2;
    })
    .await;
    let dead = Receiver::start().await;
    dead.answer(Behaviour::Status(500));
    let id = app
        .webhook("acc", &dead.url, &["Contact.created"], json!({}))
        .await;
    app.publish("Contact.created", "acc", json!({}), 3).await;
    wait_for("the breaker to open", DEADLINE, || async {
        (health(&app, &id).await["health"] == "paused").then_some(())
    })
    .await;
    let db = app.db.connect().await;
    let saved = db
        .query_one(
            "SELECT consecutive_failures, trips, paused_until > now() + interval '45 minutes'
             FROM webhook_health WHERE webhook_id = $1::text::uuid",
            &[&id],
        )
        .await
        .expect("the saved health");
    assert!(saved.get::<_, i32>(0) >= 2);
    assert_eq!(saved.get::<_, i32>(1), 1);
    assert!(
        saved.get::<_, bool>(2),
        "paused for the first delay, 1 h ± 20 %"
    );

    // A new instance carries on with the pause instead of trying the endpoint again.
    let app = app.restart().await;
    let before = dead.count();
    wait_for("the paused gauge of the new instance", DEADLINE, || async {
        metrics(&app)
            .await
            .contains("hookrelay_webhooks_paused 1")
            .then_some(())
    })
    .await;
    let events = app.publish("Contact.created", "acc", json!({}), 5).await;
    let db = app.db.connect().await;
    wait_for_count(
        &db,
        "the new deliveries queued",
        DEADLINE,
        "SELECT count(*) FROM webhook_logs WHERE event_id = ANY($1) AND status = 'pending'",
        &[&events],
        5,
    )
    .await;
    // Time enough for a delivery to go out, were it not paused.
    let_pass(Duration::from_secs(1)).await;
    assert_eq!(dead.count(), before, "the paused endpoint gets nothing");
    assert_eq!(health(&app, &id).await["health"], "paused");

    // Editing the webhook (its endpoint fixed, say) starts its health afresh.
    let fixed = Receiver::start().await;
    let answer = app
        .admin(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(json!({"url": fixed.url})),
        )
        .await;
    assert_eq!(answer.body["health"], "healthy", "{}", answer.text);
    fixed.wait_for_events(&events, DEADLINE).await;
}

#[tokio::test]
async fn failing_endpoints_share_a_quarter_of_the_request_slots() {
    // 8 request slots in all: endpoints that fail may hold 2 of them.
    let app = spawn_app_with(|s| {
        s.max_in_flight_total = 8;
        s.retry_schedule = schedule("1h");
        s.breaker_threshold = 1000;
    })
    .await;
    let slow = Receiver::start().await;
    slow.answer(Behaviour::Delay(Duration::from_millis(400), 500));
    app.webhook("acc", &slow.url, &["Contact.created"], json!({}))
        .await;
    app.publish("Contact.created", "acc", json!({}), 30).await;
    let got = slow.wait_for(30, DEADLINE).await;
    let answered = slow.answered();
    // Before its first failure the endpoint is healthy, and takes what the process has.
    let first_wave = got.iter().filter(|r| r.at < answered[0]).count();
    assert!(
        (1..=8).contains(&first_wave),
        "{first_wave} requests at first"
    );
    // Once it has failed, it shares the failing endpoints' quarter.
    let wave_over = answered[first_wave - 1];
    let later: Vec<usize> = got
        .iter()
        .filter(|r| r.at > wave_over)
        .map(|r| r.in_flight)
        .collect();
    assert!(later.len() >= 20, "{later:?}");
    assert!(
        later.iter().all(|n| *n <= 2),
        "requests under way at once: {later:?}"
    );
}
