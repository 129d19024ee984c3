//! Hostile input and hostile clients: each case here broke the service once (issue 7).

use std::time::Duration;

use hookrelay_tests::receiver::Receiver;
use hookrelay_tests::{metric, wait_for};
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

const DEADLINE: Duration = Duration::from_secs(30);

/// Waits until the rejected queue has held `n` messages, and answers them.
async fn rejected(app: &TestApp, n: usize) -> Vec<(String, String, Vec<u8>)> {
    let mut seen = Vec::new();
    wait_for(
        &format!("{n} events in the rejected queue"),
        DEADLINE,
        || {
            let fut = app.rejected_messages();
            let mut taken = std::mem::take(&mut seen);
            async move {
                taken.extend(fut.await);
                (taken.len() >= n).then_some(taken)
            }
        },
    )
    .await
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn deep_events_are_rejected_and_never_hold_back_good_ones() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    app.webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    // About 40 KB each: small, but PostgreSQL's jsonb parser would run out of stack on them.
    let deep: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            format!(
                r#"{{"id":"deep_{i}","account_id":"acc","data":{}}}"#,
                nested(20_000)
            )
            .into_bytes()
        })
        .collect();
    let mut good = Vec::new();
    for (round, deep) in deep.iter().enumerate() {
        app.publish_raw("Contact.created", deep).await;
        good.extend(
            app.publish("Contact.created", "acc", json!({"round": round}), 25)
                .await,
        );
    }
    let started = std::time::Instant::now();
    receiver.wait_for(good.len(), DEADLINE).await;
    let took = started.elapsed();
    let refused = rejected(&app, 4).await;
    assert_eq!(refused.len(), 4);
    for (reason, error, _) in &refused {
        assert_eq!(reason, "too_deep", "{error}");
        assert!(error.contains("64 levels"), "{error}");
    }
    assert_eq!(receiver.event_ids().len(), good.len());
    assert!(
        !receiver
            .event_ids()
            .iter()
            .any(|id| id.starts_with("deep_")),
        "nothing deep was delivered"
    );
    // The good events waited for no retry of a batch: the deep ones never reached the
    // database. (A figure for the record, not a timing assertion.)
    eprintln!("100 good events beside 4 deep ones delivered in {took:?}");
}

#[tokio::test]
async fn operational_events_cannot_be_forged() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    app.webhook(
        "acc",
        &receiver.url,
        &[
            "Webhook.disabled",
            "Webhook.delivery.failed",
            "Contact.created",
        ],
        json!({}),
    )
    .await;
    let forged = br#"{"id":"forged_1","account_id":"acc","data":{"webhook_id":"00000000-0000-0000-0000-000000000001","url":"https://x.test","reason":"forged"}}"#;
    app.publish_raw("Webhook.disabled", forged).await;
    // A tag that is not hookrelay's for this body: made up, or a genuine one of another body.
    let key: Vec<u8> = app
        .db
        .connect()
        .await
        .query_one(
            "SELECT key FROM service_keys WHERE name = 'event_origin'",
            &[],
        )
        .await
        .expect("the origin key was made at start")
        .get(0);
    let genuine = hookrelay_core::ops::OriginKey::new(key.try_into().expect("64 bytes"))
        .tag(b"{\"another\":\"body\"}");
    for (n, tag) in [
        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
        genuine,
    ]
    .into_iter()
    .enumerate()
    {
        let headers = hookrelay_broker::Headers {
            origin_tag: Some(tag),
            ..hookrelay_broker::Headers::default()
        };
        let tagged =
            format!(r#"{{"id":"forged_tag_{n}","account_id":"acc","data":{{"log_id":"x"}}}}"#);
        app.publish_raw_with("Webhook.delivery.failed", tagged.as_bytes(), headers)
            .await;
    }
    // And by `type`, with no routing key.
    let typed = br#"{"id":"forged_3","type":"Webhook.test","account_id":"acc","data":{}}"#;
    app.publish_raw("", typed).await;
    let good = app
        .publish("Contact.created", "acc", json!({"ok": true}), 1)
        .await;

    let refused = rejected(&app, 4).await;
    assert_eq!(refused.len(), 4);
    for (reason, error, body) in &refused {
        assert_eq!(reason, "reserved_event_type", "{error}");
        assert!(error.contains("hookrelay's own"), "{error}");
        assert!(body.starts_with(b"{\"id\":\"forged_"));
    }
    // Every forged event is in the rejected queue, so none can still be delivered.
    receiver.wait_for(1, DEADLINE).await;
    assert_eq!(
        receiver.event_ids(),
        [good[0].clone()].into_iter().collect()
    );
    let metrics = app.call("GET", "/metrics", None, None).await.text;
    assert!(
        metrics.contains("hookrelay_events_rejected_total{reason=\"reserved_event_type\"} 4"),
        "{metrics}"
    );
}

#[tokio::test]
async fn answers_never_show_internals_and_tampered_cursors_are_refused() {
    use base64::Engine as _;
    let app = spawn_app().await;
    let forge = |raw: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    for cursor in [
        forge("9223372036854775807|00000000-0000-0000-0000-000000000000"),
        forge("-9000000000000000000|00000000-0000-0000-0000-000000000000"),
        forge("253402300800000000|00000000-0000-0000-0000-000000000000"),
        forge("1700000000000000|a\u{0}b"),
        "%%%".to_owned(),
    ] {
        for list in ["/v1/webhooks", "/v1/event-types"] {
            let answer = app
                .admin("GET", &format!("{list}?cursor={cursor}"), None)
                .await;
            assert_eq!(answer.status, 422, "{list} {cursor}: {}", answer.text);
            assert_eq!(
                answer.error(),
                ("invalid_cursor".into(), Some("cursor".into())),
                "{list} {cursor}"
            );
        }
    }
    // A key of another list's kind: event type names are keys there, not here.
    let other = app
        .admin(
            "GET",
            &format!(
                "/v1/webhooks?cursor={}",
                forge("1700000000000000|Contact.created")
            ),
            None,
        )
        .await;
    assert_eq!(other.error().0, "invalid_cursor");
    for body in ["null", "[]", "1", "\"x\"", "true"] {
        let answer = app
            .call(
                "POST",
                "/v1/webhooks",
                Some(crate::helpers::ADMIN_TOKEN),
                Some(body),
            )
            .await;
        assert!(
            matches!(answer.status, 400 | 422),
            "{body}: {}",
            answer.text
        );
        answer.error();
        for internal in ["struct", "Create", "Body", "hookrelay_", "::"] {
            assert!(!answer.text.contains(internal), "{body}: {}", answer.text);
        }
    }
    // A path that is no UTF-8 is no resource, said in the error shape.
    for path in ["/v1/webhooks/%FF", "/v1/webhooks/%C3%28/enable"] {
        let method = if path.ends_with("enable") {
            "POST"
        } else {
            "GET"
        };
        let answer = app.admin(method, path, None).await;
        assert_eq!(answer.status, 404, "{path}: {}", answer.text);
        assert_eq!(answer.error().0, "not_found", "{path}");
    }
    // Oversized URLs and headers answer in the error shape.
    let long = format!("/v1/webhooks?account_id={}", "a".repeat(9000));
    let answer = app.admin("GET", &long, None).await;
    assert_eq!(answer.status, 400, "{}", answer.text);
    assert_eq!(answer.error().0, "url_too_long");
    let response = app
        .client
        .get(format!("{}/v1/webhooks", app.address))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .header("x-padding", "p".repeat(40 * 1024))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.expect("the error shape");
    assert_eq!(body["error"]["code"], "headers_too_large");
}

#[tokio::test]
async fn every_metric_family_is_there_from_the_start() {
    let app = spawn_app().await;
    let text = app.call("GET", "/metrics", None, None).await.text;
    for line in [
        "hookrelay_events_received_total{event_type=\"Contact.created\"} 0",
        "hookrelay_events_received_total{event_type=\"Webhook.disabled\"} 0",
        "hookrelay_events_rejected_total{reason=\"not_json\"} 0",
        "hookrelay_events_rejected_total{reason=\"too_deep\"} 0",
        "hookrelay_events_rejected_total{reason=\"reserved_event_type\"} 0",
        "hookrelay_events_rejected_total{reason=\"refused_by_database\"} 0",
        "hookrelay_deliveries_enqueued_total 0",
        "hookrelay_delivery_attempts_total{outcome=\"success\"} 0",
        "hookrelay_delivery_attempts_total{outcome=\"blocked\"} 0",
        "hookrelay_delivery_attempt_duration_seconds_count 0",
        "hookrelay_deliveries_completed_total{status=\"failed\"} 0",
        "hookrelay_delivery_latency_seconds_count 0",
        "hookrelay_webhooks_disabled_total 0",
        "hookrelay_inflight_deliveries 0",
        "hookrelay_delivery_retries_total 0",
        "hookrelay_deliveries_requeued_total 0",
        "hookrelay_webhook_queues_lost_total 0",
        "hookrelay_webhooks_paused 0",
        "hookrelay_http_connections_shed_total{reason=\"evicted\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[tokio::test]
async fn an_idle_connection_storm_leaves_deliveries_and_readiness_alone() {
    const CAP: usize = 64;
    // More idle sockets than the process could hold twice (client and server side) within
    // its open file limit, as far as the limit allows: without the cap, the listener would
    // run the process out of descriptors and deliveries would fail with EMFILE.
    // Under `cargo test` every test shares this process and its descriptors: a smaller storm
    // there, so the others do not run out; nextest gives each test a process of its own.
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("the file limit");
    let own_process = std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test");
    let storm_size = if own_process {
        usize::try_from(limit.saturating_sub(3_000))
            .unwrap_or(12_000)
            .clamp(1_000, 12_000)
    } else {
        1_000
    };
    let app = spawn_app_with(|s| {
        s.max_connections = CAP;
        // Long enough that the storm's sockets stay for the whole test: only the cap and
        // eviction protect the service here, not the timeouts.
        s.header_read_timeout = hookrelay::settings::HumanDuration(Duration::from_secs(120));
    })
    .await;
    let receiver = Receiver::start().await;
    app.webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    // Half-sent requests, as a slowloris client leaves them.
    let mut storm = Vec::with_capacity(storm_size);
    for _ in 0..storm_size {
        let mut socket = tokio::net::TcpStream::connect(&address)
            .await
            .expect("the listener accepts");
        let _ = socket
            .write_all(b"POST /v1/webhooks HTTP/1.1\r\nHost: x\r\nContent-")
            .await;
        storm.push(socket);
    }
    // With the storm held open, readiness answers at once, on a fresh connection each time.
    for _ in 0..5 {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            reqwest::Client::new()
                .get(format!("{}/readyz", app.address))
                .send(),
        )
        .await
        .expect("/readyz answers within 5 s")
        .expect("/readyz answers");
        assert_eq!(answer.status().as_u16(), 200);
    }
    let ids = app
        .publish("Contact.created", "acc", json!({"n": 1}), 200)
        .await;
    receiver.wait_for(ids.len(), DEADLINE).await;
    assert_eq!(receiver.event_ids().len(), ids.len());
    let text = app.call("GET", "/metrics", None, None).await.text;
    let open = metric(&text, "hookrelay_http_connections");
    assert!(
        open <= (CAP + 2) as f64,
        "{open} connections open, cap {CAP}"
    );
    let evicted = metric(
        &text,
        "hookrelay_http_connections_shed_total{reason=\"evicted\"}",
    );
    assert!(
        evicted >= (storm_size - CAP) as f64,
        "{evicted} idle connections evicted"
    );
    drop(storm);
}

#[tokio::test]
async fn idle_and_slow_clients_are_cut_off() {
    use tokio::io::AsyncReadExt as _;
    let app = spawn_app_with(|s| {
        s.header_read_timeout = hookrelay::settings::HumanDuration(Duration::from_secs(1));
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    // Headers never finished: closed after the header timeout.
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buffer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buffer))
        .await
        .expect("the server closes a connection whose headers never end")
        .ok();
    eprintln!("half-sent headers closed after {:?}", started.elapsed());
    // A kept-alive connection with nothing more to ask: closed after the same timeout.
    let mut idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut answer))
        .await
        .expect("the server closes an idle kept-alive connection")
        .ok();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // Both are gone from the listener's count (the metrics call is the one left open).
    wait_for("the cut-off connections to be closed", DEADLINE, || async {
        let text = app.call("GET", "/metrics", None, None).await.text;
        (metric(&text, "hookrelay_http_connections") <= 1.0).then_some(())
    })
    .await;
}

/// One generated message for the ingest exchange: its routing key and body.
#[derive(Debug, Clone)]
struct Generated {
    routing_key: String,
    body: Vec<u8>,
}

/// Envelopes as upstream services get them wrong (and right): every field valid, missing, of
/// the wrong type or out of bounds; `data` any JSON, nested up to 100 deep, with the strings
/// PostgreSQL refuses; then, sometimes, the bytes cut or garbled. `i` makes valid ids unique.
fn envelope_strategy() -> impl proptest::strategy::Strategy<Value = (Generated, bool)> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        "\\PC{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just(r#""\u0000""#.to_owned()),
        Just(r#""\ud800""#.to_owned()),
        Just(r#""\\u0000""#.to_owned()),
    ];
    let value = leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec(("[a-z]{1,5}", inner), 0..4).prop_map(|v| {
                let fields: Vec<String> =
                    v.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    });
    let data = prop_oneof![
        4 => value.prop_map(Some),
        1 => (1usize..100).prop_map(|d| Some(nested(d))),
        1 => Just(None),
    ];
    let id = prop_oneof![
        20 => Just(Some("VALID".to_owned())),
        1 => Just(Some("\"\"".to_owned())),
        1 => Just(Some("7".to_owned())),
        1 => Just(Some(format!("\"{}\"", "x".repeat(200)))),
        1 => Just(Some("\"a\\u0001b\"".to_owned())),
        1 => Just(None),
    ];
    let account = prop_oneof![
        20 => Just(Some("\"acc\"".to_owned())),
        1 => Just(Some("\"\"".to_owned())),
        1 => Just(Some("[\"acc\"]".to_owned())),
        1 => Just(Some("\" acc\"".to_owned())),
        1 => Just(None),
    ];
    let key = prop_oneof![
        10 => Just("Contact.created"),
        5 => Just("Message.received"),
        1 => Just(""),
        1 => Just("Unknown.type"),
        1 => Just("Webhook.disabled"),
    ];
    let declared = prop_oneof![
        10 => Just(None),
        1 => Just(Some("\"Contact.created\"")),
        1 => Just(Some("\"Message.received\"")),
        1 => Just(Some("\"Webhook.test\"")),
        1 => Just(Some("42")),
    ];
    let occurred = prop_oneof![
        10 => Just(None),
        1 => Just(Some("\"2026-01-02T03:04:05Z\"")),
        1 => Just(Some("\"yesterday\"")),
        1 => Just(Some("5")),
    ];
    let garble = prop_oneof![
        20 => Just(None),
        1 => (0usize..64).prop_map(|n| Some((true, n))),
        1 => (0usize..64).prop_map(|n| Some((false, n))),
    ];
    (id, account, key, declared, occurred, data, garble).prop_map(
        |(id, account, key, declared, occurred, data, garble)| {
            let mut fields = Vec::new();
            let valid_id = id.as_deref() == Some("VALID");
            if let Some(id) = id {
                fields.push(format!("\"id\":{id}"));
            }
            if let Some(account) = account {
                fields.push(format!("\"account_id\":{account}"));
            }
            if let Some(declared) = declared {
                fields.push(format!("\"type\":{declared}"));
            }
            if let Some(occurred) = occurred {
                fields.push(format!("\"occurred_at\":{occurred}"));
            }
            if let Some(data) = data {
                fields.push(format!("\"data\":{data}"));
            }
            let mut body = format!("{{{}}}", fields.join(",")).into_bytes();
            match garble {
                Some((true, n)) => body.truncate(body.len().saturating_sub(n + 1)),
                Some((false, n)) => body.extend(std::iter::repeat_n(b'\xff', n + 1)),
                None => {}
            }
            (
                Generated {
                    routing_key: key.to_owned(),
                    body,
                },
                valid_id,
            )
        },
    )
}

#[tokio::test]
async fn generated_envelopes_are_each_accepted_or_rejected_with_a_reason() {
    use proptest::strategy::{Strategy as _, ValueTree as _};
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    const CASES: usize = 500;
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    app.webhook(
        "acc",
        &receiver.url,
        &["Contact.created", "Message.received"],
        json!({}),
    )
    .await;
    // Deterministic: a failure is the same failure when run again.
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = envelope_strategy();
    let mut published = Vec::with_capacity(CASES);
    for i in 0..CASES {
        let (mut message, valid_id) = strategy.new_tree(&mut runner).unwrap().current();
        if valid_id {
            let text = String::from_utf8_lossy(&message.body).replacen(
                "VALID",
                &format!("\"gen_{i}\""),
                1,
            );
            // Only where the body was UTF-8 to begin with; garbled ones stay garbled.
            if std::str::from_utf8(&message.body).is_ok() {
                message.body = text.into_bytes();
            }
        }
        published.push(message);
    }
    {
        let (connection, mut publisher) = app.publisher().await;
        let exchange = hookrelay_broker::Topology::new(&app.namespace).events_exchange();
        let outgoing: Vec<hookrelay_broker::Outgoing> = published
            .iter()
            .map(|message| hookrelay_broker::Outgoing {
                exchange: exchange.clone(),
                routing_key: message.routing_key.clone(),
                body: message.body.clone(),
                content_type: None,
                headers: hookrelay_broker::Headers::default(),
                durability: hookrelay_broker::Durability::Persistent,
            })
            .collect();
        publisher
            .publish_all(&outgoing, &mut hookrelay_broker::NoRoutes)
            .await
            .unwrap();
        publisher.close().await;
        let _ = connection.close().await;
    }
    // Then one plain good event: the consumer is still moving after all of them.
    let last = app
        .publish("Contact.created", "acc", json!({"last": true}), 1)
        .await;

    let client = app.db.connect().await;
    let mut refused: Vec<(String, String, Vec<u8>)> = Vec::new();
    let started = std::time::Instant::now();
    let logged = loop {
        refused.extend(app.rejected_messages().await);
        let logged: std::collections::HashSet<String> = client
            .query("SELECT event_id FROM webhook_logs", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let missing: Vec<usize> = (0..CASES)
            .filter(|i| {
                !logged.contains(&format!("gen_{i}"))
                    && !refused.iter().any(|(_, _, b)| *b == published[*i].body)
            })
            .collect();
        if missing.is_empty() && logged.contains(&last[0]) {
            break logged;
        }
        assert!(
            started.elapsed() < DEADLINE * 2,
            "neither accepted nor rejected: {:?}",
            missing.iter().map(|i| &published[*i]).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reasons: Vec<&str> = hookrelay_core::RejectReason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    for (reason, error, _) in &refused {
        assert!(
            reasons.contains(&reason.as_str()),
            "unknown reason {reason}"
        );
        assert!(!error.is_empty() && !error.contains('\n'), "{error}");
    }
    let accepted = (0..CASES)
        .filter(|i| logged.contains(&format!("gen_{i}")))
        .count();
    assert_eq!(accepted + refused.len(), CASES, "each one exactly once");
    assert!(
        accepted > 0 && !refused.is_empty(),
        "both kinds were generated"
    );
    eprintln!("{accepted} accepted, {} rejected", refused.len());
}

#[tokio::test]
async fn rows_saved_before_the_rules_keep_working() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let id = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    // As a webhook saved by an earlier release: a plain secret shorter than today's minimum,
    // and a header that is reserved now beside one that is not.
    app.db
        .connect()
        .await
        .execute(
            "UPDATE webhooks SET secret = 'short-old', \
             headers = '{\"X-Key\": \"k1\", \"Expect\": \"100-continue\"}' \
             WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    // The change reaches the service through its notification; wait until it signs.
    let got = wait_for(
        "a delivery signed with the stored secret",
        DEADLINE,
        || async {
            let ids = app
                .publish("Contact.created", "acc", json!({"n": 1}), 1)
                .await;
            receiver.wait_for_events(&ids, DEADLINE).await;
            let request = receiver
                .received()
                .into_iter()
                .find(|r| r.header("webhook-id") == Some(ids[0].as_str()))?;
            let signature = request.header("webhook-signature")?.to_owned();
            hookrelay_tests::verify_signature(
                "short-old",
                request.header("webhook-id")?,
                request.header("webhook-timestamp")?,
                &request.body,
                &signature,
            )
            .then_some(request)
        },
    )
    .await;
    assert_eq!(got.header("x-key"), Some("k1"));
    assert_eq!(
        got.header("expect"),
        None,
        "the reserved header is left out"
    );
    // Saving it again holds it to today's rules.
    let answer = app
        .admin(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(json!({"secret": "short-old"})),
        )
        .await;
    assert_eq!(answer.error().0, "secret_too_short");
}

#[tokio::test]
async fn at_the_cap_with_every_connection_busy_a_new_one_is_told_so_and_probes_still_answer() {
    use tokio::io::AsyncReadExt as _;
    let app = spawn_app_with(|s| {
        s.max_connections = 1;
        s.max_requests_per_client = 1;
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let busy_request = format!(
        "POST /v1/webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 100\r\n\r\n{{",
        crate::helpers::ADMIN_TOKEN
    );
    let ask = |request: &'static str| {
        let address = address.clone();
        async move {
            let mut other = tokio::net::TcpStream::connect(&address).await.unwrap();
            let _ = other.write_all(request.as_bytes()).await;
            let mut text = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), other.read_to_end(&mut text)).await;
            String::from_utf8_lossy(&text).into_owned()
        }
    };
    let started = std::time::Instant::now();
    let mut busy: Option<tokio::net::TcpStream> = None;
    let answer = loop {
        assert!(
            started.elapsed() < DEADLINE,
            "no connection was turned away with 503"
        );
        let Some(_) = &busy else {
            // Busy once its head is read: the handler waits for the rest of its body.
            let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
            socket.write_all(busy_request.as_bytes()).await.unwrap();
            busy = Some(socket);
            // Nothing outside the server tells when a head has been read: a short pause, and
            // a new try below should it not have been enough.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let text =
            ask("GET /v1/event-types HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        if text.starts_with("HTTP/1.1 503") {
            break text;
        }
        // The first one was still idle (its head not read yet) and made room: again.
        busy = None;
    };
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let body: serde_json::Value = serde_json::from_str(body).expect("the error shape");
    assert_eq!(body["error"]["code"], "unavailable");
    // Health, readiness and metrics still answer, on the connections kept for them.
    for probe in [
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let text = ask(probe).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{probe}: {text}");
    }
    drop(busy);
}
