use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{Invalid, Outcome};

/// Parses a human duration such as `15s`, `5m`, `2h` or `1h 30m`.
pub fn parse_duration(raw: &str) -> Result<Duration, Invalid> {
    humantime::parse_duration(raw.trim()).map_err(|e| {
        Invalid::new(
            "invalid_duration",
            format!(
                "`{}` is not a duration ({e}); write e.g. `15s`, `5m` or `2h`",
                raw.escape_debug()
            ),
        )
    })
}

const MAX_RETRIES: usize = 50;
const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The delays between attempts: the n-th entry is the wait after attempt n fails, so a
/// schedule of k delays allows k + 1 attempts. The default, `5s,5m,30m,2h,5h,10h,10h`, makes 8
/// attempts over about 28 hours (contract §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    /// Comma-separated durations, e.g. `5s,5m,30m`. An empty string means no retries at all.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.trim().is_empty() {
            return Ok(Self(Vec::new()));
        }
        let delays = raw
            .split(',')
            .map(|part| {
                let d = parse_duration(part)?;
                if d.is_zero() || d > MAX_DELAY {
                    return Err(Invalid::new(
                        "invalid_duration",
                        format!(
                            "each retry delay must be above 0 and at most 7 days, not `{}`",
                            part.trim()
                        ),
                    ));
                }
                Ok(d)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > MAX_RETRIES {
            return Err(Invalid::new(
                "too_many",
                format!("a retry schedule has at most {MAX_RETRIES} delays"),
            ));
        }
        Ok(Self(delays))
    }

    /// No retries: one attempt and done, as for a delivery queued again by hand.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// How many attempts a delivery gets in all.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.0.len()).map_or(u32::MAX, |n| n + 1)
    }

    /// The nominal wait after failed attempt `attempt` (1-based), or `None` when it was the last.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        self.0.get(index).copied()
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self(
            [5, 300, 1800, 7200, 18000, 36000, 36000]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        )
    }
}

impl std::str::FromStr for RetrySchedule {
    type Err = Invalid;

    fn from_str(raw: &str) -> Result<Self, Invalid> {
        Self::parse(raw)
    }
}

impl std::fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// What an attempt gave, as far as the retry decision cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptFacts {
    pub outcome: Outcome,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// The answer's `Retry-After`, already turned into a wait (see [`parse_retry_after`]).
    pub retry_after: Option<Duration>,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The attempt succeeded: the delivery is over.
    Done,
    /// Try again after this long.
    RetryIn(Duration),
    /// The schedule is used up: the delivery ends `failed`.
    GiveUp,
}

/// The decision after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub next: Next,
    /// The endpoint said it is gone for good (410): the webhook must be disabled now.
    pub disable: bool,
}

/// How far jitter moves a scheduled delay either way: ±20 % (contract §2).
pub const JITTER: f64 = 0.2;

/// Decides what follows attempt `attempt` (1-based) of a delivery that runs on `schedule`.
///
/// `unit` is a random draw in `[0, 1)` passed in by the caller, so that the decision is
/// deterministic under test. The rules (contract §2):
/// - a 2xx is done;
/// - any other outcome is retried after the scheduled delay, jittered by ±20 %, until the
///   schedule is used up;
/// - a `Retry-After` on a 429 or 503 replaces the jittered delay, clamped to between the
///   scheduled delay and twice it: a receiver may slow hookrelay down, not speed it up or
///   park a delivery for a week;
/// - a 410 disables the webhook at once. The delivery itself is still retried on its
///   schedule: it waits in the queue of the disabled webhook and goes out if the webhook is
///   enabled again, instead of being lost to one answer.
pub fn decide(facts: &AttemptFacts, attempt: u32, schedule: &RetrySchedule, unit: f64) -> Decision {
    if facts.outcome == Outcome::Success {
        return Decision {
            next: Next::Done,
            disable: false,
        };
    }
    let disable = facts.status == Some(410);
    let next = match schedule.delay_after(attempt) {
        None => Next::GiveUp,
        Some(nominal) => {
            let honour_retry_after = matches!(facts.status, Some(429 | 503));
            match facts.retry_after.filter(|_| honour_retry_after) {
                Some(asked) => Next::RetryIn(asked.clamp(nominal, nominal.saturating_mul(2))),
                None => Next::RetryIn(jitter(nominal, unit)),
            }
        }
    };
    Decision { next, disable }
}

/// `nominal` moved by up to ±[`JITTER`], `unit` in `[0, 1)` choosing where.
pub fn jitter(nominal: Duration, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.5
    };
    nominal.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit)
}

/// The wait a `Retry-After` header asks for: delta-seconds or an HTTP date (RFC 9110
/// §10.2.3). A date in the past means no wait; anything unreadable means no header.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurd numbers saturate; the clamp in `decide` bounds the result anyway.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_contract_schedule() {
        let parsed = RetrySchedule::parse("5s,5m,30m,2h,5h,10h,10h").unwrap();
        assert_eq!(parsed, RetrySchedule::default());
        assert_eq!(parsed.max_attempts(), 8);
        let total: Duration = parsed.delays().iter().sum();
        assert_eq!(total.as_secs() / 3600, 27, "about 28 hours in all");
        assert_eq!(parsed.delay_after(1), Some(Duration::from_secs(5)));
        assert_eq!(parsed.delay_after(7), Some(Duration::from_secs(36000)));
        assert_eq!(parsed.delay_after(8), None);
        assert_eq!(parsed.delay_after(0), None);
    }

    #[test]
    fn bad_schedules_are_refused() {
        for bad in ["5x", "5s,,5m", "0s", "8d", "-5s", "5s;5m"] {
            assert!(RetrySchedule::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(RetrySchedule::parse(" ").unwrap().max_attempts(), 1);
        assert_eq!(RetrySchedule::parse(" 1s , 2m ").unwrap().delays().len(), 2);
    }

    fn facts(outcome: Outcome, status: Option<u16>, retry_after: Option<u64>) -> AttemptFacts {
        AttemptFacts {
            outcome,
            status,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn decisions() {
        let schedule = RetrySchedule::parse("10s,100s").unwrap();
        let s = Duration::from_secs;
        let retry = |d| Next::RetryIn(d);
        // (facts, attempt, unit, expected next, disable)
        let cases = [
            (
                facts(Outcome::Success, Some(200), None),
                1,
                0.5,
                Next::Done,
                false,
            ),
            (
                facts(Outcome::Success, Some(204), Some(60)),
                3,
                0.5,
                Next::Done,
                false,
            ),
            (
                facts(Outcome::HttpError, Some(500), None),
                1,
                0.5,
                retry(s(10)),
                false,
            ),
            (
                facts(Outcome::HttpError, Some(500), None),
                1,
                0.0,
                retry(s(8)),
                false,
            ),
            (
                facts(Outcome::HttpError, Some(500), None),
                2,
                1.0,
                retry(s(120)),
                false,
            ),
            (
                facts(Outcome::HttpError, Some(500), None),
                3,
                0.5,
                Next::GiveUp,
                false,
            ),
            (
                facts(Outcome::Timeout, None, None),
                1,
                0.5,
                retry(s(10)),
                false,
            ),
            (
                facts(Outcome::NetworkError, None, None),
                2,
                0.5,
                retry(s(100)),
                false,
            ),
            (
                facts(Outcome::Blocked, None, None),
                1,
                0.5,
                retry(s(10)),
                false,
            ),
            // Retry-After on 429 and 503, clamped to [delay, 2 × delay], without jitter.
            (
                facts(Outcome::HttpError, Some(503), Some(15)),
                1,
                0.0,
                retry(s(15)),
                false,
            ),
            (
                facts(Outcome::HttpError, Some(429), Some(1)),
                1,
                0.0,
                retry(s(10)),
                false,
            ),
            (
                facts(Outcome::HttpError, Some(429), Some(3600)),
                1,
                0.9,
                retry(s(20)),
                false,
            ),
            (
                facts(Outcome::HttpError, Some(503), Some(0)),
                2,
                0.9,
                retry(s(100)),
                false,
            ),
            // Elsewhere it is ignored.
            (
                facts(Outcome::HttpError, Some(500), Some(15)),
                1,
                0.5,
                retry(s(10)),
                false,
            ),
            (
                facts(Outcome::HttpError, Some(503), Some(15)),
                3,
                0.5,
                Next::GiveUp,
                false,
            ),
            // 410 disables at once; the delivery keeps its schedule (it waits for enable).
            (
                facts(Outcome::HttpError, Some(410), None),
                1,
                0.5,
                retry(s(10)),
                true,
            ),
            (
                facts(Outcome::HttpError, Some(410), None),
                3,
                0.5,
                Next::GiveUp,
                true,
            ),
        ];
        for (facts, attempt, unit, next, disable) in cases {
            let decision = decide(&facts, attempt, &schedule, unit);
            assert_eq!(
                decision,
                Decision { next, disable },
                "{facts:?} attempt {attempt}"
            );
        }
        let none = RetrySchedule::none();
        assert_eq!(
            decide(&facts(Outcome::HttpError, Some(500), None), 1, &none, 0.5).next,
            Next::GiveUp,
            "without a schedule, one attempt"
        );
    }

    #[test]
    fn retry_after_values() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cases = [
            ("120", Some(120)),
            (" 7 ", Some(7)),
            ("0", Some(0)),
            ("99999999999999999999999", Some(u64::MAX)),
            ("Wed, 21 Oct 2015 07:29:00 GMT", Some(60)),
            ("Wed, 21 Oct 2015 07:00:00 GMT", Some(0)),
            ("-5", None),
            ("1.5", None),
            ("soon", None),
            ("", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                parse_retry_after(raw, now),
                expected.map(Duration::from_secs),
                "{raw:?}"
            );
        }
    }

    proptest::proptest! {
        /// Every retry stays inside its bounds: the jittered delay within ±20 % of the
        /// scheduled one, a honoured Retry-After within [delay, 2 × delay].
        #[test]
        fn every_delay_stays_inside_its_bounds(
            delays in proptest::collection::vec(1u64..=604_800_000, 1..10),
            attempt in 1u32..12,
            status in proptest::option::of(proptest::sample::select(vec![200u16, 410, 429, 500, 503])),
            retry_after_ms in proptest::option::of(0u64..2_000_000_000),
            unit in 0.0f64..1.0,
        ) {
            let schedule = RetrySchedule(delays.iter().map(|ms| Duration::from_millis(*ms)).collect());
            let outcome = status.map_or(Outcome::Timeout, Outcome::from_status);
            let facts = AttemptFacts {
                outcome,
                status,
                retry_after: retry_after_ms.map(Duration::from_millis),
            };
            let decision = decide(&facts, attempt, &schedule, unit);
            proptest::prop_assert_eq!(decision.disable, status == Some(410));
            match decision.next {
                Next::Done => proptest::prop_assert_eq!(outcome, Outcome::Success),
                Next::GiveUp => {
                    proptest::prop_assert!(outcome != Outcome::Success);
                    proptest::prop_assert!(attempt as usize > delays.len());
                }
                Next::RetryIn(delay) => {
                    let nominal = schedule.delay_after(attempt).unwrap();
                    let honoured = matches!(status, Some(429 | 503)) && retry_after_ms.is_some();
                    let (low, high) = if honoured {
                        (nominal, nominal * 2)
                    } else {
                        (nominal.mul_f64(0.8), nominal.mul_f64(1.2))
                    };
                    // mul_f64 rounds to the nanosecond.
                    let slack = Duration::from_nanos(2);
                    proptest::prop_assert!(delay + slack >= low && delay <= high + slack,
                        "{delay:?} outside [{low:?}, {high:?}]");
                }
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("soon").unwrap_err().code, "invalid_duration");
    }
}
