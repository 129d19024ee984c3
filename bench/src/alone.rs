//! RabbitMQ alone: what the broker costs per delivery when the client does nothing but the
//! broker work hookrelay's pipeline asks of it, with no hookrelay, database or HTTP at all.
//!
//! Per event: one persistent message published with a confirm to the events exchange,
//! consumed from the ingest queue and acked once its deliveries are confirmed. Per delivery:
//! one persistent message published with mandatory and a confirm to the deliveries exchange,
//! routed to a durable webhook queue declared by hookrelay's own `Topology` (single active
//! consumer, the broker's default queue version), consumed on channels shared 250 consumers
//! to a channel with a prefetch of 32, and acked, 16 at a time per queue. The same batching
//! as the fan-out: up to 256 events taken at once, their deliveries confirmed in one round
//! trip, one `multiple` ack.
//!
//! A delivery is acked `ACK_AFTER` after it arrives, as hookrelay acks only once it has sent
//! it and recorded its attempt: a queue holds each message about as long as under hookrelay.
//!
//! Not a floor: this client acks each delivery on its own, where hookrelay acks a batch at a
//! time, and at a steady rate the broker spent more per delivery under it than under
//! hookrelay. What it shows is how the broker's own cost grows with the number of queues
//! under the same load, whichever client sends it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use hookrelay_broker::{
    BatchLimits, Batches, Connection, ConsumerChannels, Declarer, NoRoutes, Outgoing, Publisher,
    Topology,
};
use hookrelay_tests::broker::TestBroker;
use serde::Serialize;

use crate::process::cpu_of;
use crate::scenarios::{Pace, Pacer};

/// How long after its arrival a delivery is acked: about what hookrelay takes to send it and
/// record its attempt on this machine.
const ACK_AFTER: Duration = Duration::from_millis(5);
/// hookrelay's defaults: the fan-out's batch and prefetch, a webhook's requests under way at
/// once (`max_in_flight_per_webhook`) and its consumer's prefetch (twice that), consumers per
/// channel.
const INGEST: BatchLimits = BatchLimits {
    prefetch: 512,
    max_count: 256,
    max_bytes: 4 * 1024 * 1024,
};
const PER_WEBHOOK: usize = 16;
const WEBHOOK_PREFETCH: u16 = 32;
const CONSUMERS_PER_CHANNEL: usize = 250;
/// How long the node's cost with nothing sent is measured.
const IDLE: Duration = Duration::from_secs(5);
/// Webhooks each event goes to, all of one account's.
const FAN_OUT: usize = 10;

pub(crate) struct Alone {
    pub(crate) name: &'static str,
    pub(crate) queues: usize,
    pub(crate) events: usize,
    pub(crate) pace: Pace,
}

/// The `warm` and `paced` cost scenarios' loads, on the broker alone. Each starts after one
/// unmeasured delivery to every queue, as they do.
pub(crate) const ALONE: [Alone; 6] = [
    alone("rabbitmq warm Q=10", 10, 10_000, Pace::Burst),
    alone("rabbitmq warm Q=1 000", 1_000, 10_000, Pace::Burst),
    alone("rabbitmq warm Q=10 000", 10_000, 10_000, Pace::Burst),
    alone("rabbitmq paced Q=10", 10, 12_000, Pace::Steady(200)),
    alone("rabbitmq paced Q=1 000", 1_000, 12_000, Pace::Steady(200)),
    alone("rabbitmq paced Q=10 000", 10_000, 12_000, Pace::Steady(200)),
];

const fn alone(name: &'static str, queues: usize, events: usize, pace: Pace) -> Alone {
    Alone {
        name,
        queues,
        events,
        pace,
    }
}

#[derive(Serialize)]
pub(crate) struct AloneFigures {
    pub(crate) scenario: String,
    pub(crate) queues: usize,
    pub(crate) deliveries: usize,
    pub(crate) deliveries_per_sec: f64,
    /// CPU seconds of the RabbitMQ node per 1 000 deliveries, first publish to last ack.
    pub(crate) rabbitmq_cpu_per_1k: f64,
    /// CPU seconds of the node per second for `IDLE` after the warm-up, nothing sent.
    pub(crate) rabbitmq_idle_cpu_per_sec: f64,
}

/// The figures as a table.
pub(crate) fn print(figures: &[AloneFigures]) {
    println!();
    println!(
        "| {:<28} | {:>10} | {:>13} | {:>13} | {:>14} |",
        "RabbitMQ alone", "deliveries", "deliveries/s", "RabbitMQ CPU", "idle, per sec"
    );
    println!(
        "|{:-<30}|{:->12}|{:->15}|{:->15}|{:->16}|",
        "", "", "", "", ""
    );
    for a in figures {
        println!(
            "| {:<28} | {:>10} | {:>13.0} | {:>8.3} s/1k | {:>12.3} s |",
            a.scenario,
            a.deliveries,
            a.deliveries_per_sec,
            a.rabbitmq_cpu_per_1k,
            a.rabbitmq_idle_cpu_per_sec
        );
    }
}

/// Runs one scenario on a RabbitMQ node of its own, removed afterwards.
pub(crate) async fn run(alone: &Alone) -> anyhow::Result<AloneFigures> {
    let node = TestBroker::start().await;
    let Some(pid) = node.os_pid() else {
        bail!("the RabbitMQ node started but wrote no pid file");
    };
    let connection = hookrelay_broker::connect(&node.url()).await?;
    let result = measure(alone, &connection, pid).await;
    let _ = connection.close().await;
    result
}

async fn measure(alone: &Alone, connection: &Connection, pid: u32) -> anyhow::Result<AloneFigures> {
    let topology = Topology::new(&hookrelay_tests::unique_namespace());
    let mut publisher = Publisher::open(connection).await?;
    topology.declare_base(publisher.declarer()).await?;
    let queues: Vec<String> = (0..alone.queues).map(|n| format!("q{n}")).collect();
    let setup = Instant::now();
    declare(&topology, connection, &queues).await?;
    let received = Arc::new(AtomicUsize::new(0));
    let channels =
        ConsumerChannels::new(connection.clone(), WEBHOOK_PREFETCH, CONSUMERS_PER_CHANNEL);
    for id in &queues {
        let mut consuming = channels
            .consume(&topology.webhook_queue(id), "rabbitmq-alone")
            .await?;
        let received = received.clone();
        tokio::spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(PER_WEBHOOK));
            while let Some(delivery) = consuming.next().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let received = received.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(ACK_AFTER).await;
                    if delivery.ack().await.is_ok() {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(slot);
                });
            }
        });
    }
    let fanning = fan_out(connection.clone(), topology.clone());
    tokio::spawn(async move {
        // The wait for the deliveries then fails with how many arrived.
        if let Err(e) = fanning.await {
            eprintln!("  the fan-out failed: {e:#}");
        }
    });
    eprintln!(
        "  {} queues declared and consumed in {:.2}s",
        alone.queues,
        setup.elapsed().as_secs_f64()
    );

    let accounts = alone.queues / FAN_OUT;
    let exchange = topology.events_exchange();
    let event = |n: usize| -> anyhow::Result<Outgoing> {
        Ok(Outgoing::json(
            exchange.clone(),
            "Message.received".into(),
            serde_json::to_vec(&serde_json::json!({
                "id": format!("evt_{n}"),
                "account": n % accounts,
                "data": {"text": "hello from the benchmark", "n": n},
            }))?,
        ))
    };
    // One delivery to every queue first: a classic queue makes its files at its first
    // message, which the `warm` and `paced` scenarios leave out too.
    let warm: Vec<Outgoing> = (0..accounts).map(event).collect::<anyhow::Result<_>>()?;
    publisher.publish_all(&warm, &mut NoRoutes).await?;
    wait_until(&received, alone.queues, "the warm-up").await?;
    received.store(0, Ordering::Relaxed);
    // What the node spends with nothing sent, just after every queue had a message: the
    // part of a delivery's cost that is paid by the second, not by the delivery.
    let idle_before = cpu_of(&[pid]);
    tokio::time::sleep(IDLE).await;
    let idle_cpu_per_sec = (cpu_of(&[pid]) - idle_before) / IDLE.as_secs_f64();

    let expected = alone.events * FAN_OUT;
    let started = Instant::now();
    let cpu_before = cpu_of(&[pid]);
    let mut pacer = Pacer::new(alone.pace);
    let mut sent = 0;
    while sent < alone.events {
        let chunk = pacer.next().await;
        let events: Vec<Outgoing> = (sent..(sent + chunk).min(alone.events))
            .map(event)
            .collect::<anyhow::Result<_>>()?;
        publisher.publish_all(&events, &mut NoRoutes).await?;
        sent += events.len();
    }
    publisher.close().await;
    wait_until(&received, expected, "the deliveries").await?;
    let elapsed = started.elapsed();
    let cpu = cpu_of(&[pid]) - cpu_before;
    channels.close().await;
    Ok(AloneFigures {
        scenario: alone.name.to_owned(),
        queues: alone.queues,
        deliveries: expected,
        deliveries_per_sec: expected as f64 / elapsed.as_secs_f64(),
        rabbitmq_cpu_per_1k: cpu * 1000.0 / expected as f64,
        rabbitmq_idle_cpu_per_sec: idle_cpu_per_sec,
    })
}

/// Declares the webhook queues on eight channels at once, as the service's declarers do.
async fn declare(
    topology: &Topology,
    connection: &Connection,
    queues: &[String],
) -> anyhow::Result<()> {
    let declarers: Vec<Declarer> = (0..8).map(|_| Declarer::new(connection.clone())).collect();
    let chunk = queues.len().div_ceil(declarers.len());
    let declared = declarers
        .iter()
        .zip(queues.chunks(chunk.max(1)))
        .map(|(d, ids)| async move {
            for id in ids {
                topology.declare_webhook(d, id).await?;
            }
            anyhow::Ok(())
        });
    for result in futures::future::join_all(declared).await {
        result?;
    }
    for d in &declarers {
        d.close().await;
    }
    Ok(())
}

/// The fan-out, without the database: takes up to 256 events at once, as the fan-out does
/// (`hookrelay_broker::Batches`), publishes each one's deliveries to its account's queues,
/// waits for their confirms, acks the events at once.
async fn fan_out(connection: Connection, topology: Topology) -> anyhow::Result<()> {
    let mut publisher = Publisher::open(&connection).await?;
    let mut batches = Batches::open(
        &connection,
        &topology.ingest_queue(),
        INGEST,
        "rabbitmq-alone",
    )
    .await?;
    let exchange = topology.deliveries_exchange();
    let never = tokio_util::sync::CancellationToken::new();
    while let Some(batch) = batches.next(&never).await? {
        let mut deliveries = Vec::with_capacity(batch.deliveries().len() * FAN_OUT);
        for event in batch.deliveries() {
            let body: serde_json::Value = serde_json::from_slice(event.body())?;
            let Some(account) = body["account"].as_u64() else {
                bail!("an event without its account: {body}");
            };
            for k in 0..FAN_OUT {
                deliveries.push(Outgoing::json(
                    exchange.clone(),
                    format!("q{}", account as usize * FAN_OUT + k),
                    event.body().to_vec(),
                ));
            }
        }
        publisher.publish_all(&deliveries, &mut NoRoutes).await?;
        batch.ack().await?;
    }
    Ok(())
}

/// Waits until `count` deliveries have been acked, five minutes at most.
async fn wait_until(received: &AtomicUsize, count: usize, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while received.load(Ordering::Relaxed) < count {
        if Instant::now() > deadline {
            bail!(
                "{what}: {} of {count} deliveries acked after 5 minutes",
                received.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
