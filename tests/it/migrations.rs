use hookrelay_tests::TestDb;

async fn schema(client: &tokio_postgres::Client) -> Vec<String> {
    let rows = client
        .query(
            "SELECT table_name || '.' || column_name || ':' || data_type
             FROM information_schema.columns WHERE table_schema = 'public'
             ORDER BY 1",
            &[],
        )
        .await
        .expect("columns");
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

#[tokio::test]
async fn migrations_create_the_database_and_run_twice_as_a_no_op() {
    let db = TestDb::new();
    let settings = crate::helpers::test_settings(&db);
    let first = hookrelay::migrate(&settings).await.expect("first run");
    assert!(first >= 1, "the first run applies the schema");
    let client = db.connect().await;
    let before = schema(&client).await;
    client
        .batch_execute("INSERT INTO event_types (name) VALUES ('Kept.after.rerun')")
        .await
        .expect("an insert");

    let second = hookrelay::migrate(&settings).await.expect("second run");
    assert_eq!(second, 0, "nothing left to apply");
    assert_eq!(schema(&client).await, before);
    let kept: i64 = client
        .query_one("SELECT count(*) FROM event_types", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(kept, 18, "17 seeded types plus ours, none seeded twice");

    // Contract §3 columns, as admins query them.
    for column in [
        "webhooks.id:uuid",
        "webhooks.account_id:text",
        "webhooks.url:text",
        "webhooks.secret:text",
        "webhooks.headers:jsonb",
        "webhooks.events:ARRAY",
        "webhooks.status:text",
        "webhooks.disabled_reason:text",
        "webhooks.description:text",
        "webhooks.created_at:timestamp with time zone",
        "webhooks.updated_at:timestamp with time zone",
        "webhook_logs.id:uuid",
        "webhook_logs.webhook_id:uuid",
        "webhook_logs.account_id:text",
        "webhook_logs.event_id:text",
        "webhook_logs.event_type:text",
        "webhook_logs.payload:jsonb",
        "webhook_logs.status:text",
        "webhook_logs.attempts:integer",
        "webhook_logs.response_status:integer",
        "webhook_logs.response_body:text",
        "webhook_logs.error:text",
        "webhook_logs.created_at:timestamp with time zone",
        "webhook_logs.updated_at:timestamp with time zone",
        "webhook_logs.next_attempt_at:timestamp with time zone",
        "webhook_logs.delivered_at:timestamp with time zone",
        "webhook_attempts.id:bigint",
        "webhook_attempts.log_id:uuid",
        "webhook_attempts.attempt:integer",
        "webhook_attempts.started_at:timestamp with time zone",
        "webhook_attempts.duration_ms:integer",
        "webhook_attempts.response_status:integer",
        "webhook_attempts.response_body:text",
        "webhook_attempts.error:text",
        "event_types.name:text",
        "api_keys.account_id:text",
    ] {
        assert!(before.iter().any(|c| c == column), "missing {column}");
    }
}
