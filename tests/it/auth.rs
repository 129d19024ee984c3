use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, ADMIN_TOKEN};

#[tokio::test]
async fn v1_needs_a_valid_token() {
    let app = spawn_app().await;
    for (method, path) in [
        ("GET", "/v1/webhooks"),
        ("POST", "/v1/webhooks"),
        ("GET", "/v1/event-types"),
        ("POST", "/v1/event-types"),
        ("POST", "/v1/api-keys"),
        ("GET", "/v1/webhooks/00000000-0000-0000-0000-000000000000"),
    ] {
        for token in [None, Some("wrong"), Some(""), Some("hr_notakey")] {
            let answer = app.call(method, path, token, Some("{}")).await;
            assert_eq!(
                answer.status, 401,
                "{method} {path} with {token:?}: {}",
                answer.text
            );
            assert_eq!(answer.error().0, "unauthorized");
        }
    }
    // Basic auth with the right secret is still not a bearer token.
    let basic = app
        .client
        .get(format!("{}/v1/webhooks", app.address))
        .basic_auth(ADMIN_TOKEN, None::<&str>)
        .send()
        .await
        .expect("an answer");
    assert_eq!(basic.status().as_u16(), 401);
    let ok = app
        .call("GET", "/v1/webhooks", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn without_an_admin_token_every_call_is_refused_with_how_to_fix_it() {
    let app = spawn_app_with(|s| s.admin_token = None).await;
    for token in [None, Some(ADMIN_TOKEN)] {
        let answer = app.call("GET", "/v1/event-types", token, None).await;
        assert_eq!(answer.status, 401);
        assert_eq!(answer.error().0, "admin_token_unset");
        let message = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("HOOKRELAY_ADMIN_TOKEN"), "{message}");
    }
    // Health and metrics need no token.
    assert_eq!(app.call("GET", "/healthz", None, None).await.status, 200);
    assert_eq!(app.call("GET", "/metrics", None, None).await.status, 200);
}

#[tokio::test]
async fn account_keys_reach_only_their_own_account() {
    let app = spawn_app().await;
    let key_answer = app
        .admin("POST", "/v1/api-keys", Some(json!({"account_id": "acc_a"})))
        .await;
    assert_eq!(key_answer.status, 201, "{}", key_answer.text);
    assert_eq!(key_answer.body["account_id"], "acc_a");
    let key = key_answer.body["key"]
        .as_str()
        .expect("the key, once")
        .to_owned();
    assert!(key.starts_with("hr_") && key.len() > 30, "{key}");

    let db = app.db.connect().await;
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM api_keys WHERE key_prefix || '' <> $1",
            &[&key],
        )
        .await
        .expect("a count")
        .get(0);
    assert_eq!(stored, 1, "the key itself is not stored");

    let theirs = app
        .create_webhook(json!({"account_id": "acc_b", "url": "http://127.0.0.1/b", "events": ["Contact.created"]}))
        .await;
    let theirs_id = theirs["id"].as_str().expect("id");

    // An account key may omit account_id; the webhook lands in its own account.
    let body = json!({"url": "http://127.0.0.1/a", "events": ["Contact.created"]}).to_string();
    let mine = app
        .call("POST", "/v1/webhooks", Some(&key), Some(&body))
        .await;
    assert_eq!(mine.status, 201, "{}", mine.text);
    assert_eq!(mine.body["account_id"], "acc_a");
    let mine_id = mine.body["id"].as_str().expect("id");

    let listed = app.call("GET", "/v1/webhooks", Some(&key), None).await;
    let items = listed.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], mine_id);
    let asked_other = app
        .call("GET", "/v1/webhooks?account_id=acc_b", Some(&key), None)
        .await;
    assert_eq!(asked_other.body["items"], json!([]));

    for (method, path) in [
        ("GET", format!("/v1/webhooks/{theirs_id}")),
        ("PATCH", format!("/v1/webhooks/{theirs_id}")),
        ("DELETE", format!("/v1/webhooks/{theirs_id}")),
        ("POST", format!("/v1/webhooks/{theirs_id}/disable")),
        ("POST", format!("/v1/webhooks/{theirs_id}/enable")),
    ] {
        let answer = app.call(method, &path, Some(&key), Some("{}")).await;
        assert_eq!(answer.status, 404, "{method} {path}: {}", answer.text);
    }
    let still_there = app
        .admin("GET", &format!("/v1/webhooks/{theirs_id}"), None)
        .await;
    assert_eq!(still_there.body["status"], "active");

    let into_other =
        json!({"account_id": "acc_b", "url": "http://127.0.0.1/a", "events": ["Contact.created"]})
            .to_string();
    let refused = app
        .call("POST", "/v1/webhooks", Some(&key), Some(&into_other))
        .await;
    assert_eq!(refused.status, 422);
    assert_eq!(refused.error().1.as_deref(), Some("account_id"));
    let moved = app
        .call(
            "PATCH",
            &format!("/v1/webhooks/{mine_id}"),
            Some(&key),
            Some(r#"{"account_id":"acc_b"}"#),
        )
        .await;
    assert_eq!(moved.status, 422);

    // Admin-only calls.
    let new_key = app
        .call(
            "POST",
            "/v1/api-keys",
            Some(&key),
            Some(r#"{"account_id":"acc_a"}"#),
        )
        .await;
    assert_eq!(new_key.status, 401);
    let new_type = app
        .call(
            "POST",
            "/v1/event-types",
            Some(&key),
            Some(r#"{"name":"X.y"}"#),
        )
        .await;
    assert_eq!(new_type.status, 401);
    assert_eq!(new_type.error().0, "admin_only");
    // Reading the catalog is fine.
    assert_eq!(
        app.call("GET", "/v1/event-types", Some(&key), None)
            .await
            .status,
        200
    );
}
