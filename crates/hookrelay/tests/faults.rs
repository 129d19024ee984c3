//! Faults survived during a burst: each test publishes 1 500 events to two webhooks on local
//! receivers (3 000 deliveries), breaks one piece when a fifth of them have arrived, and ends
//! with every event delivered to every receiver, every log `succeeded`, and the duplicates
//! counted and bounded by what was in flight.
//!
//! They take a while (a broker node, a database server or a cluster of their own): their
//! names start with `slow_`, so that `make test-fast` skips them; `make test` runs them.

// A test that cannot set up its world should stop there, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use std::time::Duration;

use common::{create_webhook, publish_events_to, settle, spawn};
use hookrelay_broker::{Declarer, QueueType, Topology};
use hookrelay_tests::broker::{TestBroker, TestCluster};
use hookrelay_tests::postgres::TestPostgres;
use hookrelay_tests::receiver::{Behaviour, Receiver};
use hookrelay_tests::{amqp_url, metric, TestDb};

const EVENTS: usize = 1500;
const PER_WEBHOOK: usize = 4;
/// Deliveries one webhook can have had under way or received unacked when the fault came,
/// and so may get again: its consumer's prefetch (twice `max_in_flight_per_webhook`), plus
/// the events the fan-out had taken and not yet acked (its prefetch, 512), whose deliveries
/// it publishes again when they come back.
const WINDOW_PER_WEBHOOK: usize = 2 * PER_WEBHOOK + 512;
const DEADLINE: Duration = Duration::from_secs(180);

fn settings<'a>(extra: &[(&'static str, &'a str)]) -> Vec<(&'static str, &'a str)> {
    let mut all = vec![
        ("HOOKRELAY_MAX_IN_FLIGHT_PER_WEBHOOK", "4"),
        ("HOOKRELAY_RETRY_SCHEDULE", "1s,1s,1s,1s,1s,1s,1s,1s"),
    ];
    all.extend_from_slice(extra);
    all
}

/// Two receivers that take a little time over each request, so that the burst lasts.
async fn receivers() -> (Receiver, Receiver) {
    let a = Receiver::start().await;
    let b = Receiver::start().await;
    for r in [&a, &b] {
        r.answer(Behaviour::Delay(Duration::from_millis(3), 200));
    }
    (a, b)
}

async fn wait_for_a_fifth(a: &Receiver, b: &Receiver) {
    hookrelay_tests::wait_for("a fifth of the deliveries", DEADLINE, || async {
        (a.count() + b.count() >= 2 * EVENTS / 5).then_some(())
    })
    .await;
}

fn report(what: &str, duplicates: usize) {
    report_of(what, duplicates, 2, 2 * EVENTS);
}

/// As [`report`], for `webhooks` webhooks and `deliveries` deliveries in all.
fn report_of(what: &str, duplicates: usize, webhooks: usize, deliveries: usize) {
    let bound = webhooks * WINDOW_PER_WEBHOOK;
    eprintln!("{what}: {duplicates} duplicate deliveries of {deliveries} (bound {bound})");
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates, more than the {bound} that can have been in flight"
    );
}

/// The largest number of requests one receiver had under way at once.
fn most_at_once(receiver: &Receiver) -> usize {
    receiver
        .received()
        .iter()
        .map(|r| r.in_flight)
        .max()
        .unwrap_or(0)
}

/// The logs of `db` for which `condition` holds.
async fn count_logs_where(db: &TestDb, condition: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
        .await
        .expect("the database");
    tokio::spawn(connection);
    client
        .query_one(
            &format!("SELECT count(*) FROM webhook_logs WHERE {condition}"),
            &[],
        )
        .await
        .expect("a count")
        .get(0)
}

/// Every node's AMQP URL, and `amqp_url` naming them all.
fn every_node(cluster: &TestCluster) -> (Vec<String>, String) {
    let urls: Vec<String> = cluster.nodes.iter().map(TestBroker::url).collect();
    let amqp_urls = urls.join(",");
    (urls, amqp_urls)
}

async fn metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test]
async fn slow_one_of_two_processes_killed_loses_nothing_and_each_webhook_has_one_consumer() {
    let db = TestDb::new();
    let namespace = hookrelay_tests::unique_namespace();
    let (a, b) = receivers().await;
    let env = settings(&[]);
    let mut first = spawn(&db, &namespace, &env).await;
    let second = spawn(&db, &namespace, &env).await;
    let ids_a = create_webhook(first.port, &a.url, "Message.received").await;
    let ids_b = create_webhook(first.port, &b.url, "Message.received").await;

    let events = publish_events_to(&amqp_url(), &namespace, QueueType::Classic, "{}", EVENTS).await;
    wait_for_a_fifth(&a, &b).await;
    // Both processes take events from the ingest queue (competing consumers).
    let (m1, m2) = (metrics(first.port).await, metrics(second.port).await);
    let took = |m: &str| metric(m, "hookrelay_events_received_total");
    assert!(
        took(&m1) > 0.0 && took(&m2) > 0.0,
        "both processes fan out: {} and {}",
        took(&m1),
        took(&m2)
    );
    first.child.start_kill().expect("SIGKILL");
    first.child.wait().await.expect("killed");

    let duplicates = settle(&[&a, &b], &events, &db.url(), DEADLINE).await;
    report("one of two processes killed", duplicates);
    // One active consumer per webhook queue across both processes: the per-webhook limit
    // holds for the deployment, not per process.
    for r in [&a, &b] {
        assert!(
            most_at_once(r) <= PER_WEBHOOK,
            "{} requests at once to one webhook, over max_in_flight_per_webhook",
            most_at_once(r)
        );
    }
    drop(second);
    hookrelay_tests::delete_namespace(&amqp_url(), &namespace, &[ids_a, ids_b]).await;
}

#[tokio::test]
async fn slow_a_rabbitmq_restart_during_a_burst_loses_nothing() {
    let broker = TestBroker::start().await;
    let db = TestDb::new();
    let namespace = hookrelay_tests::unique_namespace();
    let (a, b) = receivers().await;
    let url = broker.url();
    let env = settings(&[("HOOKRELAY_AMQP_URL", url.as_str())]);
    let service = spawn(&db, &namespace, &env).await;
    create_webhook(service.port, &a.url, "Message.received").await;
    create_webhook(service.port, &b.url, "Message.received").await;

    let events = publish_events_to(&url, &namespace, QueueType::Classic, "{}", EVENTS).await;
    wait_for_a_fifth(&a, &b).await;
    broker.restart().await;

    let duplicates = settle(&[&a, &b], &events, &db.url(), DEADLINE).await;
    report("RabbitMQ restarted", duplicates);
}

#[tokio::test]
async fn slow_a_postgres_restart_during_a_burst_loses_nothing() {
    let postgres = TestPostgres::start().await;
    let database_url = format!("{}/hookrelay", postgres.server_url());
    let namespace = hookrelay_tests::unique_namespace();
    let (a, b) = receivers().await;
    let env = settings(&[("HOOKRELAY_DATABASE_URL", database_url.as_str())]);
    let service = spawn(&TestDb::unowned(), &namespace, &env).await;
    let ids_a = create_webhook(service.port, &a.url, "Message.received").await;
    let ids_b = create_webhook(service.port, &b.url, "Message.received").await;

    let events = publish_events_to(&amqp_url(), &namespace, QueueType::Classic, "{}", EVENTS).await;
    wait_for_a_fifth(&a, &b).await;
    postgres.restart().await;

    let duplicates = settle(&[&a, &b], &events, &database_url, DEADLINE).await;
    report("PostgreSQL restarted", duplicates);
    drop(service);
    hookrelay_tests::delete_namespace(&amqp_url(), &namespace, &[ids_a, ids_b]).await;
}

/// A row per queue of `rabbitmqctl list_queues` on `node`, with `columns` (`name` first).
fn queue_rows(node: &TestBroker, columns: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec!["list_queues", "--quiet", "--no-table-headers"];
    args.extend_from_slice(columns);
    node.ctl(&args)
        .lines()
        .map(|l| l.split('\t').map(|c| c.trim().to_owned()).collect())
        .filter(|row: &Vec<String>| row.len() == columns.len())
        .collect()
}

/// The queues of `namespace` whose leader is on `node`, as `rabbitmqctl list_queues` tells.
fn led_by(cluster: &TestCluster, namespace: &str, node: &str) -> HashSet<String> {
    queue_rows(&cluster.nodes[0], &["name", "leader"])
        .into_iter()
        .filter(|row| row[0].starts_with(namespace) && row[1] == node)
        .map(|row| row[0].clone())
        .collect()
}

#[tokio::test]
async fn slow_a_cluster_node_stopped_with_quorum_queues_loses_nothing() {
    let cluster = TestCluster::start(3).await;
    let db = TestDb::new();
    let namespace = hookrelay_tests::unique_namespace();
    let (a, b) = receivers().await;
    // Every fifth request fails, so that retries pass through the (quorum) delay tiers too.
    let failing = (0..EVENTS).map(|n| match n % 5 {
        0 => Behaviour::Status(503),
        _ => Behaviour::Delay(Duration::from_millis(3), 200),
    });
    a.script(failing);
    let url = cluster.nodes[0].url();
    let env = settings(&[
        ("HOOKRELAY_AMQP_URL", url.as_str()),
        ("HOOKRELAY_QUEUE_TYPE", "quorum"),
    ]);
    let service = spawn(&db, &namespace, &env).await;
    create_webhook(service.port, &a.url, "Message.received").await;
    create_webhook(service.port, &b.url, "Message.received").await;

    // Quorum queues get their leader on the node the declaring client is connected to;
    // spread them over the cluster, as an operator would, so that the node stopped below
    // leads some.
    cluster.nodes[0].tool("rabbitmq-queues", &["rebalance", "quorum"]);
    let events = publish_events_to(&url, &namespace, QueueType::Quorum, "{}", EVENTS).await;
    wait_for_a_fifth(&a, &b).await;
    // The service is connected to the first node, which holds the webhook queues (classic);
    // the node stopped is the other one that leads the most of the replicated ones.
    let (victim, led) = cluster.nodes[1..]
        .iter()
        .map(|n| (n, led_by(&cluster, &namespace, &n.node)))
        .max_by_key(|(_, led)| led.len())
        .expect("two other nodes");
    eprintln!(
        "stopping {}, leader of {} queues: {led:?}",
        victim.node,
        led.len()
    );
    assert!(
        !led.is_empty(),
        "the node to stop leads no queue: nothing would be tested"
    );
    victim.stop();

    // The failed requests are expected, not duplicates.
    let duplicates = settle(&[&a, &b], &events, &db.url(), DEADLINE)
        .await
        .saturating_sub(EVENTS / 5);
    report("a cluster node stopped", duplicates);
    assert!(
        led_by(&cluster, &namespace, &victim.node).is_empty(),
        "the queues it led have new leaders"
    );
    drop(service);
}

/// A classic webhook queue lives on one node. A node lost for good, with its disk, takes
/// those queues and the deliveries in them; their logs are still unfinished. Once the node is
/// removed from the cluster, each process finds the queues it had declared missing, declares
/// them on a node still up, and sends their unfinished deliveries again from the logs.
#[tokio::test]
async fn slow_a_cluster_node_lost_with_its_disk_loses_no_delivery() {
    let cluster = TestCluster::start(3).await;
    let db = TestDb::new();
    let namespace = hookrelay_tests::unique_namespace();
    let (a, b) = receivers().await;
    let (urls, amqp_urls) = every_node(&cluster);
    let env = settings(&[
        ("HOOKRELAY_AMQP_URL", amqp_urls.as_str()),
        ("HOOKRELAY_QUEUE_TYPE", "quorum"),
    ]);
    let service = spawn(&db, &namespace, &env).await;
    // The service is connected to the first node, so both webhook queues live there.
    let id_a = create_webhook(service.port, &a.url, "Message.received").await;
    let id_b = create_webhook(service.port, &b.url, "Message.received").await;
    let topology = Topology::with_queue_type(&namespace, QueueType::Quorum);
    let lost = &cluster.nodes[0];
    for id in [&id_a, &id_b] {
        let home = home_of(&cluster, &topology.webhook_queue(id)).map(|(node, _)| node);
        assert_eq!(
            home.as_deref(),
            Some(lost.node.as_str()),
            "where {id}'s queue lives"
        );
    }

    let events = publish_events_to(&urls[1], &namespace, QueueType::Quorum, "{}", EVENTS).await;
    wait_for_a_fifth(&a, &b).await;
    lost.stop();
    lost.lose_disk();
    cluster.nodes[1].ctl(&["forget_cluster_node", &lost.node]);

    let duplicates = settle(&[&a, &b], &events, &db.url(), DEADLINE).await;
    report("a node lost with its disk", duplicates);
    let requeued = count_logs_where(&db, "requeues > 0").await;
    eprintln!("{requeued} deliveries sent again from their logs");
    assert!(
        requeued > 0,
        "no delivery was sent again from its log: the lost queues were empty, nothing tested"
    );
    for id in [&id_a, &id_b] {
        let home = home_of(&cluster, &topology.webhook_queue(id)).map(|(node, _)| node);
        assert!(
            home.is_some_and(|node| node != lost.node),
            "{id}'s queue declared again on a node still up"
        );
    }
    drop(service);
}

/// The node a classic queue lives on, from its process id (`<node.a.b.c>`), as
/// `rabbitmqctl list_queues` tells; with its consumer count.
fn home_of(cluster: &TestCluster, queue: &str) -> Option<(String, u32)> {
    let rows = queue_rows(&cluster.nodes[1], &["name", "pid", "consumers"]);
    let row = rows.into_iter().find(|row| row[0] == queue)?;
    let node = row[1].trim_start_matches('<').split('.').next()?.to_owned();
    Some((node, row[2].parse().ok()?))
}

/// A classic webhook queue lives on one node. When that node stops, its webhooks' deliveries
/// must wait (in the replicated delay tiers) without holding up anyone else's, and the
/// process connected to it must go on with another node of `amqp_url`.
#[tokio::test]
async fn slow_a_stopped_node_holds_up_only_the_webhooks_whose_queues_it_holds() {
    let cluster = TestCluster::start(3).await;
    let db = TestDb::new();
    let namespace = hookrelay_tests::unique_namespace();
    let (a, b) = receivers().await;
    let c = Receiver::start().await;
    let (urls, amqp_urls) = every_node(&cluster);
    let env = settings(&[
        ("HOOKRELAY_AMQP_URL", amqp_urls.as_str()),
        ("HOOKRELAY_QUEUE_TYPE", "quorum"),
    ]);
    let service = spawn(&db, &namespace, &env).await;
    // The service is connected to the first node, so the queues of A and B live there.
    create_webhook(service.port, &a.url, "Message.received").await;
    create_webhook(service.port, &b.url, "Message.received").await;
    let id_c = create_webhook(service.port, &c.url, "Message.received").await;
    let topology = Topology::with_queue_type(&namespace, QueueType::Quorum);
    let queue_c = topology.webhook_queue(&id_c);
    // C's queue is moved to the second node: removed, and declared again there, as its
    // service would have done had it been connected to that node. The service's consumer,
    // cancelled by the removal, may declare it again on the first node in between: then it
    // is moved again.
    let second = hookrelay_broker::connect(&urls[1]).await.expect("node 2");
    let declarer = Declarer::new(second.clone());
    hookrelay_tests::wait_for("C's queue on node 2, consumed", DEADLINE, || async {
        match home_of(&cluster, &queue_c) {
            Some((node, consumers)) if node == cluster.nodes[1].node => {
                return (consumers > 0).then_some(());
            }
            Some(_) => topology
                .delete_webhook(&declarer, &id_c)
                .await
                .expect("C's queue removed"),
            None => {}
        }
        topology
            .declare_webhook(&declarer, &id_c)
            .await
            .expect("C's queue on node 2");
        None
    })
    .await;

    let burst = publish_events_to(&urls[1], &namespace, QueueType::Quorum, "{}", EVENTS).await;
    wait_for_a_fifth(&a, &b).await;
    cluster.nodes[0].stop();
    // The ingest queue (quorum) elects a leader among the nodes still up; a publish in
    // between is refused (nack).
    let ingest = topology.ingest_queue();
    hookrelay_tests::wait_for("a new leader of the ingest queue", DEADLINE, || async {
        queue_rows(&cluster.nodes[1], &["name", "leader"])
            .into_iter()
            .any(|row| row[0] == ingest && !row[1].is_empty() && row[1] != cluster.nodes[0].node)
            .then_some(())
    })
    .await;
    // Published while the first node is down: C must get every one, A and B none yet.
    let later = publish_events_to(&urls[1], &namespace, QueueType::Quorum, "{}", 300).await;
    let every: HashSet<String> = burst.union(&later).cloned().collect();
    c.wait_for_events(&every, DEADLINE).await;
    for (name, r) in [("A", &a), ("B", &b)] {
        let early = r.event_ids().intersection(&later).count();
        assert_eq!(
            early, 0,
            "{name}'s queue is on the stopped node, yet it got {early} events published after"
        );
    }
    let failed = count_logs_where(&db, "status = 'failed'").await;
    assert_eq!(failed, 0, "a delivery waiting for its node failed instead");

    cluster.nodes[0].start_again().await;
    let duplicates = settle(&[&a, &b, &c], &every, &db.url(), DEADLINE).await;
    report_of(
        "the node holding two webhook queues stopped",
        duplicates,
        3,
        3 * every.len(),
    );
    second.close().await.expect("closed");
    drop(service);
}
