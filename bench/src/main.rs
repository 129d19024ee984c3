//! `make bench`: starts the release `hookrelay serve` as a child process against the local
//! RabbitMQ and PostgreSQL, HTTP sinks in this process, creates webhooks through the API,
//! publishes events through RabbitMQ with confirms, and measures until every delivery has
//! reached a sink and every log row is `succeeded`: deliveries per second, publish-to-receipt
//! latency, and the service's peak RSS. Prints a table and writes `target/bench/results.json`.
//!
//! Every scenario (`scenarios.rs`) gets a fresh service, database and namespace, removed
//! afterwards; the sinks are in `sink.rs`, the CPU and memory readings in `process.rs`. Then
//! the same loads on RabbitMQ alone, without hookrelay (`alone.rs`); and the connection storm
//! (`storm.rs`): idle half-sent requests against the listener; and the logs at a platform's
//! volume (`volume.rs`): 30 million logs in 30 daily partitions.

mod alone;
mod process;
mod scenarios;
mod sink;
mod storm;
mod volume;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use hookrelay_broker::{NoRoutes, Outgoing, Publisher, QueueType, Topology};
use hookrelay_tests::broker::{TestBroker, TestCluster};
use hookrelay_tests::{amqp_url, unique_namespace, ServiceProcess, TestDb};
use serde::Serialize;

use crate::process::{cpu_each, cpu_of, cpu_since, peak_rss_mb, written_by};
use crate::scenarios::{selected, Pacer, Rabbit, Scenario, SCENARIOS};
use crate::sink::{now_ns, start_sink, Sink};

pub(crate) const TOKEN: &str = "bench-admin-token";

/// Storms of idle connections: (max_connections, idle connections held).
const STORMS: [(usize, usize); 2] = [(1_024, 12_000), (15_000, 12_000)];

#[derive(Parser)]
#[command(about = "hookrelay's benchmark")]
struct Args {
    /// The release binary to measure.
    #[arg(long, default_value = "target/release/hookrelay")]
    binary: PathBuf,
    /// Run only the scenario of this name or, if none has it, those whose name contains it
    /// (`cost W=10` is one scenario, `cost` three).
    #[arg(long)]
    only: Option<String>,
    /// Where to write the figures.
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
    /// Days of logs the volume scenario writes.
    #[arg(long, default_value_t = 30)]
    volume_days: usize,
    /// Logs a day the volume scenario writes.
    #[arg(long, default_value_t = 1_000_000)]
    volume_logs_per_day: usize,
}

#[derive(Serialize)]
struct Figures {
    scenario: String,
    webhooks: usize,
    events: usize,
    deliveries: usize,
    /// Deliveries received by the sinks per second, first publish to last receipt.
    deliveries_per_sec: f64,
    /// First publish until every log row is `succeeded`.
    all_logged_secs: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    latency_max_ms: f64,
    peak_rss_mb: f64,
    /// CPU seconds per 1 000 deliveries, from the first publish until all is logged, of the
    /// hookrelay processes and of the RabbitMQ nodes (the shared one too: the bench runs
    /// alone on it).
    hookrelay_cpu_per_1k: f64,
    rabbitmq_cpu_per_1k: f64,
    /// CPU seconds per 1 000 deliveries of every PostgreSQL process (its backends and its
    /// background processes; the bench runs alone on it).
    postgres_cpu_per_1k: f64,
    /// Bytes the RabbitMQ node(s) wrote to storage per delivery (the shared node included:
    /// the bench runs alone on it).
    rabbitmq_written_per_delivery: f64,
    processes: usize,
    duplicates: usize,
    /// Webhooks failing on purpose, and the requests they got in all.
    failing_webhooks: usize,
    requests_to_503: u64,
    requests_to_hanging: u64,
    /// Old logs the retention job deleted while the scenario ran.
    old_logs_deleted: usize,
    /// PostgreSQL's cost of a delivery: WAL written, and what the database grew on disk
    /// (tables and indexes), per delivery; and the share of log updates that were HOT (no
    /// index touched).
    wal_bytes_per_delivery: f64,
    disk_bytes_per_delivery: f64,
    hot_update_pct: f64,
}

/// Where PostgreSQL stands: its WAL position and the database's size, in bytes.
async fn pg_position(pg: &tokio_postgres::Client) -> anyhow::Result<(i64, i64)> {
    let row = pg
        .query_one(
            "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint,
                    pg_database_size(current_database())",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// The share of updates of the log tables (whichever layout) that were HOT, in percent, once
/// at least `updates` are counted.
async fn hot_update_pct(pg: &tokio_postgres::Client, updates: usize) -> anyhow::Result<f64> {
    // An idle backend reports its statistics within ten seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let row = pg
            .query_one(
                "SELECT coalesce(sum(n_tup_hot_upd), 0)::float8,
                        coalesce(sum(n_tup_upd), 0)::float8
                 FROM pg_stat_user_tables
                 WHERE relname = 'webhook_logs' OR relname LIKE 'delivery_logs_p%'",
                &[],
            )
            .await?;
        let (hot, all): (f64, f64) = (row.get(0), row.get(1));
        if all >= updates as f64 || Instant::now() > deadline {
            return Ok(if all > 0.0 { 100.0 * hot / all } else { 0.0 });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn start_service(
    binary: &Path,
    db: &TestDb,
    namespace: &str,
    amqp: &str,
    queue_type: QueueType,
) -> anyhow::Result<ServiceProcess> {
    let mut env = hookrelay_tests::service_env(db, namespace, TOKEN);
    env.push(("HOOKRELAY_AMQP_URL", amqp.to_owned()));
    env.push(("HOOKRELAY_QUEUE_TYPE", queue_type.to_string()));
    // Short, so that the logs seeded two days old are the retention job's to delete.
    env.push(("HOOKRELAY_LOG_RETENTION", "1h".to_owned()));
    hookrelay_tests::spawn_service(binary, &env)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (run `cargo build --release -p hookrelay` first)"))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Runs one scenario on fresh services, database, namespace (and broker, unless it uses the
/// shared one), and removes them all afterwards, whether the scenario succeeded or not.
async fn run(binary: &Path, scenario: &Scenario) -> anyhow::Result<Figures> {
    let db = TestDb::new();
    let namespace = unique_namespace();
    if scenario.old_logs > 0 {
        seed_old_logs(binary, &db, scenario.old_logs).await?;
    }
    let (nodes, queue_type) = match scenario.rabbit {
        Rabbit::Shared => (Vec::new(), QueueType::Classic),
        Rabbit::Own => (vec![TestBroker::start().await], QueueType::Classic),
        Rabbit::Cluster(kind) => (TestCluster::start(3).await.nodes, kind),
    };
    let amqp = nodes.first().map_or_else(amqp_url, TestBroker::url);
    let rabbit_pids: Vec<u32> = match nodes.is_empty() {
        true => shared_rabbit_pid().await.into_iter().collect(),
        false => nodes.iter().filter_map(TestBroker::os_pid).collect(),
    };
    let mut services = Vec::with_capacity(scenario.processes);
    for _ in 0..scenario.processes.max(1) {
        services.push(start_service(binary, &db, &namespace, &amqp, queue_type).await?);
    }
    let mut webhook_ids = Vec::with_capacity(scenario.webhooks);
    let place = Place {
        services: &services,
        queue_type,
        amqp: &amqp,
        rabbit_pids: &rabbit_pids,
        db: &db,
        namespace: &namespace,
    };
    let result = measure(scenario, &place, &mut webhook_ids).await;
    // The services go first, so that they cannot declare again what is being removed.
    for service in &mut services {
        let _ = service.child.start_kill();
        let _ = service.child.wait().await;
    }
    if nodes.is_empty() {
        hookrelay_tests::delete_namespace(&amqp, &namespace, &webhook_ids).await;
    }
    result
}

/// The OS process of the shared RabbitMQ node, as the node itself tells.
async fn shared_rabbit_pid() -> Option<u32> {
    let said = hookrelay_tests::rabbitmqctl(&["eval", "os:getpid()."]).await;
    said.trim().trim_matches('"').parse().ok()
}

/// The OS processes of PostgreSQL: its backends and background processes.
async fn postgres_pids(pg: &tokio_postgres::Client) -> anyhow::Result<Vec<u32>> {
    Ok(pg
        .query("SELECT pid FROM pg_stat_activity", &[])
        .await?
        .iter()
        .filter_map(|r| u32::try_from(r.get::<_, i32>(0)).ok())
        .collect())
}

/// Where a scenario runs.
struct Place<'a> {
    services: &'a [ServiceProcess],
    queue_type: QueueType,
    amqp: &'a str,
    rabbit_pids: &'a [u32],
    db: &'a TestDb,
    namespace: &'a str,
}

/// Migrates the database and fills it with `count` finished logs, two days old, each with
/// an attempt: work for the retention job (`log_retention` is 1 h in the bench).
async fn seed_old_logs(binary: &Path, db: &TestDb, count: usize) -> anyhow::Result<()> {
    let migrated = tokio::process::Command::new(binary)
        .arg("migrate")
        .env("HOOKRELAY_DATABASE_URL", db.url())
        .output()
        .await?;
    if !migrated.status.success() {
        bail!(
            "cannot migrate: {}",
            String::from_utf8_lossy(&migrated.stderr)
        );
    }
    let client = db.connect().await;
    let partitioned: bool = client
        .query_one("SELECT to_regclass('delivery_logs') IS NOT NULL", &[])
        .await?
        .get(0);
    if partitioned {
        // The layout of release 9: events once, logs and attempts in the day's partitions.
        client
            .execute(
                "SELECT hookrelay_ensure_partitions(
                    ((now() - interval '2 days') AT TIME ZONE 'UTC')::date,
                    ((now() - interval '2 days') AT TIME ZONE 'UTC')::date)",
                &[],
            )
            .await?;
        client
            .execute(
                "CREATE TEMPORARY TABLE seed AS
                 SELECT hookrelay_log_id(now() - interval '2 days') AS id, n
                 FROM generate_series(1, $1::int) n",
                &[&(count as i32)],
            )
            .await?;
        client
            .batch_execute(
                "INSERT INTO events (account_id, id, event_type, body, occurred_at, received_at)
                 SELECT 'old', 'old_' || n, 'Contact.created', '{\"n\":1}',
                        hookrelay_uuid_time(id), hookrelay_uuid_time(id) FROM seed;
                 INSERT INTO delivery_logs (id, webhook_id, account_id, event_id, event_type,
                                            event_at, created_at, status, attempts, updated_at)
                 SELECT id, gen_random_uuid(), 'old', 'old_' || n, 'Contact.created',
                        hookrelay_uuid_time(id), hookrelay_uuid_time(id), 'succeeded', 1,
                        hookrelay_uuid_time(id)
                 FROM seed;
                 INSERT INTO delivery_attempts (log_id, log_created_at, attempt, started_at,
                                                duration_ms, webhook_id)
                 SELECT id, created_at, 1, created_at, 5, webhook_id FROM delivery_logs;
                 ANALYZE;",
            )
            .await?;
        return Ok(());
    }
    client
        .execute(
            "INSERT INTO webhook_logs
                (id, webhook_id, account_id, event_id, event_type, payload, status, attempts,
                 created_at, updated_at)
             SELECT gen_random_uuid(), gen_random_uuid(), 'old', 'old_' || n, 'Contact.created',
                    '{\"n\":1}', 'succeeded', 1,
                    now() - interval '2 days', now() - interval '2 days'
             FROM generate_series(1, $1::int) n",
            &[&(count as i32)],
        )
        .await?;
    client
        .batch_execute(
            "INSERT INTO webhook_attempts (log_id, attempt, started_at, duration_ms, webhook_id)
             SELECT id, 1, created_at, 5, webhook_id FROM webhook_logs;
             ANALYZE webhook_logs; ANALYZE webhook_attempts;",
        )
        .await?;
    Ok(())
}

/// Logs of the scenario's deliveries that have `succeeded`.
async fn succeeded_logs(pg: &tokio_postgres::Client) -> anyhow::Result<usize> {
    let done: i64 = pg
        .query_one(
            "SELECT count(*) FROM webhook_logs WHERE status = 'succeeded' AND account_id <> 'old'",
            &[],
        )
        .await?
        .get(0);
    Ok(done as usize)
}

/// Sends one event to each account, so that every webhook has one delivery, and waits until
/// all are received and logged; then sets the sinks' count back to zero. Answers how many
/// deliveries that was. The events carry no send time, so they add no latency.
async fn warm_up(
    scenario: &Scenario,
    publisher: &mut Publisher,
    exchange: &str,
    sink: &Sink,
    pg: &tokio_postgres::Client,
) -> anyhow::Result<usize> {
    if scenario.failing > 0 || scenario.fan_out * scenario.accounts != scenario.webhooks {
        bail!("a warm-up needs every webhook healthy and matched by its account's events");
    }
    let events = (0..scenario.accounts)
        .map(|account| {
            let body = serde_json::json!({
                "id": format!("warm_{account}"),
                "account_id": format!("acc_{account}"),
                "data": {"text": "warming up"},
            });
            Ok(Outgoing::json(
                exchange.into(),
                "Message.received".into(),
                serde_json::to_vec(&body)?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    publisher.publish_all(&events, &mut NoRoutes).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while (sink.received.load(Ordering::Relaxed) as usize) < scenario.webhooks
        || succeeded_logs(pg).await? < scenario.webhooks
    {
        if Instant::now() > deadline {
            bail!("the warm-up's deliveries did not all succeed in 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sink.received.store(0, Ordering::Relaxed);
    Ok(scenario.webhooks)
}

/// Waits until each webhook queue has a consumer of every process, so that the figures are of
/// deliveries and not of the service still starting its consumers (ten thousand take it a
/// while after their webhooks are created); answers how long that took.
async fn wait_for_consumers(
    connection: &lapin::Connection,
    topology: &Topology,
    webhook_ids: &[String],
    processes: usize,
) -> anyhow::Result<Duration> {
    use lapin::options::QueueDeclareOptions;
    use lapin::types::FieldTable;
    let started = Instant::now();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let mut channel = connection.create_channel().await?;
    for id in webhook_ids {
        let queue = topology.webhook_queue(id);
        loop {
            match channel
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
            {
                Ok(q) if q.consumer_count() as usize >= processes => break,
                Ok(_) => {}
                // Not declared yet: the refusal (404) closed the channel.
                Err(_) => channel = connection.create_channel().await?,
            }
            if started.elapsed() > Duration::from_secs(600) {
                bail!("the queue of webhook {id} had no consumer of each process after 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = channel.close(200, "counted".into()).await;
    Ok(started.elapsed())
}

async fn measure(
    scenario: &Scenario,
    place: &Place<'_>,
    webhook_ids: &mut Vec<String>,
) -> anyhow::Result<Figures> {
    let (db, namespace) = (place.db, place.namespace);
    let pids: Vec<u32> = place.services.iter().filter_map(|s| s.child.id()).collect();
    let api = format!("http://127.0.0.1:{}", place.services[0].port);
    let client = reqwest::Client::new();

    let setup = Instant::now();
    let sink = Arc::new(Sink::default());
    let sink_url = start_sink(sink.clone()).await?;
    if scenario.schema {
        client
            .patch(format!("{api}/v1/event-types/Message.received"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"schema": twenty_properties()}))
            .send()
            .await?
            .error_for_status()?;
    }
    let per_account = scenario.webhooks / scenario.accounts;
    for n in 0..scenario.webhooks {
        let account = n / per_account;
        // The first webhook of each of the first `failing` accounts fails.
        let path = match (n % per_account, account) {
            (0, a) if a < scenario.failing / 2 => "fail",
            (0, a) if a < scenario.failing => "hang",
            _ => "w",
        };
        let mut webhook = serde_json::json!({
            "account_id": format!("acc_{account}"),
            "url": format!("{sink_url}/{path}/{n}"),
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "events": ["Message.received"],
        });
        if scenario.fifo {
            webhook["ordering"] = serde_json::json!("fifo");
        }
        if scenario.filtered {
            webhook["filter"] = serde_json::json!({
                "data.n": {"$gte": 0},
                "data.text": {"$regex": "^hello"},
                "account_id": {"$in": [format!("acc_{account}"), "acc_other"]},
            });
        }
        webhook_ids.push(create_webhook(&client, &api, &webhook).await?);
    }
    if scenario.fifo_elsewhere {
        let webhook = serde_json::json!({
            "account_id": "acc_elsewhere",
            "url": format!("{sink_url}/w/elsewhere"),
            "events": ["Message.received"],
            "ordering": "fifo",
        });
        webhook_ids.push(create_webhook(&client, &api, &webhook).await?);
    }
    // Healthy deliveries: each event reaches the webhooks of one account, less the failing one
    // of that account if it has one.
    let expected: usize = (0..scenario.events)
        .map(|n| {
            let failing = usize::from(n % scenario.accounts < scenario.failing);
            scenario.fan_out - failing
        })
        .sum();
    eprintln!(
        "  created {} webhooks in {:.2}s",
        scenario.webhooks,
        setup.elapsed().as_secs_f64()
    );

    let connection = hookrelay_broker::connect(place.amqp).await?;
    let topology = Topology::with_queue_type(namespace, place.queue_type);
    let counting = hookrelay_tests::amqp_connection(place.amqp).await;
    let ready = wait_for_consumers(&counting, &topology, webhook_ids, place.services.len()).await?;
    let _ = counting.close(200, "counted".into()).await;
    eprintln!(
        "  every webhook queue consumed by every process {:.2}s later",
        ready.as_secs_f64()
    );
    let mut publisher = Publisher::open(&connection).await?;
    topology.declare_base(publisher.declarer()).await?;
    let exchange = topology.events_exchange();
    let (pg, pg_conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls).await?;
    tokio::spawn(pg_conn);
    let warmed = if scenario.warm_up {
        let warm = Instant::now();
        let warmed = warm_up(scenario, &mut publisher, &exchange, &sink, &pg).await?;
        eprintln!(
            "  warmed up: {warmed} deliveries, one to each webhook, in {:.2}s",
            warm.elapsed().as_secs_f64()
        );
        warmed
    } else {
        0
    };

    let pg_before = pg_position(&pg).await?;
    let started = Instant::now();
    let cpu_before = (cpu_of(&pids), cpu_of(place.rabbit_pids));
    let postgres_before = cpu_each(&postgres_pids(&pg).await?);
    let rabbit_written_before = written_by(place.rabbit_pids);
    let mut pending = Vec::with_capacity(1000);
    let mut pacer = Pacer::new(scenario.pace);
    let filler = "x".repeat(scenario.filler);
    let mut sent = 0;
    while sent < scenario.events {
        let chunk = pacer.next().await;
        for _ in 0..chunk.min(scenario.events - sent) {
            let account = format!("acc_{}", sent % scenario.accounts);
            let body = serde_json::json!({
                "id": format!("evt_{sent}"),
                "account_id": account,
                "data": {"sent_at_ns": now_ns(), "text": "hello from the benchmark", "n": sent,
                         "filler": filler},
            });
            pending.push(Outgoing::json(
                exchange.clone(),
                "Message.received".into(),
                serde_json::to_vec(&body)?,
            ));
            sent += 1;
        }
        if pending.len() >= 1000 || pacer.is_steady() || sent == scenario.events {
            publisher.publish_all(&pending, &mut NoRoutes).await?;
            pending.clear();
        }
    }
    publisher.close().await;
    let published_in = started.elapsed();

    let deadline = Duration::from_secs(300);
    let mut last_report = Instant::now();
    while (sink.received.load(Ordering::Relaxed) as usize) < expected {
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  ... {} deliveries after {:.0}s",
                sink.received.load(Ordering::Relaxed),
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if started.elapsed() > deadline {
            bail!(
                "only {} of {expected} deliveries after {deadline:?}",
                sink.received.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivered_in = started.elapsed();
    loop {
        let done = succeeded_logs(&pg).await?;
        if done >= expected + warmed {
            break;
        }
        if started.elapsed() > deadline {
            let rows = pg
                .query(
                    "SELECT status, count(*), min(error) FROM webhook_logs GROUP BY 1",
                    &[],
                )
                .await?;
            for r in rows {
                eprintln!(
                    "  {}: {} ({:?})",
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1),
                    r.get::<_, Option<String>>(2)
                );
            }
            bail!(
                "only {done} of {} logs succeeded after {deadline:?}",
                expected + warmed
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logged_in = started.elapsed();
    let pg_after = pg_position(&pg).await?;
    let per_delivery = |before: i64, after: i64| (after - before) as f64 / expected.max(1) as f64;
    let wal_bytes_per_delivery = per_delivery(pg_before.0, pg_after.0);
    let disk_bytes_per_delivery = per_delivery(pg_before.1, pg_after.1);
    let per_1k = |before: f64, now: f64| (now - before) * 1000.0 / expected.max(1) as f64;
    let hookrelay_cpu_per_1k = per_1k(cpu_before.0, cpu_of(&pids));
    let rabbitmq_cpu_per_1k = per_1k(cpu_before.1, cpu_of(place.rabbit_pids));
    let postgres_cpu_per_1k = per_1k(0.0, cpu_since(&postgres_pids(&pg).await?, &postgres_before));
    let rabbitmq_written_per_delivery = written_by(place.rabbit_pids)
        .saturating_sub(rabbit_written_before) as f64
        / expected.max(1) as f64;
    let rss = pids.iter().map(|p| peak_rss_mb(*p)).fold(0.0, f64::max);

    let mut latencies: Vec<u64> = sink
        .arrivals
        .lock()
        .map(|l| l.iter().map(|(_, latency)| *latency).collect())
        .unwrap_or_default();
    latencies.sort_unstable();
    let received = sink.received.load(Ordering::Relaxed) as usize;
    eprintln!(
        "  {}: published in {:.2}s, delivered in {:.2}s, logged in {:.2}s",
        scenario.name,
        published_in.as_secs_f64(),
        delivered_in.as_secs_f64(),
        logged_in.as_secs_f64()
    );

    let mut old_logs_left = 0i64;
    if scenario.old_logs > 0 {
        old_logs_left = pg
            .query_one(
                "SELECT count(*) FROM webhook_logs WHERE account_id = 'old'",
                &[],
            )
            .await?
            .get(0);
        eprintln!(
            "  retention deleted {} of {} old logs meanwhile",
            scenario.old_logs as i64 - old_logs_left,
            scenario.old_logs
        );
    }
    let hot_update_pct = hot_update_pct(&pg, expected).await?;
    let _ = connection.close().await;
    Ok(Figures {
        wal_bytes_per_delivery,
        disk_bytes_per_delivery,
        hot_update_pct,
        old_logs_deleted: (scenario.old_logs as i64 - old_logs_left).max(0) as usize,
        scenario: scenario.name.to_owned(),
        webhooks: scenario.webhooks,
        events: scenario.events,
        deliveries: expected,
        deliveries_per_sec: expected as f64 / delivered_in.as_secs_f64(),
        all_logged_secs: logged_in.as_secs_f64(),
        latency_p50_ms: percentile(&latencies, 50.0),
        latency_p99_ms: percentile(&latencies, 99.0),
        latency_max_ms: percentile(&latencies, 100.0),
        peak_rss_mb: rss,
        hookrelay_cpu_per_1k,
        rabbitmq_cpu_per_1k,
        postgres_cpu_per_1k,
        rabbitmq_written_per_delivery,
        processes: place.services.len(),
        duplicates: received.saturating_sub(expected),
        failing_webhooks: scenario.failing,
        requests_to_503: sink.failed_503.load(Ordering::Relaxed),
        requests_to_hanging: sink.hung.load(Ordering::Relaxed),
    })
}

/// The scenarios' figures, and what the failing webhooks and the retention job did.
fn print_table(results: &[Figures]) {
    println!();
    println!(
        "| {:<28} | {:>10} | {:>13} | {:>9} | {:>9} | {:>9} | {:>11} | {:>8} | {:>13} | {:>13} |",
        "scenario",
        "deliveries",
        "deliveries/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "all logged",
        "peak RSS",
        "hookrelay CPU",
        "RabbitMQ CPU"
    );
    println!(
        "|{:-<30}|{:->12}|{:->15}|{:->11}|{:->11}|{:->11}|{:->13}|{:->10}|{:->15}|{:->15}|",
        "", "", "", "", "", "", "", "", "", ""
    );
    for r in results {
        // CPU seconds per 1 000 deliveries.
        let rabbit = match r.rabbitmq_cpu_per_1k {
            c if c > 0.0 => format!("{c:.3} s/1k"),
            _ => "-".to_owned(),
        };
        println!(
            "| {:<28} | {:>10} | {:>13.0} | {:>9.1} | {:>9.1} | {:>9.1} | {:>10.2}s | {:>5.0} MB | {:>8.3} s/1k | {:>13} |",
            r.scenario,
            r.deliveries,
            r.deliveries_per_sec,
            r.latency_p50_ms,
            r.latency_p99_ms,
            r.latency_max_ms,
            r.all_logged_secs,
            r.peak_rss_mb,
            r.hookrelay_cpu_per_1k,
            rabbit
        );
    }
    println!();
    println!(
        "| {:<28} | {:>16} | {:>17} | {:>13} | {:>14} | {:>19} |",
        "scenario",
        "WAL / delivery",
        "disk / delivery",
        "HOT updates",
        "PostgreSQL CPU",
        "RabbitMQ writes"
    );
    println!(
        "|{:-<30}|{:->18}|{:->19}|{:->15}|{:->16}|{:->21}|",
        "", "", "", "", "", ""
    );
    for r in results {
        println!(
            "| {:<28} | {:>14.0} B | {:>15.0} B | {:>12.0}% | {:>9.3} s/1k | {:>8.0} B/delivery |",
            r.scenario,
            r.wal_bytes_per_delivery,
            r.disk_bytes_per_delivery,
            r.hot_update_pct,
            r.postgres_cpu_per_1k,
            r.rabbitmq_written_per_delivery
        );
    }
    for r in results.iter().filter(|r| r.old_logs_deleted > 0) {
        println!(
            "{}: the retention job deleted {} old logs (and their attempts) during the run",
            r.scenario, r.old_logs_deleted
        );
    }
    for r in results.iter().filter(|r| r.failing_webhooks > 0) {
        println!(
            "{}: {} failing webhooks got {} requests answered 503 and {} left hanging",
            r.scenario, r.failing_webhooks, r.requests_to_503, r.requests_to_hanging
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut results = Vec::new();
    for scenario in SCENARIOS
        .iter()
        .filter(|s| args.only.as_deref().is_none_or(|o| selected(o, s.name)))
    {
        eprintln!(
            "running {} ({} webhooks, {} events)...",
            scenario.name, scenario.webhooks, scenario.events
        );
        results.push(run(&args.binary, scenario).await?);
    }
    if !results.is_empty() {
        print_table(&results);
    }
    let mut unaided = Vec::new();
    for a in alone::ALONE
        .iter()
        .filter(|a| args.only.as_deref().is_none_or(|o| selected(o, a.name)))
    {
        eprintln!("running {} (no hookrelay, {} queues)...", a.name, a.queues);
        unaided.push(alone::run(a).await?);
    }
    if !unaided.is_empty() {
        alone::print(&unaided);
    }
    let mut storms = Vec::new();
    if args.only.as_deref().is_none_or(|o| selected(o, "storm")) {
        for (cap, idle) in STORMS {
            eprintln!("running the connection storm ({idle} idle connections, cap {cap})...");
            storms.push(storm::run(&args.binary, cap, idle).await?);
        }
    }
    for s in &storms {
        println!(
            "storm: {} idle connections, max_connections {}: /readyz within {:.1} ms; RSS {:.0} MB \
             before, {:.0} MB during, {:.0} MB 10 s after",
            s.idle_connections,
            s.max_connections,
            s.readyz_max_ms,
            s.rss_before_mb,
            s.rss_during_mb,
            s.rss_after_mb
        );
    }
    let mut volumes = Vec::new();
    if args.only.as_deref().is_none_or(|o| selected(o, "volume")) {
        eprintln!(
            "running volume ({} days of {} logs)...",
            args.volume_days, args.volume_logs_per_day
        );
        let v = volume::run(&args.binary, args.volume_days, args.volume_logs_per_day).await?;
        println!(
            "\nvolume: {} logs in {} daily partitions ({:.1} GB, seeded in {:.0}s)",
            v.logs, v.days, v.database_gb, v.seeded_secs
        );
        println!(
            "volume: W=10 burst {:.0} deliveries/s on it, {:.0} on an empty database ({:.2}x)",
            v.burst_volume_per_sec,
            v.burst_empty_per_sec,
            v.burst_empty_per_sec / v.burst_volume_per_sec.max(1.0)
        );
        println!(
            "| {:<60} | {:>8} | {:>8} |",
            "first page of", "p50 ms", "p99 ms"
        );
        println!("|{:-<62}|{:->10}|{:->10}|", "", "", "");
        for (query, p50, p99) in &v.api {
            println!("| {query:<60} | {p50:>8.1} | {p99:>8.1} |");
        }
        let [before, during, after] = v.steady_p99_ms;
        println!(
            "volume: a day retired in {:.2}s (paced); delivery p99 of a steady 1 000/s: \
             {before:.1} ms before, {during:.1} ms while it went, {after:.1} ms after",
            v.drop_secs
        );
        volumes.push(v);
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let all = serde_json::json!({"scenarios": results, "rabbitmq_alone": unaided,
                                 "storms": storms, "volume": volumes});
    std::fs::write(&args.out, serde_json::to_string_pretty(&all)?)?;
    println!("\nwritten to {}", args.out.display());
    Ok(())
}

/// A schema of 20 properties, which the benchmark's events satisfy: four they carry, checked
/// for type, pattern and range, and sixteen optional ones.
fn twenty_properties() -> serde_json::Value {
    let mut properties = serde_json::json!({
        "sent_at_ns": {"type": "integer", "minimum": 0},
        "text": {"type": "string", "pattern": "^hello"},
        "n": {"type": "integer", "minimum": 0},
        "filler": {"type": "string", "maxLength": 1000000},
    });
    for k in 4..20 {
        properties[format!("p{k}")] = serde_json::json!({"type": "string", "maxLength": 64});
    }
    serde_json::json!({
        "type": "object",
        "required": ["sent_at_ns", "text", "n", "filler"],
        "properties": properties,
        "additionalProperties": false,
    })
}

/// Creates a webhook through the API; answers its id.
async fn create_webhook(
    client: &reqwest::Client,
    api: &str,
    webhook: &serde_json::Value,
) -> anyhow::Result<String> {
    let created: serde_json::Value = client
        .post(format!("{api}/v1/webhooks"))
        .bearer_auth(TOKEN)
        .json(webhook)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = created["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the API answered no webhook id: {created}"))?;
    Ok(id.to_owned())
}
