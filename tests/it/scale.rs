//! Many webhooks in one process: consumers share channels, so a process serves more webhooks
//! than a connection can have channels (RabbitMQ's `channel_max`, 2 047), and deleted ones
//! leave no queue behind, even when they were deleted while no process ran.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt as _;
use hookrelay_tests::receiver::Receiver;
use serde_json::json;

use hookrelay_tests::broker::TestBroker;

use crate::helpers::{spawn_app, spawn_app_with};

const DEADLINE: Duration = Duration::from_secs(120);

/// The channels open on `broker`, a node of the test's own, where the service's is the only
/// connection left.
fn channels_on(broker: &TestBroker) -> usize {
    broker
        .ctl(&[
            "list_connections",
            "--quiet",
            "--no-table-headers",
            "channels",
        ])
        .lines()
        .filter_map(|c| c.trim().parse::<usize>().ok())
        .sum()
}

#[tokio::test]
async fn slow_more_webhooks_than_a_connection_has_channels() {
    const WEBHOOKS: usize = 2100;
    let broker = TestBroker::start().await;
    let url = broker.url();
    let app = spawn_app_with(|s| {
        s.amqp_url = url;
        s.max_webhooks_per_account = WEBHOOKS as u32;
    })
    .await;
    let receiver = Receiver::start().await;
    let ids: Vec<String> = futures::stream::iter(0..WEBHOOKS)
        .map(|_| app.webhook("acc", &receiver.url, &["Contact.created"], json!({})))
        .buffer_unordered(16)
        .collect()
        .await;
    let ids: HashSet<String> = ids.into_iter().collect();

    app.publish("Contact.created", "acc", json!({}), 1).await;
    receiver.wait_for(WEBHOOKS, DEADLINE).await;
    let client = app.db.connect().await;
    hookrelay_tests::wait_for("every webhook's log succeeded", DEADLINE, || async {
        let to: HashSet<String> = client
            .query(
                "SELECT webhook_id::text FROM webhook_logs WHERE status = 'succeeded'",
                &[],
            )
            .await
            .ok()?
            .iter()
            .map(|r| r.get(0))
            .collect();
        (to == ids).then_some(())
    })
    .await;

    let channels = channels_on(&broker);
    assert!(
        (1..=40).contains(&channels),
        "{channels} channels for {WEBHOOKS} webhooks"
    );
}

#[tokio::test]
async fn a_webhook_deleted_while_no_process_ran_loses_its_queue_at_the_next_start() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    // Failing, so that its logs are still open (retrying) when it is deleted.
    receiver.answer(hookrelay_tests::receiver::Behaviour::Status(503));
    let id = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    app.publish("Contact.created", "acc", json!({}), 3).await;
    receiver.wait_for(3, DEADLINE).await;
    let queue = hookrelay_broker::Topology::new(&app.namespace).webhook_queue(&id);
    let client = app.db.connect().await;
    let app = app
        .restart_after(async {
            client
                .execute("DELETE FROM webhooks WHERE id = $1::text::uuid", &[&id])
                .await
                .unwrap();
        })
        .await;
    hookrelay_tests::wait_for("the queue removed", DEADLINE, || async {
        let queues =
            hookrelay_tests::rabbitmqctl(&["list_queues", "--quiet", "--no-table-headers", "name"])
                .await;
        (!queues.lines().any(|q| q.trim() == queue)).then_some(())
    })
    .await;
    hookrelay_tests::wait_for(
        "its logs ended, its tombstone kept for the grace period",
        DEADLINE,
        || async {
            let row = client
                .query_one(
                    "SELECT count(*) FILTER (WHERE status IN ('pending', 'retrying')),
                        count(*) FILTER (WHERE status = 'failed'),
                        (SELECT count(*) FROM webhook_tombstones)
                 FROM webhook_logs",
                    &[],
                )
                .await
                .ok()?;
            let (open, failed, tombstones): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            (open == 0 && failed == 3 && tombstones == 1).then_some(())
        },
    )
    .await;
    drop(app);
}

/// A deployment upgraded from a release before classic queues version 2: its queues exist
/// without `x-queue-version`, RabbitMQ refuses to declare them again with it, and the service
/// uses them as they are instead of failing.
#[tokio::test]
async fn queues_made_by_an_earlier_release_are_used_as_found() {
    use lapin::options::QueueDeclareOptions;
    use lapin::types::FieldTable;
    let namespace = hookrelay_tests::unique_namespace();
    let topology = hookrelay_broker::Topology::new(&namespace);
    let connection = hookrelay_tests::amqp_connection(&hookrelay_tests::amqp_url()).await;
    let channel = connection.create_channel().await.unwrap();
    for queue in [topology.ingest_queue(), topology.rejected_queue()] {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.as_str().into(), durable, FieldTable::default())
            .await
            .unwrap();
    }
    let _ = connection.close(200, "made".into()).await;

    let app = spawn_app_with(|s| s.namespace = namespace).await;
    let receiver = Receiver::start().await;
    app.webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let ids = app.publish("Contact.created", "acc", json!({}), 3).await;
    receiver.wait_for_events(&ids, DEADLINE).await;
}

/// Webhook queues made by a release that declared them with `x-queue-version: 2`, which this
/// one no longer names: RabbitMQ refuses to declare them again without it, and the service
/// uses them as they are instead of stalling the webhook.
#[tokio::test]
async fn webhook_queues_made_with_version_2_by_an_earlier_release_are_used_as_found() {
    use lapin::options::QueueDeclareOptions;
    use lapin::types::{AMQPValue, FieldTable};
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let id = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let first = app.publish("Contact.created", "acc", json!({}), 1).await;
    receiver.wait_for_events(&first, DEADLINE).await;
    let topology = hookrelay_broker::Topology::new(&app.namespace);
    let queue = topology.webhook_queue(&id);
    let app = app
        .restart_after(async {
            let connection = hookrelay_tests::amqp_connection(&hookrelay_tests::amqp_url()).await;
            let channel = connection.create_channel().await.unwrap();
            channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await
                .unwrap();
            let mut args = FieldTable::default();
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
            args.insert("x-queue-version".into(), AMQPValue::LongInt(2));
            let durable = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            channel
                .queue_declare(queue.as_str().into(), durable, args)
                .await
                .unwrap();
            channel
                .queue_bind(
                    queue.as_str().into(),
                    topology.deliveries_exchange().as_str().into(),
                    id.as_str().into(),
                    Default::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            let _ = connection.close(200, "made".into()).await;
        })
        .await;

    let ids = app.publish("Contact.created", "acc", json!({}), 3).await;
    receiver.wait_for_events(&ids, DEADLINE).await;
    let arguments = hookrelay_tests::rabbitmqctl(&[
        "list_queues",
        "--quiet",
        "--no-table-headers",
        "name",
        "arguments",
    ])
    .await;
    let line = arguments
        .lines()
        .find(|l| l.starts_with(queue.as_str()))
        .unwrap_or_else(|| panic!("{queue} is gone: {arguments}"));
    assert!(
        line.contains("x-queue-version"),
        "not the same queue: {line}"
    );
}
