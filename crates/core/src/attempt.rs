//! What follows one delivery attempt, decided without IO: the log's new state, when the next
//! attempt is due, what must be published before the delivery is acked (the retry, or the
//! `Webhook.delivery.failed` event), and what the attempt tells the endpoint's health. The
//! delivery worker sends the request, calls [`after_attempt`], and carries its answer out.

use chrono::{DateTime, Utc};

use crate::ops::{self, FailedDelivery, OperationalEvent};
use crate::{decide, AttemptFacts, DelayTier, DeliveryV1, LogStatus, Next, RetrySchedule};

/// One attempt made, and what the decision needs besides.
#[derive(Debug, Clone)]
pub struct Attempted<'a> {
    pub task: &'a DeliveryV1,
    /// The webhook's account, which hears of a delivery that failed for good.
    pub account_id: &'a str,
    pub facts: AttemptFacts,
    /// Why the attempt failed, as recorded.
    pub error: Option<&'a str>,
    /// The deployment's retry schedule; a delivery queued again by hand does not follow it.
    pub schedule: &'a RetrySchedule,
    pub now: DateTime<Utc>,
    /// A random draw in `[0, 1)` for the retry's jitter.
    pub unit: f64,
}

/// What an attempt tells the webhook's endpoint health (its circuit breaker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub success: bool,
    /// The endpoint answered 410 Gone: the webhook must be disabled.
    pub gone: bool,
}

/// What must be published, with confirms, before the delivery is acked.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowUp {
    /// The next attempt, to wait in `tier` until `due`.
    Retry {
        task: DeliveryV1,
        due: DateTime<Utc>,
        tier: DelayTier,
    },
    /// `Webhook.delivery.failed`, for the account's other webhooks.
    Announce(OperationalEvent),
}

/// The decision after one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AfterAttempt {
    /// The log's new state.
    pub status: LogStatus,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub follow_up: Option<FollowUp>,
    pub report: Report,
}

/// Decides what follows `attempted` (contract §2). A delivery queued again by hand gets one
/// attempt, not a new schedule. A delivery of one of hookrelay's own events that fails for
/// good announces nothing: two dead webhooks subscribed to each other's failures would
/// otherwise notify each other forever.
pub fn after_attempt(attempted: &Attempted<'_>) -> AfterAttempt {
    let task = attempted.task;
    let no_retries = RetrySchedule::none();
    let (schedule, step) = match task.is_manual() {
        true => (&no_retries, 1),
        false => (attempted.schedule, task.attempt),
    };
    let decision = decide(&attempted.facts, step, schedule, attempted.unit);
    let report = Report {
        success: decision.next == Next::Done,
        gone: decision.disable,
    };
    let (status, next_attempt_at, follow_up) = match decision.next {
        Next::Done => (LogStatus::Succeeded, None, None),
        Next::RetryIn(wait) => {
            let due = attempted.now + chrono::Duration::from_std(wait).unwrap_or_default();
            let retry = FollowUp::Retry {
                task: DeliveryV1 {
                    attempt: task.attempt.saturating_add(1),
                    ..task.clone()
                },
                due,
                tier: DelayTier::to_hold(wait),
            };
            (LogStatus::Retrying, Some(due), Some(retry))
        }
        Next::GiveUp => {
            let announce = (!ops::is_operational(&task.event_type)).then(|| {
                FollowUp::Announce(ops::delivery_failed(
                    &FailedDelivery {
                        log_id: task.log_id,
                        webhook_id: task.webhook_id,
                        account_id: attempted.account_id,
                        event_id: &task.event_id,
                        event_type: &task.event_type,
                        attempts: task.attempt,
                        response_status: attempted.facts.status,
                        error: attempted.error,
                    },
                    attempted.now,
                ))
            });
            (LogStatus::Failed, None, announce)
        }
    };
    AfterAttempt {
        status,
        next_attempt_at,
        follow_up,
        report,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::Outcome;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn task(attempt: u32, requeue: u32, event_type: &str) -> DeliveryV1 {
        DeliveryV1 {
            log_id: Uuid::from_u128(1),
            webhook_id: Uuid::from_u128(2),
            event_id: "evt_1".into(),
            event_type: event_type.into(),
            attempt,
            received_at: at(0),
            payload: "{}".into(),
            requeue,
            traceparent: None,
        }
    }

    fn facts(outcome: Outcome, status: Option<u16>, retry_after: Option<u64>) -> AttemptFacts {
        AttemptFacts {
            outcome,
            status,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    /// What a case expects: the log's state, the wait until the next attempt, whether the
    /// failure is announced, and what the health hears.
    struct Expected {
        status: LogStatus,
        retry_in: Option<u64>,
        announced: bool,
        success: bool,
        gone: bool,
    }

    fn expect(status: LogStatus, retry_in: Option<u64>, announced: bool) -> Expected {
        Expected {
            status,
            retry_in,
            announced,
            success: status == LogStatus::Succeeded,
            gone: false,
        }
    }

    #[test]
    fn what_follows_an_attempt() {
        let schedule = RetrySchedule::parse("10s,100s").unwrap();
        let contact = "Contact.created";
        let own = ops::WEBHOOK_DISABLED;
        let ok = facts(Outcome::Success, Some(200), None);
        let failed = facts(Outcome::HttpError, Some(500), None);
        let timeout = facts(Outcome::Timeout, None, None);
        let gone = facts(Outcome::HttpError, Some(410), None);
        let slow_down = facts(Outcome::HttpError, Some(429), Some(15));
        use LogStatus::{Failed, Retrying, Succeeded};
        // (attempt, requeue, event type, facts, expected), with a jitter draw of 0.5 (none).
        let cases = [
            (1, 0, contact, ok, expect(Succeeded, None, false)),
            (3, 0, contact, ok, expect(Succeeded, None, false)),
            (1, 0, contact, failed, expect(Retrying, Some(10), false)),
            (2, 0, contact, timeout, expect(Retrying, Some(100), false)),
            (1, 0, contact, slow_down, expect(Retrying, Some(15), false)),
            // The schedule is used up: failed, and the account hears of it.
            (3, 0, contact, failed, expect(Failed, None, true)),
            // hookrelay's own events fail silently.
            (3, 0, own, failed, expect(Failed, None, false)),
            // Queued again by hand: one attempt, whatever the attempt number.
            (1, 1, contact, failed, expect(Failed, None, true)),
            (2, 3, contact, ok, expect(Succeeded, None, false)),
            // 410: the webhook goes, the delivery keeps its schedule.
            (
                1,
                0,
                contact,
                gone,
                Expected {
                    gone: true,
                    ..expect(Retrying, Some(10), false)
                },
            ),
            (
                3,
                0,
                contact,
                gone,
                Expected {
                    gone: true,
                    ..expect(Failed, None, true)
                },
            ),
        ];
        for (attempt, requeue, event_type, facts, expected) in cases {
            let task = task(attempt, requeue, event_type);
            let now = at(100);
            let after = after_attempt(&Attempted {
                task: &task,
                account_id: "acc_1",
                facts,
                error: Some("HTTP 500"),
                schedule: &schedule,
                now,
                unit: 0.5,
            });
            let case = format!("attempt {attempt}, requeue {requeue}, {event_type}, {facts:?}");
            assert_eq!(after.status, expected.status, "{case}");
            assert_eq!(
                after.report,
                Report {
                    success: expected.success,
                    gone: expected.gone
                },
                "{case}"
            );
            let due = expected
                .retry_in
                .map(|s| now + chrono::Duration::seconds(s as i64));
            assert_eq!(after.next_attempt_at, due, "{case}");
            match (&after.follow_up, due) {
                (
                    Some(FollowUp::Retry {
                        task: next,
                        due: at,
                        tier,
                    }),
                    Some(due),
                ) => {
                    assert_eq!(*at, due, "{case}");
                    assert_eq!(next.attempt, attempt + 1, "{case}");
                    assert_eq!(next.requeue, requeue, "{case}");
                    assert_eq!(next.payload, task.payload, "{case}");
                    let wait = (due - now).to_std().unwrap();
                    assert!(tier.ttl() <= wait && wait < tier.ttl() * 2, "{case}");
                }
                (Some(FollowUp::Announce(event)), None) => {
                    assert!(expected.announced, "{case}");
                    assert_eq!(event.event_type, ops::WEBHOOK_DELIVERY_FAILED, "{case}");
                    let body: serde_json::Value = serde_json::from_slice(&event.body).unwrap();
                    assert_eq!(body["account_id"], "acc_1", "{case}");
                    assert_eq!(body["data"]["attempts"], attempt, "{case}");
                    assert_eq!(body["data"]["error"], "HTTP 500", "{case}");
                }
                (None, None) => assert!(!expected.announced, "{case}"),
                (other, _) => panic!("{case}: unexpected follow-up {other:?}"),
            }
        }
    }

    #[test]
    fn a_wait_shorter_than_every_tier_takes_the_shortest() {
        let schedule = RetrySchedule::parse("100ms").unwrap();
        let task = task(1, 0, "Contact.created");
        let after = after_attempt(&Attempted {
            task: &task,
            account_id: "acc_1",
            facts: facts(Outcome::NetworkError, None, None),
            error: None,
            schedule: &schedule,
            now: at(0),
            unit: 0.5,
        });
        match after.follow_up {
            Some(FollowUp::Retry { tier, .. }) => assert_eq!(tier, DelayTier::SHORTEST),
            other => panic!("{other:?}"),
        }
    }
}
