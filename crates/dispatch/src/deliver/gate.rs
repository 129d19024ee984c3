//! A webhook's rate limit, taken by each attempt just before it sends: the count is of
//! requests sent, whatever an attempt did before (a look at its log for a retry, waiting for a
//! slot). One gate per consumer of the queue's single active consumer, so the count is exact
//! across processes.

use std::sync::Mutex;
use std::time::Instant;

use hookrelay_core::RateWindow;

pub struct RateGate {
    limit: u32,
    window: Mutex<RateWindow>,
}

impl RateGate {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            window: Mutex::new(RateWindow::default()),
        }
    }

    /// Counts the next second as full: this consumer has just become its queue's active one,
    /// and another process may have sent the limit's worth a moment ago.
    pub fn fill(&self) {
        *self.lock() = RateWindow::full(Instant::now());
    }

    /// Waits until one more request keeps the limit, and counts it as sent.
    pub async fn admit(&self) {
        loop {
            let wait = {
                let mut window = self.lock();
                let now = Instant::now();
                let wait = window.wait(self.limit, now);
                if wait.is_zero() {
                    window.started(self.limit, now);
                    return;
                }
                wait
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RateWindow> {
        // Held for a few arithmetic steps that cannot panic; a poisoned window is as good.
        self.window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
