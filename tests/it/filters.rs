//! Payload filters: a webhook receives, and logs, only the events its filter passes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hookrelay_tests::receiver::Receiver;
use hookrelay_tests::{metric, wait_for};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

const DEADLINE: Duration = Duration::from_secs(20);

/// The events of one account, by number: what each filter below sees under `data`.
fn events() -> Vec<Value> {
    vec![
        json!({"n": 0, "status": "read", "amount": 150, "tags": ["vip"], "email": "ann@example.com"}),
        json!({"n": 1, "status": "read", "amount": 50, "email": "bob@example.org"}),
        json!({"n": 2, "status": "sent", "amount": 500, "tags": ["new", "vip"]}),
        json!({"n": 3, "status": "delivered", "amount": 100, "items": [{"sku": "a"}, {"sku": "b"}]}),
        json!({"n": 4, "status": "failed", "amount": 99.5, "note": null}),
    ]
}

/// A filter per operator, and the events (by number) it passes.
fn cases() -> Vec<(Value, Vec<u64>)> {
    vec![
        (json!({"data.status": "read"}), vec![0, 1]),
        (json!({"data.status": {"$eq": "sent"}}), vec![2]),
        (json!({"data.status": {"$neq": "read"}}), vec![2, 3, 4]),
        (json!({"data.amount": {"$gt": 100}}), vec![0, 2]),
        (json!({"data.amount": {"$gte": 100}}), vec![0, 2, 3]),
        (json!({"data.amount": {"$lt": 100}}), vec![1, 4]),
        (json!({"data.amount": {"$lte": 99.5}}), vec![1, 4]),
        (
            json!({"data.status": {"$in": ["read", "delivered"]}}),
            vec![0, 1, 3],
        ),
        (
            json!({"data.status": {"$nin": ["read", "delivered"]}}),
            vec![2, 4],
        ),
        (json!({"data.note": {"$exist": true}}), vec![4]),
        (
            json!({"data.email": {"$regex": "@example\\.com$"}}),
            vec![0],
        ),
        (
            json!({"$and": [{"data.status": "read"}, {"data.amount": {"$gte": 100}}]}),
            vec![0],
        ),
        (
            json!({"$or": [{"data.status": "failed"}, {"data.tags": "new"}]}),
            vec![2, 4],
        ),
        (json!({"$not": {"data.status": "read"}}), vec![2, 3, 4]),
        (json!({"data.items.sku": "b"}), vec![3]),
        (
            json!({"data.status": {"$in": ["read", "delivered"]}, "data.amount": {"$gte": 100}}),
            vec![0, 3],
        ),
    ]
}

/// Publishes [`events`] to account `acc`, with `witness` subscribed and unfiltered; answers
/// them once the witness has every one: every event has been fanned out.
async fn publish_witnessed(app: &TestApp, witness: &Receiver) -> Vec<Value> {
    app.webhook("acc", &witness.url, &["Message.received"], json!({}))
        .await;
    let events = events();
    for data in &events {
        app.publish("Message.received", "acc", data.clone(), 1)
            .await;
    }
    witness.wait_for(events.len(), DEADLINE).await;
    events
}

/// The event numbers each path of `receiver` got.
fn by_path(receiver: &Receiver) -> BTreeMap<String, BTreeSet<u64>> {
    let mut got: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for r in receiver.received() {
        let n = r.json()["data"]["n"].as_u64().expect("a numbered event");
        got.entry(r.path.clone()).or_default().insert(n);
    }
    got
}

async fn filtered_total(app: &TestApp) -> f64 {
    let text = app.call("GET", "/metrics", None, None).await.text;
    metric(&text, "hookrelay_deliveries_filtered_total")
}

/// Changes webhook `id`'s filter; answers the webhook as changed.
async fn set_filter(app: &TestApp, id: &str, filter: Value) -> Value {
    let answer = app
        .admin(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(json!({ "filter": filter })),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body
}

/// The events (by number) webhook `id` has logs of.
async fn logged(app: &TestApp, id: &str) -> BTreeSet<u64> {
    let db = app.db.connect().await;
    db.query(
        "SELECT (payload::jsonb -> 'data' ->> 'n')::bigint FROM webhook_logs
         WHERE webhook_id = $1::text::uuid",
        &[&id],
    )
    .await
    .expect("logs")
    .iter()
    .map(|r| u64::try_from(r.get::<_, i64>(0)).expect("a number"))
    .collect()
}

#[tokio::test]
async fn only_the_events_a_filter_passes_are_delivered_and_logged_for_each_operator() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let witness = Receiver::start().await;
    let cases = cases();
    let mut ids = Vec::new();
    for (i, (filter, _)) in cases.iter().enumerate() {
        let url = format!("{}/case/{i}", receiver.url);
        let created = app
            .webhook(
                "acc",
                &url,
                &["Message.received"],
                json!({"filter": filter}),
            )
            .await;
        ids.push(created);
    }
    let events = publish_witnessed(&app, &witness).await;
    let expected_total: usize = cases.iter().map(|(_, passes)| passes.len()).sum();
    receiver.wait_for(expected_total, DEADLINE).await;

    let got = by_path(&receiver);
    for (i, (filter, passes)) in cases.iter().enumerate() {
        let want: BTreeSet<u64> = passes.iter().copied().collect();
        let path = format!("/case/{i}");
        assert_eq!(
            got.get(&path).cloned().unwrap_or_default(),
            want,
            "delivered under {filter}"
        );
        assert_eq!(logged(&app, &ids[i]).await, want, "logged under {filter}");
    }
    let refused = cases.len() * events.len() - expected_total;
    wait_for("the filtered count", DEADLINE, || async {
        (filtered_total(&app).await == refused as f64).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_changed_filter_applies_to_the_next_events() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let id = app
        .webhook(
            "acc",
            &receiver.url,
            &["Contact.created"],
            json!({"filter": {"data.plan": "pro"}}),
        )
        .await;
    let read = app.admin("GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(read.body["filter"], json!({"data.plan": "pro"}));

    app.publish("Contact.created", "acc", json!({"n": 0, "plan": "free"}), 1)
        .await;
    app.publish("Contact.created", "acc", json!({"n": 1, "plan": "pro"}), 1)
        .await;
    receiver.wait_for(1, DEADLINE).await;

    set_filter(&app, &id, json!({"data.plan": {"$in": ["free", "team"]}})).await;
    app.publish("Contact.created", "acc", json!({"n": 2, "plan": "free"}), 1)
        .await;
    app.publish("Contact.created", "acc", json!({"n": 3, "plan": "pro"}), 1)
        .await;
    receiver.wait_for(2, DEADLINE).await;

    // Removed: every event again.
    let cleared = set_filter(&app, &id, Value::Null).await;
    assert_eq!(cleared["filter"], Value::Null, "{cleared}");
    app.publish("Contact.created", "acc", json!({"n": 4, "plan": "pro"}), 1)
        .await;
    receiver.wait_for(3, DEADLINE).await;

    let got: BTreeSet<u64> = by_path(&receiver).into_values().flatten().collect();
    assert_eq!(got, BTreeSet::from([1, 2, 4]));
    assert_eq!(logged(&app, &id).await, BTreeSet::from([1, 2, 4]));
}

#[tokio::test]
async fn a_bad_filter_is_refused_with_what_is_wrong() {
    let app = spawn_app().await;
    let huge_regex = "(a{100}){100}";
    let bad = [
        (json!(["data.status"]), "must be an object"),
        (
            json!({"data.status": {"$like": "r%"}}),
            "unknown operator `$like`",
        ),
        (json!({"data.n": {"$gt": [1]}}), "number or a string"),
        (json!({"data.s": {"$regex": "("}}), "not a usable pattern"),
        (json!({"data.s": {"$regex": huge_regex}}), "too big"),
        (json!({"$or": []}), "at least one filter"),
    ];
    for (filter, why) in &bad {
        let answer = app
            .admin(
                "POST",
                "/v1/webhooks",
                Some(json!({"account_id": "acc", "url": "https://example.com/h",
                            "events": ["Contact.created"], "filter": filter})),
            )
            .await;
        assert_eq!(answer.status, 422, "{filter}: {}", answer.text);
        assert_eq!(
            answer.error(),
            ("invalid_filter".to_owned(), Some("filter".to_owned()))
        );
        let message = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{filter}: {message}");

        let tried = app
            .admin(
                "POST",
                "/v1/webhooks/filter-test",
                Some(json!({"filter": filter, "payload": {}})),
            )
            .await;
        assert_eq!(tried.status, 200, "{}", tried.text);
        assert_eq!(tried.body["matches"], json!(false));
        assert!(
            tried.body["error"]
                .as_str()
                .unwrap_or_default()
                .contains(why),
            "{}",
            tried.text
        );
    }
    // A change is checked the same way, and leaves the webhook as it was.
    let created = app
        .create_webhook(json!({"account_id": "acc", "url": "https://example.com/h",
                               "events": ["Contact.created"], "filter": {"data.a": 1}}))
        .await;
    let id = created["id"].as_str().unwrap();
    let answer = app
        .admin(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(json!({"filter": {"data.a": {"$exist": "yes"}}})),
        )
        .await;
    assert_eq!(answer.status, 422, "{}", answer.text);
    assert_eq!(answer.error().0, "invalid_filter");
    let read = app.admin("GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(read.body["filter"], json!({"data.a": 1}));
}

#[tokio::test]
async fn filter_test_says_whether_a_payload_passes() {
    let app = spawn_app().await;
    let filter =
        json!({"data.status": {"$in": ["read", "delivered"]}, "data.amount": {"$gte": 100}});
    for (payload, matches) in [
        (
            json!({"type": "Message.received", "data": {"status": "read", "amount": 100}}),
            true,
        ),
        (
            json!({"type": "Message.received", "data": {"status": "read", "amount": 99}}),
            false,
        ),
        (json!({"data": {"amount": 500}}), false),
    ] {
        let answer = app
            .admin(
                "POST",
                "/v1/webhooks/filter-test",
                Some(json!({"filter": filter, "payload": payload})),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.body, json!({"matches": matches}), "{payload}");
    }
    // An account key may try filters too; a call without a token may not.
    let anonymous = app
        .call(
            "POST",
            "/v1/webhooks/filter-test",
            None,
            Some(r#"{"filter": {}, "payload": {}}"#),
        )
        .await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn a_replay_sends_only_the_stored_events_the_filter_passes() {
    let app = spawn_app().await;
    publish_witnessed(&app, &Receiver::start().await).await;

    let late = Receiver::start().await;
    let id = app
        .webhook(
            "acc",
            &late.url,
            &["Message.received"],
            json!({"filter": {"data.amount": {"$gte": 100}}}),
        )
        .await;
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let answer = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{id}/replay"),
            Some(json!({"since": since})),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    assert_eq!(answer.body["count"], 3, "{}", answer.text);
    late.wait_for(3, DEADLINE).await;
    let got: BTreeSet<u64> = by_path(&late).into_values().flatten().collect();
    assert_eq!(got, BTreeSet::from([0, 2, 3]));
    assert_eq!(logged(&app, &id).await, BTreeSet::from([0, 2, 3]));
}
