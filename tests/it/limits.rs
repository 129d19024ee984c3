//! One tenant cannot hurt the others: every count and size an account controls has a named
//! limit with a clear 4xx, and input outside what the service can store is refused with a
//! reason rather than a 500.

use std::time::Duration;

use hookrelay_tests::receiver::Receiver;
use serde_json::json;

use crate::helpers::spawn_app;
use crate::retries::wait_for_status;

const DEADLINE: Duration = Duration::from_secs(30);

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
    let webhook = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let event = app
        .publish("Contact.created", "acc", json!({}), 1)
        .await
        .remove(0);
    let (log_id, _) = wait_for_status(&app, &webhook, &event, "succeeded").await;

    // Another transaction holds the log's row, as the attempt writer does while it commits.
    let mut db = app.db.connect().await;
    let holder = db.transaction().await.expect("a transaction");
    holder
        .execute(
            "SELECT 1 FROM webhook_logs WHERE id = $1::text::uuid FOR UPDATE",
            &[&log_id],
        )
        .await
        .expect("the row locked");
    let retry = {
        let app = &app;
        let path = format!("/v1/logs/{log_id}/retry");
        async move { app.admin("POST", &path, None).await }
    };
    let release = async {
        // Held for a while, so that the retry meets the lock.
        tokio::time::sleep(Duration::from_millis(300)).await;
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
