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
        "events.id:text",
        "events.account_id:text",
        "events.event_type:text",
        "events.body:text",
        "events.occurred_at:timestamp with time zone",
        "events.received_at:timestamp with time zone",
        "event_types.name:text",
        "api_keys.account_id:text",
    ] {
        assert!(before.iter().any(|c| c == column), "missing {column}");
    }
}

#[tokio::test]
async fn services_starting_together_migrate_once() {
    let db = TestDb::new();
    let settings = crate::helpers::test_settings(&db);
    let (a, b, c) = tokio::join!(
        hookrelay::migrate(&settings),
        hookrelay::migrate(&settings),
        hookrelay::migrate(&settings)
    );
    let applied = [a.expect("first"), b.expect("second"), c.expect("third")];
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
        .expect("the migrations folder")
        .filter(|f| {
            f.as_ref()
                .is_ok_and(|f| f.file_name().to_string_lossy().ends_with(".sql"))
        })
        .count();
    assert_eq!(
        applied.iter().filter(|n| **n > 0).count(),
        1,
        "one service applied them: {applied:?}"
    );
    assert_eq!(applied.iter().sum::<usize>(), files, "{applied:?}");
    let client = db.connect().await;
    let seeded: i64 = client
        .query_one("SELECT count(*) FROM event_types", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(seeded, 17);
}

#[tokio::test]
async fn the_seeded_catalog_matches_the_core_list() {
    let db = TestDb::new();
    hookrelay::migrate(&crate::helpers::test_settings(&db))
        .await
        .expect("migrated");
    let client = db.connect().await;
    let rows = client
        .query(
            "SELECT name, description FROM event_types WHERE builtin ORDER BY name",
            &[],
        )
        .await
        .expect("rows");
    let mut in_db: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    in_db.sort();
    let mut in_core: Vec<(String, String)> = hookrelay_core::BUILTIN_EVENT_TYPES
        .iter()
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .collect();
    in_core.sort();
    assert_eq!(in_db, in_core);
}
