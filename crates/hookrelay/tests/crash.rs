//! The no-loss promise, tested the hard way: the service is killed with SIGKILL in the middle
//! of a stream of events and started again; every event arrives at least once and every log
//! row ends `succeeded`.

// A test that cannot set up its world should stop there, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{count_logs, create_webhook, publish_events, start, start_with};
use hookrelay_tests::receiver::{Behaviour, Receiver};
use hookrelay_tests::{amqp_url, wait_for, TestDb};

#[tokio::test]
async fn sigkill_in_the_middle_loses_no_event() {
    const EVENTS: usize = 2000;
    let db = TestDb::new();
    let namespace = hookrelay_tests::unique_namespace();
    let receiver = Receiver::start().await;
    // Slow enough that the kill lands mid-stream.
    receiver.answer(Behaviour::Delay(Duration::from_millis(5), 200));

    let (mut first, port) = start(&db, &namespace).await;
    let webhook_id = create_webhook(port, &receiver.url, "Message.received").await;
    let ids = publish_events(&namespace, r#"{"text":"hello"}"#, EVENTS).await;

    receiver
        .wait_for(EVENTS / 10, Duration::from_secs(60))
        .await;
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("killed");
    let at_kill = receiver.count();
    assert!(
        at_kill < EVENTS,
        "the kill came too late to test anything ({at_kill} delivered)"
    );

    let (mut second, _) = start(&db, &namespace).await;
    receiver
        .wait_for_events(&ids, Duration::from_secs(120))
        .await;
    let client_db = db.connect().await;
    wait_all_succeeded(&client_db, EVENTS, Duration::from_secs(60)).await;
    eprintln!(
        "killed after {at_kill} deliveries; {} requests in all for {EVENTS} events",
        receiver.count()
    );
    // Stopped before its objects are removed, so that it does not declare them again.
    let _ = second.start_kill();
    let _ = second.wait().await;
    hookrelay_tests::delete_namespace(&amqp_url(), &namespace, &[webhook_id]).await;
}

#[tokio::test]
async fn sigkill_while_retries_wait_loses_none_of_them() {
    const EVENTS: usize = 200;
    let db = TestDb::new();
    let namespace = hookrelay_tests::unique_namespace();
    let receiver = Receiver::start().await;
    receiver.script(std::iter::repeat_n(Behaviour::Status(503), EVENTS));
    let settings = [
        // Long enough that every first attempt fails before the first retry is due.
        ("HOOKRELAY_RETRY_SCHEDULE", "10s"),
        ("HOOKRELAY_BREAKER_THRESHOLD", "10000"),
    ];
    let (mut first, port) = start_with(&db, &namespace, &settings).await;
    let webhook_id = create_webhook(port, &receiver.url, "Message.received").await;
    let ids = publish_events(&namespace, "{}", EVENTS).await;
    let client_db = db.connect().await;
    wait_for(
        "every first attempt failed",
        Duration::from_secs(60),
        || async {
            let (all, retrying) = count_logs(&client_db, "retrying").await?;
            (all == EVENTS as i64 && retrying == all).then_some(())
        },
    )
    .await;
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("killed");
    assert_eq!(receiver.count(), EVENTS, "killed before any retry was due");

    let (mut second, _) = start_with(&db, &namespace, &settings).await;
    wait_all_succeeded(&client_db, EVENTS, Duration::from_secs(120)).await;
    assert_eq!(
        sent_after(&receiver, EVENTS),
        ids,
        "every delivery waiting for its retry went out"
    );
    // Each log holds its failed attempt and the one that succeeded. (A delivery whose first
    // attempt was recorded but not yet acked when the kill came is redelivered as attempt
    // 1 again, its retry never published: at-least-once at the ack, so a log's `attempts`
    // may read 1 or 2, but never fewer than two attempts are on record.)
    let short: i64 = client_db
        .query_one(
            "SELECT count(*) FROM webhook_logs l
             WHERE (SELECT count(*) FROM webhook_attempts a WHERE a.log_id = l.id) < 2",
            &[],
        )
        .await
        .expect("attempts")
        .get(0);
    assert_eq!(
        short, 0,
        "every log has its failed and its successful attempt"
    );
    // Stopped before its objects are removed, so that it does not declare them again.
    let _ = second.start_kill();
    let _ = second.wait().await;
    hookrelay_tests::delete_namespace(&amqp_url(), &namespace, &[webhook_id]).await;
}

/// A success is acked once its record is queued for the database, before the commit. Killed
/// in between, the delivery is in no queue and its log still reads `pending`: the next
/// process's lost-delivery check finds it and sends it again.
#[tokio::test]
async fn sigkill_between_an_ack_and_its_record_loses_nothing() {
    const EVENTS: usize = 10;
    let Held {
        db,
        namespace,
        receiver,
        mut first,
        webhook_id,
        ..
    } = Held::start().await;
    let ids = publish_events(&namespace, "{}", EVENTS).await;
    receiver.wait_for(EVENTS, Duration::from_secs(30)).await;

    // The attempts cannot be recorded: their logs are locked.
    let mut client_db = db.connect().await;
    let lock = client_db.transaction().await.unwrap();
    let locked = lock
        .query(
            "SELECT id FROM delivery_logs WHERE webhook_id = $1::text::uuid FOR UPDATE",
            &[&webhook_id],
        )
        .await
        .unwrap();
    assert_eq!(
        locked.len(),
        EVENTS,
        "every log written before its delivery went out"
    );
    receiver.release();
    let queue = format!("{namespace}.webhook.{webhook_id}");
    wait_for("every delivery acked", Duration::from_secs(30), || async {
        (hookrelay_tests::queue_counts(&queue).await? == (0, 0)).then_some(())
    })
    .await;
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("killed");
    lock.rollback().await.unwrap();
    let (all, pending) = count_logs(&client_db, "pending").await.unwrap();
    assert_eq!(
        (all, pending),
        (EVENTS as i64, EVENTS as i64),
        "none recorded"
    );

    let service = common::spawn(&db, &namespace, &HELD_SETTINGS).await;
    receiver.wait_for(2 * EVENTS, Duration::from_secs(60)).await;
    wait_all_succeeded(&client_db, EVENTS, Duration::from_secs(30)).await;
    assert_eq!(
        sent_after(&receiver, EVENTS),
        ids,
        "each sent again from its log"
    );
    assert_eq!(
        metric_of(service.port, "hookrelay_deliveries_lost_total").await,
        EVENTS as f64,
        "found by the lost-delivery check, not handed back by the broker"
    );
    let mut child = service.child;
    let _ = child.start_kill();
    let _ = child.wait().await;
    hookrelay_tests::delete_namespace(&amqp_url(), &namespace, &[webhook_id]).await;
}

/// A fresh delivery whose webhook's consumer is in the same process with a slot free goes
/// straight to it, never into the broker. Killed while such deliveries are under way, the
/// process leaves nothing in any queue for them: their logs, unfinished, are found by the next
/// process's lost-delivery check and sent again.
#[tokio::test]
async fn sigkill_with_deliveries_handed_off_under_way_loses_none() {
    const EVENTS: usize = 10;
    let Held {
        db,
        namespace,
        receiver,
        mut first,
        port,
        webhook_id,
    } = Held::start().await;
    // The first comes through the queue: that is how the consumer learns it is the queue's
    // active one. The others, one at a time, each find a slot free.
    let mut ids = HashSet::new();
    for n in 1..=EVENTS {
        ids.extend(publish_events(&namespace, "{}", 1).await);
        receiver.wait_for(n, Duration::from_secs(30)).await;
    }
    assert_eq!(
        metric_of(port, "hookrelay_deliveries_handed_off_total").await,
        (EVENTS - 1) as f64,
        "every delivery after the first handed straight to the consumer"
    );
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("killed");
    receiver.release();
    let client_db = db.connect().await;
    let (all, pending) = count_logs(&client_db, "pending").await.unwrap();
    assert_eq!(
        (all, pending),
        (EVENTS as i64, EVENTS as i64),
        "none recorded"
    );

    let service = common::spawn(&db, &namespace, &HELD_SETTINGS).await;
    wait_all_succeeded(&client_db, EVENTS, Duration::from_secs(90)).await;
    assert_eq!(sent_after(&receiver, EVENTS), ids, "each sent again");
    assert_eq!(
        metric_of(service.port, "hookrelay_deliveries_lost_total").await,
        (EVENTS - 1) as f64,
        "the handed-off ones found by the lost-delivery check; the first handed back by the broker"
    );
    let mut child = service.child;
    let _ = child.start_kill();
    let _ = child.wait().await;
    hookrelay_tests::delete_namespace(&amqp_url(), &namespace, &[webhook_id]).await;
}

/// The value of `series` on the service listening on `port`.
async fn metric_of(port: u16, series: &str) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    hookrelay_tests::metric(&text, series)
}

/// Waits until every log reads `succeeded`, and checks there are `expected` of them.
async fn wait_all_succeeded(client: &tokio_postgres::Client, expected: usize, deadline: Duration) {
    let (all, succeeded) = wait_for("every log succeeded", deadline, || async {
        let counts = count_logs(client, "succeeded").await?;
        (counts.0 == counts.1).then_some(counts)
    })
    .await;
    assert_eq!((all, succeeded), (expected as i64, expected as i64));
}

/// The event ids of the requests received after the first `skip`.
fn sent_after(receiver: &Receiver, skip: usize) -> HashSet<String> {
    receiver.received()[skip..]
        .iter()
        .filter_map(|r| r.json()["id"].as_str().map(str::to_owned))
        .collect()
}

/// A short timeout makes the lost-delivery check quick (it waits two timeouts and 5 s between
/// its looks), long enough for held requests to be released before it.
const HELD_SETTINGS: [(&str, &str); 1] = [("HOOKRELAY_REQUEST_TIMEOUT", "5s")];

/// A service with [`HELD_SETTINGS`] and one webhook whose receiver holds every request until
/// it is released.
struct Held {
    db: TestDb,
    namespace: String,
    receiver: Receiver,
    first: tokio::process::Child,
    port: u16,
    webhook_id: String,
}

impl Held {
    async fn start() -> Self {
        let db = TestDb::new();
        let namespace = hookrelay_tests::unique_namespace();
        let receiver = Receiver::start().await;
        receiver.answer(Behaviour::Held(200));
        let (first, port) = start_with(&db, &namespace, &HELD_SETTINGS).await;
        let webhook_id = create_webhook(port, &receiver.url, "Message.received").await;
        Self {
            db,
            namespace,
            receiver,
            first,
            port,
            webhook_id,
        }
    }
}
