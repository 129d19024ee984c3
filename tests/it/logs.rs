//! The Webhook Logs API: filters, keyset pages, one log with its attempts, account scope,
//! and the indexes behind every filter.

use std::collections::HashSet;
use std::time::Duration;

use hookrelay_tests::receiver::{Behaviour, Receiver};
use hookrelay_tests::wait_for;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

const DEADLINE: Duration = Duration::from_secs(30);

/// Writes a log as the pipeline would, `age_secs` old; answers its id.
async fn insert_log(
    client: &tokio_postgres::Client,
    webhook: uuid::Uuid,
    account: &str,
    event: (&str, &str),
    status: &str,
    age_secs: f64,
) -> String {
    let seeded = hookrelay_tests::seed_logs(
        client,
        &[hookrelay_tests::SeedLog {
            webhook,
            account,
            event_id: event.0,
            event_type: event.1,
            status,
            age: Duration::from_secs_f64(age_secs),
            ..Default::default()
        }],
    )
    .await;
    seeded[0].to_string()
}

/// As [`insert_log`], with one attempt answered 200.
async fn insert_attempted_log(
    client: &tokio_postgres::Client,
    webhook: uuid::Uuid,
    event: &str,
    status: &str,
    age_secs: f64,
) -> String {
    let id = insert_log(
        client,
        webhook,
        "acc",
        (event, "Contact.created"),
        status,
        age_secs,
    )
    .await;
    hookrelay_tests::seed_attempt(client, id.parse().unwrap(), 1, Duration::ZERO, 5, Some(200))
        .await;
    id
}

/// A service that keeps logs ten years: nothing is retired while a test seeds old ones.
async fn spawn_app_keeping_logs() -> TestApp {
    spawn_app_with(|s| {
        s.log_retention = hookrelay::settings::HumanDuration(Duration::from_secs(3650 * 24 * 3600));
    })
    .await
}

/// A log seeded by a test, with what the filters look at.
struct Seeded {
    id: String,
    webhook: uuid::Uuid,
    account: &'static str,
    event: &'static str,
    kind: &'static str,
    status: &'static str,
    age: f64,
}

/// Every id of a list call, following `next_cursor` to the end.
async fn all_ids(app: &TestApp, token: &str, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/v1/logs?limit=7&{query}"),
            Some(c) => format!("/v1/logs?limit=7&{query}&cursor={c}"),
        };
        let answer = app.call("GET", &path, Some(token), None).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        for item in answer.body["items"].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        match answer.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn each_filter_selects_exactly_its_logs_and_accounts_see_their_own() {
    let app = spawn_app().await;
    let client = app.db.connect().await;
    let (w1, w2) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let mut rows: Vec<Seeded> = Vec::new();
    let plan = [
        (w1, "acc_a", "e1", "Contact.created", "succeeded", 10.0),
        (w1, "acc_a", "e2", "Contact.updated", "failed", 20.0),
        (w2, "acc_a", "e1", "Contact.created", "pending", 30.0),
        (w2, "acc_b", "e3", "Message.received", "retrying", 4000.0),
        (w1, "acc_b", "e4", "Message.received", "succeeded", 8000.0),
    ];
    for (webhook, account, event, kind, status, age) in plan {
        let id = insert_log(&client, webhook, account, (event, kind), status, age).await;
        rows.push(Seeded {
            id,
            webhook,
            account,
            event,
            kind,
            status,
            age,
        });
    }
    // Newest first: the rows were seeded youngest first.
    let expect = |keep: &dyn Fn(&Seeded) -> bool| {
        rows.iter()
            .filter(|r| keep(r))
            .map(|r| r.id.clone())
            .collect::<Vec<_>>()
    };
    let admin = crate::helpers::ADMIN_TOKEN;
    // `Z`, not `+00:00`: a `+` in a query string means a space.
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let cases: Vec<(String, Vec<String>)> = vec![
        (String::new(), expect(&|_| true)),
        (format!("webhook_id={w1}"), expect(&|r| r.webhook == w1)),
        ("account_id=acc_b".into(), expect(&|r| r.account == "acc_b")),
        ("status=failed".into(), expect(&|r| r.status == "failed")),
        (
            "event_type=Contact.created".into(),
            expect(&|r| r.kind == "Contact.created"),
        ),
        ("event_id=e1".into(), expect(&|r| r.event == "e1")),
        (format!("since={hour_ago}"), expect(&|r| r.age < 3600.0)),
        (format!("until={hour_ago}"), expect(&|r| r.age > 3600.0)),
        (
            format!("webhook_id={w1}&status=succeeded"),
            expect(&|r| r.webhook == w1 && r.status == "succeeded"),
        ),
    ];
    for (query, expected) in &cases {
        assert_eq!(&all_ids(&app, admin, query).await, expected, "{query}");
    }
    for (query, field) in [
        ("status=lost", "status"),
        ("webhook_id=nope", "webhook_id"),
        ("event_type=bad%20type", "event_type"),
        ("since=yesterday", "since"),
        ("colour=red", "colour"),
    ] {
        let answer = app.admin("GET", &format!("/v1/logs?{query}"), None).await;
        assert_eq!(answer.status, 422, "{query}: {}", answer.text);
        assert_eq!(answer.error().1.as_deref(), Some(field), "{query}");
    }

    // An account key: its own logs only, whatever it asks; another account's log is 404.
    let key = app.api_key("acc_a").await;
    assert_eq!(
        all_ids(&app, &key, "").await,
        expect(&|r| r.account == "acc_a")
    );
    assert!(all_ids(&app, &key, "account_id=acc_b").await.is_empty());
    let theirs = &rows[3].id;
    let answer = app
        .call("GET", &format!("/v1/logs/{theirs}"), Some(&key), None)
        .await;
    assert_eq!(answer.status, 404, "{}", answer.text);
    let ours = &rows[0].id;
    let answer = app
        .call("GET", &format!("/v1/logs/{ours}"), Some(&key), None)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["payload"], json!({"n": 1}));
}

#[tokio::test]
async fn pages_have_no_duplicate_or_gap_while_new_logs_arrive() {
    let app = spawn_app().await;
    let client = app.db.connect().await;
    let webhook = uuid::Uuid::now_v7();
    let mut before = HashSet::new();
    for n in 0..250 {
        before.insert(
            insert_log(
                &client,
                webhook,
                "acc",
                (&format!("old_{n}"), "Contact.created"),
                "succeeded",
                // Some share a timestamp: the id breaks the tie.
                f64::from(100 + n / 3),
            )
            .await,
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut page = 0;
    loop {
        let path = match &cursor {
            None => "/v1/logs?limit=50".to_owned(),
            Some(c) => format!("/v1/logs?limit=50&cursor={c}"),
        };
        let answer = app.admin("GET", &path, None).await;
        for item in answer.body["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        // New deliveries keep arriving between pages.
        for n in 0..10 {
            insert_log(
                &client,
                webhook,
                "acc",
                (&format!("new_{page}_{n}"), "Contact.created"),
                "pending",
                0.0,
            )
            .await;
        }
        page += 1;
        match answer.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no log twice");
    assert!(
        before.iter().all(|id| unique.contains(id)),
        "every log that was there was listed"
    );
    assert_eq!(
        page, 5,
        "250 logs in pages of 50 (the new ones sort before the cursor)"
    );
}

#[tokio::test]
async fn a_log_shows_its_payload_answer_and_every_attempt() {
    let app = spawn_app_with(|s| {
        s.retry_schedule = "1s".parse().unwrap();
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.script([Behaviour::Body(500, "not yet".into())]);
    app.webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let ids = app
        .publish(
            "Contact.created",
            "acc",
            json!({"html": "<script>alert(1)</script>"}),
            1,
        )
        .await;
    receiver.wait_for(2, DEADLINE).await;
    let log = wait_for("the log to succeed", DEADLINE, || async {
        let list = app
            .admin("GET", &format!("/v1/logs?event_id={}", ids[0]), None)
            .await;
        let item = list.body["items"].get(0)?.clone();
        (item["status"] == "succeeded").then_some(item)
    })
    .await;
    let detail = app
        .admin(
            "GET",
            &format!("/v1/logs/{}", log["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(detail.status, 200, "{}", detail.text);
    let body = &detail.body;
    assert_eq!(body["event_id"], json!(ids[0]));
    assert_eq!(body["attempts"].as_array().unwrap().len(), 2);
    // A JSON parser keeps one of two same-named keys; the answer must not have two.
    assert_eq!(
        detail.text.matches("\"attempts\":").count(),
        1,
        "{}",
        detail.text
    );
    assert_eq!(body["payload"]["data"]["html"], "<script>alert(1)</script>");
    assert_eq!(body["payload"]["type"], "Contact.created");
    assert_eq!(body["response_status"], 200);
    let attempts: Vec<(Value, Value)> = body["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["attempt"].clone(), a["response_status"].clone()))
        .collect();
    assert_eq!(
        attempts,
        vec![(json!(1), json!(500)), (json!(2), json!(200))]
    );
    assert_eq!(body["attempts"][0]["response_body"], "not yet");
    assert!(body["attempts"][0]["started_at"].is_string());
    assert!(body["attempts"][0]["duration_ms"].is_u64());
    // Unknown and malformed ids are simply not there.
    for id in [uuid::Uuid::now_v7().to_string(), "nope".to_owned()] {
        let answer = app.admin("GET", &format!("/v1/logs/{id}"), None).await;
        assert_eq!(answer.status, 404);
    }
}

/// On a million logs over twelve days' partitions, the plan of every filter's first page
/// walks an index: no sequential scan of the logs, whichever filter an admin picks.
#[tokio::test]
async fn every_filter_is_served_by_an_index_on_a_million_logs() {
    let app = spawn_app().await;
    let client = app.db.connect().await;
    client
        .batch_execute(
            "SELECT hookrelay_ensure_partitions((now() AT TIME ZONE 'UTC')::date - 12,
                                                (now() AT TIME ZONE 'UTC')::date);
             CREATE TEMPORARY TABLE seed AS
             SELECT hookrelay_log_id(now() - make_interval(secs => n)) AS id,
                    ('00000000-0000-0000-0000-' || lpad((n % 1000)::text, 12, '0'))::uuid
                        AS webhook_id,
                    'acc_' || (n % 100) AS account_id, 'evt_' || n AS event_id,
                    (ARRAY['Contact.created','Message.received','Contact.updated',
                           'Template.status'])[1 + n % 4] AS event_type,
                    (ARRAY['succeeded','succeeded','succeeded','failed','pending',
                           'retrying'])[1 + n % 6] AS status
             FROM generate_series(1, 1000000) n;
             INSERT INTO events (account_id, id, event_type, body, occurred_at, received_at)
             SELECT account_id, event_id, event_type, '{\"n\":1}', hookrelay_uuid_time(id),
                    hookrelay_uuid_time(id)
             FROM seed;
             INSERT INTO delivery_logs (id, webhook_id, account_id, event_id, event_type,
                                        event_at, created_at, status, troubled, updated_at)
             SELECT id, webhook_id, account_id, event_id, event_type, hookrelay_uuid_time(id),
                    hookrelay_uuid_time(id), status, status IN ('failed', 'retrying'), now()
             FROM seed;
             INSERT INTO open_deliveries (webhook_id, log_id, created_at)
             SELECT webhook_id, id, hookrelay_uuid_time(id) FROM seed
             WHERE status IN ('pending', 'retrying');
             ANALYZE delivery_logs, events, open_deliveries;",
        )
        .await
        .unwrap();
    let store =
        hookrelay_store::Store::connect(&app.db.url(), &hookrelay_store::PoolOptions::default())
            .unwrap();
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let webhook = uuid::Uuid::parse_str("00000000-0000-0000-0000-000000000005").unwrap();
    use hookrelay_core::LogStatus;
    use hookrelay_store::LogFilter;
    let filters = [
        LogFilter::default(),
        LogFilter {
            webhook_id: Some(webhook),
            ..Default::default()
        },
        LogFilter {
            account_id: Some("acc_5".into()),
            ..Default::default()
        },
        LogFilter {
            status: Some(LogStatus::Failed),
            ..Default::default()
        },
        // A status that is rare rather than common.
        LogFilter {
            status: Some(LogStatus::Retrying),
            account_id: Some("acc_7".into()),
            ..Default::default()
        },
        LogFilter {
            status: Some(LogStatus::Pending),
            webhook_id: Some(webhook),
            ..Default::default()
        },
        LogFilter {
            status: Some(LogStatus::Pending),
            ..Default::default()
        },
        LogFilter {
            event_type: Some("Template.status".into()),
            ..Default::default()
        },
        LogFilter {
            event_id: Some("evt_77".into()),
            ..Default::default()
        },
        LogFilter {
            since: Some(hour_ago),
            ..Default::default()
        },
        LogFilter {
            until: Some(hour_ago),
            ..Default::default()
        },
    ];
    // The first page, and a page deep in the list (a cursor 20 days back).
    let deep = hookrelay_store::Cursor {
        created_at: chrono::Utc::now() - chrono::Duration::days(20),
        key: uuid::Uuid::nil().to_string(),
    };
    for filter in &filters {
        for after in [None, Some(&deep)] {
            let plan = store.explain_list_logs(filter, after).await.unwrap();
            // The open deliveries are few: a scan of them is fine; of the logs, never (but of
            // the empty partitions of days to come, which cost nothing).
            let scans_logs = plan.lines().any(|line| {
                line.contains("Seq Scan on delivery_logs") && !line.contains("cost=0.00..0.00")
            });
            assert!(
                plan.contains("Index") && !scans_logs,
                "{filter:?} after {after:?}:\n{plan}"
            );
        }
    }
}

/// `percentile_cont`: linear interpolation between the closest ranks.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p * (sorted.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

#[tokio::test]
async fn stats_match_a_hand_count_of_the_window() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let id = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let other = app
        .webhook("acc", &receiver.url, &["Contact.updated"], json!({}))
        .await;
    let client = app.db.connect().await;
    let log = insert_log(
        &client,
        id.parse().unwrap(),
        "acc",
        ("e", "Contact.created"),
        "succeeded",
        0.0,
    )
    .await;
    // (webhook, minutes ago, duration ms, status): in the last hour for the webhook, older
    // ones, and another webhook's, which must not count.
    let attempts = [
        (&id, 5, 120, Some(200)),
        (&id, 10, 80, Some(500)),
        (&id, 20, 300, None),
        (&id, 30, 40, Some(204)),
        (&id, 50, 1000, Some(503)),
        (&id, 90, 7, Some(200)),
        (&other, 5, 9999, Some(500)),
    ];
    for (n, (webhook, minutes, duration, status)) in attempts.iter().enumerate() {
        client
            .execute(
                "INSERT INTO delivery_attempts
                    (log_id, log_created_at, attempt, started_at, duration_ms, response_status,
                     error, webhook_id)
                 SELECT id, created_at, $2, now() - make_interval(mins => $3), $4, $5,
                        CASE WHEN $5::int IS NULL THEN 'timeout' END, $6::text::uuid
                 FROM delivery_logs WHERE id = $1::text::uuid",
                &[&log, &(n as i32 + 1), &minutes, duration, status, webhook],
            )
            .await
            .unwrap();
    }
    let in_window: Vec<_> = attempts
        .iter()
        .filter(|(w, minutes, _, _)| **w == id && *minutes < 60)
        .collect();
    let successes = in_window
        .iter()
        .filter(|a| a.3.is_some_and(|s| (200..300).contains(&s)))
        .count();
    let mut durations: Vec<f64> = in_window.iter().map(|a| f64::from(a.2)).collect();
    durations.sort_by(f64::total_cmp);

    let stats = app
        .admin("GET", &format!("/v1/webhooks/{id}/stats?window=1h"), None)
        .await;
    assert_eq!(stats.status, 200, "{}", stats.text);
    let s = &stats.body;
    assert_eq!(s["window"], "1h");
    assert_eq!(s["attempts"], json!(in_window.len()));
    assert_eq!(s["successes"], json!(successes));
    assert_eq!(s["failures"], json!(in_window.len() - successes));
    let rate = successes as f64 / in_window.len() as f64;
    assert!((s["success_rate"].as_f64().unwrap() - rate).abs() < 1e-9);
    for (field, p) in [("p50_duration_ms", 0.5), ("p95_duration_ms", 0.95)] {
        let expected = percentile(&durations, p);
        assert!(
            (s[field].as_f64().unwrap() - expected).abs() < 1e-6,
            "{field}: {} vs {expected}",
            s[field]
        );
    }
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(s[field].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    // The last success was 5 minutes ago, the last failure 10.
    let ago = |field: &str| (chrono::Utc::now() - at(field)).num_minutes();
    assert_eq!(ago("last_success_at"), 5);
    assert_eq!(ago("last_failure_at"), 10);

    // The default window is a day: the 90-minute-old attempt counts too.
    let day = app
        .admin("GET", &format!("/v1/webhooks/{id}/stats"), None)
        .await;
    assert_eq!(day.body["attempts"], json!(in_window.len() + 1));
    for (query, code) in [
        ("window=1s", "out_of_range"),
        ("window=soon", "invalid_duration"),
    ] {
        let answer = app
            .admin("GET", &format!("/v1/webhooks/{id}/stats?{query}"), None)
            .await;
        assert_eq!(
            answer.error(),
            (code.into(), Some("window".into())),
            "{query}"
        );
    }
    let missing = app
        .admin(
            "GET",
            &format!("/v1/webhooks/{}/stats", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(missing.status, 404);

    // Attempts the pipeline records carry their webhook, so they count too.
    app.publish("Contact.updated", "acc", json!({}), 1).await;
    receiver.wait_for(1, DEADLINE).await;
    wait_for(
        "the delivered attempt in the other webhook's stats",
        DEADLINE,
        || async {
            let s = app
                .admin(
                    "GET",
                    &format!("/v1/webhooks/{other}/stats?window=1h"),
                    None,
                )
                .await;
            (s.body["attempts"] == json!(2) && s.body["successes"] == json!(1)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_test_event_reaches_its_webhook_alone_under_the_log_id_answered() {
    let app = spawn_app().await;
    let target = Receiver::start().await;
    let bystander = Receiver::start().await;
    // Subscribed to other types only: a test goes to it all the same.
    let id = app
        .webhook("acc", &target.url, &["Contact.created"], json!({}))
        .await;
    // Subscribed to Webhook.test itself: a test of another webhook is not for it.
    app.webhook("acc", &bystander.url, &["Webhook.test"], json!({}))
        .await;
    let sent = app
        .admin("POST", &format!("/v1/webhooks/{id}/test"), None)
        .await;
    assert_eq!(sent.status, 202, "{}", sent.text);
    let log_id = sent.body["log_id"].as_str().unwrap().to_owned();
    let got = target.wait_for(1, DEADLINE).await;
    let body = got[0].json();
    assert_eq!(body["type"], "Webhook.test");
    assert_eq!(body["data"]["webhook_id"], json!(id));
    assert_eq!(body["account_id"], "acc");
    wait_for("the test's log to succeed", DEADLINE, || async {
        let log = app.admin("GET", &format!("/v1/logs/{log_id}"), None).await;
        (log.body["status"] == "succeeded").then_some(())
    })
    .await;
    let logs = app
        .admin("GET", "/v1/logs?event_type=Webhook.test", None)
        .await;
    assert_eq!(logs.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(bystander.count(), 0);

    // Another account's key cannot test it; a disabled webhook says why it will not.
    let key = app.api_key("other").await;
    let theirs = app
        .call("POST", &format!("/v1/webhooks/{id}/test"), Some(&key), None)
        .await;
    assert_eq!(theirs.status, 404);
    app.admin("POST", &format!("/v1/webhooks/{id}/disable"), None)
        .await;
    let disabled = app
        .admin("POST", &format!("/v1/webhooks/{id}/test"), None)
        .await;
    assert_eq!(disabled.status, 409);
    assert_eq!(disabled.error().0, "webhook_disabled");
}

/// The partitions of the three partitioned tables.
async fn partitions(client: &tokio_postgres::Client) -> HashSet<String> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent IN ('events'::regclass, 'delivery_logs'::regclass,
                                   'delivery_attempts'::regclass)",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

/// One retention pass of `store`, each piece's bytes added to `pieces`, going on after each
/// while `go_on`: the days it retired.
async fn retire(
    store: &hookrelay_store::Store,
    cutoff: chrono::DateTime<chrono::Utc>,
    pieces: &mut Vec<u64>,
    go_on: bool,
) -> Vec<hookrelay_store::Retired> {
    let mut retired = Vec::new();
    store
        .retire_partitions(
            cutoff,
            |bytes| {
                pieces.push(bytes);
                std::future::ready(go_on)
            },
            |day| retired.push(day),
        )
        .await
        .unwrap();
    retired
}

/// A retired day gives its storage back a piece at a time (each index, then each table), at
/// the pace its caller sets, and is out of every query from the first piece; a release
/// stopped half-way is finished by the next pass.
#[tokio::test]
async fn retention_releases_a_day_in_pieces_and_finishes_a_stopped_release() {
    let app = spawn_app_keeping_logs().await;
    let client = app.db.connect().await;
    let webhook = uuid::Uuid::now_v7();
    let day = 24.0 * 3600.0;
    insert_attempted_log(&client, webhook, "old", "succeeded", 40.0 * day).await;
    let young = insert_log(
        &client,
        webhook,
        "acc",
        ("young", "Contact.created"),
        "succeeded",
        day,
    )
    .await;
    let suffix = (chrono::Utc::now() - chrono::Duration::days(40)).format("%Y%m%d");
    let tables: Vec<String> = ["delivery_attempts", "delivery_logs", "events"]
        .iter()
        .map(|t| format!("{t}_p{suffix}"))
        .collect();
    let indexes: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_index WHERE indrelid = ANY($1::text[]::regclass[])",
            &[&tables],
        )
        .await
        .unwrap()
        .get(0);
    assert!(indexes >= 10, "{indexes}");
    let store =
        hookrelay_store::Store::connect(&app.db.url(), &hookrelay_store::PoolOptions::default())
            .unwrap();
    // The end of the old day: the empty days seeded after it stay.
    let old_day = (chrono::Utc::now() - chrono::Duration::days(40)).date_naive();
    let cutoff = (old_day + chrono::Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();

    // Stopped after its first piece.
    let mut pieces = Vec::new();
    let retired = retire(&store, cutoff, &mut pieces, false).await;
    assert_eq!(pieces.len(), 1);
    assert_eq!(retired, vec![hookrelay_store::Retired::Dropped(old_day)]);
    let ids: Vec<String> = client
        .query("SELECT id::text FROM webhook_logs", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        ids,
        vec![young.clone()],
        "the day is out of every query at once"
    );
    let left: Vec<(String, bool, i64)> = client
        .query(
            "SELECT c.relname::text, c.relispartition,
                    (SELECT count(*) FROM pg_index x WHERE x.indrelid = c.oid)
             FROM pg_class c WHERE c.relname = ANY($1) ORDER BY c.relname",
            &[&tables],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.iter().all(|(_, partition, _)| !partition), "{left:?}");
    let indexes_left: i64 = left.iter().map(|(_, _, n)| n).sum();
    assert_eq!(indexes_left, indexes - 1, "one piece went: an index");

    // The next pass finishes it: every other index, then the three tables.
    let retired = retire(&store, cutoff, &mut pieces, true).await;
    assert!(retired.is_empty(), "{retired:?}");
    assert_eq!(pieces.len() as i64, indexes + 3);
    assert!(pieces.iter().all(|b| *b > 0), "{pieces:?}");
    let remaining: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = ANY($1)",
            &[&tables],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(remaining, 0);
    let kept = partitions(&client).await;
    let next_day = (old_day + chrono::Duration::days(1)).format("%Y%m%d");
    assert!(kept.contains(&format!("delivery_logs_p{next_day}")));
}

/// Retention drops whole days (events, logs and attempts) past `log_retention`, never a
/// row at a time; a day holding a log still under way is kept whole.
#[tokio::test]
async fn retention_drops_old_days_whole_and_keeps_days_with_unfinished_logs() {
    let app = spawn_app_keeping_logs().await;
    let client = app.db.connect().await;
    let webhook = uuid::Uuid::now_v7();
    let day = 24.0 * 3600.0;
    let (mut gone, mut kept) = (Vec::new(), Vec::new());
    for (event, status, age, goes) in [
        ("old_ok", "succeeded", 40.0 * day, true),
        ("old_failed", "failed", 32.0 * day, true),
        // Still under way, however old: its delivery still needs it, and its day stays.
        ("old_pending", "pending", 36.0 * day, false),
        ("old_retrying", "retrying", 38.0 * day, false),
        ("young_ok", "succeeded", 29.0 * day, false),
    ] {
        let id = insert_attempted_log(&client, webhook, event, status, age).await;
        if goes {
            gone.push(id)
        } else {
            kept.push(id)
        }
    }
    // A log of the kept day that finished: it stays with its day.
    kept.push(
        insert_log(
            &client,
            webhook,
            "acc",
            ("old_ok_beside_pending", "Contact.created"),
            "succeeded",
            36.0 * day,
        )
        .await,
    );
    let before = partitions(&client).await;
    let day_of = |age: f64| {
        (chrono::Utc::now() - chrono::Duration::milliseconds((age * 1000.0) as i64))
            .format("%Y%m%d")
            .to_string()
    };
    for table in ["events", "delivery_logs", "delivery_attempts"] {
        assert!(before.contains(&format!("{table}_p{}", day_of(40.0 * day))));
    }
    // A pass runs at start.
    let app = app
        .restart_with(|s| {
            s.log_retention =
                hookrelay::settings::HumanDuration(Duration::from_secs(30 * 24 * 3600));
        })
        .await;
    let client = app.db.connect().await;
    // A day's logs go first, then its events and attempts.
    let gone_days = [day_of(40.0 * day), day_of(32.0 * day)];
    let remaining: Vec<String> = wait_for("old days to go", DEADLINE, || async {
        let rows = client
            .query("SELECT id::text FROM webhook_logs ORDER BY created_at", &[])
            .await
            .ok()?;
        let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        // Gone from the parents, and their storage released (paced, after the detach).
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_class WHERE relkind = 'r'
                   AND (relname LIKE '%' || $1 OR relname LIKE '%' || $2)",
                &[&gone_days[0], &gone_days[1]],
            )
            .await
            .ok()?
            .get(0);
        let all_gone = left == 0;
        (ids.len() == kept.len() && all_gone).then_some(ids)
    })
    .await;
    let mut expected = kept.clone();
    expected.sort();
    let mut remaining_sorted = remaining.clone();
    remaining_sorted.sort();
    assert_eq!(remaining_sorted, expected);
    let after = partitions(&client).await;
    for (age, dropped) in [
        (40.0 * day, true),
        (32.0 * day, true),
        (36.0 * day, false),
        (38.0 * day, false),
        (29.0 * day, false),
    ] {
        for table in ["events", "delivery_logs", "delivery_attempts"] {
            let name = format!("{table}_p{}", day_of(age));
            assert_eq!(!after.contains(&name), dropped, "{name}");
            if dropped {
                let exists: bool = client
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
                    .await
                    .unwrap()
                    .get(0);
                assert!(!exists, "{name} is dropped, not left detached");
            }
        }
    }
    let attempts: i64 = client
        .query_one(
            "SELECT count(*) FROM webhook_attempts WHERE log_id::text = ANY($1)",
            &[&gone],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 0, "their attempts went with them");
    // Nothing was deleted row by row: the kept days hold every row they had.
    let deleted: i64 = client
        .query_one(
            "SELECT coalesce(sum(n_tup_del), 0)::bigint FROM pg_stat_user_tables
             WHERE relname LIKE 'delivery_logs_p%' OR relname LIKE 'events_p%'
                OR relname LIKE 'delivery_attempts_p%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(deleted, 0);
    // The pass goes on to the younger days past log_retention after the wait above, a day
    // detached before it is counted: the days gone and the counter agree once it is over.
    wait_for("the retired days counted", DEADLINE, || async {
        let metrics = app.call("GET", "/metrics", None, None).await.text;
        let counted: usize = metrics
            .lines()
            .find_map(|l| l.strip_prefix("hookrelay_log_days_retired_total "))?
            .parse()
            .ok()?;
        let now = partitions(&client).await;
        let gone = before
            .iter()
            .filter(|p| p.starts_with("delivery_logs_p") && !now.contains(*p))
            .count();
        (counted >= 2 && counted == gone).then_some(())
    })
    .await;
}
