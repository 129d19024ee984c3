//! One tenant cannot hurt the others: every count and size an account controls has a named
//! limit with a clear 4xx, and input outside what the service can store is refused with a
//! reason rather than a 500.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use hookrelay_tests::receiver::{Behaviour, Receiver};
use hookrelay_tests::wait_for;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};
use crate::retries::wait_for_status;

const DEADLINE: Duration = Duration::from_secs(30);

/// The log of one event delivered to a new webhook of `acc` on `receiver`.
async fn one_delivered_log(app: &TestApp, receiver: &Receiver) -> String {
    let webhook = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let event = app
        .publish("Contact.created", "acc", json!({}), 1)
        .await
        .remove(0);
    wait_for_status(app, &webhook, &event, "succeeded").await.0
}

#[tokio::test]
async fn dates_out_of_range_are_refused_with_422_not_500() {
    let app = spawn_app().await;
    let id = app
        .webhook(
            "acc",
            "http://127.0.0.1:9/hook",
            &["Contact.created"],
            json!({}),
        )
        .await;
    // Before 4713 BC PostgreSQL has no timestamp; past 9999 RFC 3339 has no year.
    let (ancient, far) = ("-4714-01-01T00:00:00Z", "%2B10000-01-01T00:00:00Z");
    for (query, field) in [
        (format!("since={ancient}"), "since"),
        (format!("until={far}"), "until"),
        (format!("since=2026-01-01T00:00:00Z&until={far}"), "until"),
    ] {
        let answer = app.admin("GET", &format!("/v1/logs?{query}"), None).await;
        assert_eq!(answer.status, 422, "{query}: {}", answer.text);
        assert_eq!(
            answer.error(),
            ("out_of_range".to_owned(), Some(field.to_owned())),
            "{query}"
        );
    }
    for (path, body) in [
        ("/v1/logs/retry".to_owned(), json!({"since": ancient})),
        (
            format!("/v1/webhooks/{id}/recover"),
            json!({"since": "2026-01-01T00:00:00Z", "until": "+10000-01-01T00:00:00Z"}),
        ),
    ] {
        let answer = app.admin("POST", &path, Some(body.clone())).await;
        assert_eq!(answer.status, 422, "{path} {body}: {}", answer.text);
        assert_eq!(answer.error().0, "out_of_range", "{path}");
    }
}

#[tokio::test]
async fn a_log_retried_by_hand_while_its_row_is_locked_is_queued_not_404() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let log_id = one_delivered_log(&app, &receiver).await;

    // Another transaction holds the log's row, as the attempt writer does while it commits.
    let mut db = app.db.connect().await;
    let holder = db.transaction().await.expect("a transaction");
    holder
        .execute(
            "SELECT 1 FROM delivery_logs WHERE id = $1::text::uuid FOR UPDATE",
            &[&log_id],
        )
        .await
        .expect("the row locked");
    let retry = {
        let app = &app;
        let path = format!("/v1/logs/{log_id}/retry");
        async move { app.admin("POST", &path, None).await }
    };
    let watcher = app.db.connect().await;
    let release = async {
        // Held until the retry is seen waiting for it.
        wait_for("the retry waits for the row lock", DEADLINE, || async {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .ok()?
                .get(0);
            (waiting > 0).then_some(())
        })
        .await;
        holder.commit().await.expect("released");
    };
    let (answer, ()) = tokio::join!(retry, release);
    assert_eq!(answer.status, 202, "{}", answer.text);
    receiver.wait_for(2, DEADLINE).await;
}

#[tokio::test]
async fn rotations_without_end_keep_a_few_old_secrets_signing() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let id = app
        .webhook(
            "acc",
            &receiver.url,
            &["Contact.created"],
            json!({"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
        )
        .await;
    let mut newest = String::new();
    for _ in 0..12 {
        let rotated = app
            .admin(
                "POST",
                &format!("/v1/webhooks/{id}/rotate-secret"),
                Some(json!({"grace_seconds": 604800})),
            )
            .await;
        assert_eq!(rotated.status, 200, "{}", rotated.text);
        newest = rotated.body["secret"]
            .as_str()
            .expect("a secret")
            .to_owned();
    }
    let sent = app
        .admin("POST", &format!("/v1/webhooks/{id}/test"), None)
        .await;
    assert_eq!(sent.status, 202, "{}", sent.text);
    let got = receiver.wait_for(1, DEADLINE).await;
    let signatures = got[0].header("webhook-signature").expect("signed");
    assert_eq!(
        signatures.split(' ').count(),
        1 + hookrelay_store::MAX_PREVIOUS_SECRETS,
        "{signatures}"
    );
    assert!(hookrelay_tests::verify_signature(
        &newest,
        got[0].header("webhook-id").unwrap_or_default(),
        got[0].header("webhook-timestamp").unwrap_or_default(),
        &got[0].body,
        signatures,
    ));
}

#[tokio::test]
async fn an_api_key_is_revoked_through_the_api_by_the_admin_or_its_own_account() {
    let app = spawn_app().await;
    let make = |account: &'static str| {
        let app = &app;
        async move {
            let made = app
                .admin("POST", "/v1/api-keys", Some(json!({"account_id": account})))
                .await;
            assert_eq!(made.status, 201, "{}", made.text);
            let id = made.body["id"].as_str().expect("an id").to_owned();
            let key = made.body["key"].as_str().expect("a key").to_owned();
            (id, key)
        }
    };
    let (_, key_a1) = make("acc_a").await;
    let (a2, key_a2) = make("acc_a").await;
    let (b1, key_b1) = make("acc_b").await;
    let whoami = |key: String| {
        let app = &app;
        async move { app.call("GET", "/v1/whoami", Some(&key), None).await.status }
    };
    assert_eq!(whoami(key_a2.clone()).await, 200);

    // Another account's key is not found; the account's own key revokes its other key.
    let path = |id: &str| format!("/v1/api-keys/{id}");
    let answer = app.call("DELETE", &path(&b1), Some(&key_a1), None).await;
    assert_eq!(answer.status, 404, "{}", answer.text);
    assert_eq!(whoami(key_b1.clone()).await, 200, "acc_b's key still works");
    let answer = app.call("DELETE", &path(&a2), Some(&key_a1), None).await;
    assert_eq!(answer.status, 204, "{}", answer.text);
    assert_eq!(whoami(key_a2).await, 401, "revoked at once");
    let again = app.call("DELETE", &path(&a2), Some(&key_a1), None).await;
    assert_eq!(again.status, 404, "revoked already");

    // The admin revokes any key.
    let answer = app.admin("DELETE", &path(&b1), None).await;
    assert_eq!(answer.status, 204, "{}", answer.text);
    assert_eq!(whoami(key_b1).await, 401);
    let bad = app.admin("DELETE", "/v1/api-keys/not-a-uuid", None).await;
    assert_eq!(bad.status, 404);
    assert_eq!(whoami(key_a1).await, 200);
}

#[tokio::test]
async fn webhooks_per_account_stop_at_the_quota_with_429() {
    let app = spawn_app_with(|s| s.max_webhooks_per_account = 3).await;
    let body = |account: &str| json!({"account_id": account, "url": "http://127.0.0.1:9/hook", "events": ["Contact.created"]});
    // Five at once for three places: exactly three are made.
    let attempts: Vec<_> = (0..5)
        .map(|_| app.admin("POST", "/v1/webhooks", Some(body("acc_a"))))
        .collect();
    let answers = futures::future::join_all(attempts).await;
    let made: Vec<String> = answers
        .iter()
        .filter(|a| a.status == 201)
        .map(|a| a.body["id"].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(
        made.len(),
        3,
        "{:?}",
        answers.iter().map(|a| &a.text).collect::<Vec<_>>()
    );
    for refused in answers.iter().filter(|a| a.status != 201) {
        assert_eq!(refused.status, 429, "{}", refused.text);
        assert_eq!(refused.error().0, "quota_exceeded");
        assert!(
            refused.text.contains("max_webhooks_per_account"),
            "{}",
            refused.text
        );
    }
    // Another account has places of its own, and cannot move a webhook into a full one.
    let other = app.create_webhook(body("acc_b")).await;
    let other = other["id"].as_str().expect("an id");
    let moved = app
        .admin(
            "PATCH",
            &format!("/v1/webhooks/{other}"),
            Some(json!({"account_id": "acc_a"})),
        )
        .await;
    assert_eq!(moved.status, 429, "{}", moved.text);
    // A place freed is a place taken again; a change within the account is no new place.
    let deleted = app
        .admin("DELETE", &format!("/v1/webhooks/{}", made[0]), None)
        .await;
    assert_eq!(deleted.status, 204);
    app.create_webhook(body("acc_a")).await;
    let renamed = app
        .admin(
            "PATCH",
            &format!("/v1/webhooks/{}", made[1]),
            Some(json!({"account_id": "acc_a", "description": "still three"})),
        )
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);
}

#[tokio::test]
async fn custom_headers_and_descriptions_have_size_limits() {
    let app = spawn_app().await;
    let with = |extra: serde_json::Value| {
        let mut body = json!({"account_id": "acc", "url": "http://127.0.0.1:9/hook",
                              "events": ["Contact.created"]});
        body.as_object_mut()
            .expect("an object")
            .extend(extra.as_object().expect("an object").clone());
        body
    };
    let many: serde_json::Map<String, serde_json::Value> = (0..=hookrelay_core::MAX_HEADERS)
        .map(|i| (format!("X-H{i}"), json!("v")))
        .collect();
    let big: serde_json::Map<String, serde_json::Value> = (0..3)
        .map(|i| (format!("X-Big{i}"), json!("v".repeat(3000))))
        .collect();
    for (what, extra, field) in [
        ("21 headers", json!({"headers": many}), "headers"),
        ("9 KB of headers", json!({"headers": big}), "headers"),
        (
            "a long description",
            json!({"description": "d".repeat(hookrelay_core::MAX_DESCRIPTION_CHARS + 1)}),
            "description",
        ),
    ] {
        let answer = app.admin("POST", "/v1/webhooks", Some(with(extra))).await;
        assert_eq!(answer.status, 422, "{what}: {}", answer.text);
        assert_eq!(
            answer.error(),
            ("too_large".to_owned(), Some(field.to_owned())),
            "{what}"
        );
    }
    // At the limits, accepted.
    let most: serde_json::Map<String, serde_json::Value> = (0..hookrelay_core::MAX_HEADERS)
        .map(|i| (format!("X-H{i:02}"), json!("v".repeat(300))))
        .collect();
    let answer = app
        .admin("POST", "/v1/webhooks", Some(with(json!({"headers": most}))))
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
}

#[tokio::test]
async fn a_page_of_big_webhooks_is_bounded_in_bytes_and_pages_on() {
    let app = spawn_app_with(|s| s.max_webhooks_per_account = 200).await;
    // Webhooks at the limits of what a list shows (header values are masked): 20 headers with
    // 120-byte names, a URL of 2 000 bytes, the longest description. About 6 KiB each.
    let headers: serde_json::Map<String, serde_json::Value> = (0..hookrelay_core::MAX_HEADERS)
        .map(|i| {
            (
                format!("X-H{i:02}-{}", "n".repeat(115)),
                json!("v".repeat(200)),
            )
        })
        .collect();
    let url = format!("http://127.0.0.1:9/{}", "p".repeat(1980));
    let body = json!({"account_id": "acc", "url": url,
                      "events": ["Contact.created"], "headers": headers,
                      "description": "d".repeat(hookrelay_core::MAX_DESCRIPTION_CHARS)});
    // Sixteen at a time: one credential has max_requests_per_client under way at most.
    let made: Vec<_> = futures::stream::iter(0..200)
        .map(|_| app.admin("POST", "/v1/webhooks", Some(body.clone())))
        .buffer_unordered(16)
        .collect()
        .await;
    for answer in made {
        assert_eq!(answer.status, 201, "{}", answer.text);
    }
    let mut seen = std::collections::HashSet::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let answer = app
            .admin(
                "GET",
                &format!("/v1/webhooks?limit=500&cursor={cursor}"),
                None,
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let one = 12 * 1024;
        assert!(
            answer.text.len() <= hookrelay_api::MAX_PAGE_BYTES + one,
            "a page of {} bytes",
            answer.text.len()
        );
        pages += 1;
        for item in answer.body["items"].as_array().expect("items") {
            assert!(seen.insert(item["id"].as_str().expect("an id").to_owned()));
        }
        match answer.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 200, "every webhook once, in {pages} pages");
    assert!(pages >= 2, "a page of 200 such webhooks is over the bound");
}

#[tokio::test]
async fn a_log_with_endless_attempts_answers_a_bounded_page_of_them() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let log_id = one_delivered_log(&app, &receiver).await;
    // As a thousand retries by hand would leave it, without the thousand deliveries.
    let db = app.db.connect().await;
    db.execute(
        "INSERT INTO delivery_attempts (log_id, log_created_at, webhook_id, attempt, started_at,
                                        duration_ms, response_status)
         SELECT l.id, l.created_at, l.webhook_id, n, now() - (1200 - n) * interval '1 second',
                5, 200
         FROM delivery_logs l, generate_series(2, 1200) AS n
         WHERE l.id = $1::text::uuid",
        &[&log_id],
    )
    .await
    .expect("attempts");
    let detail = app.admin("GET", &format!("/v1/logs/{log_id}"), None).await;
    assert_eq!(detail.status, 200, "{}", detail.text);
    let shown = detail.body["attempts"].as_array().expect("attempts");
    assert_eq!(shown.len(), hookrelay_store::ATTEMPTS_SHOWN);
    assert_eq!(detail.body["attempts_total"], 1200);
    assert_eq!(shown[0]["attempt"], 1101, "the latest, oldest first");
    assert_eq!(shown[99]["attempt"], 1200);
    assert!(detail.text.len() < 64 * 1024, "{} bytes", detail.text.len());
    // The older ones, a page at a time, newest first, down to the first.
    let mut cursor = detail.body["older_attempts_cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    let mut next_expected = 1100;
    loop {
        let page = app
            .admin(
                "GET",
                &format!("/v1/logs/{log_id}/attempts?limit=500&cursor={cursor}"),
                None,
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        for item in page.body["items"].as_array().expect("items") {
            assert_eq!(item["attempt"], next_expected);
            next_expected -= 1;
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(next_expected, 0, "every attempt, down to the first");
    let other = app
        .admin(
            "GET",
            &format!("/v1/logs/{}/attempts", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(other.status, 404);
}

#[tokio::test]
async fn one_accounts_hanging_endpoints_do_not_delay_another_accounts_deliveries() {
    // 70 new webhooks of one account (nothing says yet that they fail) at an endpoint that
    // accepts and never answers, each sent /test sixteen times: 1 120 requests, more than
    // max_in_flight_total (1 024). The account may hold a quarter of it. The requests time out
    // only after the longest timeout allowed: one that ended while a slow machine was still
    // sending the /test calls would free its slot for another and break the count.
    const TOTAL: usize = 1024;
    let app = spawn_app_with(|s| {
        s.max_in_flight_total = TOTAL;
        s.max_in_flight_per_account = None;
        s.request_timeout = hookrelay::settings::HumanDuration(Duration::from_secs(300));
        s.retry_schedule = crate::retries::schedule("1h");
    })
    .await;
    let share = TOTAL / 4;
    let hanging = Receiver::start().await;
    hanging.answer(Behaviour::Hang);
    let healthy = Receiver::start().await;
    let mut webhooks = Vec::new();
    for _ in 0..70 {
        webhooks.push(
            app.webhook("acc_a", &hanging.url, &["Contact.created"], json!({}))
                .await,
        );
    }
    app.webhook("acc_b", &healthy.url, &["Contact.created"], json!({}))
        .await;
    let tests: Vec<_> = futures::stream::iter(webhooks.iter().cycle().take(70 * 16))
        .map(|id| {
            let path = format!("/v1/webhooks/{id}/test");
            let app = &app;
            async move { app.admin("POST", &path, None).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for answer in tests {
        assert_eq!(answer.status, 202, "{}", answer.text);
    }
    wait_for("acc_a's share taken", DEADLINE, || async {
        (hanging.count() >= share).then_some(())
    })
    .await;
    let published = Instant::now();
    let ids = app.publish("Contact.created", "acc_b", json!({}), 1).await;
    healthy.wait_for_events(&ids, DEADLINE).await;
    let took = published.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "acc_b's delivery took {took:?}"
    );
    assert_eq!(hanging.count(), share, "acc_a holds its share and no more");
}

#[tokio::test]
async fn the_queues_of_many_deleted_webhooks_are_gone_within_seconds() {
    let app = spawn_app_with(|s| s.max_webhooks_per_account = 700).await;
    let body = json!({"account_id": "acc", "url": "http://127.0.0.1:9/hook",
                      "events": ["Contact.created"]});
    let made: Vec<_> = futures::stream::iter(0..600)
        .map(|_| app.admin("POST", "/v1/webhooks", Some(body.clone())))
        .buffer_unordered(16)
        .collect()
        .await;
    let ids: Vec<String> = made
        .iter()
        .map(|a| a.body["id"].as_str().expect("an id").to_owned())
        .collect();
    let prefix = format!("{}.webhook.", app.namespace);
    let webhook_queues = || async {
        hookrelay_tests::rabbitmqctl(&["list_queues", "--quiet", "--no-table-headers", "name"])
            .await
            .lines()
            .filter(|name| name.starts_with(&prefix))
            .count()
    };
    wait_for("every webhook queue declared", DEADLINE, || async {
        (webhook_queues().await == 600).then_some(())
    })
    .await;
    let deleted: Vec<_> = futures::stream::iter(ids.iter())
        .map(|id| {
            let app = &app;
            let path = format!("/v1/webhooks/{id}");
            async move { app.admin("DELETE", &path, None).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(deleted.iter().all(|a| a.status == 204));
    let started = Instant::now();
    wait_for(
        "every deleted webhook's queue removed",
        DEADLINE,
        || async { (webhook_queues().await == 0).then_some(()) },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the queues took {:?} to go",
        started.elapsed()
    );
}

#[tokio::test]
async fn thirty_bulk_retries_at_once_share_one_requeue_rate_and_count_each_log_once() {
    const RATE: u32 = 50;
    const LOGS: usize = 500;
    let app = spawn_app_with(|s| s.requeue_rate = RATE).await;
    let receiver = Receiver::start().await;
    let webhook = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    app.failed_logs(&webhook, LOGS).await;
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let calls = futures::future::join_all((0..30).map(|_| {
        app.admin(
            "POST",
            "/v1/logs/retry",
            Some(json!({"account_id": "acc", "since": since})),
        )
    }))
    .await;
    let counts: Vec<i64> = calls
        .iter()
        .map(|a| {
            assert_eq!(a.status, 202, "{}", a.text);
            a.body["count"].as_i64().expect("a count")
        })
        .collect();
    assert_eq!(
        counts.iter().sum::<i64>(),
        LOGS as i64,
        "each log counted by one call: {counts:?}"
    );
    let got = receiver.wait_for(LOGS, Duration::from_secs(60)).await;
    // After the budget's first second, the rate of all the jobs together.
    let first = got.iter().map(|r| r.at).min().expect("deliveries");
    let (from, to) = (
        first + Duration::from_secs(1),
        first + Duration::from_secs(9),
    );
    let within = got.iter().filter(|r| r.at >= from && r.at < to).count();
    // The budget is a bucket holding up to a second of the rate: a pipeline held up for a
    // moment (a loaded machine) finds it full again, so 8 s may see 9 s of the rate, never
    // thirty jobs' worth.
    let (low, high) = (8 * RATE as usize, 9 * RATE as usize);
    assert!(
        within * 10 >= low * 9 && within * 20 <= high * 21,
        "{within} deliveries in 8 s at a requeue_rate of {RATE}"
    );
    assert_eq!(receiver.event_ids().len(), LOGS, "each log sent once");
}

#[tokio::test]
async fn slow_bodies_trickled_with_a_valid_key_cannot_lock_the_listener() {
    use tokio::io::AsyncWriteExt as _;
    rlimit::increase_nofile_limit(16_384).expect("a higher open file limit");
    let app = spawn_app().await;
    let (hostile, other) = (app.api_key("acc_a").await, app.api_key("acc_b").await);
    let address = app.address.trim_start_matches("http://").to_owned();
    // More connections than max_connections (1 024), each authenticated, each sending a
    // request head and then a body that never ends.
    let head = format!(
        "POST /v1/webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {hostile}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"url\":"
    );
    let mut held = Vec::with_capacity(1100);
    for _ in 0..1100 {
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .expect("a connection");
        // A refused one may be closed under the write: that is the point.
        let _ = stream.write_all(head.as_bytes()).await;
        held.push(stream);
    }
    // Health and readiness answer at once, on fresh connections, however many times. A
    // listener held by the trickled bodies would keep them waiting for a body deadline
    // (seconds): a second is far below that, and above what a busy machine's scheduling adds.
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("a client")
    };
    for _ in 0..10 {
        for path in ["/healthz", "/readyz"] {
            let asked = Instant::now();
            let answer = fresh()
                .get(format!("{}{path}", app.address))
                .send()
                .await
                .expect("an answer");
            let took = asked.elapsed();
            assert_eq!(answer.status(), 200, "{path}");
            assert!(took < Duration::from_secs(1), "{path} took {took:?}");
        }
    }
    // Another account is served.
    let answer = fresh()
        .get(format!("{}/v1/webhooks", app.address))
        .bearer_auth(&other)
        .send()
        .await
        .expect("an answer");
    assert_eq!(answer.status(), 200);
    drop(held);
}

#[tokio::test]
async fn made_up_tokens_share_their_address_allowance_until_one_authenticates() {
    let app = spawn_app_with(|s| s.max_requests_per_client = 4).await;
    let key = app.api_key("acc").await;
    // Key lookups wait while the table is locked: requests are held before authenticating.
    let mut db = app.db.connect().await;
    let lock = db.transaction().await.expect("a transaction");
    lock.batch_execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("the lock");
    let mut answers: futures::stream::FuturesUnordered<_> = (0..10)
        .map(|n| {
            let app = &app;
            async move {
                let token = format!("hr_made_up_{n}");
                app.call("GET", "/v1/webhooks", Some(&token), None).await
            }
        })
        .collect();
    // Six are refused at once, while the four admitted wait for the lock.
    let mut first = Vec::new();
    while first.len() < 6 {
        let answer = tokio::time::timeout(DEADLINE, answers.next())
            .await
            .expect("six answers while the lookups wait")
            .expect("an answer");
        assert_eq!(answer.status, 429, "{}", answer.text);
        first.push(answer);
    }
    lock.rollback().await.expect("the lock let go");
    let rest: Vec<_> = answers.collect().await;
    assert_eq!(rest.len(), 4);
    for answer in &rest {
        assert_eq!(answer.status, 401, "{}", answer.text);
    }
    let answers = first;
    let refused = answers.iter().find(|a| a.status == 429).expect("a refusal");
    assert!(
        refused.text.contains("max_requests_per_client"),
        "{}",
        refused.text
    );
    // A valid key from the same address is served: it counts against itself once known.
    let answer = app.call("GET", "/v1/webhooks", Some(&key), None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}
