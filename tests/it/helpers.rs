use std::time::Duration;

use hookrelay::{Application, Settings};
use hookrelay_tests::{amqp_url, unique_namespace, TestDb};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A service running in-process, stopped and its database dropped on drop.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: TestDb,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn test_settings(db: &TestDb) -> Settings {
    Settings {
        database_url: db.url(),
        amqp_url: amqp_url(),
        namespace: unique_namespace(),
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        admin_token: Some(ADMIN_TOKEN.into()),
        allow_private_networks: true,
        database_pool_size: 4,
        shutdown_timeout: hookrelay::settings::HumanDuration(Duration::from_secs(5)),
        ..Settings::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the service with the test defaults changed by `adjust`.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDb::new();
    let mut settings = test_settings(&db);
    adjust(&mut settings);
    let shutdown = CancellationToken::new();
    let app = Application::build(settings, shutdown.clone())
        .await
        .unwrap_or_else(|e| panic!("the service did not start: {e:#}"));
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::new(),
        db,
        shutdown,
    }
}

/// An answer: status and JSON body (`Null` when the body is empty), plus the raw text.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Answer {
    /// The contract's error shape, checked, as (code, field).
    pub fn error(&self) -> (String, Option<String>) {
        let err = &self.body["error"];
        assert!(
            err.is_object(),
            "not an error answer ({}): {}",
            self.status,
            self.text
        );
        let code = err["code"]
            .as_str()
            .expect("error.code is a string")
            .to_owned();
        let message = err["message"].as_str().expect("error.message is a string");
        assert!(!message.is_empty(), "an error has a message");
        (code, err["field"].as_str().map(str::to_owned))
    }
}

impl TestApp {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.expect("the service answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a readable body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        Answer { status, body, text }
    }

    /// A call with the admin token.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let body = body.map(|b| b.to_string());
        self.call(method, path, Some(ADMIN_TOKEN), body.as_deref())
            .await
    }

    /// Creates a webhook with the admin token and returns its JSON.
    pub async fn create_webhook(&self, body: Value) -> Value {
        let answer = self.admin("POST", "/v1/webhooks", Some(body)).await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        answer.body
    }
}
