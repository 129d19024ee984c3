//! Secrets at rest: sealed under `secret_key`, rows from before still working, keys rotated
//! with `old_secret_keys` and `hookrelay reencrypt`, and a missing key refused loudly.

use std::time::Duration;

use base64::Engine as _;
use hookrelay_tests::receiver::Receiver;
use hookrelay_tests::verify_signature;
use serde_json::json;

use crate::helpers::{spawn_app, TestApp};

const DEADLINE: Duration = Duration::from_secs(30);
const PLAIN_ROW_SECRET: &str = "stored-before-encryption-0001";
const SEALED_ROW_SECRET: &str = "stored-after-encryption-00002";

fn key(n: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([n; 32])
}

/// The key id a sealed value names (`hookrelay-sealed:v1:<id>:...`) of every stored secret.
async fn stored_key_ids(app: &TestApp) -> Vec<Option<String>> {
    let client = app.db.connect().await;
    client
        .query("SELECT secret FROM webhooks ORDER BY created_at", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let secret: String = row.get(0);
            secret
                .strip_prefix("hookrelay-sealed:v1:")
                .and_then(|rest| rest.split_once(':'))
                .map(|(id, _)| id.to_owned())
        })
        .collect()
}

/// Publishes one event and checks that each receiver gets it signed with its secret.
async fn delivered_signed(app: &TestApp, receivers: &[(&Receiver, &str)], round: usize) {
    let ids = app
        .publish("Contact.created", "acc", json!({"round": round}), 1)
        .await;
    for (receiver, secret) in receivers {
        // A restart may redeliver an earlier round's event (at least once),
        // so wait for this round's id rather than for a count.
        receiver.wait_for_events(&ids[..1], DEADLINE).await;
        let got = receiver.received();
        let last = got
            .iter()
            .find(|r| r.header("webhook-id") == Some(ids[0].as_str()))
            .expect("this round's event");
        assert!(
            verify_signature(
                secret,
                last.header("webhook-id").unwrap(),
                last.header("webhook-timestamp").unwrap(),
                &last.body,
                last.header("webhook-signature").unwrap(),
            ),
            "round {round}: signed with the webhook's secret"
        );
    }
}

#[tokio::test]
async fn secrets_are_sealed_rotated_and_reencrypted() {
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    // Before encryption: stored as given.
    let app = spawn_app().await;
    app.webhook(
        "acc",
        &first.url,
        &["Contact.created"],
        json!({"secret": PLAIN_ROW_SECRET}),
    )
    .await;
    assert_eq!(stored_key_ids(&app).await, vec![None]);

    // secret_key set: new secrets are sealed, the plain row keeps working.
    let app = app.restart_with(|s| s.secret_key = Some(key(1))).await;
    app.webhook(
        "acc",
        &second.url,
        &["Contact.created"],
        json!({"secret": SEALED_ROW_SECRET}),
    )
    .await;
    let ids = stored_key_ids(&app).await;
    assert_eq!(ids[0], None);
    let first_key = ids[1].clone().expect("sealed");
    let pairs = [(&first, PLAIN_ROW_SECRET), (&second, SEALED_ROW_SECRET)];
    delivered_signed(&app, &pairs, 1).await;

    // A new key, the old one kept for opening: everything still signs.
    let app = app
        .restart_with(|s| {
            s.secret_key = Some(key(2));
            s.old_secret_keys = Some(key(1));
        })
        .await;
    delivered_signed(&app, &pairs, 2).await;

    // `hookrelay reencrypt` moves every secret to the new key; twice is harmless.
    let settings = app.settings().clone();
    let (rewritten, seen) = hookrelay::reencrypt(&settings).await.expect("re-encrypted");
    assert_eq!((rewritten, seen), (2, 2));
    assert_eq!(hookrelay::reencrypt(&settings).await.unwrap(), (0, 2));
    let ids = stored_key_ids(&app).await;
    assert!(
        ids.iter()
            .all(|id| id.is_some() && *id != Some(first_key.clone())),
        "{ids:?}"
    );

    // So the old key can go.
    let app = app.restart_with(|s| s.old_secret_keys = None).await;
    delivered_signed(&app, &pairs, 3).await;

    // Without the key that sealed them, the service refuses to start, and says why.
    let mut wrong = app.settings().clone();
    wrong.secret_key = Some(key(3));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let failed = hookrelay::Application::build(wrong, shutdown.clone()).await;
    shutdown.cancel();
    let message = format!("{:#}", failed.err().expect("start-up fails"));
    assert!(
        message.contains("neither secret_key nor one of old_secret_keys"),
        "{message}"
    );
    assert!(!message.contains(&key(3)) && !message.contains(SEALED_ROW_SECRET));
}

#[tokio::test]
async fn custom_header_values_are_sealed_masked_and_kept_when_sent_back_masked() {
    let receiver = Receiver::start().await;
    let app = crate::helpers::spawn_app_with(|s| s.secret_key = Some(key(1))).await;
    let id = app
        .webhook(
            "acc",
            &receiver.url,
            &["Contact.created"],
            json!({"headers": {"X-Api-Key": "k_live_123", "X-Team": "crm"}}),
        )
        .await;
    // At rest: sealed, for its own header of its own webhook.
    let client = app.db.connect().await;
    let stored: serde_json::Value = client
        .query_one("SELECT headers FROM webhooks", &[])
        .await
        .unwrap()
        .get(0);
    for name in ["X-Api-Key", "X-Team"] {
        let value = stored[name].as_str().expect("a stored value");
        assert!(value.starts_with("hookrelay-sealed:v1:"), "{name}: {value}");
    }
    assert!(!stored.to_string().contains("k_live_123"));

    // Answered masked, to an account key as to the admin; revealed to the admin who asks.
    let account_key = app.api_key("acc").await;
    let path = format!("/v1/webhooks/{id}");
    let shown = app.call("GET", &path, Some(&account_key), None).await;
    assert_eq!(
        shown.body["headers"],
        json!({"X-Api-Key": "********", "X-Team": "********"})
    );
    let refused = app
        .call(
            "GET",
            &format!("{path}?reveal=headers"),
            Some(&account_key),
            None,
        )
        .await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    let revealed = app
        .admin("GET", &format!("{path}?reveal=headers"), None)
        .await;
    assert_eq!(
        revealed.body["headers"],
        json!({"X-Api-Key": "k_live_123", "X-Team": "crm"})
    );

    // Sent back as answered, with one value changed: the masked one keeps its value.
    let patched = app
        .call(
            "PATCH",
            &path,
            Some(&account_key),
            Some(&json!({"headers": {"X-Api-Key": "********", "X-Team": "billing"}}).to_string()),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let ids = app.publish("Contact.created", "acc", json!({}), 1).await;
    receiver.wait_for_events(&ids, DEADLINE).await;
    let got = &receiver.received()[0];
    assert_eq!(got.header("x-api-key"), Some("k_live_123"));
    assert_eq!(got.header("x-team"), Some("billing"));

    // Names are case-insensitive; a mask with no value behind it is refused, on a change as
    // on a creation, never stored as the value.
    let patched = app
        .admin(
            "PATCH",
            &path,
            Some(json!({"headers": {"x-api-key": "********"}})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let revealed = app
        .admin("GET", &format!("{path}?reveal=headers"), None)
        .await;
    assert_eq!(revealed.body["headers"], json!({"x-api-key": "k_live_123"}));
    let refused = app
        .admin(
            "PATCH",
            &path,
            Some(json!({"headers": {"X-New": "********"}})),
        )
        .await;
    assert_eq!(refused.error().0, "invalid_header", "{}", refused.text);
    let refused = app
        .admin(
            "POST",
            "/v1/webhooks",
            Some(json!({"account_id": "acc", "url": receiver.url,
                        "events": ["Contact.created"], "headers": {"X-A": "********"}})),
        )
        .await;
    assert_eq!(refused.error().0, "invalid_header", "{}", refused.text);
}
