//! Two processes, one endpoint breaker: when the process whose consumer is active trips a
//! webhook's breaker and lets go of its queue, the other process's consumer becomes active
//! (single active consumer) and must keep the pause, not hammer the dead endpoint afresh.

// A test that cannot set up its world should stop there, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{create_webhook, publish_events, spawn};
use hookrelay_tests::receiver::{Behaviour, Receiver};
use hookrelay_tests::{amqp_url, wait_for, TestDb};

const THRESHOLD: usize = 3;

#[tokio::test]
async fn a_breaker_tripped_by_one_process_holds_in_the_other() {
    let db = TestDb::new();
    let namespace = hookrelay_tests::unique_namespace();
    let receiver = Receiver::start().await;
    receiver.answer(Behaviour::Status(503));
    let env = [
        ("HOOKRELAY_MAX_IN_FLIGHT_PER_WEBHOOK", "1"),
        ("HOOKRELAY_BREAKER_THRESHOLD", "3"),
        // Long: no retry and no probe is due while the test watches.
        ("HOOKRELAY_RETRY_SCHEDULE", "60s"),
    ];
    let first = spawn(&db, &namespace, &env).await;
    let second = spawn(&db, &namespace, &env).await;
    let id = create_webhook(first.port, &receiver.url, "Message.received").await;
    // Both processes consume the queue: one active, one standing by.
    let queue = hookrelay_broker::Topology::new(&namespace).webhook_queue(&id);
    wait_for(
        "two consumers on the queue",
        Duration::from_secs(30),
        || async {
            let listed = hookrelay_tests::rabbitmqctl(&[
                "list_queues",
                "--quiet",
                "--no-table-headers",
                "name",
                "consumers",
            ])
            .await;
            listed
                .lines()
                .any(|l| l.split_once('\t') == Some((queue.as_str(), "2")))
                .then_some(())
        },
    )
    .await;

    publish_events(&namespace, "{}", 20).await;
    receiver.wait_for(THRESHOLD, Duration::from_secs(30)).await;
    // The active process has paused; the other becomes active, gets the next delivery, reads
    // the saved pause and hands the delivery back instead of sending it.
    hookrelay_tests::let_pass(Duration::from_secs(3)).await;
    assert_eq!(
        receiver.count(),
        THRESHOLD,
        "the endpoint got requests after the breaker opened"
    );
    let client = db.connect().await;
    let waiting: i64 = client
        .query_one(
            "SELECT count(*) FROM webhook_logs WHERE status = 'pending'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(waiting, 20 - THRESHOLD as i64, "the rest wait in the queue");
    drop((first, second));
    hookrelay_tests::delete_namespace(&amqp_url(), &namespace, &[id]).await;
}
