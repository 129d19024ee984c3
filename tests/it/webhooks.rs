use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with};

fn valid() -> Value {
    json!({
        "account_id": "acc_1",
        "url": "http://127.0.0.1:9000/hook",
        "events": ["Contact.created", "Message.received"],
    })
}

fn with(field: &str, value: Value) -> Value {
    let mut body = valid();
    body[field] = value;
    body
}

#[tokio::test]
async fn crud_round_trip() {
    let app = spawn_app().await;
    let created = app
        .create_webhook(json!({
            "account_id": "acc_1",
            "url": "https://hooks.example.com/in",
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "headers": {"X-Api-Key": "k1"},
            "events": ["Contact.created", "Contact.created", "Template.status"],
            "description": "CRM sync",
        }))
        .await;
    let id = created["id"].as_str().expect("an id").to_owned();
    assert_eq!(created["account_id"], "acc_1");
    assert_eq!(created["url"], "https://hooks.example.com/in");
    assert_eq!(created["has_secret"], true);
    assert_eq!(
        created["headers"],
        json!({"X-Api-Key": "********"}),
        "values masked"
    );
    assert_eq!(
        created["events"],
        json!(["Contact.created", "Template.status"]),
        "duplicates folded"
    );
    assert_eq!(created["status"], "active");
    assert_eq!(created["disabled_reason"], Value::Null);
    assert_eq!(created["description"], "CRM sync");

    let read = app.admin("GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body, created);

    let listed = app
        .admin("GET", "/v1/webhooks?account_id=acc_1", None)
        .await;
    assert_eq!(listed.body["items"], json!([created]));
    assert_eq!(listed.body["next_cursor"], Value::Null);
    let other = app
        .admin("GET", "/v1/webhooks?account_id=acc_2", None)
        .await;
    assert_eq!(other.body["items"], json!([]));

    let patched = app
        .admin(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(
                json!({"url": "https://hooks.example.com/v2", "secret": null, "description": null,
                        "events": ["Message.received"], "headers": {"X-B": "2"}}),
            ),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.body["url"], "https://hooks.example.com/v2");
    assert_eq!(patched.body["has_secret"], false);
    assert_eq!(patched.body["description"], Value::Null);
    assert_eq!(patched.body["events"], json!(["Message.received"]));
    assert_eq!(patched.body["headers"], json!({"X-B": "********"}));
    assert_eq!(patched.body["created_at"], created["created_at"]);
    assert_ne!(patched.body["updated_at"], created["updated_at"]);

    // A field left out of a PATCH stays as it is.
    let kept = app
        .admin(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(json!({"description": "again"})),
        )
        .await;
    assert_eq!(kept.body["url"], "https://hooks.example.com/v2");
    assert_eq!(kept.body["headers"], json!({"X-B": "********"}));
    let revealed = app
        .admin("GET", &format!("/v1/webhooks/{id}?reveal=headers"), None)
        .await;
    assert_eq!(
        revealed.body["headers"],
        json!({"X-B": "2"}),
        "{}",
        revealed.text
    );

    let disabled = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{id}/disable"),
            Some(json!({"reason": "maintenance"})),
        )
        .await;
    assert_eq!(disabled.status, 200, "{}", disabled.text);
    assert_eq!(disabled.body["status"], "disabled");
    assert_eq!(disabled.body["disabled_reason"], "maintenance");
    let by_status = app.admin("GET", "/v1/webhooks?status=disabled", None).await;
    assert_eq!(by_status.body["items"].as_array().map(Vec::len), Some(1));
    let none_active = app.admin("GET", "/v1/webhooks?status=active", None).await;
    assert_eq!(none_active.body["items"], json!([]));

    let enabled = app
        .admin("POST", &format!("/v1/webhooks/{id}/enable"), None)
        .await;
    assert_eq!(enabled.body["status"], "active");
    assert_eq!(
        enabled.body["disabled_reason"],
        Value::Null,
        "enable clears the reason"
    );

    // Disabling without a body records a default reason.
    let disabled = app
        .admin("POST", &format!("/v1/webhooks/{id}/disable"), None)
        .await;
    assert_eq!(disabled.status, 200, "{}", disabled.text);
    assert!(disabled.body["disabled_reason"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));

    let deleted = app
        .admin("DELETE", &format!("/v1/webhooks/{id}"), None)
        .await;
    assert_eq!(deleted.status, 204);
    for (method, path) in [
        ("GET", format!("/v1/webhooks/{id}")),
        ("DELETE", format!("/v1/webhooks/{id}")),
        ("PATCH", format!("/v1/webhooks/{id}")),
        ("POST", format!("/v1/webhooks/{id}/enable")),
        ("GET", "/v1/webhooks/not-a-uuid".to_owned()),
    ] {
        let gone = app.admin(method, &path, Some(json!({}))).await;
        assert_eq!(gone.status, 404, "{method} {path}: {}", gone.text);
        assert_eq!(gone.error().0, "not_found");
    }
}

#[tokio::test]
async fn the_secret_is_never_answered() {
    let app = spawn_app().await;
    let secret = "whsec_c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw==";
    let created = app
        .admin("POST", "/v1/webhooks", Some(with("secret", json!(secret))))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["has_secret"], true);
    assert!(created.body.get("secret").is_none());
    let id = created.body["id"].as_str().expect("an id");
    let answers = [
        created.text.clone(),
        app.admin("GET", &format!("/v1/webhooks/{id}"), None)
            .await
            .text,
        app.admin("GET", "/v1/webhooks", None).await.text,
        app.admin(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(json!({"description": "x"})),
        )
        .await
        .text,
        app.admin("POST", &format!("/v1/webhooks/{id}/disable"), None)
            .await
            .text,
    ];
    for text in answers {
        assert!(!text.contains("c2VjcmV0"), "the secret leaked: {text}");
        assert!(text.contains("\"has_secret\":true"), "{text}");
    }
    // It is stored, though: deliveries need it.
    let db = app.db.connect().await;
    let stored: String = db
        .query_one(
            "SELECT secret FROM webhooks WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .expect("the row")
        .get(0);
    assert_eq!(stored, secret);
}

#[tokio::test]
async fn validation_failures_name_the_field_and_write_nothing() {
    let app = spawn_app().await;
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "url does not parse",
            with("url", json!("not a url")),
            422,
            "invalid_url",
            "url",
        ),
        (
            "url not http",
            with("url", json!("ftp://example.com/x")),
            422,
            "invalid_url",
            "url",
        ),
        (
            "url with credentials",
            with("url", json!("https://u:p@example.com/")),
            422,
            "invalid_url",
            "url",
        ),
        (
            "url of wrong type",
            with("url", json!(5)),
            422,
            "invalid_type",
            "url",
        ),
        (
            "no events",
            with("events", json!([])),
            422,
            "required",
            "events",
        ),
        (
            "unknown event",
            with("events", json!(["Contact.created", "Contact.deleted"])),
            422,
            "unknown_event_type",
            "events",
        ),
        (
            "wrong case event",
            with("events", json!(["contact.created"])),
            422,
            "unknown_event_type",
            "events",
        ),
        (
            "malformed event",
            with("events", json!(["Contact created"])),
            422,
            "invalid_event_type",
            "events",
        ),
        (
            "header value CRLF",
            with("headers", json!({"X-A": "a\r\nX-Evil: 1"})),
            422,
            "invalid_header",
            "headers",
        ),
        (
            "header value LF",
            with("headers", json!({"X-A": "a\nb"})),
            422,
            "invalid_header",
            "headers",
        ),
        (
            "header value non-ASCII",
            with("headers", json!({"X-A": "caf\u{e9}"})),
            422,
            "invalid_header",
            "headers",
        ),
        (
            "header value NUL",
            with("headers", json!({"X-A": "a\u{0}"})),
            422,
            "invalid_header",
            "headers",
        ),
        (
            "header name with space",
            with("headers", json!({"X A": "v"})),
            422,
            "invalid_header",
            "headers",
        ),
        (
            "header name with CRLF",
            with("headers", json!({"X-A\r\n": "v"})),
            422,
            "invalid_header",
            "headers",
        ),
        (
            "reserved content-type",
            with("headers", json!({"Content-Type": "text/plain"})),
            422,
            "reserved_header",
            "headers",
        ),
        (
            "reserved host",
            with("headers", json!({"host": "x"})),
            422,
            "reserved_header",
            "headers",
        ),
        (
            "reserved user-agent",
            with("headers", json!({"User-Agent": "x"})),
            422,
            "reserved_header",
            "headers",
        ),
        (
            "reserved webhook-*",
            with("headers", json!({"Webhook-Signature": "v1,x"})),
            422,
            "reserved_header",
            "headers",
        ),
        (
            "header value not a string",
            with("headers", json!({"X-A": 1})),
            422,
            "invalid_type",
            "headers.X-A",
        ),
        (
            "long description",
            with("description", json!("d".repeat(1025))),
            422,
            "too_large",
            "description",
        ),
        (
            "NUL in description",
            with("description", json!("a\u{0}b")),
            422,
            "invalid_text",
            "description",
        ),
        (
            "bad secret",
            with("secret", json!("whsec_!!!")),
            422,
            "invalid_secret",
            "secret",
        ),
        (
            "one-byte secret",
            with("secret", json!("x")),
            422,
            "secret_too_short",
            "secret",
        ),
        (
            "23-byte secret",
            with("secret", json!("a-secret-of-23-bytes-ok")),
            422,
            "secret_too_short",
            "secret",
        ),
        (
            "hop-by-hop header",
            with("headers", json!({"Upgrade": "websocket"})),
            422,
            "reserved_header",
            "headers",
        ),
        (
            "proxy credentials header",
            with("headers", json!({"Proxy-Authorization": "Basic eA=="})),
            422,
            "reserved_header",
            "headers",
        ),
        (
            "unknown field",
            with("colour", json!("blue")),
            422,
            "unknown_field",
            "colour",
        ),
        (
            "missing url",
            json!({"account_id": "a", "events": ["Contact.created"]}),
            422,
            "required",
            "url",
        ),
        (
            "missing account",
            json!({"url": "http://127.0.0.1/", "events": ["Contact.created"]}),
            422,
            "required",
            "account_id",
        ),
        (
            "empty account",
            with("account_id", json!("")),
            422,
            "required",
            "account_id",
        ),
    ];
    for (what, body, status, code, field) in cases {
        let answer = app.admin("POST", "/v1/webhooks", Some(body)).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.text);
        let (got_code, got_field) = answer.error();
        assert_eq!(got_code, code, "{what}: {}", answer.text);
        assert_eq!(got_field.as_deref(), Some(field), "{what}: {}", answer.text);
    }
    for (what, raw) in [
        ("truncated JSON", "{\"url\": "),
        ("not JSON", "url=http://x"),
        ("trailing garbage", "{} x"),
        ("not an object", "[1, 2]"),
    ] {
        let answer = app
            .call(
                "POST",
                "/v1/webhooks",
                Some(crate::helpers::ADMIN_TOKEN),
                Some(raw),
            )
            .await;
        assert!(
            matches!(answer.status, 400 | 422),
            "{what}: {}",
            answer.text
        );
        answer.error();
    }

    // A PATCH that fails changes nothing, even when its other fields were fine.
    let created = app.create_webhook(valid()).await;
    let id = created["id"].as_str().expect("an id");
    let bad_patch = app
        .admin(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(json!({"description": "changed", "headers": {"Host": "evil"}})),
        )
        .await;
    assert_eq!(bad_patch.status, 422);
    assert_eq!(
        bad_patch.error(),
        ("reserved_header".into(), Some("headers".into()))
    );
    for (field, value) in [
        ("events", json!(null)),
        ("url", json!(null)),
        ("status", json!("paused")),
    ] {
        let answer = app
            .admin(
                "PATCH",
                &format!("/v1/webhooks/{id}"),
                Some(json!({field: value})),
            )
            .await;
        assert_eq!(answer.status, 422, "{field}: {}", answer.text);
        assert_eq!(answer.error().1.as_deref(), Some(field));
    }
    let after = app.admin("GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(after.body, created);

    let db = app.db.connect().await;
    let count: i64 = db
        .query_one("SELECT count(*) FROM webhooks", &[])
        .await
        .expect("a count")
        .get(0);
    assert_eq!(count, 1, "only the valid webhook was written");
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let app = spawn_app_with(|s| s.allow_private_networks = false).await;
    for url in [
        "http://127.0.0.1:8080/x",
        "http://10.0.0.5/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:9000/x",
        // Names that mean this machine whatever DNS says, and IPv6 forms that tunnel to IPv4.
        "http://localhost./x",
        "http://api.localhost/x",
        "http://Deep.Name.LOCALHOST./x",
        "http://[2002:7f00:1::1]/x",
        "http://[2002:a00:1::]/x",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x",
        "http://[64:ff9b::a00:1]/x",
        "http://[64:ff9b:1::808:808]/x",
        // Special-purpose blocks that only the IANA registries refuse.
        "http://[::ffff:0:127.0.0.1]/x",
        "http://[2001:2::1]/x",
        "http://[3fff::1]/x",
        "http://[5f00::1]/x",
        "http://[2001:10::1]/x",
        "http://192.88.99.1/x",
    ] {
        let answer = app
            .admin("POST", "/v1/webhooks", Some(with("url", json!(url))))
            .await;
        assert_eq!(answer.status, 422, "{url}: {}", answer.text);
        assert_eq!(
            answer.error(),
            ("private_address".into(), Some("url".into())),
            "{url}"
        );
    }
    let public = app
        .admin(
            "POST",
            "/v1/webhooks",
            Some(with("url", json!("https://93.184.215.14/hook"))),
        )
        .await;
    assert_eq!(public.status, 201, "{}", public.text);
}

#[tokio::test]
async fn lists_page_newest_first() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let created = app
            .create_webhook(with("description", json!(format!("n{i}"))))
            .await;
        ids.push(created["id"].as_str().expect("an id").to_owned());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for expected_len in [2, 2, 1] {
        let path = match &cursor {
            None => "/v1/webhooks?limit=2".to_owned(),
            Some(c) => format!("/v1/webhooks?limit=2&cursor={c}"),
        };
        let page = app.admin("GET", &path, None).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let items = page.body["items"].as_array().expect("items").clone();
        assert_eq!(items.len(), expected_len);
        seen.extend(
            items
                .iter()
                .map(|w| w["id"].as_str().expect("id").to_owned()),
        );
        cursor = page.body["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(cursor, None, "the last page has no next cursor");
    assert_eq!(seen, ids, "newest first, each once");

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=x", "limit"),
        ("cursor=%25%25", "cursor"),
        ("status=paused", "status"),
        ("colour=red", "colour"),
    ] {
        let answer = app
            .admin("GET", &format!("/v1/webhooks?{query}"), None)
            .await;
        assert_eq!(answer.status, 422, "{query}: {}", answer.text);
        assert_eq!(answer.error().1.as_deref(), Some(field), "{query}");
    }
    let max = app.admin("GET", "/v1/webhooks?limit=500", None).await;
    assert_eq!(max.status, 200);
}

#[tokio::test]
async fn odd_bodies_and_reasons_are_refused_in_the_error_shape() {
    let app = spawn_app().await;
    let created = app.create_webhook(valid()).await;
    let id = created["id"].as_str().expect("an id");
    let too_long = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{id}/disable"),
            Some(json!({"reason": "r".repeat(501)})),
        )
        .await;
    assert_eq!(too_long.status, 422);
    assert_eq!(too_long.error(), ("too_long".into(), Some("reason".into())));
    let nul = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{id}/disable"),
            Some(json!({"reason": "a\u{0}"})),
        )
        .await;
    assert_eq!(nul.error().1.as_deref(), Some("reason"));

    // A new reason replaces the old one; disabling again without one keeps it.
    let first = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{id}/disable"),
            Some(json!({"reason": "one"})),
        )
        .await;
    assert_eq!(first.body["disabled_reason"], "one");
    let second = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{id}/disable"),
            Some(json!({"reason": "two"})),
        )
        .await;
    assert_eq!(second.body["disabled_reason"], "two");
    let kept = app
        .admin("POST", &format!("/v1/webhooks/{id}/disable"), None)
        .await;
    assert_eq!(kept.body["disabled_reason"], "two");
    let patched = app
        .admin(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(json!({"description": "x"})),
        )
        .await;
    assert_eq!(
        patched.body["disabled_reason"], "two",
        "a PATCH without status leaves it"
    );

    let nul_filter = app
        .admin("GET", "/v1/webhooks?account_id=a%00b", None)
        .await;
    assert_eq!(nul_filter.status, 422);
    assert_eq!(nul_filter.error().1.as_deref(), Some("account_id"));

    // Last, on a connection of its own: the server stops reading an oversized body and
    // closes the connection, which a pooled client would otherwise try to reuse.
    let huge = format!(
        r#"{{"account_id":"a","url":"http://127.0.0.1/","events":["Contact.created"],"description":"{}"}}"#,
        "d".repeat(3 * 1024 * 1024)
    );
    let response = reqwest::Client::new()
        .post(format!("{}/v1/webhooks", app.address))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .body(huge)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "body_too_large");
}

#[tokio::test]
async fn rate_limit_and_max_in_flight_are_kept_within_their_bounds() {
    let app = spawn_app().await;
    let body = |extra: Value| {
        let mut body = json!({"account_id": "acc", "url": "https://hooks.example.com/in",
                              "events": ["Contact.created"]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for (extra, field) in [
        (json!({"rate_limit": 0}), "rate_limit"),
        (json!({"rate_limit": 10_001}), "rate_limit"),
        (json!({"max_in_flight": 0}), "max_in_flight"),
        (json!({"max_in_flight": 1_000_000}), "max_in_flight"),
    ] {
        let answer = app
            .admin("POST", "/v1/webhooks", Some(body(extra.clone())))
            .await;
        assert_eq!(answer.status, 422, "{extra}: {}", answer.text);
        assert_eq!(
            answer.error(),
            ("out_of_range".to_owned(), Some(field.to_owned()))
        );
    }
    let created = app
        .create_webhook(body(json!({"rate_limit": 10, "max_in_flight": 3})))
        .await;
    assert_eq!(created["rate_limit"], 10);
    assert_eq!(created["max_in_flight"], 3);
    let id = created["id"].as_str().unwrap();
    let changed = app
        .admin(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(json!({"rate_limit": null, "max_in_flight": 50})),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    assert_eq!(changed.body["rate_limit"], Value::Null);
    assert_eq!(changed.body["max_in_flight"], 50);
}

/// `ordering` is `unordered` unless asked; `fifo` is kept and can be changed back; anything
/// else answers 422 naming the field, and it cannot be set to null.
#[tokio::test]
async fn ordering_is_unordered_or_fifo() {
    let app = spawn_app().await;
    let body = |ordering: Option<&str>| {
        let mut body = json!({"account_id": "acc", "url": "https://hooks.example.com/in",
                              "events": ["Contact.created"]});
        if let Some(ordering) = ordering {
            body["ordering"] = json!(ordering);
        }
        body
    };
    let plain = app.create_webhook(body(None)).await;
    assert_eq!(plain["ordering"], "unordered");
    let answer = app
        .admin("POST", "/v1/webhooks", Some(body(Some("lifo"))))
        .await;
    assert_eq!(answer.status, 422, "{}", answer.text);
    assert_eq!(
        answer.error(),
        ("invalid_ordering".to_owned(), Some("ordering".to_owned()))
    );
    let fifo = app.create_webhook(body(Some("fifo"))).await;
    assert_eq!(fifo["ordering"], "fifo");
    let id = fifo["id"].as_str().unwrap();
    let path = format!("/v1/webhooks/{id}");
    let read = app.admin("GET", &path, None).await;
    assert_eq!(read.body["ordering"], "fifo");
    let cleared = app
        .admin("PATCH", &path, Some(json!({"ordering": null})))
        .await;
    assert_eq!(cleared.status, 422, "{}", cleared.text);
    let changed = app
        .admin("PATCH", &path, Some(json!({"ordering": "unordered"})))
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    assert_eq!(changed.body["ordering"], "unordered");
}
