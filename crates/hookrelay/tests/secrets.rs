//! Secrets never leave the service except where they must (the signature, and the one answer
//! that hands a generated secret out): a busy scenario runs `hookrelay serve` with debug
//! logging, and every secret it used is looked for in its whole log, its API answers, its
//! metrics and its tables.

// A test that cannot set up its world should stop there, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine as _;
use hookrelay_tests::receiver::{Behaviour, Receiver};
use hookrelay_tests::{amqp_url, verify_signature, wait_for, TestDb};
use serde_json::{json, Value};

const TOKEN: &str = "secrets-test-admin-token-0f1e2d3c";
const DEADLINE: Duration = Duration::from_secs(30);

async fn call(port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new()
        .request(method, format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_an_answer_a_metric_or_a_table() {
    let db = TestDb::new();
    let namespace = hookrelay_tests::unique_namespace();
    let sealing_key = base64::engine::general_purpose::STANDARD.encode(rand_bytes());
    let plain = "plain-secret-0123456789-abcdef";
    let whsec = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand_bytes())
    );
    let too_short = "short-secret-77";
    let header_value = "Bearer header-credential-5a4b3c2d1e";

    let mut env = hookrelay_tests::service_env(&db, &namespace, TOKEN);
    env.extend([
        ("HOOKRELAY_SECRET_KEY", sealing_key.clone()),
        ("HOOKRELAY_RETRY_SCHEDULE", "1s,1s".to_owned()),
        // What an operator chasing a problem would set, the database driver's chatter too.
        ("RUST_LOG", "debug,tokio_postgres=trace".to_owned()),
    ]);
    let mut service =
        hookrelay_tests::spawn_service(std::path::Path::new(env!("CARGO_BIN_EXE_hookrelay")), &env)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let port = service.port;

    let ok = Receiver::start().await;
    let flaky = Receiver::start().await;
    flaky.script([Behaviour::Status(500), Behaviour::Body(503, "busy".into())]);
    let (status, created) = call(
        port,
        "POST",
        "/v1/webhooks",
        Some(
            json!({"account_id": "acc", "url": ok.url, "events": ["Contact.created"],
                    "secret": plain, "headers": {"Authorization": header_value}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let a: Value = serde_json::from_str(&created).unwrap();
    let a_id = a["id"].as_str().unwrap().to_owned();
    let (status, created) = call(
        port,
        "POST",
        "/v1/webhooks",
        Some(
            json!({"account_id": "acc", "url": flaky.url, "events": ["Contact.created"],
                    "secret": whsec}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let b_id = serde_json::from_str::<Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, refused) = call(
        port,
        "POST",
        "/v1/webhooks",
        Some(
            json!({"account_id": "acc", "url": ok.url, "events": ["Contact.created"],
                    "secret": too_short}),
        ),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused.contains("secret_too_short"), "{refused}");
    // A rotation hands the new secret out once, in its own answer.
    let (status, rotated) = call(
        port,
        "POST",
        &format!("/v1/webhooks/{a_id}/rotate-secret"),
        Some(json!({"grace_seconds": 3600})),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let generated = serde_json::from_str::<Value>(&rotated).unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    let args = hookrelay::publish::PublishArgs {
        event_type: "Contact.created".into(),
        account_id: "acc".into(),
        data: "{\"n\":1}".into(),
        id: None,
        count: 20,
    };
    let ids = hookrelay::publish::publish(&amqp_url(), &namespace, Default::default(), &args)
        .await
        .expect("published")
        .ids;
    let got = ok.wait_for(ids.len(), DEADLINE).await;
    for request in &got {
        let signature = request.header("webhook-signature").unwrap();
        let (id, ts) = (
            request.header("webhook-id").unwrap(),
            request.header("webhook-timestamp").unwrap(),
        );
        assert!(verify_signature(
            &generated,
            id,
            ts,
            &request.body,
            signature
        ));
        assert!(verify_signature(plain, id, ts, &request.body, signature));
        assert_eq!(request.header("authorization"), Some(header_value));
    }
    // Two failures, then success: the retry path logs too.
    flaky.wait_for(ids.len() + 2, DEADLINE).await;

    let secrets = [
        plain,
        whsec.as_str(),
        &whsec["whsec_".len()..],
        generated.as_str(),
        &generated["whsec_".len()..],
        too_short,
        sealing_key.as_str(),
        header_value,
        TOKEN,
    ];
    let mut answers = Vec::new();
    for path in [
        "/v1/webhooks".to_owned(),
        format!("/v1/webhooks/{a_id}"),
        format!("/v1/webhooks/{b_id}"),
    ] {
        answers.push(call(port, "GET", &path, None).await.1);
    }
    answers.push(refused);
    answers.push(call(port, "GET", "/metrics", None).await.1);
    for answer in &answers {
        for secret in secrets.iter().filter(|s| **s != header_value) {
            assert!(
                !answer.contains(secret),
                "an answer shows a secret: {answer}"
            );
        }
    }

    // At rest: sealed, and not readable in the table.
    let client = db.connect().await;
    let rows = client
        .query(
            "SELECT secret, previous_secrets::text FROM webhooks ORDER BY created_at",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let secret: String = row.get(0);
        let previous: String = row.get(1);
        assert!(secret.starts_with("hookrelay-sealed:v1:"), "{secret}");
        for value in [&secret, &previous] {
            for s in &secrets[..6] {
                assert!(!value.contains(s), "a plain secret in the table");
            }
        }
    }
    let previous: String = rows[0].get(1);
    assert!(
        previous.contains("hookrelay-sealed:v1:"),
        "the rotated-out secret is sealed too: {previous}"
    );

    // Stop it the way an operator does, so the shutdown's lines are in the log too.
    let pid = service.child.id().expect("a pid").to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let _ = tokio::time::timeout(DEADLINE, service.child.wait()).await;
    let log = wait_for("the log to be read to its end", DEADLINE, || {
        let log = service.log.clone();
        async move {
            let lines = log.lock().unwrap().clone();
            lines
                .iter()
                .any(|l| l.contains("hookrelay stopped"))
                .then_some(lines)
        }
    })
    .await;
    assert!(
        log.len() > 50,
        "a busy debug log ({} lines) to search",
        log.len()
    );
    for secret in secrets {
        if let Some(line) = log.iter().find(|line| line.contains(secret)) {
            panic!("a secret is in the service log: {line}");
        }
    }
    hookrelay_tests::delete_namespace(&amqp_url(), &namespace, &[a_id, b_id]).await;
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for (i, b) in uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .chain(uuid::Uuid::new_v4().as_bytes())
        .enumerate()
    {
        bytes[i] = *b;
    }
    bytes
}

#[test]
fn reencrypt_without_a_key_does_not_decrypt_by_accident() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"));
        command.env_clear().args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().expect("hookrelay runs")
    };
    let refused = run(&["reencrypt"], &[]);
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("--decrypt"), "{said}");
    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    let refused = run(
        &["reencrypt", "--decrypt"],
        &[("HOOKRELAY_SECRET_KEY", &key)],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&refused.stderr).contains(&key));
}
