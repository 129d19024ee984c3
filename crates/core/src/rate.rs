//! A webhook's rate limit: at most `limit` requests in any sliding window of a second.
//!
//! The window remembers when each of its last `limit` requests started, so the bound is
//! exact, not an average: a token bucket of the same rate lets twice the limit through a
//! second that straddles a refill. It holds at most `limit` instants, and only those of the
//! last second, and gives back room it no longer needs, so its memory follows the requests
//! actually made.
//!
//! Pure: callers pass `now` in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Requests a second a webhook may be limited to, at most.
pub const MAX_RATE_LIMIT: u32 = 10_000;

/// The window the limit counts over: a second, and a little slack for the time between a
/// request's start here and its arrival there, so that a receiver counting arrivals sees the
/// limit kept too.
pub const RATE_WINDOW: Duration = Duration::from_millis(1_050);

#[derive(Debug, Default)]
pub struct RateWindow {
    starts: VecDeque<Instant>,
    /// No request before this: the window of a consumer that has just taken over its queue.
    closed_until: Option<Instant>,
}

/// Room kept however few requests are made: below it, shrinking would cost more than it saves.
const KEPT: usize = 64;

impl RateWindow {
    /// A window for a consumer that has just taken over its queue: closed for a window, as if
    /// the limit's worth had just started, since another process may have sent it a moment
    /// ago.
    pub fn full(now: Instant) -> Self {
        Self {
            starts: VecDeque::new(),
            closed_until: Some(now + RATE_WINDOW),
        }
    }

    /// How long until one more request keeps at most `limit` in any window; zero if it may
    /// start now.
    pub fn wait(&mut self, limit: u32, now: Instant) -> Duration {
        if let Some(until) = self.closed_until {
            if until > now {
                return until - now;
            }
            self.closed_until = None;
        }
        self.forget(now);
        let limit = limit.max(1) as usize;
        if self.starts.len() < limit {
            return Duration::ZERO;
        }
        // The request that must leave the window first: the `limit`-th newest.
        let oldest_counted = self.starts[self.starts.len() - limit];
        (oldest_counted + RATE_WINDOW).saturating_duration_since(now)
    }

    /// A request starts now.
    pub fn started(&mut self, limit: u32, now: Instant) {
        self.starts.push_back(now);
        let keep = limit.clamp(1, MAX_RATE_LIMIT) as usize;
        while self.starts.len() > keep {
            self.starts.pop_front();
        }
    }

    fn forget(&mut self, now: Instant) {
        while self
            .starts
            .front()
            .is_some_and(|start| now.saturating_duration_since(*start) >= RATE_WINDOW)
        {
            self.starts.pop_front();
        }
        if self.starts.capacity() > KEPT && self.starts.len() < self.starts.capacity() / 4 {
            self.starts.shrink_to((self.starts.len() * 2).max(KEPT));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a window as a consumer would, each request starting as soon as allowed, and
    /// answers the start times.
    fn run(limit: u32, requests: usize, window: &mut RateWindow, t0: Instant) -> Vec<Instant> {
        let mut now = t0;
        let mut starts = Vec::new();
        for _ in 0..requests {
            now += window.wait(limit, now);
            window.started(limit, now);
            starts.push(now);
        }
        starts
    }

    fn most_in_any_window(starts: &[Instant]) -> usize {
        starts
            .iter()
            .map(|from| {
                starts
                    .iter()
                    .filter(|t| **t >= *from && t.duration_since(*from) < RATE_WINDOW)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn no_window_holds_more_than_the_limit() {
        let t0 = Instant::now();
        for limit in [1, 3, 10, 100] {
            let starts = run(limit, 500, &mut RateWindow::default(), t0);
            assert_eq!(most_in_any_window(&starts), limit as usize, "limit {limit}");
            // And it is not slower than it must be: `limit` at once, then `limit` a window.
            let took = starts[starts.len() - 1].duration_since(t0);
            let windows = (500_usize.div_ceil(limit as usize) - 1) as u32;
            assert!(took <= RATE_WINDOW * windows, "limit {limit}: {took:?}");
        }
    }

    #[test]
    fn a_lower_limit_applies_at_once_and_a_higher_one_lets_more_through() {
        let t0 = Instant::now();
        let mut window = RateWindow::default();
        run(10, 10, &mut window, t0);
        assert!(window.wait(5, t0) > Duration::ZERO);
        assert_eq!(window.wait(20, t0), Duration::ZERO);
    }

    #[test]
    fn a_consumer_taking_over_waits_a_window_first() {
        let t0 = Instant::now();
        let mut window = RateWindow::full(t0);
        assert_eq!(window.wait(10, t0), RATE_WINDOW);
        assert_eq!(window.wait(10, t0 + RATE_WINDOW), Duration::ZERO);
        let starts = run(10, 30, &mut RateWindow::full(t0), t0);
        assert_eq!(starts[0], t0 + RATE_WINDOW);
        assert_eq!(most_in_any_window(&starts), 10);
    }

    #[test]
    fn memory_follows_the_requests_made() {
        let t0 = Instant::now();
        let mut window = RateWindow::default();
        run(10_000, 10_000, &mut window, t0);
        assert!(window.starts.capacity() >= 10_000);
        // Quiet for a while: a few requests later, the room is given back.
        let later = t0 + RATE_WINDOW * 10;
        run(10_000, 3, &mut window, later);
        window.wait(10_000, later + RATE_WINDOW * 2);
        assert!(
            window.starts.capacity() <= 2 * KEPT,
            "{}",
            window.starts.capacity()
        );
    }
}
