//! Two processes, one endpoint breaker: when the process whose consumer is active trips a
//! webhook's breaker and lets go of its queue, the other process's consumer becomes active
//! (single active consumer) and must keep the pause, not hammer the dead endpoint afresh.

// A test that cannot set up its world should stop there, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{create_webhook, create_webhook_from, publish_events, spawn};
use hookrelay_tests::receiver::{Behaviour, Receiver};
use hookrelay_tests::{amqp_url, wait_for, TestDb};

const THRESHOLD: usize = 3;

/// Waits until both processes consume webhook `id`'s queue: one active, one standing by.
async fn two_consumers(namespace: &str, id: &str) {
    let queue = hookrelay_broker::Topology::new(namespace).webhook_queue(id);
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
}

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
    two_consumers(&namespace, &id).await;

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

/// A webhook limited to 10 requests a second gets no more in any sliding second, with two
/// processes running and the first one killed midway (the second takes the queue over),
/// while an unlimited webhook of the same account gets its copies at full speed.
#[tokio::test]
async fn a_rate_limit_holds_across_processes_while_an_unlimited_webhook_goes_at_full_speed() {
    const EVENTS: usize = 100;
    const LIMIT: usize = 10;
    let db = TestDb::new();
    let namespace = hookrelay_tests::unique_namespace();
    let limited = Receiver::start().await;
    let free = Receiver::start().await;
    let mut first = spawn(&db, &namespace, &[]).await;
    let second = spawn(&db, &namespace, &[]).await;
    let limited_id = create_webhook_from(
        first.port,
        serde_json::json!({"account_id": "acc", "url": limited.url,
                           "events": ["Message.received"], "rate_limit": LIMIT}),
    )
    .await;
    let free_id = create_webhook(first.port, &free.url, "Message.received").await;
    two_consumers(&namespace, &limited_id).await;

    let ids = publish_events(&namespace, "{}", EVENTS).await;
    free.wait_for_events(&ids, Duration::from_secs(60)).await;
    limited.wait_for(3 * LIMIT, Duration::from_secs(60)).await;
    first.child.start_kill().expect("SIGKILL");
    first.child.wait().await.expect("killed");
    limited
        .wait_for_events(&ids, Duration::from_secs(120))
        .await;

    let arrivals: Vec<_> = limited.received().iter().map(|r| r.at).collect();
    let busiest = arrivals
        .iter()
        .map(|from| {
            arrivals
                .iter()
                .filter(|t| **t >= *from && t.duration_since(*from) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        busiest <= LIMIT,
        "{busiest} requests within one second, for a limit of {LIMIT}"
    );
    // Not held back by its neighbour: every copy had arrived before the limited webhook's
    // first third.
    let free_last = free.received().iter().map(|r| r.at).max().unwrap();
    assert!(
        free_last < arrivals[3 * LIMIT - 1],
        "the unlimited webhook was held back by the limited one"
    );
    drop(second);
    hookrelay_tests::delete_namespace(&amqp_url(), &namespace, &[limited_id, free_id]).await;
}

/// A webhook's own `max_in_flight` is its number of requests at once, above or below the
/// service's `max_in_flight_per_webhook`.
#[tokio::test]
async fn a_webhooks_own_max_in_flight_bounds_its_requests_at_once() {
    let db = TestDb::new();
    let namespace = hookrelay_tests::unique_namespace();
    let env = [("HOOKRELAY_MAX_IN_FLIGHT_PER_WEBHOOK", "4")];
    let service = spawn(&db, &namespace, &env).await;
    let mut ids = Vec::new();
    let mut receivers = Vec::new();
    for own in [2, 12] {
        let receiver = Receiver::start().await;
        receiver.answer(Behaviour::Delay(Duration::from_millis(200), 200));
        ids.push(
            create_webhook_from(
                service.port,
                serde_json::json!({"account_id": "acc", "url": receiver.url,
                                   "events": ["Message.received"], "max_in_flight": own}),
            )
            .await,
        );
        receivers.push((own, receiver));
    }
    let events = publish_events(&namespace, "{}", 48).await;
    for (own, receiver) in &receivers {
        receiver
            .wait_for_events(&events, Duration::from_secs(60))
            .await;
        let most = receiver
            .received()
            .iter()
            .map(|r| r.in_flight)
            .max()
            .unwrap_or(0);
        assert_eq!(most, *own, "requests at once with max_in_flight {own}");
    }
    drop(service);
    hookrelay_tests::delete_namespace(&amqp_url(), &namespace, &ids).await;
}
