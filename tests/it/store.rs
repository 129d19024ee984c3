//! The store's batch writes, against PostgreSQL.

use std::sync::Arc;

use hookrelay_store::{NewEvent, NewLog, PoolOptions, Store};
use hookrelay_tests::TestDb;
use uuid::Uuid;

#[tokio::test]
async fn a_log_batch_is_written_whole_or_not_at_all() {
    let db = TestDb::new();
    hookrelay::migrate(&crate::helpers::test_settings(&db))
        .await
        .expect("migrated");
    let store = Store::connect(&db.url(), &PoolOptions::default()).expect("a pool");
    let webhook = Uuid::now_v7();
    let log = |n: usize, payload: &str| {
        let event = Arc::new(NewEvent {
            account_id: "acc".into(),
            id: format!("evt_{n}"),
            event_type: "Contact.created".into(),
            body: payload.into(),
            occurred_at: chrono::Utc::now(),
            received_at: chrono::Utc::now(),
            traceparent: None,
        });
        NewLog {
            id: hookrelay_store::new_log_id(chrono::Utc::now()),
            webhook_id: webhook,
            event,
            seq: None,
        }
    };
    let events = |logs: &[NewLog]| logs.iter().map(|l| l.event.clone()).collect::<Vec<_>>();
    // More rows than one INSERT takes, with a value PostgreSQL refuses in a later chunk.
    let mut batch: Vec<NewLog> = (0..2500).map(|n| log(n, r#"{"ok":true}"#)).collect();
    batch[2400] = log(2400, r#"{"x":"\ud800"}"#);
    let err = store
        .insert_logs(&events(&batch), &batch)
        .await
        .expect_err("refused");
    assert!(err.is_refusal(), "{err}");
    assert!(err.sqlstate().is_some_and(|c| c.starts_with("22")), "{err}");
    let client = db.connect().await;
    let written: i64 = client
        .query_one("SELECT count(*) FROM webhook_logs", &[])
        .await
        .expect("a count")
        .get(0);
    assert_eq!(written, 0, "no chunk of a failed batch stays");

    batch[2400] = log(2400, r#"{"ok":true}"#);
    let inserted = store
        .insert_logs(&events(&batch), &batch)
        .await
        .expect("written");
    assert_eq!(inserted.len(), 2500);
    let stored: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .expect("a count")
        .get(0);
    assert_eq!(stored, 2500, "each event once");
    let again: Vec<NewLog> = (0..10).map(|n| log(n, r#"{"ok":true}"#)).collect();
    let again = store
        .insert_logs(&events(&again), &again)
        .await
        .expect("written");
    assert!(
        again.is_empty(),
        "the same (webhook, event) twice inserts nothing"
    );

    // jsonb's parser recurses: a document nested deep enough is refused with a class-54
    // error (stack depth limit exceeded), which is the event's fault, not the database's.
    let deep = format!("{}1{}", "[".repeat(20_000), "]".repeat(20_000));
    let deep = [log(9999, &deep)];
    let err = store
        .insert_logs(&events(&deep), &deep)
        .await
        .expect_err("refused");
    assert_eq!(err.sqlstate(), Some("54001"), "{err}");
    assert!(
        err.is_refusal(),
        "a refusal of this event, not a database fault"
    );
}
