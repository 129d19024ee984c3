//! What the tests that run `hookrelay serve` as a separate process share.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::collections::HashSet;
use std::time::Duration;

use hookrelay_broker::QueueType;
use hookrelay_tests::receiver::Receiver;
use hookrelay_tests::{amqp_url, wait_for, ServiceProcess, TestDb};
use tokio::process::Child;

pub const TOKEN: &str = "service-test-admin-token";

/// Starts `hookrelay serve` against `db` and the shared broker, and answers the child and its
/// HTTP port.
pub async fn start(db: &TestDb, namespace: &str) -> (Child, u16) {
    start_with(db, namespace, &[]).await
}

/// As [`start`], with more settings; a setting given here replaces the default one.
pub async fn start_with(
    db: &TestDb,
    namespace: &str,
    extra: &[(&'static str, &str)],
) -> (Child, u16) {
    let service = spawn(db, namespace, extra).await;
    (service.child, service.port)
}

/// As [`start_with`], answering the whole process handle (its log included).
pub async fn spawn(db: &TestDb, namespace: &str, extra: &[(&'static str, &str)]) -> ServiceProcess {
    let mut env = hookrelay_tests::service_env(db, namespace, TOKEN);
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    hookrelay_tests::spawn_service(std::path::Path::new(env!("CARGO_BIN_EXE_hookrelay")), &env)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

pub async fn create_webhook(port: u16, url: &str, event: &str) -> String {
    create_webhook_from(
        port,
        serde_json::json!({"account_id": "acc", "url": url, "events": [event]}),
    )
    .await
}

/// Creates the webhook `body` describes; answers its id.
pub async fn create_webhook_from(port: u16, body: serde_json::Value) -> String {
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/webhooks"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("the API answers")
        .json()
        .await
        .expect("JSON");
    created["id"].as_str().expect("a webhook id").to_owned()
}

/// Publishes `count` `Message.received` events for account `acc`; answers their ids.
pub async fn publish_events(namespace: &str, data: &str, count: usize) -> HashSet<String> {
    publish_events_to(&amqp_url(), namespace, QueueType::Classic, data, count).await
}

/// As [`publish_events`], to the broker at `amqp_url`.
pub async fn publish_events_to(
    amqp_url: &str,
    namespace: &str,
    queue_type: QueueType,
    data: &str,
    count: usize,
) -> HashSet<String> {
    let args = hookrelay::publish::PublishArgs {
        event_type: "Message.received".into(),
        account_id: "acc".into(),
        data: data.into(),
        id: None,
        count,
    };
    hookrelay::publish::publish(amqp_url, namespace, queue_type, &args)
        .await
        .expect("published")
        .ids
        .into_iter()
        .collect()
}

/// Counts the logs by status: (all, with `status`).
pub async fn count_logs(client: &tokio_postgres::Client, status: &str) -> Option<(i64, i64)> {
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE status = $1) FROM webhook_logs",
            &[&status],
        )
        .await
        .ok()?;
    Some((row.get(0), row.get(1)))
}

/// Waits until every receiver has every event and every log has succeeded; answers the
/// requests received beyond one per event and receiver (the duplicates).
pub async fn settle(
    receivers: &[&Receiver],
    ids: &HashSet<String>,
    database_url: &str,
    deadline: Duration,
) -> usize {
    for receiver in receivers {
        receiver.wait_for_events(ids, deadline).await;
    }
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .expect("the database");
    tokio::spawn(connection);
    let expected = (ids.len() * receivers.len()) as i64;
    wait_for("every log succeeded", deadline, || async {
        let (all, succeeded) = count_logs(&client, "succeeded").await?;
        (all == expected && succeeded == all).then_some(())
    })
    .await;
    let received: usize = receivers.iter().map(|r| r.count()).sum();
    received - ids.len() * receivers.len()
}
