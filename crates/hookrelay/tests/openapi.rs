//! The OpenAPI description against the service it describes: it covers every `/v1` route, the
//! `/docs` page renders it without the internet, and schemathesis (PyPI) sends each
//! operation generated valid and invalid requests. Any 5xx, any answer whose status the
//! description does not list, or whose body does not match its schema (the error shape
//! included), fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{create_webhook, publish_events, spawn, TOKEN};
use hookrelay_tests::receiver::Receiver;
use hookrelay_tests::{unique_namespace, wait_for, TestDb};
use serde_json::Value;

/// Every route under `/v1`, as the router declares it.
const V1_ROUTES: [(&str, &str); 29] = [
    ("/v1/event-types", "get"),
    ("/v1/event-types", "post"),
    ("/v1/event-types/{name}", "patch"),
    ("/v1/event-types/openapi.json", "get"),
    ("/v1/portal-sessions", "post"),
    ("/v1/portal-sessions", "delete"),
    ("/v1/api-keys", "post"),
    ("/v1/api-keys/{id}", "delete"),
    ("/v1/whoami", "get"),
    ("/v1/webhooks", "get"),
    ("/v1/webhooks", "post"),
    ("/v1/webhooks/{id}", "get"),
    ("/v1/webhooks/{id}", "patch"),
    ("/v1/webhooks/filter-test", "post"),
    ("/v1/webhooks/{id}", "delete"),
    ("/v1/webhooks/{id}/enable", "post"),
    ("/v1/webhooks/{id}/disable", "post"),
    ("/v1/webhooks/{id}/rotate-secret", "post"),
    ("/v1/webhooks/{id}/recover", "post"),
    ("/v1/webhooks/{id}/replay", "post"),
    ("/v1/webhooks/{id}/skip", "post"),
    ("/v1/webhooks/{id}/stats", "get"),
    ("/v1/webhooks/{id}/test", "post"),
    ("/v1/logs", "get"),
    ("/v1/logs/retry", "post"),
    ("/v1/logs/{id}", "get"),
    ("/v1/logs/{id}/attempts", "get"),
    ("/v1/logs/{id}/payload", "get"),
    ("/v1/logs/{id}/retry", "post"),
];

#[tokio::test]
async fn the_openapi_description_covers_every_route_and_holds_under_schemathesis() {
    let db = TestDb::new();
    let namespace = unique_namespace();
    let _cleanup =
        hookrelay_tests::NamespaceCleanup::new(&hookrelay_tests::amqp_url(), &namespace, &db);
    let service = spawn(&db, &namespace, &[]).await;
    let base = format!("http://127.0.0.1:{}", service.port);

    let spec: Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        spec["openapi"]
    );
    for (path, method) in V1_ROUTES {
        let operation = &spec["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not described");
        // The summary is the doc comment's first paragraph: one sentence of what it does,
        // not the route written out again.
        let summary = operation["summary"].as_str().unwrap_or_default();
        assert!(
            !summary.is_empty() && !summary.starts_with('`') && summary.ends_with('.'),
            "{method} {path} has the summary {summary:?}"
        );
    }
    let described: usize = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(
        described,
        V1_ROUTES.len(),
        "no route described twice or made up"
    );

    // The page and its script come from the binary itself.
    let page = reqwest::get(format!("{base}/docs/")).await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    let script = reqwest::get(format!("{base}/docs/swagger-ui-bundle.js"))
        .await
        .unwrap();
    assert_eq!(script.status(), 200);

    // Real ids for the operations on one webhook or log, so that schemathesis reaches their
    // logic rather than their 404: one webhook to delete, one for the rest, and a log.
    let receiver = Receiver::start().await;
    let kept = create_webhook(service.port, &receiver.url, "Message.received").await;
    let doomed = create_webhook(service.port, &receiver.url, "Message.received").await;
    publish_events(&namespace, "{}", 1).await;
    let client = db.connect().await;
    let log: uuid::Uuid = wait_for("a log", Duration::from_secs(30), || async {
        client
            .query_opt("SELECT id FROM webhook_logs LIMIT 1", &[])
            .await
            .ok()
            .flatten()
            .map(|row| row.get(0))
    })
    .await;
    // Its config, and the cache it keeps in the folder it runs in, stay out of the checkout.
    let workdir = std::env::temp_dir().join(format!("schemathesis-{namespace}"));
    std::fs::create_dir_all(&workdir).unwrap();
    let config = workdir.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[[operations]]\ninclude-path = \"/v1/webhooks/{{id}}\"\ninclude-method = \"DELETE\"\n\
             parameters = {{ \"path.id\" = \"{doomed}\" }}\n\n\
             [[operations]]\ninclude-path-regex = \"^/v1/webhooks/\\\\{{id\\\\}}\"\n\
             exclude-method = \"DELETE\"\nparameters = {{ \"path.id\" = \"{kept}\" }}\n\n\
             [[operations]]\ninclude-path-regex = \"^/v1/logs/\\\\{{id\\\\}}\"\n\
             parameters = {{ \"path.id\" = \"{log}\" }}\n"
        ),
    )
    .unwrap();

    // Seeded, so that a failure can be replayed; hundreds of requests per operation.
    let output = tokio::process::Command::new("schemathesis")
        .current_dir(&workdir)
        .arg("--config-file")
        .arg(&config)
        .args([
            "run",
            &format!("{base}/openapi.json"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "60",
            "--seed",
            "20261127",
            "--header",
            &format!("Authorization: Bearer {TOKEN}"),
            "--no-color",
        ])
        .output()
        .await
        .expect("schemathesis runs (pip install schemathesis; `make test` does)");
    let _ = std::fs::remove_dir_all(&workdir);
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!("{report}");
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
