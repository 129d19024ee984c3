//! The times hookrelay accepts from outside: within years 1 to 9999 in UTC, the range that
//! RFC 3339 can write (four-digit years) and that PostgreSQL stores. A time outside it is
//! refused with a reason, never stored, sent or turned into a database error.

use chrono::{DateTime, Datelike, Utc};

use crate::Invalid;

pub const MIN_YEAR: i32 = 1;
pub const MAX_YEAR: i32 = 9999;

/// Whether `at`, in UTC, falls within years 1 to 9999.
pub fn check_time(at: DateTime<Utc>) -> Result<DateTime<Utc>, Invalid> {
    if (MIN_YEAR..=MAX_YEAR).contains(&at.year()) {
        return Ok(at);
    }
    Err(Invalid::new(
        "out_of_range",
        format!("{at} is out of range: times are from year {MIN_YEAR} to {MAX_YEAR}, in UTC"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn times_outside_years_1_to_9999_in_utc_are_refused() {
        for ok in [
            "0001-01-01T00:00:00Z",
            "2026-12-06T10:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            assert!(check_time(utc(ok)).is_ok(), "{ok}");
        }
        // Written within range, but past it once in UTC.
        for bad in ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00"] {
            assert_eq!(
                check_time(utc(bad)).unwrap_err().code,
                "out_of_range",
                "{bad}"
            );
        }
        let ancient = DateTime::<Utc>::MIN_UTC;
        assert!(check_time(ancient).is_err());
    }
}
