//! The Grafana dashboard and the alert rules against a real Prometheus: it scrapes a running
//! hookrelay under traffic (one healthy endpoint, one failing) and a RabbitMQ node with the
//! rabbitmq_prometheus plugin, loads `deploy/prometheus/alerts.yml`, and every panel's query
//! must parse and return something. The one panel that reads PostgreSQL runs there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{create_webhook, publish_events_to, spawn};
use hookrelay_broker::QueueType;
use hookrelay_tests::broker::{free_port, TestBroker};
use hookrelay_tests::receiver::{Behaviour, Receiver};
use hookrelay_tests::{unique_namespace, wait_for, TestDb};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(120);
const EVENTS: usize = 20;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One query of one panel.
struct Query {
    panel: String,
    text: String,
    sql: bool,
}

/// Every query of the dashboard, with Grafana's variables given values that suit a Prometheus
/// scraping every second.
fn dashboard_queries(namespace: &str) -> Vec<Query> {
    let path = repository().join("deploy/grafana/hookrelay.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the dashboard")).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let (text, sql) = match (target["expr"].as_str(), target["rawSql"].as_str()) {
                (Some(expr), _) => (expr, false),
                (None, Some(sql)) => (sql, true),
                _ => panic!("panel {}: a query without expr or rawSql", panel["title"]),
            };
            queries.push(Query {
                panel: panel["title"].as_str().unwrap().to_owned(),
                text: text
                    .replace("$__rate_interval", "30s")
                    .replace("$namespace", namespace),
                sql,
            });
        }
    }
    queries
}

/// A Prometheus server of the test's own, killed when dropped.
struct Prometheus {
    _child: tokio::process::Child,
    url: String,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Prometheus {
    /// Scrapes hookrelay (job `hookrelay`) and RabbitMQ's per-queue metrics (job `rabbitmq`)
    /// every second, as `deploy/prometheus/prometheus.yml` does every 15, with the alert rules.
    async fn start(hookrelay_port: u16, rabbitmq_port: u16) -> Self {
        let dir = TempDir(std::env::temp_dir().join(format!(
            "hookrelay-prometheus-{}",
            uuid::Uuid::new_v4().simple()
        )));
        std::fs::create_dir_all(&dir.0).unwrap();
        let rules = repository().join("deploy/prometheus/alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n\
             \x20 - job_name: hookrelay\n    static_configs:\n      - targets: ['127.0.0.1:{hookrelay_port}']\n\
             \x20 - job_name: rabbitmq\n    metrics_path: /metrics/detailed\n    params:\n      family: [queue_coarse_metrics]\n\
             \x20   static_configs:\n      - targets: ['127.0.0.1:{rabbitmq_port}']\n",
            rules = rules.display()
        );
        std::fs::write(dir.0.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = tokio::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.0.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus runs (Debian's `prometheus` package; .ci/run installs it)");
        Self {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// The answer's `data`, or why the query failed (Prometheus' own error, for one that does
    /// not parse).
    async fn query(&self, query: &str) -> Result<Value, String> {
        let answer: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if answer["status"] != "success" {
            return Err(format!("{}: {}", answer["errorType"], answer["error"]));
        }
        Ok(answer["data"].clone())
    }

    async fn rules(&self) -> Option<Value> {
        reqwest::get(format!("{}/api/v1/rules", self.url))
            .await
            .ok()?
            .json()
            .await
            .ok()
    }
}

#[tokio::test]
async fn every_dashboard_query_answers_from_a_real_prometheus() {
    let broker = TestBroker::start_with_prometheus().await;
    let db = TestDb::new();
    let namespace = unique_namespace();
    let healthy = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.answer(Behaviour::Status(500));
    let url = broker.url();
    let service = spawn(
        &db,
        &namespace,
        &[
            ("HOOKRELAY_AMQP_URL", url.as_str()),
            ("HOOKRELAY_RETRY_SCHEDULE", "1s,1s,1s,1s,1s,1s,1s,1s"),
        ],
    )
    .await;
    create_webhook(service.port, &healthy.url, "Message.received").await;
    create_webhook(service.port, &failing.url, "Message.received").await;
    let prometheus =
        Prometheus::start(service.port, broker.prometheus_port().expect("its port")).await;

    // Traffic while Prometheus watches, so that rates and quantiles have two samples to work on.
    publish_events_to(&url, &namespace, QueueType::Classic, "{}", EVENTS).await;
    healthy.wait_for(EVENTS, DEADLINE).await;
    failing.wait_for(EVENTS, DEADLINE).await;

    // The alert rules load and evaluate without error.
    let groups = wait_for("the alert rules loaded", DEADLINE, || async {
        let rules = prometheus.rules().await?;
        let groups = rules["data"]["groups"].as_array()?.clone();
        let evaluated = groups.iter().all(|g| {
            g["rules"]
                .as_array()
                .is_some_and(|r| r.iter().all(|r| r["health"] == "ok"))
        });
        (!groups.is_empty() && evaluated).then_some(groups)
    })
    .await;
    let rules: usize = groups
        .iter()
        .map(|g| g["rules"].as_array().map_or(0, Vec::len))
        .sum();
    let written = std::fs::read_to_string(repository().join("deploy/prometheus/alerts.yml"))
        .expect("alerts.yml")
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert!(written >= 10, "{written} alerts read from alerts.yml");
    assert_eq!(rules, written, "every rule of alerts.yml loaded");

    let queries = dashboard_queries(&namespace);
    assert!(queries.len() > 20, "{} queries", queries.len());
    let client = db.connect().await;
    // Each query must answer; those that are empty at first (rates need a second sample)
    // are asked again until the deadline.
    wait_for("every panel's query to return data", DEADLINE, || async {
        let mut empty = Vec::new();
        for q in &queries {
            if q.sql {
                let rows = client
                    .query(q.text.as_str(), &[])
                    .await
                    .unwrap_or_else(|e| panic!("panel {:?}: the SQL fails: {e}", q.panel));
                if rows.is_empty() {
                    empty.push(q.panel.clone());
                }
                continue;
            }
            match prometheus.query(&q.text).await {
                Ok(data) if data["result"].as_array().is_some_and(|r| !r.is_empty()) => {}
                Ok(_) => empty.push(format!("{}: {}", q.panel, q.text)),
                // Prometheus not up yet answers no JSON; a query it refuses is final.
                Err(e) if e.contains("bad_data") => panic!("panel {:?}: {e}", q.panel),
                Err(e) => empty.push(format!("{}: {e}", q.panel)),
            }
        }
        if empty.is_empty() {
            Some(())
        } else {
            eprintln!("still empty: {empty:#?}");
            None
        }
    })
    .await;

    // The failing endpoint tops the database panel.
    let top = client
        .query(queries.iter().find(|q| q.sql).unwrap().text.as_str(), &[])
        .await
        .unwrap();
    assert_eq!(top.len(), 1, "only the failing webhook fails");
    assert!(top[0].get::<_, i64>("failed_attempts") >= EVENTS as i64);
}
