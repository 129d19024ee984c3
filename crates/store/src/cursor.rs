use base64::Engine as _;
use chrono::{DateTime, Utc};

/// A position in a newest-first list: the `(created_at, key)` of the last row answered.
/// Opaque to clients (URL-safe base64), so its layout can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub key: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let raw = format!("{}|{}", self.created_at.timestamp_micros(), self.key);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(raw: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (micros, key) = text.split_once('|')?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        // Rows are stamped by the database's clock: a time outside these years was never
        // answered, and PostgreSQL refuses some of them outright (a tampered cursor).
        let years = 1970..=9999;
        if !years.contains(&chrono::Datelike::year(&created_at)) {
            return None;
        }
        // Keys are ids and event type names: short, printable, never NUL (which PostgreSQL
        // refuses in text).
        if key.is_empty() || key.len() > 256 || key.chars().any(char::is_control) {
            return None;
        }
        Some(Self {
            created_at,
            key: key.to_owned(),
        })
    }
}

/// One page of a list, and where the next one starts (`None` at the end).
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row only tells that more follow.
    pub(crate) fn from_rows(
        mut rows: Vec<T>,
        limit: usize,
        cursor_of: impl Fn(&T) -> Cursor,
    ) -> Self {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more {
            rows.last().map(cursor_of)
        } else {
            None
        };
        Self { items: rows, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            key: "Contact.created".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        // empty, not base64, no separator ("nopipe"), not a number ("x|k")
        for bad in ["", "!!!", "bm9waXBl", "eHxr"] {
            assert!(Cursor::decode(bad).is_none(), "{bad}");
        }
        let forged = |raw: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        for bad in [
            "9223372036854775807|k",    // beyond chrono
            "-9000000000000000000|k",   // far before PostgreSQL's range
            "253402300800000000|k",     // year 10000
            "-1000000|k",               // before 1970
            "1700000000000000|",        // no key
            "1700000000000000|a\u{0}b", // NUL, which text columns refuse
        ] {
            assert!(Cursor::decode(&forged(bad)).is_none(), "{bad}");
        }
    }
}
