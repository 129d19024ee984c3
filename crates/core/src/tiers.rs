//! The delay tiers that carry a retry's wait through the broker.
//!
//! A retry waits in one of a fixed set of queues, each with its own message TTL: 250 ms,
//! 500 ms, 1 s, … doubling up to about six days. A wait is served by the largest tier that
//! does not exceed it; what remains is served by the next hop, and so on, so that any wait
//! is met to within the smallest tier, and never cut short. A queue holds one TTL only, so
//! that messages always expire at its head (RabbitMQ expires queue heads only).

use std::time::Duration;

/// The shortest tier. A remainder below it waits one of it: late by less than this, never
/// early.
pub const TIER_BASE: Duration = Duration::from_millis(250);
/// Tiers `0..TIER_COUNT`, tier `k` holding a message for `TIER_BASE × 2^k` (the last about
/// six days, so that the longest scheduled delay, seven days, takes two hops).
pub const TIER_COUNT: u32 = 22;

/// One delay queue: it holds a message for [`DelayTier::ttl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DelayTier(u32);

impl DelayTier {
    pub const SHORTEST: Self = Self(0);

    /// Every tier, shortest first.
    pub fn all() -> impl Iterator<Item = Self> {
        (0..TIER_COUNT).map(Self)
    }

    /// The tier for a message that must wait `remaining` more, or `None` when it is due.
    pub fn for_wait(remaining: Duration) -> Option<Self> {
        if remaining.is_zero() {
            return None;
        }
        let units = remaining.as_nanos() / TIER_BASE.as_nanos();
        // floor(log2(units)) picks the largest tier not above the wait; below one unit the
        // smallest tier serves.
        let k = match units {
            0 => 0,
            n => (u128::BITS - 1 - n.leading_zeros()).min(TIER_COUNT - 1),
        };
        Some(Self(k))
    }

    /// The tier a message waiting `wait` goes into before it is sent on: a wait too short for
    /// any tier still takes the shortest, since the retry router, not the sender, sends due
    /// messages on, so there is one path.
    pub fn to_hold(wait: Duration) -> Self {
        Self::for_wait(wait).unwrap_or(Self::SHORTEST)
    }

    pub fn ttl(self) -> Duration {
        TIER_BASE * 2u32.pow(self.0)
    }

    /// A stable, readable name for the queue: the TTL in milliseconds.
    pub fn name(self) -> String {
        format!("{}ms", self.ttl().as_millis())
    }

    /// The tier of that [`DelayTier::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        let millis: u128 = name.strip_suffix("ms")?.parse().ok()?;
        Self::all().find(|tier| tier.ttl().as_millis() == millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tier_is_found_by_its_name() {
        for tier in DelayTier::all() {
            assert_eq!(DelayTier::from_name(&tier.name()), Some(tier));
        }
        for other in ["", "ms", "300ms", "250", "-250ms", "250 ms"] {
            assert_eq!(DelayTier::from_name(other), None, "{other}");
        }
    }

    #[test]
    fn tiers_cover_a_quarter_second_to_six_days() {
        let all: Vec<DelayTier> = DelayTier::all().collect();
        assert_eq!(all.len(), 22);
        assert_eq!(all[0].ttl(), Duration::from_millis(250));
        assert_eq!(all[0].name(), "250ms");
        assert_eq!(all[21].ttl(), Duration::from_secs(524_288));
        let ms = Duration::from_millis;
        for (wait, tier_ms) in [
            (ms(1), 250),
            (ms(249), 250),
            (ms(250), 250),
            (ms(499), 250),
            (ms(500), 500),
            (ms(1000), 1000),
            (ms(1999), 1000),
            (Duration::from_secs(300), 256_000),
            (Duration::from_secs(14 * 24 * 3600), 524_288_000),
        ] {
            assert_eq!(
                DelayTier::for_wait(wait).map(|t| t.ttl()),
                Some(ms(tier_ms)),
                "{wait:?}"
            );
        }
        assert_eq!(DelayTier::for_wait(Duration::ZERO), None);
    }

    proptest::proptest! {
        /// Hop by hop, a wait is served in full, never early and late by less than one
        /// smallest tier, in at most a few dozen hops.
        #[test]
        fn hops_serve_any_wait(wait_ms in 1u64..=2_000_000_000) {
            let wait = Duration::from_millis(wait_ms);
            let mut served = Duration::ZERO;
            let mut hops = 0;
            while let Some(tier) = DelayTier::for_wait(wait.saturating_sub(served)) {
                served += tier.ttl();
                hops += 1;
                proptest::prop_assert!(hops < 40, "too many hops for {wait:?}");
            }
            proptest::prop_assert!(served >= wait);
            proptest::prop_assert!(served < wait + TIER_BASE);
        }
    }
}
