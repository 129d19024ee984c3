//! W3C Trace Context across the hop: an event's `traceparent` (an AMQP header) reaches the
//! log row and each outbound request, as a child in the same trace; a malformed one is
//! dropped without costing the event.

use std::time::Duration;

use hookrelay_tests::receiver::{Behaviour, Receiver};
use hookrelay_tests::{traced_event, wait_for};
use serde_json::json;

use crate::helpers::spawn_app_with;
use crate::retries::schedule;

const DEADLINE: Duration = Duration::from_secs(30);
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn an_events_traceparent_reaches_the_log_and_every_attempt() {
    let app = spawn_app_with(|s| s.retry_schedule = schedule("1s")).await;
    let receiver = Receiver::start().await;
    // The first attempt fails, so the retry shows the trace survives the delay tiers.
    receiver.script([Behaviour::Status(500), Behaviour::Status(200)]);
    // A fixed traceparent on the webhook gives way to the event's: two would void both.
    let fixed = "00-11111111111111111111111111111111-2222222222222222-00";
    app.webhook(
        "acc",
        &receiver.url,
        &["Contact.created"],
        json!({"headers": {"traceparent": fixed}}),
    )
    .await;

    let traced = br#"{"id":"traced","account_id":"acc","data":{}}"#;
    app.publish_raw_with("Contact.created", traced, traced_event(TRACE))
        .await;
    // Only after both attempts: the receiver's script answers requests in arrival order.
    receiver.wait_for(2, DEADLINE).await;
    let untraced = br#"{"id":"garbled","account_id":"acc","data":{}}"#;
    app.publish_raw_with("Contact.created", untraced, traced_event("00-nonsense"))
        .await;

    let got = receiver.wait_for(3, DEADLINE).await;
    let sent: Vec<&str> = got
        .iter()
        .filter(|r| r.header("webhook-id") == Some("traced"))
        .filter_map(|r| r.header("traceparent"))
        .collect();
    assert_eq!(sent.len(), 2, "both attempts carry it: {sent:?}");
    assert!(got
        .iter()
        .filter(|r| r.header("webhook-id") == Some("traced"))
        .all(|r| r.headers.get_all("traceparent").iter().count() == 1));
    for child in &sent {
        let parts: Vec<&str> = child.split('-').collect();
        assert_eq!(parts.len(), 4, "{child}");
        assert_eq!(parts[0], "00");
        assert_eq!(
            parts[1], "4bf92f3577b34da6a3ce929d0e0e4736",
            "the same trace"
        );
        assert_ne!(parts[2], "00f067aa0ba902b7", "a span of hookrelay's own");
        assert_eq!(parts[3], "01", "the sampling decision kept");
    }
    assert_ne!(sent[0], sent[1], "each attempt is a span of its own");
    assert!(
        got.iter()
            .filter(|r| r.header("webhook-id") == Some("garbled"))
            .all(|r| r.header("traceparent") == Some(fixed)),
        "a malformed traceparent is not passed on; the webhook's own goes out as set"
    );

    // The log keeps what the publisher sent; the API shows it.
    let logs = wait_for("both logs succeeded", DEADLINE, || async {
        let answer = app.admin("GET", "/v1/logs?status=succeeded", None).await;
        let items = answer.body["items"].as_array()?.clone();
        (items.len() == 2).then_some(items)
    })
    .await;
    for log in logs {
        let expected = match log["event_id"].as_str() {
            Some("traced") => json!(TRACE),
            _ => json!(null),
        };
        assert_eq!(log["traceparent"], expected, "{log}");
    }
}
