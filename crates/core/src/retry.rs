use std::time::Duration;

use crate::Invalid;

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

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("soon").unwrap_err().code, "invalid_duration");
    }
}
