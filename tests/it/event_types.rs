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
