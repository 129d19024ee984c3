//! What the end-to-end tests share: a throwaway PostgreSQL database per test, and waiting
//! for a condition with a deadline instead of sleeping.
//!
//! The services are the real ones on this machine. `TEST_POSTGRES_URL` and `TEST_AMQP_URL`
//! point elsewhere if needed (not `HOOKRELAY_*`: those are the service's own settings).

// A test that cannot set up its world should stop there, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod broker;
pub mod browser;
pub mod postgres;
pub mod receiver;

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

/// The server the test databases are created on, as a URL without a database name.
pub fn postgres_server() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A uniquely named database, dropped (with any open connections) when this is dropped.
/// It is not created here: the service under test creates it on start, as in production.
pub struct TestDb {
    pub name: String,
    /// Whether dropping this drops the database.
    owned: bool,
}

impl TestDb {
    pub fn new() -> Self {
        Self {
            name: format!("hookrelay_test_{}", uuid::Uuid::new_v4().simple()),
            owned: true,
        }
    }

    /// A stand-in whose drop does nothing, for when the real one moves elsewhere.
    pub fn unowned() -> Self {
        Self {
            name: String::new(),
            owned: false,
        }
    }

    pub fn url(&self) -> String {
        format!("{}/{}", postgres_server(), self.name)
    }

    /// A direct connection to this database, for assertions on the tables themselves.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.name));
        tokio::spawn(connection);
        client
    }

    /// Drops the database now, killing its connections (to simulate losing it).
    pub async fn drop_now(&self) {
        drop_database(&self.name).await;
    }
}

impl Default for TestDb {
    fn default() -> Self {
        Self::new()
    }
}

async fn drop_database(name: &str) {
    let url = format!("{}/postgres", postgres_server());
    if let Ok((client, connection)) = tokio_postgres::connect(&url, NoTls).await {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let name = self.name.clone();
        let joined = block_on_in_thread(async move { drop_database(&name).await });
        if !joined {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// Runs async cleanup from a `Drop`: drop runs inside the test's runtime, which cannot be
/// blocked on, so a thread of its own with a small runtime does the work and is joined.
/// False when the work could not run to its end.
fn block_on_in_thread(work: impl Future<Output = ()> + Send + 'static) -> bool {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(work))
            .is_ok()
    })
    .join()
    .unwrap_or(false)
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `count`, a `SELECT count(*) …` with `params`, answers `expected`.
pub async fn wait_for_count(
    db: &tokio_postgres::Client,
    what: &str,
    deadline: Duration,
    count: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    expected: i64,
) {
    wait_for(what, deadline, || async {
        let n: i64 = db.query_one(count, params).await.ok()?.get(0);
        (n == expected).then_some(())
    })
    .await;
}

/// The value of `series` in Prometheus exposition `text`: a whole series
/// (`name{label="value"}`) or a name, whose labelled series are then added up; NaN when
/// there is none.
pub fn metric(text: &str, series: &str) -> f64 {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(s, _)| *s == series || s.strip_prefix(series).is_some_and(|r| r.starts_with('{')))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .collect();
    match values.is_empty() {
        true => f64::NAN,
        false => values.iter().sum(),
    }
}

/// Lets `span` pass, for a test that checks that something does *not* happen: there is no
/// condition to wait for then, only a window in which it would have happened. Never to wait
/// for something that does happen: [`wait_for`] does that.
pub async fn let_pass(span: Duration) {
    tokio::time::sleep(span).await;
}

/// A unique AMQP namespace, so tests sharing the broker never see each other's objects.
pub fn unique_namespace() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// Removes a test's AMQP objects: its namespace's exchanges and queues, and the queues of
/// the given webhooks.
pub async fn delete_namespace(amqp_url: &str, namespace: &str, webhook_ids: &[String]) {
    let Ok(connection) = hookrelay_broker::connect(amqp_url).await else {
        return;
    };
    let declarer = hookrelay_broker::Declarer::new(connection.clone());
    let deleted = hookrelay_broker::Topology::new(namespace)
        .delete_all(&declarer, webhook_ids)
        .await;
    if let Err(e) = deleted {
        eprintln!("cannot delete the test's AMQP objects of {namespace}: {e}");
    }
    declarer.close().await;
    let _ = connection.close().await;
}

/// The webhooks a test's service knew, deleted or not: their queues are named after them.
pub async fn webhook_ids(database_url: &str) -> Vec<String> {
    let Ok((client, connection)) =
        tokio_postgres::connect(database_url, tokio_postgres::NoTls).await
    else {
        return Vec::new();
    };
    tokio::spawn(connection);
    client
        .query(
            "SELECT id::text FROM webhooks UNION SELECT webhook_id::text FROM webhook_tombstones",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

/// Removes, when dropped, the AMQP objects a test's service made on the shared broker: its
/// namespace's exchanges and queues, and the queues of the webhooks its database knows.
/// Made after the test's `TestDb` and before its services, so that it runs once they are
/// gone and before the database is.
pub struct NamespaceCleanup {
    amqp_url: String,
    namespace: String,
    database_url: String,
}

impl NamespaceCleanup {
    pub fn new(amqp_url: &str, namespace: &str, db: &TestDb) -> Self {
        Self {
            amqp_url: amqp_url.to_owned(),
            namespace: namespace.to_owned(),
            database_url: db.url(),
        }
    }
}

impl Drop for NamespaceCleanup {
    fn drop(&mut self) {
        let (amqp_url, namespace, database_url) = (
            self.amqp_url.clone(),
            self.namespace.clone(),
            self.database_url.clone(),
        );
        // A runtime of its own, on a thread of its own: a drop inside the test's runtime
        // cannot block on it.
        let cleaning = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let ids = webhook_ids(&database_url).await;
                delete_namespace(&amqp_url, &namespace, &ids).await;
            });
        });
        if cleaning.join().is_err() {
            eprintln!("cannot delete the AMQP objects of {}", self.namespace);
        }
    }
}

/// A plain AMQP connection, for what a test does as a publisher or an operator would (read a
/// queue, count its consumers), beside what `hookrelay_broker` offers the service.
pub async fn amqp_connection(amqp_url: &str) -> lapin::Connection {
    lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default())
        .await
        .expect("an AMQP connection")
}

/// The headers of an event carrying a W3C `traceparent`, as a traced upstream service
/// publishes it.
pub fn traced_event(traceparent: &str) -> hookrelay_broker::Headers {
    hookrelay_broker::Headers {
        traceparent: Some(traceparent.to_owned()),
        ..hookrelay_broker::Headers::default()
    }
}

/// Verifies a Standard Webhooks signature header the way a receiver would, independently of
/// hookrelay's own signing code. True when any of its `v1,` signatures matches.
pub fn verify_signature(
    secret: &str,
    msg_id: &str,
    timestamp: &str,
    body: &[u8],
    header: &str,
) -> bool {
    use base64::Engine as _;
    use hmac::Mac as _;
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_default(),
        None => secret.as_bytes().to_vec(),
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    header.split(' ').any(|sig| sig == expected)
}

/// Runs `rabbitmqctl` with `args`, panicking with its output if it fails.
pub async fn rabbitmqctl(args: &[&str]) -> String {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .expect("rabbitmqctl runs (it comes with RabbitMQ)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// The messages of queue `name` ready to be delivered, and delivered but not yet acked, as
/// `rabbitmqctl` lists them; `None` if it lists no such queue.
pub async fn queue_counts(name: &str) -> Option<(u64, u64)> {
    let listed = rabbitmqctl(&[
        "list_queues",
        "name",
        "messages_ready",
        "messages_unacknowledged",
        "--quiet",
        "--no-table-headers",
    ])
    .await;
    listed.lines().find_map(
        |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
            [queue, ready, unacked] if queue == name => {
                Some((ready.parse().ok()?, unacked.parse().ok()?))
            }
            _ => None,
        },
    )
}

/// A RabbitMQ virtual host of its own, for a test that must act on the whole broker (close
/// every connection) without touching the tests running beside it. Deleted on drop.
pub struct TestVhost {
    pub name: String,
}

impl TestVhost {
    pub async fn create() -> Self {
        let name = format!("test-{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["add_vhost", &name]).await;
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]).await;
        Self { name }
    }

    /// The AMQP URL of this vhost, on the same server as [`amqp_url`].
    pub fn url(&self) -> String {
        let base = amqp_url();
        let server = base.rsplit_once('/').map_or(base.as_str(), |(s, _)| s);
        format!("{server}/{}", self.name)
    }

    /// Closes every client connection to this vhost, as a broker restart would.
    pub async fn close_connections(&self) {
        rabbitmqctl(&[
            "close_all_connections",
            "--vhost",
            &self.name,
            "--limit",
            "1000",
            "test: broker connection lost",
        ])
        .await;
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

/// Makes a test database refuse connections and drops the ones it has, as an outage would;
/// `restore_database` ends it. Connections still being opened when connections were turned
/// off may slip through the first sweep, so it sweeps until none is left.
pub async fn cut_database(name: &str) {
    admin_sql(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false;"
    ))
    .await;
    let url = format!("{}/postgres", postgres_server());
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("the postgres database");
    tokio::spawn(connection);
    wait_for(
        "the database's connections to end",
        Duration::from_secs(10),
        || async {
            let left: i64 = client
                .query_one(
                    "WITH gone AS (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                               WHERE datname = $1 AND pid <> pg_backend_pid())
                 SELECT count(*) FROM gone",
                    &[&name],
                )
                .await
                .ok()?
                .get(0);
            (left == 0).then_some(())
        },
    )
    .await;
}

/// Restores the database when dropped, so a test that fails during an outage still lets
/// its service and cleanup reach the database.
pub struct Outage {
    name: String,
}

impl Outage {
    /// Cuts the database, as [`cut_database`], until [`Outage::end`] or drop.
    pub async fn begin(name: &str) -> Self {
        cut_database(name).await;
        Self {
            name: name.to_owned(),
        }
    }

    pub async fn end(self) {
        restore_database(&self.name).await;
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        // Idempotent: after `end` this only allows connections again.
        let name = self.name.clone();
        block_on_in_thread(async move { restore_database(&name).await });
    }
}

pub async fn restore_database(name: &str) {
    admin_sql(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true;"
    ))
    .await;
}

async fn admin_sql(sql: &str) {
    let url = format!("{}/postgres", postgres_server());
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("the postgres database");
    tokio::spawn(connection);
    client.batch_execute(sql).await.expect("admin SQL");
}

/// The settings of a service under test: its own database and namespace, a listener on
/// port 0, the given admin token, and receivers on this machine allowed.
pub fn service_env(db: &TestDb, namespace: &str, admin_token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HOOKRELAY_DATABASE_URL", db.url()),
        ("HOOKRELAY_AMQP_URL", amqp_url()),
        ("HOOKRELAY_NAMESPACE", namespace.to_owned()),
        ("HOOKRELAY_LISTEN", "127.0.0.1:0".to_owned()),
        ("HOOKRELAY_ADMIN_TOKEN", admin_token.to_owned()),
        ("HOOKRELAY_ALLOW_PRIVATE_NETWORKS", "true".to_owned()),
    ]
}

/// `hookrelay serve` running as a separate process, killed when dropped.
pub struct ServiceProcess {
    pub child: tokio::process::Child,
    /// The HTTP port it listens on.
    pub port: u16,
    /// Every line it has logged so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Starts `binary serve` with a clean environment plus `env` (the `HOOKRELAY_*` settings; the
/// listener should be on port 0), JSON logs, and waits for it to say where it listens. Its
/// ERROR lines are passed on to this process's stderr.
pub async fn spawn_service(
    binary: &std::path::Path,
    env: &[(&str, String)],
) -> Result<ServiceProcess, String> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut command = tokio::process::Command::new(binary);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn,hookrelay=info")
        .env("HOOKRELAY_LOG_FORMAT", "json");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .arg("serve")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let port = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let entry: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            seen.push(line);
            if entry["message"] == "hookrelay is listening" {
                return entry["address"]
                    .as_str()
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse::<u16>().ok());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| {
        format!(
            "the service did not report its address:\n{}",
            seen.join("\n")
        )
    })?;
    let log = std::sync::Arc::new(std::sync::Mutex::new(seen));
    let kept = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("\"ERROR\"") {
                eprintln!("service: {line}");
            }
            kept.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(line);
        }
    });
    Ok(ServiceProcess { child, port, log })
}

/// A log as the pipeline would have written it, for tests that need logs without sending
/// their deliveries.
#[derive(Debug, Clone)]
pub struct SeedLog<'a> {
    pub webhook: uuid::Uuid,
    pub account: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// The event's body, as sent.
    pub body: &'a str,
    pub status: &'a str,
    pub attempts: i32,
    pub error: Option<&'a str>,
    /// How long ago it was created.
    pub age: Duration,
}

impl Default for SeedLog<'_> {
    fn default() -> Self {
        Self {
            webhook: uuid::Uuid::nil(),
            account: "acc",
            event_id: "evt",
            event_type: "Contact.created",
            body: r#"{"n": 1}"#,
            status: "succeeded",
            attempts: 1,
            error: None,
            age: Duration::ZERO,
        }
    }
}

/// Writes `logs` as the fan-out and the writer would have left them: each event stored once,
/// each log in the partition of its day (made if missing), the unfinished ones open. Answers
/// their ids, in order.
pub async fn seed_logs(client: &tokio_postgres::Client, logs: &[SeedLog<'_>]) -> Vec<uuid::Uuid> {
    let col = |f: &dyn Fn(&SeedLog<'_>) -> String| logs.iter().map(f).collect::<Vec<String>>();
    let webhooks: Vec<uuid::Uuid> = logs.iter().map(|l| l.webhook).collect();
    let ages: Vec<f64> = logs.iter().map(|l| l.age.as_secs_f64()).collect();
    let attempts: Vec<i32> = logs.iter().map(|l| l.attempts).collect();
    let errors: Vec<Option<&str>> = logs.iter().map(|l| l.error).collect();
    client
        .execute(
            "SELECT hookrelay_ensure_partitions(
                 ((now() - make_interval(secs => max(age))) AT TIME ZONE 'UTC')::date,
                 (now() AT TIME ZONE 'UTC')::date)
             FROM unnest($1::float8[]) AS a(age)",
            &[&ages],
        )
        .await
        .expect("partitions for the seeded logs");
    let rows = client
        .query(
            "WITH u AS MATERIALIZED (
                SELECT u.*, hookrelay_log_id(now() - make_interval(secs => u.age)) AS id
                FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                            $6::text[], $7::int[], $8::text[], $9::float8[]) WITH ORDINALITY
                     AS u(webhook_id, account_id, event_id, event_type, body, status, attempts,
                          error, age, n)),
             t AS MATERIALIZED (SELECT u.*, hookrelay_uuid_time(u.id) AS at FROM u),
             ev AS (
                INSERT INTO events (account_id, id, event_type, body, occurred_at, received_at)
                SELECT DISTINCT ON (account_id, at, event_id)
                       account_id, event_id, event_type, body, at, at
                FROM t ORDER BY account_id, at, event_id
                ON CONFLICT DO NOTHING),
             lg AS (
                INSERT INTO delivery_logs (id, webhook_id, account_id, event_id, event_type,
                                           event_at, created_at, status, attempts, troubled,
                                           error, updated_at)
                SELECT id, webhook_id, account_id, event_id, event_type, at, at, status,
                       attempts, status IN ('retrying', 'failed'), error, at
                FROM t),
             op AS (
                INSERT INTO open_deliveries (webhook_id, log_id, created_at)
                SELECT webhook_id, id, at FROM t WHERE status IN ('pending', 'retrying'))
             SELECT id FROM t ORDER BY n",
            &[
                &webhooks,
                &col(&|l| l.account.to_owned()),
                &col(&|l| l.event_id.to_owned()),
                &col(&|l| l.event_type.to_owned()),
                &col(&|l| l.body.to_owned()),
                &col(&|l| l.status.to_owned()),
                &attempts,
                &errors,
                &ages,
            ],
        )
        .await
        .expect("seeded logs");
    rows.iter().map(|r| r.get(0)).collect()
}

/// Writes an attempt of log `log` as the writer would have.
pub async fn seed_attempt(
    client: &tokio_postgres::Client,
    log: uuid::Uuid,
    attempt: i32,
    started_ago: Duration,
    duration_ms: i32,
    response_status: Option<i32>,
) {
    client
        .execute(
            "INSERT INTO delivery_attempts (log_id, log_created_at, webhook_id, attempt,
                                            started_at, duration_ms, response_status, error)
             SELECT id, created_at, webhook_id, $2, now() - make_interval(secs => $3), $4, $5,
                    CASE WHEN $5::int IS NULL THEN 'timeout' END
             FROM delivery_logs WHERE id = $1",
            &[
                &log,
                &attempt,
                &started_ago.as_secs_f64(),
                &duration_ms,
                &response_status,
            ],
        )
        .await
        .expect("a seeded attempt");
}
