//! W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` an upstream
//! service puts on an event is kept with the delivery, so that its trace reaches the
//! receiver, and the Webhook Log says which trace an event belonged to.

use std::fmt;

use crate::Invalid;

/// The header that carries it, on the AMQP message in and on the HTTP request out.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// A valid `traceparent`: `{version}-{trace-id}-{parent-id}-{flags}`, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traceparent {
    trace_id: String,
    parent_id: String,
    flags: String,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn all_zero(s: &str) -> bool {
    s.bytes().all(|b| b == b'0')
}

impl Traceparent {
    /// Version 00 exactly; a later version is read for its first four fields, as the
    /// specification asks, and answered as 00 (the version this code knows).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let invalid = || {
            Invalid::new(
                "invalid_traceparent",
                "traceparent is not `00-<32 hex>-<16 hex>-<2 hex>` (W3C Trace Context)",
            )
        };
        let raw = raw.trim();
        let mut parts = raw.splitn(5, '-');
        let (Some(version), Some(trace_id), Some(parent_id), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let rest = parts.next();
        let valid = is_hex(version, 2)
            && version != "ff"
            && (version != "00" || (rest.is_none() && raw.len() == 55))
            && is_hex(trace_id, 32)
            && !all_zero(trace_id)
            && is_hex(parent_id, 16)
            && !all_zero(parent_id)
            && is_hex(flags, 2);
        if !valid {
            return Err(invalid());
        }
        Ok(Self {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            flags: flags.to_owned(),
        })
    }

    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The span of the publisher that this event's hop hangs under.
    pub fn parent_id(&self) -> &str {
        &self.parent_id
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        u8::from_str_radix(&self.flags, 16).unwrap_or(0)
    }

    /// The `traceparent` of a hop made under this one: the same trace and flags, with the
    /// hop's own span id (`span` random, and not all zero bytes).
    pub fn child(&self, span: [u8; 8]) -> String {
        let span = if span == [0; 8] {
            [0, 0, 0, 0, 0, 0, 0, 1]
        } else {
            span
        };
        let hex: String = span.iter().map(|b| format!("{b:02x}")).collect();
        format!("00-{}-{hex}-{}", self.trace_id, self.flags)
    }
}

impl fmt::Display for Traceparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_round_trips() {
        let t = Traceparent::parse(EXAMPLE).unwrap();
        assert_eq!(t.to_string(), EXAMPLE);
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_with_its_own_span() {
        let t = Traceparent::parse(EXAMPLE).unwrap();
        assert_eq!(
            t.child([1, 2, 3, 4, 5, 6, 7, 8]),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01"
        );
        assert!(
            Traceparent::parse(&t.child([0; 8])).is_ok(),
            "never an all-zero span"
        );
    }

    #[test]
    fn later_versions_are_read_for_what_00_knows() {
        let t = Traceparent::parse(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next",
        )
        .unwrap();
        assert_eq!(t.to_string(), EXAMPLE);
    }

    #[test]
    fn malformed_ones_are_refused() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        ] {
            assert!(Traceparent::parse(bad).is_err(), "{bad:?}");
        }
    }
}
