use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookrelay::{Application, Settings};
use hookrelay_tests::{amqp_url, unique_namespace, TestDb};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A service running in-process on a runtime of its own (as a separate process would), so
/// that dropping this can stop it, wait for it, and then remove its AMQP objects and its
/// database: nothing is left behind.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub namespace: String,
    pub amqp_url: String,
    settings: Settings,
    shutdown: CancellationToken,
    /// Set when the service stops only to start again: its AMQP objects must stay.
    keep: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    // Declared last: dropped after the service has stopped.
    pub db: TestDb,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl TestApp {
    /// Stops the service (gracefully) and starts it again on the same database and
    /// namespace, as a restart or a new release would; what it left in RabbitMQ stays.
    pub async fn restart(self) -> TestApp {
        self.restart_with(|_| {}).await
    }

    /// As [`TestApp::restart`], with settings changed by `adjust`.
    pub async fn restart_with(mut self, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        self.stop();
        let db = std::mem::replace(&mut self.db, TestDb::unowned());
        let mut settings = self.settings.clone();
        adjust(&mut settings);
        start(db, settings).await
    }

    /// As [`TestApp::restart`], doing `meanwhile` while no service runs.
    pub async fn restart_after(
        mut self,
        meanwhile: impl std::future::Future<Output = ()>,
    ) -> TestApp {
        self.stop();
        meanwhile.await;
        let db = std::mem::replace(&mut self.db, TestDb::unowned());
        start(db, self.settings.clone()).await
    }

    /// Stops the service gracefully, leaving its AMQP objects and database in place.
    fn stop(&mut self) {
        self.keep.store(true, Ordering::SeqCst);
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
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
    start(db, settings).await
}

/// Starts the service on a database prepared beforehand.
pub async fn spawn_app_on(db: TestDb) -> TestApp {
    let settings = test_settings(&db);
    start(db, settings).await
}

async fn start(db: TestDb, settings: Settings) -> TestApp {
    let kept_settings = settings.clone();
    let keep = Arc::new(AtomicBool::new(false));
    let keep_objects = keep.clone();
    let namespace = settings.namespace.clone();
    let thread_namespace = namespace.clone();
    let amqp = settings.amqp_url.clone();
    let thread_amqp = amqp.clone();
    let database_url = settings.database_url.clone();
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let stop = shutdown.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the service");
        runtime.block_on(async move {
            match Application::build(settings, stop).await {
                Ok(app) => {
                    let _ = ready_tx.send(Ok(app.port()));
                    let _ = app.run_until_stopped().await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                }
            }
            if !keep_objects.load(Ordering::SeqCst) {
                let ids = hookrelay_tests::webhook_ids(&database_url).await;
                hookrelay_tests::delete_namespace(&thread_amqp, &thread_namespace, &ids).await;
            }
        });
    });
    let port = match ready_rx.await {
        Ok(Ok(port)) => port,
        Ok(Err(e)) => panic!("the service did not start: {e}"),
        Err(_) => panic!("the service thread died while starting"),
    };
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        namespace,
        amqp_url: amqp,
        settings: kept_settings,
        shutdown,
        keep,
        thread: Some(thread),
        db,
    }
}

/// The ids of the webhooks in a test database, for removing their queues.
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

    /// A new API key of `account`.
    pub async fn api_key(&self, account: &str) -> String {
        let made = self
            .admin(
                "POST",
                "/v1/api-keys",
                Some(serde_json::json!({"account_id": account})),
            )
            .await;
        assert_eq!(made.status, 201, "{}", made.text);
        made.body["key"].as_str().expect("a key").to_owned()
    }

    /// A portal token of `account` made by hand, signed with the key every process shares,
    /// that ends `ends_in` from now (negative: ended already). The API opens none shorter
    /// than a minute.
    pub async fn portal_token(&self, account: &str, ends_in: chrono::Duration) -> String {
        let key: Vec<u8> = self
            .db
            .connect()
            .await
            .query_one(
                "SELECT key FROM service_keys WHERE name = 'portal_sessions'",
                &[],
            )
            .await
            .expect("the portal key")
            .get(0);
        let now = chrono::Utc::now();
        hookrelay_core::portal::PortalClaims {
            session: uuid::Uuid::now_v7(),
            account_id: account.into(),
            capabilities: hookrelay_core::portal::Capabilities::ALL,
            issued_at_ms: now.timestamp_millis(),
            expires_at: (now + ends_in).timestamp(),
        }
        .sign(&key)
    }

    /// A new portal session (`body` as `POST /v1/portal-sessions` takes it): its answer.
    pub async fn portal_session(&self, body: Value) -> Value {
        let answer = self.admin("POST", "/v1/portal-sessions", Some(body)).await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        answer.body
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

impl TestApp {
    /// Publishes events as an upstream service would, and returns their ids.
    pub async fn publish(
        &self,
        event_type: &str,
        account: &str,
        data: Value,
        count: usize,
    ) -> Vec<String> {
        let args = hookrelay::publish::PublishArgs {
            event_type: event_type.into(),
            account_id: account.into(),
            data: data.to_string(),
            id: None,
            count,
        };
        hookrelay::publish::publish(
            &self.amqp_url,
            &self.namespace,
            self.settings().queue_type,
            &args,
        )
        .await
        .expect("events published")
        .ids
    }

    /// A connection and a publisher to this service's broker, its topology declared, for
    /// publishing as an upstream service does.
    pub async fn publisher(&self) -> (hookrelay_broker::Connection, hookrelay_broker::Publisher) {
        let connection = hookrelay_broker::connect(&self.amqp_url)
            .await
            .expect("a connection");
        let publisher = hookrelay_broker::Publisher::open(&connection)
            .await
            .expect("a publisher");
        hookrelay_broker::Topology::new(&self.namespace)
            .declare_base(publisher.declarer())
            .await
            .expect("the topology");
        (connection, publisher)
    }

    /// Publishes one raw message to the events exchange: persistent, without a content type.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        self.publish_raw_with(routing_key, body, hookrelay_broker::Headers::default())
            .await;
    }

    /// Publishes one raw message with the given headers to the events exchange.
    pub async fn publish_raw_with(
        &self,
        routing_key: &str,
        body: &[u8],
        headers: hookrelay_broker::Headers,
    ) {
        let (connection, mut publisher) = self.publisher().await;
        let message = hookrelay_broker::Outgoing {
            exchange: hookrelay_broker::Topology::new(&self.namespace).events_exchange(),
            routing_key: routing_key.to_owned(),
            body: body.to_vec(),
            content_type: None,
            headers,
            durability: hookrelay_broker::Durability::Persistent,
        };
        publisher
            .publish(&message, &mut hookrelay_broker::NoRoutes)
            .await
            .expect("published and confirmed");
        publisher.close().await;
        let _ = connection.close().await;
    }

    /// Reads every message of the rejected queue: (x-hookrelay-reason, x-hookrelay-error, body).
    pub async fn rejected_messages(&self) -> Vec<(String, String, Vec<u8>)> {
        use lapin::options::BasicGetOptions;
        use lapin::types::AMQPValue;
        let connection = hookrelay_tests::amqp_connection(&self.amqp_url).await;
        let channel = connection.create_channel().await.expect("a channel");
        let queue = hookrelay_broker::Topology::new(&self.namespace).rejected_queue();
        let mut out = Vec::new();
        while let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            let headers = message
                .delivery
                .properties
                .headers()
                .clone()
                .unwrap_or_default();
            let text = |name: &str| match headers.inner().get(name) {
                Some(AMQPValue::LongString(s)) => s.to_string(),
                other => format!("{other:?}"),
            };
            out.push((
                text("x-hookrelay-reason"),
                text("x-hookrelay-error"),
                message.delivery.data.clone(),
            ));
        }
        let _ = connection.close(200, "done".into()).await;
        out
    }

    /// Creates a webhook on `url` for `account`, subscribed to `events`, and returns its id.
    pub async fn webhook(&self, account: &str, url: &str, events: &[&str], extra: Value) -> String {
        let mut body = serde_json::json!({"account_id": account, "url": url, "events": events});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let created = self.create_webhook(body).await;
        created["id"].as_str().expect("an id").to_owned()
    }

    /// Writes `count` logs of `webhook` (of account `acc`) as an outage of its receiver would
    /// have left them: failed ten minutes ago, their retries used up. Without the deliveries.
    pub async fn failed_logs(&self, webhook: &str, count: usize) {
        let webhook = uuid::Uuid::parse_str(webhook).expect("a webhook id");
        let ids: Vec<String> = (1..=count).map(|n| format!("evt_{n}")).collect();
        let bodies: Vec<String> = (1..=count)
            .map(|n| {
                serde_json::json!({"id": format!("evt_{n}"), "type": "Contact.created",
                                   "account_id": "acc", "data": {"n": n}})
                .to_string()
            })
            .collect();
        let logs: Vec<hookrelay_tests::SeedLog<'_>> = ids
            .iter()
            .zip(&bodies)
            .map(|(id, body)| hookrelay_tests::SeedLog {
                webhook,
                event_id: id,
                body,
                status: "failed",
                attempts: 8,
                error: Some("HTTP 503"),
                age: Duration::from_secs(600),
                ..Default::default()
            })
            .collect();
        hookrelay_tests::seed_logs(&self.db.connect().await, &logs).await;
    }
}
