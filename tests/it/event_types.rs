use serde_json::json;

use crate::helpers::spawn_app;

const CONTRACT_CATALOG: [&str; 17] = [
    "Contact.created",
    "Contact.updated",
    "Contact.mapped",
    "Contact.unmapped",
    "Conversation.created",
    "Conversation.updated",
    "Conversation.UnAttended",
    "Conversation.Tag.mapped",
    "Conversation.Tag.unmapped",
    "Message.received",
    "Message.flow.received",
    "Message.WA.status.received",
    "Message.WA.status.failed",
    "Template.status",
    "Webhook.test",
    "Webhook.disabled",
    "Webhook.delivery.failed",
];

#[tokio::test]
async fn the_catalog_holds_exactly_the_contract_types() {
    let app = spawn_app().await;
    let answer = app.admin("GET", "/v1/event-types?limit=500", None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let mut names: Vec<String> = answer.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["name"].as_str().expect("a name").to_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = CONTRACT_CATALOG.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);

    let db = app.db.connect().await;
    let rows = db
        .query("SELECT name FROM event_types ORDER BY name", &[])
        .await
        .expect("rows");
    let in_db: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(in_db, expected, "the table itself, for admins who query it");

    // Paging through with a small limit gives the same set.
    let mut paged = Vec::new();
    let mut path = "/v1/event-types?limit=5".to_owned();
    loop {
        let page = app.admin("GET", &path, None).await;
        for t in page.body["items"].as_array().expect("items") {
            paged.push(t["name"].as_str().expect("name").to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/event-types?limit=5&cursor={c}"),
            None => break,
        }
    }
    paged.sort();
    assert_eq!(paged, expected);
}

#[tokio::test]
async fn admins_add_event_types() {
    let app = spawn_app().await;
    let created = app
        .admin(
            "POST",
            "/v1/event-types",
            Some(json!({"name": "Invoice.paid", "description": "An invoice was paid."})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["name"], "Invoice.paid");
    assert_eq!(created.body["builtin"], false);

    let listed = app.admin("GET", "/v1/event-types?limit=1", None).await;
    assert_eq!(
        listed.body["items"][0]["name"], "Invoice.paid",
        "newest first"
    );

    let again = app
        .admin(
            "POST",
            "/v1/event-types",
            Some(json!({"name": "Invoice.paid"})),
        )
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.error().0, "conflict");
    let builtin = app
        .admin(
            "POST",
            "/v1/event-types",
            Some(json!({"name": "Contact.created"})),
        )
        .await;
    assert_eq!(builtin.status, 409);

    for (body, field) in [
        (json!({"name": "bad name"}), "name"),
        (json!({"name": ""}), "name"),
        (
            json!({"name": "A.b", "description": "x".repeat(2000)}),
            "description",
        ),
        (json!({"name": "A.b", "extra": 1}), "extra"),
        (json!({}), "name"),
    ] {
        let answer = app.admin("POST", "/v1/event-types", Some(body)).await;
        assert_eq!(answer.status, 422, "{}", answer.text);
        assert_eq!(answer.error().1.as_deref(), Some(field));
    }

    // The new type can be subscribed to at once.
    app.create_webhook(
        json!({"account_id": "a", "url": "http://127.0.0.1/x", "events": ["Invoice.paid"]}),
    )
    .await;
}

/// A type with a schema: a conforming event is delivered, a non-conforming one rejected with
/// `schema_mismatch` and the failing place; a type without one is unaffected.
#[tokio::test]
async fn a_type_with_a_schema_delivers_what_conforms_and_rejects_the_rest_with_the_path() {
    let app = spawn_app().await;
    let schema = json!({
        "type": "object",
        "required": ["invoice_id", "amount"],
        "properties": {
            "invoice_id": {"type": "string"},
            "amount": {"type": "integer", "minimum": 0},
            "lines": {"type": "array", "items": {"type": "object", "required": ["sku"]}},
        },
    });
    let created = app
        .admin(
            "POST",
            "/v1/event-types",
            Some(
                json!({"name": "Invoice.paid", "description": "An invoice was paid.",
                        "schema": schema, "example": {"invoice_id": "in_1", "amount": 5}}),
            ),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["schema"], schema);
    let receiver = hookrelay_tests::receiver::Receiver::start().await;
    app.webhook(
        "acc",
        &receiver.url,
        &["Invoice.paid", "Contact.created"],
        json!({}),
    )
    .await;

    let good = app
        .publish(
            "Invoice.paid",
            "acc",
            json!({"invoice_id": "in_1", "amount": 10}),
            1,
        )
        .await;
    let bad = app
        .publish(
            "Invoice.paid",
            "acc",
            json!({"invoice_id": "in_2", "amount": 3, "lines": [{"sku": "a"}, {"qty": 1}]}),
            1,
        )
        .await;
    let untyped = app
        .publish("Contact.created", "acc", json!({"anything": [1]}), 1)
        .await;
    let delivered: std::collections::HashSet<String> =
        good.iter().chain(&untyped).cloned().collect();
    receiver
        .wait_for_events(&delivered, std::time::Duration::from_secs(30))
        .await;
    let rejected = hookrelay_tests::wait_for(
        "the bad event rejected",
        std::time::Duration::from_secs(30),
        || async {
            let messages = app.rejected_messages().await;
            (!messages.is_empty()).then_some(messages)
        },
    )
    .await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let (reason, error, body) = &rejected[0];
    assert_eq!(reason, "schema_mismatch");
    assert!(error.contains("`/lines/1`"), "{error}");
    assert!(error.contains("sku"), "{error}");
    let body: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(body["id"], bad[0].as_str());
    assert!(
        !receiver.event_ids().contains(&bad[0]),
        "a non-conforming event was delivered"
    );
}

/// A schema that is not one, and an example that breaks its schema, answer 422 naming the
/// field; a change of schema is checked against the example kept, and removing it works.
#[tokio::test]
async fn bad_schemas_and_examples_are_refused() {
    let app = spawn_app().await;
    for (body, field, code) in [
        (
            json!({"name": "A.one", "schema": {"type": "nope"}}),
            "schema",
            "invalid_schema",
        ),
        (
            json!({"name": "A.two", "schema": {"pattern": "(?=x)"}}),
            "schema",
            "invalid_schema",
        ),
        (
            json!({"name": "A.three", "schema": {"type": "object", "required": ["x"]},
                   "example": {"y": 1}}),
            "example",
            "invalid_example",
        ),
    ] {
        let answer = app
            .admin("POST", "/v1/event-types", Some(body.clone()))
            .await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.text);
        assert_eq!(answer.error(), (code.to_owned(), Some(field.to_owned())));
    }
    let created = app
        .admin(
            "POST",
            "/v1/event-types",
            Some(json!({"name": "A.four", "example": {"y": 1}})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let refused = app
        .admin(
            "PATCH",
            "/v1/event-types/A.four",
            Some(json!({"schema": {"required": ["x"]}})),
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(refused.error().0, "invalid_example");
    let changed = app
        .admin(
            "PATCH",
            "/v1/event-types/A.four",
            Some(json!({"schema": {"required": ["y"]}, "description": "Four."})),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    assert_eq!(changed.body["description"], "Four.");
    let cleared = app
        .admin(
            "PATCH",
            "/v1/event-types/A.four",
            Some(json!({"schema": null})),
        )
        .await;
    assert_eq!(cleared.body["schema"], serde_json::Value::Null);
    let missing = app
        .admin(
            "PATCH",
            "/v1/event-types/No.such",
            Some(json!({"description": "x"})),
        )
        .await;
    assert_eq!(missing.status, 404);
}

/// The receivers' document is OpenAPI 3.1, as a validator reads it, and holds every type,
/// with its schema as the body's `data`.
#[tokio::test]
async fn the_receivers_document_is_openapi_3_1_with_every_type_and_schema() {
    let app = spawn_app().await;
    let schema = json!({"type": "object", "required": ["n"],
                        "properties": {"n": {"type": "integer"}}, "$defs": {"x": {}}});
    let created = app
        .admin(
            "POST",
            "/v1/event-types",
            Some(json!({"name": "Order.placed", "schema": schema, "example": {"n": 1}})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let answer = app.admin("GET", "/v1/event-types/openapi.json", None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let document = &answer.body;
    assert_eq!(document["openapi"], "3.1.0");
    let webhooks = document["webhooks"].as_object().expect("webhooks");
    for name in CONTRACT_CATALOG.iter().copied().chain(["Order.placed"]) {
        assert!(webhooks.contains_key(name), "{name} missing");
    }
    let data = &document["components"]["schemas"]["Order.placed"]["properties"]["data"];
    assert_eq!(data["required"], json!(["n"]));
    assert_eq!(data["properties"], schema["properties"]);

    // Checked by openapi-spec-validator, from the project's .venv (scripts/test-tools.sh).
    let path = std::env::temp_dir().join(format!("receivers-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&path, answer.text.as_bytes()).unwrap();
    let venv = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.venv/bin/openapi-spec-validator"
    );
    let program = if std::path::Path::new(venv).exists() {
        venv.to_owned()
    } else {
        "openapi-spec-validator".to_owned()
    };
    let output = std::process::Command::new(&program)
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}: run scripts/test-tools.sh (make test does)"));
    let _ = std::fs::remove_file(&path);
    assert!(
        output.status.success(),
        "not valid OpenAPI 3.1: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// "Send an example": an event of the chosen type with its example as `data`, to one webhook
/// alone (its filter and subscriptions aside), logged like any delivery; a type without an
/// example, an unknown one and a reserved one answer 422 naming `event_type`.
#[tokio::test]
async fn an_example_goes_to_one_webhook_as_an_event_of_its_type() {
    let app = spawn_app().await;
    let example = json!({"invoice_id": "in_9", "amount": 42, "note": "é"});
    let created = app
        .admin(
            "POST",
            "/v1/event-types",
            Some(
                json!({"name": "Invoice.sent", "description": "An invoice went out.",
                        "schema": {"type": "object", "required": ["invoice_id"]},
                        "example": example}),
            ),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let target = hookrelay_tests::receiver::Receiver::start().await;
    let other = hookrelay_tests::receiver::Receiver::start().await;
    // A filter that refuses every event, and no subscription to the type: neither stops it.
    let id = app
        .webhook(
            "acc",
            &target.url,
            &["Contact.created"],
            json!({"filter": {"data.never": {"$exist": true}}}),
        )
        .await;
    app.webhook("acc", &other.url, &["Invoice.sent"], json!({}))
        .await;

    let sent = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{id}/test"),
            Some(json!({"event_type": "Invoice.sent"})),
        )
        .await;
    assert_eq!(sent.status, 202, "{}", sent.text);
    let log_id = sent.body["log_id"].as_str().unwrap().to_owned();
    let got = target.wait_for(1, std::time::Duration::from_secs(30)).await;
    let body = got[0].json();
    assert_eq!(body["type"], "Invoice.sent");
    assert_eq!(body["data"], example);
    assert_eq!(body["account_id"], "acc");
    assert!(
        body.get("x_hookrelay_test_webhook").is_none(),
        "the target is hookrelay's, not the receiver's: {body}"
    );
    let event_id = got[0].header("webhook-id").unwrap().to_owned();
    let client = app.db.connect().await;
    let logs: Vec<(uuid::Uuid, uuid::Uuid)> = client
        .query(
            "SELECT id, webhook_id FROM webhook_logs WHERE event_id = $1",
            &[&event_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        logs,
        vec![(log_id.parse().unwrap(), id.parse().unwrap())],
        "one log, the target's, under the id answered"
    );

    // Without a body: `Webhook.test`, as before.
    let plain = app
        .admin("POST", &format!("/v1/webhooks/{id}/test"), None)
        .await;
    assert_eq!(plain.status, 202, "{}", plain.text);
    let got = target.wait_for(2, std::time::Duration::from_secs(30)).await;
    assert!(got.iter().any(|r| r.json()["type"] == "Webhook.test"));

    for (event_type, code) in [
        ("Contact.created", "no_example"),
        ("No.such", "unknown_event_type"),
        ("Webhook.disabled", "reserved_event_type"),
    ] {
        let refused = app
            .admin(
                "POST",
                &format!("/v1/webhooks/{id}/test"),
                Some(json!({"event_type": event_type})),
            )
            .await;
        assert_eq!(refused.status, 422, "{event_type}: {}", refused.text);
        assert_eq!(
            refused.error(),
            (code.to_owned(), Some("event_type".to_owned()))
        );
    }
    assert!(other.received().is_empty(), "the other webhook got nothing");
}
