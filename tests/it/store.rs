//! The store's batch writes, against PostgreSQL.

use hookrelay_store::{NewLog, PoolOptions, Store};
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
    let log = |n: usize, payload: &str| NewLog {
        traceparent: None,
        id: Uuid::now_v7(),
        webhook_id: webhook,
        account_id: "acc".into(),
        event_id: format!("evt_{n}"),
        event_type: "Contact.created".into(),
        payload: payload.into(),
        created_at: chrono::Utc::now(),
    };
    // More rows than one INSERT takes, with a value PostgreSQL refuses in a later chunk.
    let mut batch: Vec<NewLog> = (0..2500).map(|n| log(n, r#"{"ok":true}"#)).collect();
    batch[2400] = log(2400, r#"{"x":"\ud800"}"#);
    let err = store.insert_logs(&batch).await.expect_err("refused");
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
    let inserted = store.insert_logs(&batch).await.expect("written");
    assert_eq!(inserted.len(), 2500);
    let again = store.insert_logs(&batch[..10]).await.expect("written");
    assert!(
        again.is_empty(),
        "the same (webhook, event) twice inserts nothing"
    );

    // jsonb's parser recurses: a document nested deep enough is refused with a class-54
    // error (stack depth limit exceeded), which is the event's fault, not the database's.
    let deep = format!("{}1{}", "[".repeat(20_000), "]".repeat(20_000));
    let err = store
        .insert_logs(&[log(9999, &deep)])
        .await
        .expect_err("refused");
    assert_eq!(err.sqlstate(), Some("54001"), "{err}");
    assert!(
        err.is_refusal(),
        "a refusal of this event, not a database fault"
    );
}
