//! Portal sessions: a short-lived token scoped to one account, with `read` or `manage`,
//! revocable per account, refused once expired, revoked or altered.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

/// A call with `token`.
async fn with(
    app: &TestApp,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> crate::helpers::Answer {
    let body = body.map(|b| b.to_string());
    app.call(method, path, Some(token), body.as_deref()).await
}

#[tokio::test]
async fn a_portal_session_sees_and_manages_its_own_account_only() {
    let app = spawn_app().await;
    let mine = app
        .webhook(
            "acc_a",
            "https://hooks.example.com/a",
            &["Contact.created"],
            json!({}),
        )
        .await;
    let theirs = app
        .webhook(
            "acc_b",
            "https://hooks.example.com/b",
            &["Contact.created"],
            json!({}),
        )
        .await;
    let opened = app.portal_session(json!({"account_id": "acc_a"})).await;
    let token = opened["token"].as_str().unwrap();
    assert!(token.starts_with("hrp_"));
    let url = opened["url"].as_str().unwrap();
    assert!(url.ends_with(&format!("/portal#token={token}")), "{url}");
    assert_eq!(opened["capabilities"], json!(["read", "manage"]));

    let me = with(&app, token, "GET", "/v1/whoami", None).await;
    assert_eq!(me.body["role"], "portal");
    assert_eq!(me.body["account_id"], "acc_a");
    let listed = with(&app, token, "GET", "/v1/webhooks", None).await;
    let ids: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![mine.as_str()]);
    let other = with(&app, token, "GET", &format!("/v1/webhooks/{theirs}"), None).await;
    assert_eq!(other.status, 404);
    let created = with(
        &app,
        token,
        "POST",
        "/v1/webhooks",
        Some(json!({"url": "https://hooks.example.com/c", "events": ["Contact.created"]})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["account_id"], "acc_a");
    // Never the admin's calls, nor the account's API keys.
    for (method, path, body) in [
        (
            "POST",
            "/v1/portal-sessions",
            Some(json!({"account_id": "acc_a"})),
        ),
        ("POST", "/v1/api-keys", Some(json!({"account_id": "acc_a"}))),
        ("POST", "/v1/event-types", Some(json!({"name": "X.y"}))),
    ] {
        let answer = with(&app, token, method, path, body).await;
        assert_eq!(answer.status, 403, "{method} {path}: {}", answer.text);
        assert_eq!(answer.error().0, "forbidden");
    }
}

#[tokio::test]
async fn a_read_session_cannot_change_anything() {
    let app = spawn_app().await;
    let id = app
        .webhook(
            "acc_a",
            "https://hooks.example.com/a",
            &["Contact.created"],
            json!({}),
        )
        .await;
    let opened = app
        .portal_session(json!({"account_id": "acc_a", "capabilities": ["read"]}))
        .await;
    let token = opened["token"].as_str().unwrap();
    assert_eq!(
        with(&app, token, "GET", &format!("/v1/webhooks/{id}"), None)
            .await
            .status,
        200
    );
    assert_eq!(with(&app, token, "GET", "/v1/logs", None).await.status, 200);
    for (method, path, body) in [
        (
            "POST",
            "/v1/webhooks".to_owned(),
            Some(json!({"url": "https://x.example.com", "events": ["Contact.created"]})),
        ),
        (
            "PATCH",
            format!("/v1/webhooks/{id}"),
            Some(json!({"description": "x"})),
        ),
        ("DELETE", format!("/v1/webhooks/{id}"), None),
        ("POST", format!("/v1/webhooks/{id}/test"), None),
        (
            "POST",
            format!("/v1/webhooks/{id}/rotate-secret"),
            Some(json!({})),
        ),
    ] {
        let answer = with(&app, token, method, &path, body).await;
        assert_eq!(answer.status, 403, "{method} {path}: {}", answer.text);
        assert_eq!(answer.error().0, "forbidden");
    }
    // Trying a filter changes nothing: a read session may.
    let tried = with(
        &app,
        token,
        "POST",
        "/v1/webhooks/filter-test",
        Some(json!({"filter": {"a": 1}, "payload": {"a": 1}})),
    )
    .await;
    assert_eq!(tried.status, 200, "{}", tried.text);
}

#[tokio::test]
async fn revoked_expired_and_altered_tokens_answer_401() {
    let app = spawn_app().await;
    let short = app
        .portal_session(json!({"account_id": "acc_a", "ttl_seconds": 60}))
        .await;
    let short = short["token"].as_str().unwrap().to_owned();
    let other = app.portal_session(json!({"account_id": "acc_b"})).await;
    let other = other["token"].as_str().unwrap().to_owned();
    assert_eq!(
        with(&app, &short, "GET", "/v1/webhooks", None).await.status,
        200
    );

    let (claims, mac) = short.split_once('.').unwrap();
    let mut altered = mac.to_owned();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'B' } else { 'A' });
    let tampered = with(
        &app,
        &format!("{claims}.{altered}"),
        "GET",
        "/v1/webhooks",
        None,
    )
    .await;
    assert_eq!(tampered.status, 401);

    let revoked = app
        .admin("DELETE", "/v1/portal-sessions?account_id=acc_a", None)
        .await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    let after = with(&app, &short, "GET", "/v1/webhooks", None).await;
    assert_eq!(after.status, 401);
    assert_eq!(after.error().0, "session_ended");
    // Another account's sessions go on; a new session of the revoked account works.
    assert_eq!(
        with(&app, &other, "GET", "/v1/webhooks", None).await.status,
        200
    );
    let fresh = app.portal_session(json!({"account_id": "acc_a"})).await;
    let fresh = fresh["token"].as_str().unwrap().to_owned();
    hookrelay_tests::wait_for(
        "a new session after the revocation",
        Duration::from_secs(5),
        || async {
            (with(&app, &fresh, "GET", "/v1/webhooks", None).await.status == 200).then_some(())
        },
    )
    .await;

    // The bounds of a session, and who may open one.
    for (body, field) in [
        (
            json!({"account_id": "acc_a", "ttl_seconds": 10}),
            "ttl_seconds",
        ),
        (
            json!({"account_id": "acc_a", "ttl_seconds": 604_801}),
            "ttl_seconds",
        ),
        (
            json!({"account_id": "acc_a", "capabilities": ["root"]}),
            "capabilities",
        ),
        (
            json!({"account_id": "acc_a", "capabilities": []}),
            "capabilities",
        ),
    ] {
        let answer = app
            .admin("POST", "/v1/portal-sessions", Some(body.clone()))
            .await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.text);
        assert_eq!(answer.error().1.as_deref(), Some(field));
    }
}

#[tokio::test]
async fn an_expired_session_answers_401() {
    let app = spawn_app().await;
    let token = app
        .portal_token("acc_a", chrono::Duration::seconds(-1))
        .await;
    let answer = with(&app, &token, "GET", "/v1/webhooks", None).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.error().0, "session_ended");
}
