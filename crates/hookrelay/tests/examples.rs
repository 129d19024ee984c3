//! The example receivers and publisher (docs/integrating.md), run as their users would run
//! them, against a real hookrelay: the receivers verify real deliveries, drop hookrelay's
//! second send of an event as a duplicate, and refuse a forged and a replayed request; the
//! Python publisher's event is delivered, and its malformed one is confirmed, then rejected
//! with a reason.
//!
//! Their dependencies (`scripts/test-tools.sh`, which `make test` runs first): the PyPI
//! packages of `examples/*/python/requirements.txt` (into `.venv`) and `npm ci` in
//! `examples/receivers/node`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::{create_webhook, create_webhook_from, publish_events, spawn, TOKEN};
use hookrelay_core::{signing, Secret};
use hookrelay_tests::receiver::Receiver;
use hookrelay_tests::{amqp_url, metric, unique_namespace, wait_for, TestDb};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

const DEADLINE: Duration = Duration::from_secs(60);

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An example program running, with every line it printed on stdout and stderr.
struct Example {
    _child: tokio::process::Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Example {
    fn run(program: &str, script: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = tokio::process::Command::new(program)
            .arg(repository().join(script))
            .args(args)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{program} runs: {e}"));
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Self {
            _child: child,
            stdout,
            stderr,
        }
    }

    /// Waits for a stdout line starting with `prefix`; on the deadline, fails with what the
    /// program said (a missing dependency shows there).
    async fn line(&self, prefix: &str) -> String {
        wait_for(&format!("a line {prefix:?}"), DEADLINE, || async {
            let found = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
                .cloned();
            // Nothing on stdout yet means it did not start: what it said shows why.
            if self.stdout.lock().unwrap().is_empty() && !self.stderr.lock().unwrap().is_empty() {
                eprintln!("stderr so far: {:?}", self.stderr.lock().unwrap());
            }
            found
        })
        .await
    }

    fn count(&self, prefix: &str) -> usize {
        let lines = self.stdout.lock().unwrap();
        lines.iter().filter(|l| l.starts_with(prefix)).count()
    }
}

fn collect(stream: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = lines.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            kept.lock().unwrap().push(line);
        }
    });
    lines
}

/// Sends the receiver a request as hookrelay would, signed with `signed_by`, stamped `age`
/// ago; answers the HTTP status.
async fn send(url: &str, signed_by: &Secret, age: Duration) -> u16 {
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({"id": id, "type": "Message.received", "account_id": "acc",
                      "timestamp": "2026-11-27T00:00:00Z", "data": {}})
    .to_string();
    let timestamp = chrono::Utc::now().timestamp() - age.as_secs() as i64;
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            signing::sign(signed_by, &id, timestamp, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn receiver_verifies_dedupes_and_refuses(program: &str, script: &str) {
    let db = TestDb::new();
    let namespace = unique_namespace();
    let _cleanup =
        hookrelay_tests::NamespaceCleanup::new(&hookrelay_tests::amqp_url(), &namespace, &db);
    let service = spawn(&db, &namespace, &[]).await;
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes().repeat(2))
    );
    let receiver = Example::run(
        program,
        script,
        &[],
        &[("PORT", "0"), ("WEBHOOK_SECRET", &secret)],
    );
    let listening = receiver.line("listening ").await;
    let url = format!(
        "http://127.0.0.1:{}/hooks",
        &listening["listening ".len()..]
    );
    create_webhook_from(
        service.port,
        json!({"account_id": "acc", "url": url, "events": ["Message.received"], "secret": secret}),
    )
    .await;

    let ids = publish_events(&namespace, "{\"n\":1}", 3).await;
    for id in &ids {
        receiver
            .line(&format!("verified {id} Message.received"))
            .await;
    }

    // hookrelay sends one of them again (a retry by hand): same webhook-id, fresh signature.
    let first = ids.iter().next().unwrap();
    let client = db.connect().await;
    let log: uuid::Uuid = client
        .query_one("SELECT id FROM webhook_logs WHERE event_id = $1", &[first])
        .await
        .unwrap()
        .get(0);
    let retried = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v1/logs/{log}/retry",
            service.port
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(retried.status().is_success(), "{}", retried.status());
    receiver.line(&format!("duplicate {first}")).await;

    // A request signed with another secret, and a well-signed one from ten minutes ago.
    let genuine = Secret::parse(&secret).unwrap();
    let forger = Secret::parse("whsec_Zm9yZ2VkIGtleSBvZiBmb3J0eSBieXRlcyBsb25nLg==").unwrap();
    assert_eq!(send(&url, &forger, Duration::ZERO).await, 400);
    assert_eq!(send(&url, &genuine, Duration::from_secs(600)).await, 400);
    wait_for("both refusals printed", DEADLINE, || async {
        (receiver.count("rejected ") == 2).then_some(())
    })
    .await;
    // And the check itself is right: the same request, fresh, passes.
    // The receiver prints before it answers.
    assert_eq!(send(&url, &genuine, Duration::ZERO).await, 204);
    assert_eq!(receiver.count("verified "), ids.len() + 1);
}

#[tokio::test]
async fn the_python_receiver_verifies_real_deliveries() {
    receiver_verifies_dedupes_and_refuses("python3", "examples/receivers/python/receiver.py").await;
}

#[tokio::test]
async fn the_python_standard_library_receiver_verifies_real_deliveries() {
    receiver_verifies_dedupes_and_refuses(
        "python3",
        "examples/receivers/python-stdlib/receiver.py",
    )
    .await;
}

#[tokio::test]
async fn the_node_receiver_verifies_real_deliveries() {
    receiver_verifies_dedupes_and_refuses("node", "examples/receivers/node/receiver.js").await;
}

#[tokio::test]
async fn the_python_publishers_event_is_delivered_and_a_malformed_one_rejected() {
    let db = TestDb::new();
    let namespace = unique_namespace();
    let _cleanup =
        hookrelay_tests::NamespaceCleanup::new(&hookrelay_tests::amqp_url(), &namespace, &db);
    let service = spawn(&db, &namespace, &[]).await;
    let receiver = Receiver::start().await;
    create_webhook(service.port, &receiver.url, "Contact.created").await;
    let env = [
        ("AMQP_URL", amqp_url()),
        ("HOOKRELAY_NAMESPACE", namespace.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let publisher = Example::run(
        "python3",
        "examples/publishers/python/publish.py",
        &["Contact.created", "acc", r#"{"name":"Ada"}"#],
        &env,
    );
    let published = publisher.line("published ").await;
    let id = published["published ".len()..].to_owned();
    receiver.wait_for_events([&id], DEADLINE).await;
    let delivered = receiver.received();
    assert_eq!(delivered[0].json()["data"], json!({"name": "Ada"}));

    // An event type not in the catalog: the broker confirms it (the checks are hookrelay's),
    // then hookrelay rejects it with the reason, and delivers nothing.
    let malformed = Example::run(
        "python3",
        "examples/publishers/python/publish.py",
        &["Contact.exploded", "acc", "{}"],
        &env,
    );
    malformed.line("published ").await;
    let metrics_url = format!("http://127.0.0.1:{}/metrics", service.port);
    wait_for("the event rejected", DEADLINE, || async {
        let text = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
        let rejected = metric(
            &text,
            "hookrelay_events_rejected_total{reason=\"unknown_event_type\"}",
        );
        (rejected == 1.0).then_some(())
    })
    .await;
    assert_eq!(receiver.count(), 1);
}
