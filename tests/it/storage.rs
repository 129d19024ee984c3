//! Logs at volume: each event stored once, dedupe across partitions, replay.

use std::time::Duration;

use hookrelay_tests::receiver::Receiver;
use hookrelay_tests::{wait_for, wait_for_count};
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

const DEADLINE: Duration = Duration::from_secs(30);

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn an_event_to_ten_webhooks_is_stored_once_and_sent_byte_for_byte() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    for _ in 0..10 {
        app.webhook("acc", &receiver.url, &["Contact.created"], json!({}))
            .await;
    }
    // Keys in an order jsonb would change, and spacing it would drop.
    let body = r#"{"id":"evt_once","type":"Contact.created","account_id":"acc","data":{"z":1,"a":[1, 2],"m":"é"}}"#;
    app.publish_raw("Contact.created", body.as_bytes()).await;
    let received = receiver.wait_for(10, DEADLINE).await;
    let client = app.db.connect().await;
    wait_for_count(
        &client,
        "ten logs succeeded",
        DEADLINE,
        "SELECT count(*) FROM webhook_logs WHERE status = 'succeeded'",
        &[],
        10,
    )
    .await;
    let sent = received[0].body.clone();
    assert!(
        received.iter().all(|r| r.body == sent),
        "every webhook got the same bytes"
    );
    assert_eq!(count(&client, "SELECT count(*) FROM events").await, 1);
    assert_eq!(
        count(&client, "SELECT count(*) FROM delivery_logs").await,
        10
    );
    let stored: String = client
        .query_one("SELECT body FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored.as_bytes(), &sent[..], "the body as sent, once");
    let log_columns: Vec<String> = client
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_name = 'delivery_logs'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !log_columns.iter().any(|c| c == "payload" || c == "body"),
        "a log carries no copy of the body: {log_columns:?}"
    );
    // The view and the API still show each log's payload.
    let payloads: Vec<serde_json::Value> = client
        .query("SELECT payload FROM webhook_logs", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: serde_json::Value = serde_json::from_slice(&sent).unwrap();
    assert_eq!(payloads, vec![expected; 10]);
    let id: uuid::Uuid = client
        .query_one("SELECT id FROM webhook_logs LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let detail = app.admin("GET", &format!("/v1/logs/{id}"), None).await;
    assert_eq!(detail.status, 200, "{}", detail.text);
    let sent = String::from_utf8(sent.to_vec()).unwrap();
    assert!(
        detail.text.contains(&format!("\"payload\":{sent}")),
        "the API answers the payload byte for byte: {}",
        detail.text
    );
    let alone = app
        .admin("GET", &format!("/v1/logs/{id}/payload"), None)
        .await;
    assert_eq!(alone.status, 200, "{}", alone.text);
    assert_eq!(alone.text, sent, "and alone, the bytes sent and signed");
    let key = app.api_key("someone-else").await;
    let theirs = app
        .call("GET", &format!("/v1/logs/{id}/payload"), Some(&key), None)
        .await;
    assert_eq!(theirs.status, 404, "another account's payload is not found");
}

#[tokio::test]
async fn events_that_match_nothing_are_kept_only_when_asked() {
    for keep in [false, true] {
        let app = spawn_app_with(|s| s.keep_unmatched_events = keep).await;
        let receiver = Receiver::start().await;
        app.webhook("acc", &receiver.url, &["Contact.created"], json!({}))
            .await;
        app.publish("Contact.updated", "acc", json!({"n": 1}), 1)
            .await;
        app.publish("Contact.created", "acc", json!({"n": 2}), 1)
            .await;
        receiver.wait_for(1, DEADLINE).await;
        let client = app.db.connect().await;
        // The matched event is stored with its log; the other only when kept.
        let expected = if keep { 2 } else { 1 };
        wait_for_count(
            &client,
            "the events stored",
            DEADLINE,
            "SELECT count(*) FROM events",
            &[],
            expected,
        )
        .await;
        assert_eq!(
            count(
                &client,
                "SELECT count(*) FROM events WHERE event_type = 'Contact.updated'"
            )
            .await,
            i64::from(keep)
        );
    }
}

/// The same event id a day apart lands in two days' partitions: still one delivery per
/// webhook, and a webhook created in between gets the event as first stored.
#[tokio::test]
async fn the_same_event_id_in_another_partition_is_still_one_delivery_per_webhook() {
    let app = spawn_app().await;
    let early = Receiver::start().await;
    let first: uuid::Uuid = app
        .webhook("acc", &early.url, &["Contact.created"], json!({}))
        .await
        .parse()
        .unwrap();
    let client = app.db.connect().await;
    // As the first arrival, a day ago, left it: its event, its key and its delivered log.
    let original =
        r#"{"id":"evt_twice","type":"Contact.created","account_id":"acc","data":{"n":1}}"#;
    let seeded = hookrelay_tests::seed_logs(
        &client,
        &[hookrelay_tests::SeedLog {
            webhook: first,
            event_id: "evt_twice",
            body: original,
            age: Duration::from_secs(24 * 3600 + 60),
            ..Default::default()
        }],
    )
    .await;
    client
        .execute(
            "INSERT INTO event_keys (account_id, event_id, received_at)
             SELECT account_id, event_id, event_at FROM delivery_logs WHERE id = $1",
            &[&seeded[0]],
        )
        .await
        .unwrap();
    let late = Receiver::start().await;
    let second: uuid::Uuid = app
        .webhook("acc", &late.url, &["Contact.created"], json!({}))
        .await
        .parse()
        .unwrap();
    let again = r#"{"id":"evt_twice","type":"Contact.created","account_id":"acc","data":{"n":2}}"#;
    app.publish_raw("Contact.created", again.as_bytes()).await;
    let got = late.wait_for(1, DEADLINE).await;
    assert_eq!(
        got[0].json()["data"],
        json!({"n": 1}),
        "the event as first stored"
    );
    app.publish_raw("Contact.created", again.as_bytes()).await;
    // A marker event after them: once it is in, the duplicates were handled.
    app.publish("Contact.created", "acc", json!({"marker": true}), 1)
        .await;
    early.wait_for(1, DEADLINE).await;
    late.wait_for(2, DEADLINE).await;
    for (webhook, logs) in [(first, 2), (second, 2)] {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM webhook_logs WHERE webhook_id = $1",
                &[&webhook],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, logs, "one log of the event and one of the marker");
    }
    assert_eq!(early.count(), 1, "the first webhook got only the marker");
    assert_eq!(late.count(), 2);
    let partitions: i64 = client
        .query_one(
            "SELECT count(DISTINCT tableoid) FROM delivery_logs WHERE event_id = 'evt_twice'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(partitions, 2, "its two logs are in two days' partitions");
}

#[tokio::test]
async fn a_webhook_created_later_replays_the_events_it_missed_once_and_in_order() {
    // One fan-out consumer, so that events are received in the order they were published;
    // one request at a time, so that the receiver sees the order of the queue.
    let app = spawn_app_with(|s| {
        s.ingest_workers = 1;
        s.max_in_flight_per_webhook = 1;
    })
    .await;
    let receiver = Receiver::start().await;
    app.webhook("acc", &receiver.url, &["Message.received"], json!({}))
        .await;
    let ids = app
        .publish("Message.received", "acc", json!({"n": 1}), 20)
        .await;
    receiver.wait_for(20, DEADLINE).await;
    // Another type, and another account's event of the type: not for the new webhook.
    app.publish("Contact.created", "acc", json!({}), 1).await;
    let late = Receiver::start().await;
    let webhook = app
        .webhook("acc", &late.url, &["Message.received"], json!({}))
        .await;
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let answer = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{webhook}/replay"),
            Some(json!({"since": since})),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    assert_eq!(answer.body["count"], 20);
    let got = late.wait_for(20, DEADLINE).await;
    let order: Vec<String> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(order, ids, "each once, in the order they were received");
    let client = app.db.connect().await;
    wait_for_count(
        &client,
        "the replayed logs succeeded",
        DEADLINE,
        "SELECT count(*) FROM webhook_logs WHERE webhook_id = $1::text::uuid
           AND status = 'succeeded'",
        &[&webhook],
        20,
    )
    .await;
    let again = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{webhook}/replay"),
            Some(json!({"since": since})),
        )
        .await;
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(again.body["count"], 0, "nothing is sent twice");
    // An account key replays only its own webhooks.
    let key = app.api_key("other").await;
    let theirs = app
        .call(
            "POST",
            &format!("/v1/webhooks/{webhook}/replay"),
            Some(&key),
            Some(&json!({"since": since}).to_string()),
        )
        .await;
    assert_eq!(theirs.status, 404);
    let bad = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{webhook}/replay"),
            Some(json!({"since": since, "until": since})),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
}

/// With `database_read_url` on a streaming replica, the logs API reads there: a log written
/// on the primary shows once replicated; with the replica gone, reads answer 503 at once
/// while deliveries go on.
#[tokio::test]
async fn logs_are_read_from_a_streaming_replica_and_its_loss_stops_only_reads() {
    use hookrelay_tests::postgres::TestPostgres;
    let primary = TestPostgres::start().await;
    let replica = TestPostgres::replica_of(&primary).await;
    let name = format!("hookrelay_replica_{}", uuid::Uuid::new_v4().simple());
    let primary_url = format!("{}/{name}", primary.server_url());
    let app = spawn_app_with(|s| {
        s.database_url = primary_url.clone();
        s.database_read_url = Some(format!("{}/{name}", replica.server_url()));
    })
    .await;
    let receiver = Receiver::start().await;
    let webhook = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let ids = app
        .publish("Contact.created", "acc", json!({"n": 1}), 1)
        .await;
    receiver.wait_for(1, DEADLINE).await;
    let log = wait_for("the log, read from the replica", DEADLINE, || async {
        let list = app
            .admin("GET", &format!("/v1/logs?event_id={}", ids[0]), None)
            .await;
        let item = list.body["items"].get(0)?.clone();
        (item["status"] == "succeeded").then_some(item)
    })
    .await;
    let id = log["id"].as_str().unwrap().to_owned();
    let stats = app
        .admin("GET", &format!("/v1/webhooks/{webhook}/stats"), None)
        .await;
    assert_eq!(stats.status, 200, "{}", stats.text);

    replica.kill();
    let started = std::time::Instant::now();
    let answer = app.admin("GET", &format!("/v1/logs/{id}"), None).await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert_eq!(answer.error().0, "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "an answer, not a hang"
    );
    let again = app.admin("GET", "/v1/logs", None).await;
    assert_eq!(again.status, 503, "{}", again.text);
    assert!(again.text.contains("read replica"), "{}", again.text);
    // The pipeline never read there: it goes on.
    let more = app
        .publish("Contact.created", "acc", json!({"n": 2}), 5)
        .await;
    receiver.wait_for_events(&more, DEADLINE).await;
    let (client, connection) = tokio_postgres::connect(&primary_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    wait_for_count(
        &client,
        "the new logs succeeded on the primary",
        DEADLINE,
        "SELECT count(*) FROM webhook_logs WHERE status = 'succeeded'",
        &[],
        6,
    )
    .await;
    let ready = app.call("GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    // Its queue goes with it: the namespace's cleanup cannot read this database.
    app.admin("DELETE", &format!("/v1/webhooks/{webhook}"), None)
        .await;
}
