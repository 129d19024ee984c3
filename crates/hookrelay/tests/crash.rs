//! The no-loss promise, tested the hard way: the service is killed with SIGKILL in the middle
//! of a stream of events and started again; every event arrives at least once and every log
//! row ends `succeeded`.

// A test that cannot set up its world should stop there, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use hookrelay_tests::receiver::{Behaviour, Receiver};
use hookrelay_tests::{amqp_url, wait_for, TestDb};
use tokio::process::Child;

const TOKEN: &str = "crash-test-admin-token";

/// Starts `hookrelay serve` and answers the child and its HTTP port.
async fn start(db: &TestDb, namespace: &str) -> (Child, u16) {
    let service = hookrelay_tests::spawn_service(
        std::path::Path::new(env!("CARGO_BIN_EXE_hookrelay")),
        &hookrelay_tests::service_env(db, namespace, TOKEN),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (service.child, service.port)
}

#[tokio::test]
async fn sigkill_in_the_middle_loses_no_event() {
    const EVENTS: usize = 2000;
    let db = TestDb::new();
    let namespace = hookrelay_tests::unique_namespace();
    let receiver = Receiver::start().await;
    // Slow enough that the kill lands mid-stream.
    receiver.answer(Behaviour::Delay(Duration::from_millis(5), 200));

    let (mut first, port) = start(&db, &namespace).await;
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("http://127.0.0.1:{port}/v1/webhooks"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({
            "account_id": "acc", "url": receiver.url, "events": ["Message.received"]
        }))
        .send()
        .await
        .expect("the API answers")
        .json()
        .await
        .expect("JSON");
    let webhook_id = created["id"].as_str().expect("a webhook id").to_owned();

    let args = hookrelay::publish::PublishArgs {
        event_type: "Message.received".into(),
        account_id: "acc".into(),
        data: r#"{"text":"hello"}"#.into(),
        id: None,
        count: EVENTS,
    };
    let ids: HashSet<String> = hookrelay::publish::publish(&amqp_url(), &namespace, &args)
        .await
        .expect("published")
        .ids
        .into_iter()
        .collect();

    receiver
        .wait_for(EVENTS / 10, Duration::from_secs(60))
        .await;
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("killed");
    let at_kill = receiver.count();
    assert!(
        at_kill < EVENTS,
        "the kill came too late to test anything ({at_kill} delivered)"
    );

    let (_second, _) = start(&db, &namespace).await;
    receiver
        .wait_for_events(&ids, Duration::from_secs(120))
        .await;
    let client_db = db.connect().await;
    let (all, succeeded) = wait_for("every log succeeded", Duration::from_secs(60), || async {
        let row = client_db
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') FROM webhook_logs",
                &[],
            )
            .await
            .ok()?;
        let counts: (i64, i64) = (row.get(0), row.get(1));
        (counts.0 == counts.1).then_some(counts)
    })
    .await;
    assert_eq!(all, EVENTS as i64, "one log row per event");
    assert_eq!(succeeded, EVENTS as i64);
    eprintln!(
        "killed after {at_kill} deliveries; {} requests in all for {EVENTS} events",
        receiver.count()
    );
    hookrelay_tests::delete_namespace(&amqp_url(), &namespace, &[webhook_id]).await;
}
