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
    // Whatever happens to the test, its queues and exchanges go when it ends.
    let _cleanup = hookrelay_tests::NamespaceCleanup::new(&amqp_url(), &namespace, &db);
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
    let _cleanup = hookrelay_tests::NamespaceCleanup::new(&amqp_url(), &namespace, &db);
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
    create_webhook(first.port, &free.url, "Message.received").await;
    two_consumers(&namespace, &limited_id).await;

    let ids = publish_events(&namespace, "{}", EVENTS).await;
    free.wait_for_events(&ids, Duration::from_secs(60)).await;
    limited.wait_for(3 * LIMIT, Duration::from_secs(60)).await;
    first.child.start_kill().expect("SIGKILL");
    first.child.wait().await.expect("killed");
    limited
        .wait_for_events(&ids, Duration::from_secs(120))
        .await;

    // The limit holds for requests as sent: spaced so that no 1.05 s holds more than the
    // limit (`hookrelay_core::RATE_WINDOW`). The receiver sees them as they arrive, each a
    // little later than sent, by as much as a busy machine's scheduling delays it: windows
    // shorter by that jitter (150 ms allowed) hold no more than the limit either.
    let window = hookrelay_core::RATE_WINDOW - Duration::from_millis(150);
    let arrivals: Vec<_> = limited.received().iter().map(|r| r.at).collect();
    let busiest = arrivals
        .iter()
        .map(|from| {
            arrivals
                .iter()
                .filter(|t| **t >= *from && t.duration_since(*from) < window)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        busiest <= LIMIT,
        "{busiest} requests within {window:?}, for a limit of {LIMIT} a second"
    );
    // Not held back by its neighbour: every copy had arrived before the limited webhook's
    // first third.
    let free_last = free.received().iter().map(|r| r.at).max().unwrap();
    assert!(
        free_last < arrivals[3 * LIMIT - 1],
        "the unlimited webhook was held back by the limited one"
    );
    drop(second);
}

/// A webhook's own `max_in_flight` is its number of requests at once, above or below the
/// service's `max_in_flight_per_webhook`.
#[tokio::test]
async fn a_webhooks_own_max_in_flight_bounds_its_requests_at_once() {
    let db = TestDb::new();
    let namespace = hookrelay_tests::unique_namespace();
    let _cleanup = hookrelay_tests::NamespaceCleanup::new(&amqp_url(), &namespace, &db);
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
}

/// Publishes `count` events for account `acc` on one channel, in order, numbered in their
/// ids (`{prefix}-{n}`); answers the ids in publish order.
async fn publish_numbered(namespace: &str, prefix: &str, count: usize) -> Vec<String> {
    let args = hookrelay::publish::PublishArgs {
        event_type: "Message.received".into(),
        account_id: "acc".into(),
        data: "{}".into(),
        id: Some(prefix.into()),
        count,
    };
    hookrelay::publish::publish(
        &amqp_url(),
        namespace,
        hookrelay_broker::QueueType::Classic,
        &args,
    )
    .await
    .expect("published")
    .ids
}

/// The number in an event id made by [`publish_numbered`].
fn number(received: &hookrelay_tests::receiver::Received) -> usize {
    let id = received.json()["id"].as_str().expect("an id").to_owned();
    id.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{id} is not numbered"))
}

/// 500 events published in sequence for one account reach a FIFO webhook in order, with two
/// processes, while its endpoint fails one request in five and the first process is killed
/// midway: the successful deliveries arrive in increasing order (the one in flight at the
/// kill may come again, never an earlier one) and every log ends `succeeded`. An unordered
/// webhook of the same account gets its copies at full speed meanwhile.
#[tokio::test]
async fn a_fifo_webhook_gets_its_events_in_order_through_failures_and_a_crash() {
    const EVENTS: usize = 500;
    let db = TestDb::new();
    let namespace = hookrelay_tests::unique_namespace();
    let _cleanup = hookrelay_tests::NamespaceCleanup::new(&amqp_url(), &namespace, &db);
    let fifo = Receiver::start().await;
    // Every fifth request fails: a failure is retried at the head, and the next waits.
    let script: Vec<u16> = (0..2 * EVENTS)
        .map(|n| if n % 5 == 4 { 500 } else { 200 })
        .collect();
    fifo.script(script.iter().map(|s| Behaviour::Status(*s)));
    let free = Receiver::start().await;
    let env = [("HOOKRELAY_RETRY_SCHEDULE", "250ms,250ms,250ms,250ms,250ms")];
    let mut first = spawn(&db, &namespace, &env).await;
    let second = spawn(&db, &namespace, &env).await;
    let fifo_id = create_webhook_from(
        first.port,
        serde_json::json!({"account_id": "acc", "url": fifo.url,
                           "events": ["Message.received"], "ordering": "fifo"}),
    )
    .await;
    create_webhook(first.port, &free.url, "Message.received").await;
    // Both processes know the FIFO webhook: each consumes its queue.
    two_consumers(&namespace, &fifo_id).await;

    let ids = publish_numbered(&namespace, "fifo", EVENTS).await;
    let all: std::collections::HashSet<String> = ids.iter().cloned().collect();
    free.wait_for_events(&all, Duration::from_secs(60)).await;
    fifo.wait_for(EVENTS / 3, Duration::from_secs(120)).await;
    first.child.start_kill().expect("SIGKILL");
    first.child.wait().await.expect("killed");
    fifo.wait_for_events(&all, Duration::from_secs(300)).await;
    let client = db.connect().await;
    wait_for(
        "every FIFO log succeeded",
        Duration::from_secs(60),
        || async {
            let row = client
                .query_one(
                    "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*)
                     FROM webhook_logs WHERE webhook_id = $1::text::uuid",
                    &[&fifo_id],
                )
                .await
                .unwrap();
            let (succeeded, all): (i64, i64) = (row.get(0), row.get(1));
            (succeeded == EVENTS as i64 && all == EVENTS as i64).then_some(())
        },
    )
    .await;

    // The receiver answered its requests in arrival order from the script.
    let received = fifo.received();
    let mut highest: Option<usize> = None;
    let mut successes = 0;
    for (n, request) in received.iter().enumerate() {
        let ok = script.get(n).is_none_or(|s| *s == 200);
        let at = number(request);
        if let Some(h) = highest {
            assert!(
                at >= h,
                "request {n} carried event {at} after event {h} had succeeded: out of order"
            );
        }
        if ok {
            highest = Some(at);
            successes += 1;
        }
    }
    assert!(
        successes >= EVENTS,
        "{successes} successes for {EVENTS} events"
    );
    let failures = received.len() - successes;
    assert!(
        failures >= EVENTS / 5 - 5,
        "only {failures} failures: the script did not apply"
    );
    // At full speed: the unordered webhook had every copy before the FIFO one had a tenth.
    let free_last = free.received().iter().map(|r| r.at).max().unwrap();
    assert!(
        free_last < received[EVENTS / 10].at,
        "the unordered webhook was held back by the FIFO one"
    );
    drop(second);
}

/// A FIFO webhook whose first delivery fails, with its retry an hour away, holds the rest;
/// `skip` ends it `failed` and the rest go, in order. An unordered webhook has nothing to
/// skip, and an empty line neither.
#[tokio::test]
async fn skip_moves_a_fifo_line_past_a_delivery_that_keeps_failing() {
    let db = TestDb::new();
    let namespace = hookrelay_tests::unique_namespace();
    let _cleanup = hookrelay_tests::NamespaceCleanup::new(&amqp_url(), &namespace, &db);
    let receiver = Receiver::start().await;
    receiver.script([Behaviour::Status(500)]);
    let service = spawn(&db, &namespace, &[("HOOKRELAY_RETRY_SCHEDULE", "1h")]).await;
    let id = create_webhook_from(
        service.port,
        serde_json::json!({"account_id": "acc", "url": receiver.url,
                           "events": ["Message.received"], "ordering": "fifo"}),
    )
    .await;
    let unordered = create_webhook(service.port, &receiver.url, "Contact.created").await;
    let ids = publish_numbered(&namespace, "held", 3).await;
    receiver.wait_for(1, Duration::from_secs(30)).await;
    let client = db.connect().await;
    let head: String = wait_for(
        "the first delivery retrying",
        Duration::from_secs(30),
        || async {
            client
                .query_opt(
                    "SELECT id::text FROM webhook_logs WHERE event_id = $1 AND status = 'retrying'",
                    &[&ids[0]],
                )
                .await
                .unwrap()
                .map(|r| r.get::<_, String>(0))
        },
    )
    .await;
    hookrelay_tests::let_pass(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.count(),
        1,
        "the line went on past a failing delivery"
    );

    let skip = |webhook: String| {
        let port = service.port;
        async move {
            let response = reqwest::Client::new()
                .post(format!(
                    "http://127.0.0.1:{port}/v1/webhooks/{webhook}/skip"
                ))
                .bearer_auth(common::TOKEN)
                .send()
                .await
                .expect("the API answers");
            let status = response.status().as_u16();
            (
                status,
                response.json::<serde_json::Value>().await.expect("JSON"),
            )
        }
    };
    let (status, body) = skip(id.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["log_id"], head.as_str());
    let rest = receiver.wait_for(3, Duration::from_secs(30)).await;
    let order: Vec<usize> = rest.iter().map(number).collect();
    assert_eq!(order, vec![0, 1, 2]);
    let (status, error): (String, Option<String>) = {
        let row = client
            .query_one(
                "SELECT status, error FROM webhook_logs WHERE id = $1::text::uuid",
                &[&head],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(status, "failed");
    assert!(error.is_some_and(|e| e.contains("skipped")));

    let (status, body) = skip(id.clone()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("line_empty"))
    );
    let (status, body) = skip(unordered.clone()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_fifo"))
    );
    drop(service);
}
