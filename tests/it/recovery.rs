//! Fixing deliveries by hand: one more attempt of a log, recovering a webhook's failed logs,
//! a paced bulk retry; and rotating a secret.

use std::time::{Duration, Instant};

use hookrelay_core::RetrySchedule;
use hookrelay_tests::receiver::{Behaviour, Receiver};
use hookrelay_tests::{let_pass, verify_signature, wait_for, wait_for_count};
use serde_json::json;

use crate::helpers::spawn_app_with;
use crate::retries::{attempt_rows, log_state, metrics, schedule, wait_for_status};

const DEADLINE: Duration = Duration::from_secs(60);

fn since_a_minute_ago() -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339()
}

#[tokio::test]
async fn a_log_can_be_tried_once_more_whatever_its_status() {
    let app = spawn_app_with(|s| s.retry_schedule = schedule("1s")).await;
    let receiver = Receiver::start().await;
    receiver.answer(Behaviour::Status(500));
    let webhook = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let event = app
        .publish("Contact.created", "acc", json!({"n": 7}), 1)
        .await
        .remove(0);
    let (log_id, attempts) = wait_for_status(&app, &webhook, &event, "failed").await;
    assert_eq!(attempts, 2);

    // One attempt more, and only one: a retry by hand gets no new schedule.
    let answer = app
        .admin("POST", &format!("/v1/logs/{log_id}/retry"), None)
        .await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    assert_eq!(answer.body["id"], json!(log_id));
    assert_eq!(answer.body["status"], "pending");
    receiver.wait_for(3, DEADLINE).await;
    let (_, attempts) = wait_for_status(&app, &webhook, &event, "failed").await;
    assert_eq!(attempts, 3);
    // Past the time a scheduled retry (1 s) would have gone out.
    let_pass(Duration::from_secs(2)).await;
    assert_eq!(receiver.count(), 3, "no retry of a retry by hand");

    receiver.answer(Behaviour::Status(200));
    app.admin("POST", &format!("/v1/logs/{log_id}/retry"), None)
        .await;
    let (_, attempts) = wait_for_status(&app, &webhook, &event, "succeeded").await;
    assert_eq!(attempts, 4);
    // Whatever its status: a succeeded log is sent again too.
    let again = app
        .admin("POST", &format!("/v1/logs/{log_id}/retry"), None)
        .await;
    assert_eq!(again.status, 202);
    let got = receiver.wait_for(5, DEADLINE).await;
    wait_for("the fifth attempt on record", DEADLINE, || async {
        let state = log_state(&app, &webhook, &event).await?;
        (state.1 == "succeeded" && state.2 == 5).then_some(())
    })
    .await;
    for request in &got {
        assert_eq!(request.header("webhook-id"), Some(event.as_str()));
        assert_eq!(request.json(), got[0].json(), "the same body");
    }
    assert_eq!(
        attempt_rows(&app, &log_id).await,
        vec![
            (1, Some(500)),
            (2, Some(500)),
            (3, Some(500)),
            (4, Some(200)),
            (5, Some(200))
        ]
    );

    // Another account's log, or no log at all: 404.
    let other = app.api_key("other").await;
    let foreign = app
        .call(
            "POST",
            &format!("/v1/logs/{log_id}/retry"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(foreign.status, 404, "{}", foreign.text);
    assert_eq!(foreign.error().0, "not_found");
    let own = app.api_key("acc").await;
    let mine = app
        .call(
            "POST",
            &format!("/v1/logs/{log_id}/retry"),
            Some(&own),
            None,
        )
        .await;
    assert_eq!(mine.status, 202, "{}", mine.text);
    for missing in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let answer = app
            .admin("POST", &format!("/v1/logs/{missing}/retry"), None)
            .await;
        assert_eq!(answer.status, 404, "{missing}");
    }
    assert!(metrics(&app)
        .await
        .contains("hookrelay_deliveries_requeued_total 4"));
}

#[tokio::test]
async fn retrying_a_retrying_log_sends_it_now_instead_of_later() {
    let app = spawn_app_with(|s| s.retry_schedule = schedule("3s,3s")).await;
    let receiver = Receiver::start().await;
    receiver.script([Behaviour::Status(500)]);
    let webhook = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let event = app
        .publish("Contact.created", "acc", json!({}), 1)
        .await
        .remove(0);
    let (log_id, _) = wait_for_status(&app, &webhook, &event, "retrying").await;
    let answer = app
        .admin("POST", &format!("/v1/logs/{log_id}/retry"), None)
        .await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    let (_, attempts) = wait_for_status(&app, &webhook, &event, "succeeded").await;
    assert_eq!(attempts, 2);
    assert_eq!(receiver.count(), 2);
    // The retry that was scheduled comes due, finds itself overtaken, and is not sent.
    let db = app.db.connect().await;
    let_pass(Duration::from_secs(5)).await;
    assert_eq!(receiver.count(), 2, "sent now instead of later, not twice");
    let row = db
        .query_one(
            "SELECT status, attempts, requeues FROM webhook_logs WHERE id = $1::text::uuid",
            &[&log_id],
        )
        .await
        .expect("the log");
    assert_eq!(row.get::<_, String>(0), "succeeded");
    assert_eq!(row.get::<_, i32>(1), 2);
    assert_eq!(row.get::<_, i32>(2), 1);
}

#[tokio::test]
async fn recovering_twice_sends_each_failed_log_once() {
    let app = spawn_app_with(|s| s.retry_schedule = RetrySchedule::none()).await;
    let receiver = Receiver::start().await;
    receiver.answer(Behaviour::Status(500));
    let other = Receiver::start().await;
    other.answer(Behaviour::Status(500));
    let webhook = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let other_webhook = app
        .webhook("acc", &other.url, &["Contact.created"], json!({}))
        .await;
    let events = app.publish("Contact.created", "acc", json!({}), 5).await;
    for event in &events {
        wait_for_status(&app, &webhook, event, "failed").await;
        wait_for_status(&app, &other_webhook, event, "failed").await;
    }

    receiver.answer(Behaviour::Status(200));
    let path = format!("/v1/webhooks/{webhook}/recover");
    let body = json!({"since": since_a_minute_ago()});
    let first = app.admin("POST", &path, Some(body.clone())).await;
    let second = app.admin("POST", &path, Some(body.clone())).await;
    assert_eq!(first.status, 202, "{}", first.text);
    assert_eq!(first.body["count"], 5);
    assert_eq!(second.status, 202, "{}", second.text);
    for event in &events {
        wait_for_status(&app, &webhook, event, "succeeded").await;
    }
    wait_for("both jobs to finish", DEADLINE, || async {
        metrics(&app)
            .await
            .contains("hookrelay_deliveries_requeued_total 5")
            .then_some(())
    })
    .await;
    assert_eq!(
        receiver.count(),
        10,
        "each failed log sent once more, not twice"
    );
    let third = app.admin("POST", &path, Some(body)).await;
    assert_eq!(third.body["count"], 0, "nothing failed is left");
    for event in &events {
        let state = log_state(&app, &other_webhook, event).await.expect("a log");
        assert_eq!(state.1, "failed", "another webhook's logs are left alone");
    }
    assert_eq!(other.count(), 5);

    // A window in the future holds nothing; a bad one is refused with its field.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let none = app
        .admin("POST", &path, Some(json!({"since": later})))
        .await;
    assert_eq!(none.body["count"], 0);
    let backwards = app
        .admin(
            "POST",
            &path,
            Some(json!({"since": since_a_minute_ago(), "until": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(backwards.status, 422);
    assert_eq!(
        backwards.error(),
        ("invalid_window".into(), Some("until".into()))
    );
    let missing = app.admin("POST", &path, Some(json!({}))).await;
    assert_eq!(missing.status, 422, "{}", missing.text);
    let unknown = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{}/recover", uuid::Uuid::new_v4()),
            Some(json!({"since": since_a_minute_ago()})),
        )
        .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn a_bulk_retry_of_ten_thousand_logs_is_paced() {
    const LOGS: usize = 10_000;
    const RATE: u32 = 2_500;
    let app = spawn_app_with(|s| s.requeue_rate = RATE).await;
    let receiver = Receiver::start().await;
    let webhook = app
        .webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    app.failed_logs(&webhook, LOGS).await;

    let started = Instant::now();
    let answer = app
        .admin(
            "POST",
            "/v1/logs/retry",
            Some(json!({"account_id": "acc", "since": (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339()})),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    assert_eq!(answer.body["count"], LOGS);
    let got = receiver.wait_for(LOGS, Duration::from_secs(180)).await;
    let took = started.elapsed();
    let ids: std::collections::HashSet<String> = got
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), LOGS, "every log, once");
    // Paced: at most RATE a second, so at least LOGS / RATE seconds less the first batch.
    let first = got.iter().map(|r| r.at).min().expect("requests");
    let last = got.iter().map(|r| r.at).max().expect("requests");
    let spread = last - first;
    let least = Duration::from_secs_f64(LOGS as f64 / f64::from(RATE)) - Duration::from_millis(200);
    assert!(spread >= least, "{LOGS} logs went out in {spread:?}");
    let busiest = busiest_second(&got.iter().map(|r| r.at).collect::<Vec<_>>());
    assert!(
        busiest <= RATE as usize + BATCH_SLACK,
        "{busiest} deliveries in one second"
    );
    eprintln!("{LOGS} logs queued again in {took:?}, spread over {spread:?}, at most {busiest} in a second");
    let db = app.db.connect().await;
    wait_for_count(
        &db,
        "every log succeeded",
        DEADLINE,
        "SELECT count(*) FROM webhook_logs WHERE status = 'succeeded' AND attempts = 9",
        &[],
        LOGS as i64,
    )
    .await;
    assert!(metrics(&app)
        .await
        .contains(&format!("hookrelay_deliveries_requeued_total {LOGS}")));
}

/// A batch may straddle a second's edge.
const BATCH_SLACK: usize = 100;

/// The most requests within any one second.
fn busiest_second(times: &[Instant]) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    let mut most = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] > Duration::from_secs(1) {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_new_one_for_its_grace_period() {
    const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let app = spawn_app_with(|_| {}).await;
    let receiver = Receiver::start().await;
    let id = app
        .webhook(
            "acc",
            &receiver.url,
            &["Contact.created"],
            json!({"secret": OLD}),
        )
        .await;
    let rotated = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{id}/rotate-secret"),
            Some(json!({"grace_seconds": 5})),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let new = rotated.body["secret"]
        .as_str()
        .expect("the new secret")
        .to_owned();
    assert!(new.starts_with("whsec_") && new != OLD);
    let until = rotated.body["previous_secret_expires_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .expect("when the old secret stops");

    let verify = |request: &hookrelay_tests::receiver::Received, secret: &str| {
        verify_signature(
            secret,
            request.header("webhook-id").unwrap_or_default(),
            request.header("webhook-timestamp").unwrap_or_default(),
            &request.body,
            request.header("webhook-signature").unwrap_or_default(),
        )
    };
    app.publish("Contact.created", "acc", json!({}), 1).await;
    let during = receiver.wait_for(1, DEADLINE).await.remove(0);
    let signatures = during.header("webhook-signature").unwrap_or_default();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert!(
        verify(&during, OLD),
        "the old secret verifies during the grace period"
    );
    assert!(verify(&during, &new), "and so does the new one");

    wait_for("the grace period to end", DEADLINE, || async {
        (chrono::Utc::now() > until + chrono::Duration::milliseconds(100)).then_some(())
    })
    .await;
    app.publish("Contact.created", "acc", json!({}), 1).await;
    let after = receiver.wait_for(2, DEADLINE).await.remove(1);
    assert_eq!(
        after
            .header("webhook-signature")
            .unwrap_or_default()
            .split(' ')
            .count(),
        1
    );
    assert!(verify(&after, &new));
    assert!(!verify(&after, OLD), "the old secret no longer verifies");

    // A secret of one's own, without grace: the old one stops at once.
    let chosen = "whsec_dGhpcnR5LXR3byBieXRlcyBvZiBzZWNyZXQga2V5ISE=";
    let answer = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{id}/rotate-secret"),
            Some(json!({"secret": chosen, "grace_seconds": 0})),
        )
        .await;
    assert_eq!(answer.body["secret"], chosen);
    assert_eq!(
        answer.body["previous_secret_expires_at"],
        serde_json::Value::Null
    );
    let shown = app.admin("GET", &format!("/v1/webhooks/{id}"), None).await;
    assert!(
        !shown.text.contains("whsec_"),
        "a secret is answered once: {}",
        shown.text
    );
    assert_eq!(shown.body["has_secret"], true);
    app.publish("Contact.created", "acc", json!({}), 1).await;
    let last = receiver.wait_for(3, DEADLINE).await.remove(2);
    assert!(verify(&last, chosen) && !verify(&last, &new));

    let too_long = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{id}/rotate-secret"),
            Some(json!({"grace_seconds": 100_000_000})),
        )
        .await;
    assert_eq!(too_long.status, 422);
    assert_eq!(too_long.error().1.as_deref(), Some("grace_seconds"));
    let bad = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{id}/rotate-secret"),
            Some(json!({"secret": "whsec_!!"})),
        )
        .await;
    assert_eq!(bad.error().1.as_deref(), Some("secret"));
    let other = app.api_key("other").await;
    let foreign = app
        .call(
            "POST",
            &format!("/v1/webhooks/{id}/rotate-secret"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(foreign.status, 404);
}
