//! A FIFO webhook's consumer. Its deliveries go out one at a time in its line's order: its
//! open deliveries by place (`open_deliveries.seq`), numbered by the ordered fan-out in the
//! order of its account's events (`crate::fanout`). The line lives in the database; a
//! message in the webhook's queue is only a doorbell that wakes the consumer, who sends the
//! line's first delivery, records it (committed), and goes on to the next.
//!
//! - The queue's single active consumer is the only one running the line, as long as it
//!   holds a doorbell unacked: a process that dies hands its doorbells back, and the next
//!   consumer starts from the line's first unfinished delivery, which may be the one that was
//!   in flight (sent again, never an earlier one).
//! - A failure holds the line: the delivery is retried on the schedule, its retry a doorbell
//!   in the delay tiers, and nothing behind it goes until it succeeds or fails for good.
//!   Doorbells that come meanwhile find it not due and are acked.
//! - The circuit breaker pauses the whole line, as it pauses an unordered webhook's queue;
//!   the probe is the line's first delivery.
//! - Doorbells are acked once the line has been read empty (or waiting) after they came:
//!   one read covers all that came before it.

use std::sync::Arc;

use chrono::Utc;
use futures::FutureExt as _;
use hookrelay_broker::{Consuming, Delivery};
use hookrelay_core::{LogStatus, TIER_BASE};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::super::attempt::{self, nack};
use super::super::gate::RateGate;
use super::{hand_back, Limits, Mode, Worker};
use crate::recover::line_task;

/// Doorbells a FIFO consumer takes ahead: one line read covers them all.
const DOORBELLS: u16 = 64;
/// Deliveries of the line read at once.
const LINE_PAGE: i64 = 32;

/// How a run of the line ended.
enum Ran {
    /// Nothing (more) to send now: empty, or its first delivery waits for its retry.
    Waiting,
    /// The consumer changes mode (the breaker opened, it stops).
    Mode(Mode),
}

impl Worker {
    /// Consumes a FIFO webhook's doorbells and runs its line: at full speed, or for a probe
    /// (one attempt, of its first delivery, due or not).
    pub(super) async fn line(&mut self, probe: bool) -> Mode {
        let limits = self.limits();
        let prefetch = if probe { 1 } else { DOORBELLS };
        let mut consuming = match Box::pin(self.open(probe, prefetch)).await {
            Ok(consuming) => consuming,
            Err(e) => return self.cannot_open(&e, probe),
        };
        let mut first = true;
        let one = Arc::new(Semaphore::new(1));
        let gate = limits.rate_limit.map(|rate| Arc::new(RateGate::new(rate)));
        let mut held: Vec<Delivery> = Vec::new();
        let next = loop {
            let Some(delivery) = Box::pin(self.next_delivery(&mut consuming)).await else {
                break Mode::Stop;
            };
            if std::mem::take(&mut first) {
                if let Some(mode) = Box::pin(self.take_over()).await {
                    hand_back(delivery).await;
                    break mode;
                }
                if let Some(gate) = &gate {
                    gate.fill();
                }
            }
            let config = self.ctx.routing.subscriptions.get(self.id);
            let Some(config) = config.filter(|w| w.active) else {
                hand_back(delivery).await;
                break Mode::Stop;
            };
            // Made unordered, or new limits: a consumer made for them.
            if !config.ordering.is_fifo() || Limits::of(&config) != limits {
                hand_back(delivery).await;
                break Mode::Full;
            }
            held.push(delivery);
            let ran =
                Box::pin(self.run_line(&mut consuming, &mut held, &one, gate.as_ref(), probe))
                    .await;
            match ran {
                Ran::Waiting => {
                    for doorbell in held.drain(..) {
                        if let Err(e) = doorbell.ack().await {
                            debug!(webhook_id = %self.id, error = %crate::error_chain(&e), "cannot ack a doorbell; it comes again");
                        }
                    }
                }
                Ran::Mode(mode) => break mode,
            }
        };
        // The doorbells of a line left unfinished go back: the next consumer needs one.
        for doorbell in held.drain(..) {
            nack(&doorbell, None).await;
        }
        Box::pin(consuming.stop()).await;
        next
    }

    /// Sends the line's deliveries one after the other until it is empty or waits; every
    /// doorbell that came before the last read joins `held`.
    async fn run_line(
        &mut self,
        consuming: &mut Consuming,
        held: &mut Vec<Delivery>,
        one: &Arc<Semaphore>,
        gate: Option<&Arc<RateGate>>,
        probe: bool,
    ) -> Ran {
        loop {
            // Those already here are covered by the read that follows.
            if !take_doorbells(consuming, held) {
                return Ran::Mode(Mode::Stop);
            }
            let page = match self.ctx.routing.store.line(self.id, LINE_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    warn!(webhook_id = %self.id, error = %crate::error_chain(&e), "cannot read a FIFO webhook's line; will try again");
                    tokio::select! {
                        _ = self.stop.cancelled() => return Ran::Mode(Mode::Stop),
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    }
                }
            };
            if page.is_empty() {
                return Ran::Waiting;
            }
            for entry in page {
                // A retry not due yet holds the line: its doorbell is in the delay tiers. A
                // probe tries it now: the breaker's pause was the wait. A doorbell may come
                // a moment early (the clocks of processes differ): by a tier's length at most,
                // it is due.
                let early = chrono::Duration::from_std(TIER_BASE).unwrap_or_default();
                if !probe
                    && entry
                        .next_attempt_at
                        .is_some_and(|at| at > Utc::now() + early)
                {
                    return Ran::Waiting;
                }
                // Another process may have taken the queue over: only the consumer that
                // holds the queue sends.
                if !take_doorbells(consuming, held) {
                    return Ran::Mode(Mode::Stop);
                }
                if !entry.has_body {
                    // Its event was retired with its day: nothing is left to send.
                    let reason = "its event is no longer stored";
                    if let Err(e) = self
                        .ctx
                        .routing
                        .store
                        .skip_head(self.id, None, reason)
                        .await
                    {
                        warn!(webhook_id = %self.id, error = %crate::error_chain(&e), "cannot end a delivery whose event is gone");
                        return Ran::Mode(Mode::Full);
                    }
                    break;
                }
                let Some(config) = self.ctx.routing.subscriptions.get(self.id) else {
                    return Ran::Mode(Mode::Stop);
                };
                let account = self.account_slots(&config);
                let slots = tokio::select! {
                    _ = self.stop.cancelled() => return Ran::Mode(Mode::Stop),
                    slots = self.acquire(one, &account) => match slots {
                        Some(slots) => slots,
                        None => return Ran::Mode(Mode::Stop),
                    },
                };
                if let Some(gate) = gate {
                    tokio::select! {
                        _ = self.stop.cancelled() => return Ran::Mode(Mode::Stop),
                        _ = Box::pin(gate.admit()) => {}
                    }
                }
                let task = line_task(&entry);
                debug!(webhook_id = %self.id, log_id = %task.log_id, attempt = task.attempt, "sending a FIFO line's first delivery");
                let Some(outcome) = Box::pin(attempt::line_attempt(
                    &self.ctx,
                    &self.outbox,
                    task,
                    &config,
                    slots,
                    &self.stop,
                ))
                .await
                else {
                    return Ran::Mode(Mode::Stop);
                };
                if let Some(mode) = Box::pin(self.on_report(outcome.report)).await {
                    return Ran::Mode(mode);
                }
                if probe {
                    // Answered, and the breaker did not open again.
                    return Ran::Mode(Mode::Full);
                }
                // On record: the doorbells but the newest are done with (the newest stays, so
                // that the line is rung again should this process die), and none is held
                // for longer than a delivery takes.
                if held.len() > 1 {
                    let newest = held.len() - 1;
                    for doorbell in held.drain(..newest) {
                        if let Err(e) = doorbell.ack().await {
                            debug!(webhook_id = %self.id, error = %crate::error_chain(&e), "cannot ack a doorbell; it comes again");
                        }
                    }
                }
                if !outcome.current {
                    // Skipped or queued again meanwhile: the line is read again.
                    break;
                }
                if matches!(outcome.status, LogStatus::Retrying | LogStatus::Pending) {
                    return Ran::Waiting;
                }
            }
        }
    }
}

/// Moves the doorbells already received into `held`; `false` when the consumer has ended (its
/// channel closed): the queue may have another active consumer by now.
fn take_doorbells(consuming: &mut Consuming, held: &mut Vec<Delivery>) -> bool {
    loop {
        match consuming.next().now_or_never() {
            Some(Some(doorbell)) => held.push(doorbell),
            Some(None) => return false,
            None => return true,
        }
    }
}
