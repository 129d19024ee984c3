//! Endpoint health: the circuit breaker that pauses a failing webhook's queue, and the clock
//! that disables a webhook whose deliveries have failed for too long (contract §2).
//!
//! A pure state machine: the delivery worker tells it what each attempt gave and carries out
//! what it answers (pause the queue, resume it, disable the webhook, save the state). Time
//! and randomness are passed in.
//!
//! ```text
//!            N failures in a row                 pause over
//!  Closed ───────────────────────▶ Open(pause) ──────────────▶ Probing (one delivery)
//!    ▲                               ▲                            │
//!    │ success                       └──────── failure ───────────┤
//!    └────────────────────────────────────────── success ─────────┘
//! ```
//! Each pause is longer than the one before, following the retry schedule (and staying at
//! its last delay), so an endpoint that stays down gets one probe per pause, ever rarer.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::retry::jitter;
use crate::RetrySchedule;

/// The pause when the retry schedule is empty and so gives no growth to follow.
const PAUSE_WITHOUT_SCHEDULE: Duration = Duration::from_secs(30);

/// As the API shows it (`health`): `healthy`, `paused` or `probing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BreakerState {
    /// Deliveries flow at full speed.
    #[serde(rename = "healthy")]
    Closed,
    /// The queue is not consumed until the pause is over.
    #[serde(rename = "paused")]
    Open,
    /// One delivery is tried; its outcome closes or reopens the breaker.
    #[serde(rename = "probing")]
    Probing,
}

/// What the worker must do after telling the health about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effects {
    /// Stop consuming for this long, then probe.
    pub pause: Option<Duration>,
    /// Consume at full speed again.
    pub resume: bool,
    /// Every attempt has failed for longer than `disable_after`: disable the webhook.
    pub disable: bool,
    /// The state changed in a way worth saving (for the API, and for a restart).
    pub save: bool,
}

/// The limits, from the settings.
#[derive(Debug, Clone)]
pub struct HealthPolicy {
    /// Failed attempts in a row, with no success, that open the breaker.
    pub breaker_threshold: u32,
    /// How long every attempt may fail before the webhook is disabled.
    pub disable_after: Duration,
    /// The pauses grow like this schedule.
    pub schedule: RetrySchedule,
}

/// One webhook's health, as its delivery worker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    pub state: BreakerState,
    pub consecutive_failures: u32,
    /// Pauses in a row: the next pause is the schedule's `trips`-th delay.
    pub trips: u32,
    /// When the current run of failures began; `None` while the last attempt succeeded.
    pub failing_since: Option<DateTime<Utc>>,
    /// While open: until when.
    pub paused_until: Option<DateTime<Utc>>,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            trips: 0,
            failing_since: None,
            paused_until: None,
        }
    }
}

impl EndpointHealth {
    /// The health as saved, read back when a worker starts (after a restart, say): a pause
    /// still running stays open, one that ended while nobody watched probes first.
    pub fn restore(
        consecutive_failures: u32,
        trips: u32,
        failing_since: Option<DateTime<Utc>>,
        paused_until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Self {
        let state = match paused_until {
            Some(until) if until > now => BreakerState::Open,
            Some(_) => BreakerState::Probing,
            None if trips > 0 => BreakerState::Probing,
            None => BreakerState::Closed,
        };
        Self {
            state,
            consecutive_failures,
            trips,
            failing_since,
            paused_until: paused_until.filter(|_| state == BreakerState::Open),
        }
    }

    /// An attempt succeeded: the endpoint is healthy again, whatever state it was in (an
    /// attempt sent before the breaker opened may come back with a success).
    pub fn on_success(&mut self) -> Effects {
        let was_failing = self.failing_since.is_some() || self.consecutive_failures > 0;
        let resume = self.state != BreakerState::Closed;
        *self = Self::default();
        Effects {
            resume,
            save: was_failing || resume,
            ..Effects::default()
        }
    }

    /// An attempt failed at `now`. `unit` is a random draw in `[0, 1)` for the pause's jitter.
    pub fn on_failure(&mut self, policy: &HealthPolicy, now: DateTime<Utc>, unit: f64) -> Effects {
        let mut effects = Effects::default();
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let since = *self.failing_since.get_or_insert_with(|| {
            effects.save = true;
            now
        });
        effects.disable = (now - since).to_std().unwrap_or_default() >= policy.disable_after;
        let trip = match self.state {
            BreakerState::Closed => self.consecutive_failures >= policy.breaker_threshold,
            BreakerState::Probing => true,
            // Attempts sent before the pause may still fail while it runs: already paused.
            BreakerState::Open => false,
        };
        if trip {
            self.trips = self.trips.saturating_add(1);
            let pause = pause_after(self.trips, &policy.schedule, unit);
            self.state = BreakerState::Open;
            self.paused_until = Some(now + chrono::Duration::from_std(pause).unwrap_or_default());
            effects.pause = Some(pause);
            effects.save = true;
        }
        effects
    }

    /// The pause is over: the next delivery is a probe.
    pub fn on_pause_over(&mut self) {
        if self.state == BreakerState::Open {
            self.state = BreakerState::Probing;
            self.paused_until = None;
        }
    }
}

/// The `trips`-th pause: the schedule's delay of that rank, staying at the last one, jittered.
pub fn pause_after(trips: u32, schedule: &RetrySchedule, unit: f64) -> Duration {
    let delays = schedule.delays();
    let rank = usize::try_from(trips.max(1) - 1).unwrap_or(usize::MAX);
    match delays.get(rank).or(delays.last()) {
        Some(delay) => jitter(*delay, unit),
        None => jitter(PAUSE_WITHOUT_SCHEDULE, unit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            breaker_threshold: 3,
            disable_after: Duration::from_secs(3600),
            schedule: RetrySchedule::parse("10s,60s").unwrap(),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn the_breaker_opens_after_n_failures_and_probes_after_a_growing_pause() {
        let policy = policy();
        let mut h = EndpointHealth::default();
        let first = h.on_failure(&policy, at(0), 0.5);
        assert_eq!(
            first,
            Effects {
                save: true,
                ..Effects::default()
            },
            "the run of failures begins: saved, for the disable clock"
        );
        assert_eq!(h.on_failure(&policy, at(1), 0.5), Effects::default());
        let third = h.on_failure(&policy, at(2), 0.5);
        assert_eq!(third.pause, Some(Duration::from_secs(10)));
        assert!(third.save && !third.disable && !third.resume);
        assert_eq!(h.state, BreakerState::Open);
        assert_eq!(h.paused_until, Some(at(12)));
        // Attempts already under way fail too: no second pause.
        assert_eq!(h.on_failure(&policy, at(3), 0.5), Effects::default());
        assert_eq!(h.consecutive_failures, 4);

        h.on_pause_over();
        assert_eq!(h.state, BreakerState::Probing);
        let probe_failed = h.on_failure(&policy, at(20), 0.5);
        assert_eq!(
            probe_failed.pause,
            Some(Duration::from_secs(60)),
            "longer each time"
        );
        h.on_pause_over();
        let again = h.on_failure(&policy, at(100), 0.0);
        assert_eq!(
            again.pause,
            Some(Duration::from_secs(48)),
            "the last delay, jittered"
        );
        h.on_pause_over();
        let ok = h.on_success();
        assert!(ok.resume && ok.save && ok.pause.is_none());
        assert_eq!(h, EndpointHealth::default());
        assert_eq!(
            h.on_success(),
            Effects::default(),
            "a healthy success costs nothing"
        );
    }

    #[test]
    fn a_success_in_between_resets_the_count() {
        let policy = policy();
        let mut h = EndpointHealth::default();
        for round in 0..5 {
            h.on_failure(&policy, at(round * 10), 0.5);
            h.on_failure(&policy, at(round * 10 + 1), 0.5);
            let effects = h.on_success();
            assert!(effects.save && !effects.resume);
        }
        assert_eq!(h.state, BreakerState::Closed);
    }

    #[test]
    fn only_failures_for_disable_after_disable() {
        let policy = policy();
        let mut h = EndpointHealth::default();
        assert!(!h.on_failure(&policy, at(0), 0.5).disable);
        assert!(!h.on_failure(&policy, at(3599), 0.5).disable);
        assert!(h.on_failure(&policy, at(3600), 0.5).disable);
        h.on_success();
        assert!(
            !h.on_failure(&policy, at(7200), 0.5).disable,
            "a success resets the clock"
        );
    }

    #[test]
    fn restored_health() {
        let open = EndpointHealth::restore(12, 2, Some(at(0)), Some(at(100)), at(50));
        assert_eq!(open.state, BreakerState::Open);
        assert_eq!(open.paused_until, Some(at(100)));
        let over = EndpointHealth::restore(12, 2, Some(at(0)), Some(at(100)), at(150));
        assert_eq!(over.state, BreakerState::Probing);
        assert_eq!(over.paused_until, None);
        let failing = EndpointHealth::restore(2, 0, Some(at(0)), None, at(150));
        assert_eq!(failing.state, BreakerState::Closed);
        assert_eq!(failing.failing_since, Some(at(0)));
    }

    #[test]
    fn pauses_follow_the_schedule() {
        let schedule = RetrySchedule::parse("1s,5s").unwrap();
        let secs = |n| Duration::from_secs(n);
        assert_eq!(pause_after(1, &schedule, 0.5), secs(1));
        assert_eq!(pause_after(2, &schedule, 0.5), secs(5));
        assert_eq!(pause_after(9, &schedule, 0.5), secs(5));
        assert_eq!(pause_after(0, &schedule, 0.5), secs(1));
        assert_eq!(pause_after(3, &RetrySchedule::none(), 0.5), secs(30));
    }
}
