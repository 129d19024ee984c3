//! Logs at a platform's volume: 30 days of a million logs a day (with their events and
//! attempts), written in SQL into daily partitions the way the service lays them out. On that
//! database: deliveries per second of a W=10 burst against the same burst on an empty
//! database; the first page of every logs API filter and of the statistics route, p50 and
//! p99; and a day's partition dropped during a steady 1 000 deliveries/s, with the delivery
//! p99 before and while it goes.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookrelay_broker::{NoRoutes, Outgoing, Publisher, Topology};
use hookrelay_tests::{amqp_url, unique_namespace, TestDb};
use serde::Serialize;

use crate::scenarios::{Pace, Pacer};
use crate::sink::{now_ns, start_sink, Sink};

/// The webhooks that exist (of account `acc_0`), of the thousand the old logs belong to.
const LIVE_WEBHOOKS: usize = 10;

#[derive(Serialize)]
pub struct VolumeFigures {
    pub days: usize,
    pub logs: i64,
    pub seeded_secs: f64,
    pub database_gb: f64,
    pub burst_empty_per_sec: f64,
    pub burst_volume_per_sec: f64,
    /// (what was asked, p50 ms, p99 ms) over 50 calls each.
    pub api: Vec<(String, f64, f64)>,
    /// The upkeep pass that retired a day, its pieces paced.
    pub drop_secs: f64,
    /// A steady load's delivery p99 before, while and after a day is retired.
    pub steady_p99_ms: [f64; 3],
}

/// One day's partitions of events, logs and attempts, each filled before it is attached (its
/// indexes are built once, whole, at the attach). Three logs per event, one in fifty failed.
async fn seed_day(
    pg: &tokio_postgres::Client,
    day: chrono::NaiveDate,
    per_day: usize,
) -> anyhow::Result<()> {
    let suffix = day.format("%Y%m%d");
    let low = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let high = low + chrono::Duration::days(1);
    let step_us = 86_400_000_000 / per_day as i64;
    let (low, high) = (low.to_rfc3339(), high.to_rfc3339());
    pg.batch_execute(&format!(
        "CREATE TABLE seed_p{suffix} AS
         SELECT n, hookrelay_log_id('{low}'::timestamptz + n::bigint * {step_us} * interval '1 microsecond')
                    AS id
         FROM generate_series(0, {per_day} - 1) n;
         CREATE TABLE events_p{suffix} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
         INSERT INTO events_p{suffix} (account_id, id, event_type, body, occurred_at, received_at)
         SELECT w.account_id, 'evt_{suffix}_' || (s.n / 3),
                (ARRAY['Message.received','Message.received','Message.received',
                       'Contact.created','Contact.updated','Template.status'])[1 + (s.n / 3) % 6],
                '{{\"id\":\"evt_{suffix}_' || (s.n / 3) || '\",\"data\":{{\"text\":\"' || repeat('x', 200)
                    || '\"}}}}',
                hookrelay_uuid_time(s.id), hookrelay_uuid_time(s.id)
         FROM seed_p{suffix} s JOIN seed_webhooks w ON w.n = (s.n / 3 * 3) % 1000
         WHERE s.n % 3 = 0;
         CREATE TABLE delivery_logs_p{suffix}
             (LIKE delivery_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS) WITH (fillfactor = 50);
         INSERT INTO delivery_logs_p{suffix}
             (id, webhook_id, account_id, event_id, event_type, event_at, created_at, status,
              attempts, troubled, response_status, updated_at, delivered_at)
         SELECT s.id, w.id, ew.account_id, 'evt_{suffix}_' || (s.n / 3),
                (ARRAY['Message.received','Message.received','Message.received',
                       'Contact.created','Contact.updated','Template.status'])[1 + (s.n / 3) % 6],
                hookrelay_uuid_time(first.id), hookrelay_uuid_time(s.id),
                CASE WHEN s.n % 50 = 0 THEN 'failed' ELSE 'succeeded' END, 1, s.n % 50 = 0,
                CASE WHEN s.n % 50 = 0 THEN 503 ELSE 200 END,
                hookrelay_uuid_time(s.id), hookrelay_uuid_time(s.id)
         FROM seed_p{suffix} s
         JOIN seed_p{suffix} first ON first.n = s.n / 3 * 3
         JOIN seed_webhooks w ON w.n = s.n % 1000
         JOIN seed_webhooks ew ON ew.n = (s.n / 3 * 3) % 1000;
         CREATE TABLE delivery_attempts_p{suffix}
             (LIKE delivery_attempts INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
         INSERT INTO delivery_attempts_p{suffix}
             (log_id, log_created_at, webhook_id, attempt, started_at, duration_ms,
              response_status)
         SELECT id, created_at, webhook_id, 1, created_at, 5 + (hashtext(id::text) & 127),
                response_status
         FROM delivery_logs_p{suffix};
         DROP TABLE seed_p{suffix};
         ALTER TABLE events_p{suffix} ADD CHECK (received_at >= '{low}' AND received_at < '{high}');
         ALTER TABLE events ATTACH PARTITION events_p{suffix} FOR VALUES FROM ('{low}') TO ('{high}');
         ALTER TABLE delivery_logs_p{suffix} ADD CHECK (created_at >= '{low}' AND created_at < '{high}');
         ALTER TABLE delivery_logs ATTACH PARTITION delivery_logs_p{suffix}
             FOR VALUES FROM ('{low}') TO ('{high}');
         ALTER TABLE delivery_attempts_p{suffix}
             ADD CHECK (log_created_at >= '{low}' AND log_created_at < '{high}');
         ALTER TABLE delivery_attempts ATTACH PARTITION delivery_attempts_p{suffix}
             FOR VALUES FROM ('{low}') TO ('{high}');"
    ))
    .await?;
    Ok(())
}

/// Migrates `db` and writes `days` days of `per_day` logs each, ending the day before
/// yesterday, for a thousand webhooks of a hundred accounts, of which the first ten exist
/// (account `acc_0`, delivering to `sink_url`).
async fn seed(
    binary: &Path,
    db: &TestDb,
    sink_url: &str,
    days: usize,
    per_day: usize,
) -> anyhow::Result<()> {
    migrate(binary, db).await?;
    let pg = db.connect().await;
    pg.batch_execute(&format!(
        "CREATE TABLE seed_webhooks AS
         SELECT n, gen_random_uuid() AS id, 'acc_' || (n / 10) AS account_id
         FROM generate_series(0, 999) n;
         INSERT INTO webhooks (id, account_id, url, events)
         SELECT id, account_id, '{sink_url}/w/' || n, ARRAY['Message.received']
         FROM seed_webhooks WHERE n < {LIVE_WEBHOOKS};"
    ))
    .await?;
    let today = chrono::Utc::now().date_naive();
    for back in (2..days as i64 + 2).rev() {
        let started = Instant::now();
        seed_day(&pg, today - chrono::Duration::days(back), per_day).await?;
        eprintln!(
            "  seeded {} in {:.1}s",
            today - chrono::Duration::days(back),
            started.elapsed().as_secs_f64()
        );
    }
    // Days-old data has long been vacuumed (hint bits set, the visibility map written) and
    // checkpointed; left to autovacuum here, that work would land in the measurements.
    for statement in ["DROP TABLE seed_webhooks", "VACUUM ANALYZE", "CHECKPOINT"] {
        pg.batch_execute(statement).await?;
    }
    Ok(())
}

async fn migrate(binary: &Path, db: &TestDb) -> anyhow::Result<()> {
    let migrated = tokio::process::Command::new(binary)
        .arg("migrate")
        .env("HOOKRELAY_DATABASE_URL", db.url())
        .output()
        .await?;
    anyhow::ensure!(
        migrated.status.success(),
        "cannot migrate: {}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    Ok(())
}

/// Publishes `events` events of `acc_0` (each to its ten webhooks) at `pace`.
async fn publish(namespace: &str, events: usize, pace: Pace) -> anyhow::Result<()> {
    let connection = hookrelay_broker::connect(&amqp_url()).await?;
    let topology = Topology::new(namespace);
    let mut publisher = Publisher::open(&connection).await?;
    topology.declare_base(publisher.declarer()).await?;
    let exchange = topology.events_exchange();
    let mut pacer = Pacer::new(pace);
    let (mut sent, mut pending) = (0, Vec::with_capacity(1000));
    while sent < events {
        let chunk = pacer.next().await;
        for _ in 0..chunk.min(events - sent) {
            let body = serde_json::json!({
                "id": format!("bench_{}_{sent}", now_ns()),
                "account_id": "acc_0",
                "data": {"sent_at_ns": now_ns(), "text": "hello from the benchmark"},
            });
            pending.push(Outgoing::json(
                exchange.clone(),
                "Message.received".into(),
                serde_json::to_vec(&body)?,
            ));
            sent += 1;
        }
        if pending.len() >= 1000 || pacer.is_steady() || sent == events {
            publisher.publish_all(&pending, &mut NoRoutes).await?;
            pending.clear();
        }
    }
    publisher.close().await;
    let _ = connection.close().await;
    Ok(())
}

async fn wait_received(sink: &Sink, expected: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    while sink.received.load(Ordering::Relaxed) < expected {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "only {} of {expected} deliveries",
            sink.received.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// A W=10 burst of 5 000 events on `db` (seeded or not): deliveries per second.
async fn burst(sink: &Arc<Sink>, namespace: &str) -> anyhow::Result<f64> {
    let before = sink.received.load(Ordering::Relaxed);
    let started = Instant::now();
    publish(namespace, 5_000, Pace::Burst).await?;
    wait_received(sink, before + 50_000).await?;
    Ok(50_000.0 / started.elapsed().as_secs_f64())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

fn percentile_us(values: &[u64], p: f64) -> f64 {
    let mut sorted: Vec<f64> = values.iter().map(|v| *v as f64 / 1000.0).collect();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, p)
}

async fn start(
    binary: &Path,
    db: &TestDb,
    namespace: &str,
) -> anyhow::Result<hookrelay_tests::ServiceProcess> {
    let mut env = hookrelay_tests::service_env(db, namespace, crate::TOKEN);
    // The seeded days are all kept: the bench drops one itself, timed.
    env.push(("HOOKRELAY_LOG_RETENTION", "60days".to_owned()));
    hookrelay_tests::spawn_service(binary, &env)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The live webhooks' consumers are up.
async fn ready(api: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::new();
    let list: serde_json::Value = client
        .get(format!("{api}/v1/webhooks?account_id=acc_0"))
        .bearer_auth(crate::TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let id = list["items"][0]["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no webhook: {list}"))?
        .to_owned();
    // Their queues are declared at start; a moment for the consumers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(id)
}

pub async fn run(binary: &Path, days: usize, per_day: usize) -> anyhow::Result<VolumeFigures> {
    let sink = Arc::new(Sink::default());
    let sink_url = start_sink(sink.clone()).await?;

    // The same burst on an empty database first.
    let empty = TestDb::new();
    migrate(binary, &empty).await?;
    {
        let pg = empty.connect().await;
        pg.batch_execute(&format!(
            "INSERT INTO webhooks (id, account_id, url, events)
             SELECT gen_random_uuid(), 'acc_0', '{sink_url}/w/' || n, ARRAY['Message.received']
             FROM generate_series(0, {LIVE_WEBHOOKS} - 1) n"
        ))
        .await?;
    }
    let namespace = unique_namespace();
    let mut service = start(binary, &empty, &namespace).await?;
    let api = format!("http://127.0.0.1:{}", service.port);
    ready(&api).await?;
    let burst_empty_per_sec = burst(&sink, &namespace).await;
    stop(&mut service, &empty, &namespace).await;
    let burst_empty_per_sec = burst_empty_per_sec?;
    eprintln!("  empty database: {burst_empty_per_sec:.0} deliveries/s");

    let db = TestDb::new();
    let seeding = Instant::now();
    seed(binary, &db, &sink_url, days, per_day).await?;
    let seeded_secs = seeding.elapsed().as_secs_f64();
    let pg = db.connect().await;
    let logs: i64 = pg
        .query_one("SELECT count(*) FROM delivery_logs", &[])
        .await?
        .get(0);
    let database_gb: f64 = pg
        .query_one(
            "SELECT pg_database_size(current_database())::float8 / 1e9",
            &[],
        )
        .await?
        .get(0);
    eprintln!("  {logs} logs seeded in {seeded_secs:.0}s ({database_gb:.1} GB)");

    let namespace = unique_namespace();
    let mut service = start(binary, &db, &namespace).await?;
    let measured = measure(&mut service, &db, &sink, &namespace, days).await;
    stop(&mut service, &db, &namespace).await;
    let measured = measured?;
    Ok(VolumeFigures {
        days,
        logs,
        seeded_secs,
        database_gb,
        burst_empty_per_sec,
        burst_volume_per_sec: measured.burst_volume_per_sec,
        api: measured.api,
        drop_secs: measured.drop_secs,
        steady_p99_ms: measured.steady_p99_ms,
    })
}

/// Stops the service, then removes what it declared on the shared broker: the namespace's
/// exchanges and queues, and its webhooks' queues.
async fn stop(service: &mut hookrelay_tests::ServiceProcess, db: &TestDb, namespace: &str) {
    let _ = service.child.start_kill();
    let _ = service.child.wait().await;
    let webhooks = hookrelay_tests::webhook_ids(&db.url()).await;
    hookrelay_tests::delete_namespace(&amqp_url(), namespace, &webhooks).await;
}

/// Figures of the seeded database: the burst, the API, and a day retired under load.
struct Measured {
    burst_volume_per_sec: f64,
    api: Vec<(String, f64, f64)>,
    drop_secs: f64,
    /// The delivery p99 of a steady load before, while and after a day is retired.
    steady_p99_ms: [f64; 3],
}

/// Before the first window of the steady load.
const WARM_UP: Duration = Duration::from_secs(5);
/// A window of the steady load.
const WINDOW: Duration = Duration::from_secs(15);

async fn measure(
    service: &mut hookrelay_tests::ServiceProcess,
    db: &TestDb,
    sink: &Arc<Sink>,
    namespace: &str,
    days: usize,
) -> anyhow::Result<Measured> {
    let pg = db.connect().await;
    let api = format!("http://127.0.0.1:{}", service.port);
    let webhook = ready(&api).await?;
    let burst_volume_per_sec = burst(sink, namespace).await?;
    eprintln!("  {days} days of logs: {burst_volume_per_sec:.0} deliveries/s");

    // The first page of each filter, and the statistics.
    let client = reqwest::Client::new();
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(3)).to_rfc3339();
    let old = (chrono::Utc::now() - chrono::Duration::days(20)).to_rfc3339();
    let enc = |s: &str| s.replace('+', "%2B").replace(':', "%3A");
    let event_id = format!(
        "evt_{}_77",
        (chrono::Utc::now() - chrono::Duration::days(10)).format("%Y%m%d")
    );
    let queries = [
        "/v1/logs".to_owned(),
        format!("/v1/logs?webhook_id={webhook}"),
        "/v1/logs?account_id=acc_42".to_owned(),
        "/v1/logs?status=failed".to_owned(),
        "/v1/logs?status=pending".to_owned(),
        "/v1/logs?status=retrying".to_owned(),
        "/v1/logs?status=succeeded".to_owned(),
        "/v1/logs?event_type=Template.status".to_owned(),
        format!("/v1/logs?event_id={event_id}"),
        format!("/v1/logs?since={}", enc(&yesterday)),
        format!("/v1/logs?until={}", enc(&old)),
        "/v1/logs?account_id=acc_42&status=failed".to_owned(),
        format!("/v1/webhooks/{webhook}/stats"),
    ];
    let mut api_figures = Vec::new();
    for query in queries {
        let mut took = Vec::with_capacity(50);
        for _ in 0..50 {
            let started = Instant::now();
            let answer = client
                .get(format!("{api}{query}"))
                .bearer_auth(crate::TOKEN)
                .send()
                .await?;
            anyhow::ensure!(answer.status().is_success(), "{query}: {}", answer.status());
            answer.bytes().await?;
            took.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        took.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&took, 50.0), percentile(&took, 99.0));
        eprintln!("  {query}: p50 {p50:.1} ms, p99 {p99:.1} ms");
        api_figures.push((query, p50, p99));
    }

    // A steady 1 000 deliveries/s for a minute, timed in 15 s windows: the oldest day is
    // retired (by the service's own upkeep pass) at the start of the second. The other
    // windows show what the latency does on its own (the broker and the database have stalls
    // of their own). The burst's writes are flushed first, so that no checkpoint forced by
    // them lands in it.
    pg.batch_execute("CHECKPOINT").await?;
    sink.arrivals.lock().map(|mut l| l.clear()).ok();
    let started = Instant::now();
    let steady = tokio::spawn({
        let namespace = namespace.to_owned();
        async move { publish(&namespace, 6_000, Pace::Steady(100)).await }
    });
    tokio::time::sleep(WARM_UP + WINDOW).await;
    let store = hookrelay_store::Store::connect(&db.url(), &Default::default())?;
    let metrics = hookrelay_metrics::Metrics::new()?;
    let periods = hookrelay_dispatch::retention::Periods {
        logs: Duration::from_secs(days as u64 * 86_400),
        dedupe: Duration::from_secs(7 * 86_400),
    };
    let dropping = Instant::now();
    hookrelay_dispatch::retention::pass(&store, &metrics, periods, &Default::default()).await?;
    let drop_secs = dropping.elapsed().as_secs_f64();
    let oldest = chrono::Utc::now().date_naive() - chrono::Duration::days(days as i64 + 1);
    let left: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_p' || $1",
            &[&oldest.format("%Y%m%d").to_string()],
        )
        .await?
        .get(0);
    anyhow::ensure!(
        left == 0,
        "{oldest} was not retired: {left} of its tables are left"
    );
    steady.await??;
    let arrivals = sink.arrivals.lock().map(|l| l.clone()).unwrap_or_default();
    // The windows: [5, 20) s without, [20, 20 + max(15, the pass + 2)) s with, then without.
    let drop_from = (dropping - started).as_secs_f64();
    let drop_until = drop_from + WINDOW.as_secs_f64().max(drop_secs + 2.0);
    let window = |from: f64, until: f64| {
        let mut l: Vec<u64> = arrivals
            .iter()
            .filter(|(at, _)| {
                let at = (*at - started).as_secs_f64();
                at >= from && at < until
            })
            .map(|(_, latency)| *latency)
            .collect();
        l.sort_unstable();
        (
            percentile_us(&l, 99.0),
            l.last().map_or(0.0, |m| *m as f64 / 1000.0),
        )
    };
    let warm = WARM_UP.as_secs_f64();
    let before = window(warm, drop_from);
    let during = window(drop_from, drop_until);
    let after = window(drop_until, drop_until + WINDOW.as_secs_f64());
    eprintln!(
        "  a day retired in {drop_secs:.2}s; delivery p99 (max) over 15 s windows: \
         {:.1} ({:.1}) ms before, {:.1} ({:.1}) ms while it went, {:.1} ({:.1}) ms after",
        before.0, before.1, during.0, during.1, after.0, after.1
    );
    Ok(Measured {
        burst_volume_per_sec,
        api: api_figures,
        drop_secs,
        steady_p99_ms: [before.0, during.0, after.0],
    })
}
