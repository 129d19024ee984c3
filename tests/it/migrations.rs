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

/// A database as release 8 left it, with a million logs (a few unfinished), upgraded in
/// place: every log stays readable through the view and the API right after `migrate`, and
/// while the services move the old logs over to the partitioned tables in the background.
/// The move is followed to its end on a smaller database below: at a million it is the same
/// batch five hundred times, minutes of a serial test group for nothing more.
#[tokio::test]
async fn slow_an_upgrade_keeps_a_million_logs_readable() {
    upgrade_release_8(1_000_000, Moved::AtLeast(100_000)).await;
}

/// As above, with 20 000 logs, watched until the last one has moved.
#[tokio::test]
async fn an_upgrade_moves_every_old_log_with_its_attempts() {
    upgrade_release_8(20_000, Moved::All).await;
}

/// How far [`upgrade_release_8`] follows the background move.
enum Moved {
    AtLeast(i64),
    All,
}

async fn upgrade_release_8(logs: i64, moved: Moved) {
    let db = TestDb::new();
    hookrelay_store::migrate_to(&db.url(), Some(8))
        .await
        .expect("the schema of release 8");
    let client = db.connect().await;
    let seeding = std::time::Instant::now();
    // Ids as release 8 made them (UUIDv7, a little after the log's created_at) for most,
    // random ones for some (written by hand); one log in 200 pending or retrying.
    client
        .batch_execute(&format!(
            "INSERT INTO webhook_logs
                (id, webhook_id, account_id, event_id, event_type, payload, status, attempts,
                 error, created_at, updated_at)
             SELECT CASE WHEN n % 10 = 0 THEN gen_random_uuid()
                         ELSE (lpad(to_hex((extract(epoch FROM t) * 1000)::bigint + 1), 12, '0')
                               || '7' || substr(md5(n::text), 1, 3) || '8'
                               || substr(md5(n::text), 4, 15))::uuid END,
                    ('00000000-0000-0000-0000-' || lpad((n % 100)::text, 12, '0'))::uuid,
                    'acc_' || (n % 10), 'evt_' || n, 'Contact.created',
                    jsonb_build_object('id', 'evt_' || n, 'data', jsonb_build_object('n', n)),
                    (ARRAY['succeeded','succeeded','failed','succeeded'])[1 + n % 4],
                    1, NULL, t, t
             FROM (SELECT n, now() - make_interval(secs => n * 0.5) AS t
                   FROM generate_series(1, {logs}) n) s;
             UPDATE webhook_logs SET status = 'pending', attempts = 0
             WHERE event_id IN (SELECT 'evt_' || n FROM generate_series(1, {logs}, 400) n);
             UPDATE webhook_logs SET status = 'retrying', next_attempt_at = now()
             WHERE event_id IN (SELECT 'evt_' || n FROM generate_series(200, {logs}, 400) n);
             INSERT INTO webhook_attempts (log_id, attempt, started_at, duration_ms, webhook_id)
             SELECT id, 1, created_at, 5, webhook_id FROM webhook_logs;
             ANALYZE webhook_logs, webhook_attempts;"
        ))
        .await
        .expect("the logs of release 8");
    eprintln!("seeded {logs} logs in {:?}", seeding.elapsed());
    let unfinished: i64 = client
        .query_one(
            "SELECT count(*) FROM webhook_logs WHERE status IN ('pending', 'retrying')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(unfinished >= logs / 250, "{unfinished}");
    // The first and the last, pending and retrying ones, a random id.
    let last = format!("evt_{}", logs - 10);
    let sample: Vec<(uuid::Uuid, serde_json::Value)> = client
        .query(
            "SELECT id, payload FROM webhook_logs
             WHERE event_id IN ('evt_1', 'evt_200', 'evt_7', 'evt_10', $1)",
            &[&last],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(sample.len(), 5);

    let migrating = std::time::Instant::now();
    let applied = hookrelay_store::migrate(&db.url()).await.expect("upgraded");
    let took = migrating.elapsed();
    eprintln!("migrated {logs} logs ({unfinished} unfinished moved) in {took:?}");
    assert!(applied >= 1);
    let readable: i64 = client
        .query_one("SELECT count(*) FROM webhook_logs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(readable, logs, "every log readable through the view");
    let open: i64 = client
        .query_one("SELECT count(*) FROM open_deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, unfinished, "the unfinished logs moved, open");

    let app = crate::helpers::spawn_app_on(db).await;
    for (id, payload) in &sample {
        let detail = app.admin("GET", &format!("/v1/logs/{id}"), None).await;
        assert_eq!(detail.status, 200, "{id}: {}", detail.text);
        assert_eq!(&detail.body["payload"], payload);
    }
    let page = app
        .admin("GET", "/v1/logs?account_id=acc_3&limit=10", None)
        .await;
    assert_eq!(page.body["items"].as_array().unwrap().len(), 10);
    // The services move the old logs over, a batch at a time.
    let moving = std::time::Instant::now();
    let goal = match moved {
        Moved::AtLeast(n) => n,
        Moved::All => logs,
    };
    hookrelay_tests::wait_for(
        "the old logs moving over",
        std::time::Duration::from_secs(600),
        || async {
            let n: i64 = client
                .query_one("SELECT count(*) FROM delivery_logs", &[])
                .await
                .ok()?
                .get(0);
            (n >= goal).then_some(())
        },
    )
    .await;
    eprintln!(
        "moved {goal} of {logs} logs to the partitioned tables in {:?}",
        moving.elapsed()
    );
    // Readable the same, moved or not yet, each with its attempt.
    let (readable, attempts): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM webhook_logs), (SELECT count(*) FROM webhook_attempts)",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(readable, logs, "no log lost or doubled while moving");
    assert_eq!(attempts, logs, "each with its attempt");
    if let Moved::All = moved {
        let left: i64 = client
            .query_one("SELECT count(*) FROM webhook_logs_v8", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "nothing left behind");
    }
    for (id, payload) in &sample {
        let detail = app.admin("GET", &format!("/v1/logs/{id}"), None).await;
        assert_eq!(detail.status, 200, "{id}: {}", detail.text);
        assert_eq!(&detail.body["payload"], payload);
        assert_eq!(detail.body["attempts"].as_array().unwrap().len(), 1);
    }
}
