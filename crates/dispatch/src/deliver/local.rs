//! Deliveries handed from the fan-out straight to this process's consumer of their webhook,
//! without a trip through the broker, when that consumer has a request slot free for them.
//!
//! A delivery's durable record is its log, committed before the fan-out sends anything: a
//! transient message in its webhook queue is only the signal that it is due, and a delivery
//! that goes straight into an attempt needs no signal. The broker is skipped only when
//! nothing would have waited there:
//!
//! - this process's consumer is the queue's single active one (it has received a delivery of
//!   that queue since it started consuming), so no other process sends to that webhook and
//!   its limits hold across processes as for any delivery;
//! - the consumer is at full speed with a healthy endpoint (no failure since its last
//!   success, breaker closed) and no rate limit of its own;
//! - a request slot of the webhook, of its account and of the process are free. The fan-out
//!   waits a moment ([`PATIENCE`]) for the webhook's slot, so that in a burst the deliveries
//!   of a fast endpoint go this way too, paced by its answers, while the events still to be
//!   fanned out wait in the ingest queue, where they are stored anyway. It does not wait when
//!   the consumer itself is waiting for a slot (its queue has a backlog: this delivery joins
//!   it), nor, for a while, after a wait ran out ([`QUEUE_ONLY_FIRST`], doubled each time to
//!   [`QUEUE_ONLY_LONGEST`]): a slow endpoint costs the fan-out one short wait now and then,
//!   and its deliveries wait in its queue, not in the fan-out, so it does not hold back the
//!   other webhooks of the same events.
//!
//! What the broker did for a message, the log does here: should the process die during the
//! attempt, the log is unfinished and unchanged, and the lost-delivery check (`crate::lost`)
//! queues it again, as for a delivery acked before its record was committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hookrelay_core::DeliveryV1;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::attempt::{self, Reporter, Source};
use super::consumer::Limits;
use super::outbox::Outbox;
use super::Context;

/// How long the fan-out waits for a webhook's request slot, at most, before the delivery goes
/// to the webhook's queue: a fast endpoint frees one sooner, a slow one is left to its queue.
const PATIENCE: Duration = Duration::from_millis(2);
/// After a wait for a webhook's slot ran out, how long its deliveries go to its queue without
/// a wait; doubled each time a wait runs out again, to [`QUEUE_ONLY_LONGEST`], and forgotten
/// when one does not.
const QUEUE_ONLY_FIRST: Duration = Duration::from_millis(500);
const QUEUE_ONLY_LONGEST: Duration = Duration::from_secs(30);

/// The consumers that take deliveries straight from the fan-out, by webhook.
#[derive(Default)]
pub struct Handoffs {
    lines: RwLock<HashMap<Uuid, Arc<Line>>>,
}

/// What an attempt started by the fan-out shares with the webhook's consumer: its slots, its
/// reports, its stop, and the tracker the consumer waits on before it changes mode.
pub(super) struct Line {
    pub ctx: Arc<Context>,
    pub outbox: Outbox,
    pub account_id: String,
    /// What the consumer was made for: none of a rate limit.
    pub limits: Limits,
    pub requests: Arc<Semaphore>,
    pub account: Arc<Semaphore>,
    pub reports: Reporter,
    pub stop: CancellationToken,
    pub attempts: TaskTracker,
    /// Kept by the consumer: no failure since the endpoint's last success, breaker closed.
    pub healthy: AtomicBool,
    /// Kept by the consumer: it waits for a slot with a delivery from its queue in hand.
    pub backlog: AtomicBool,
    pub patience: Mutex<Patience>,
}

/// Whether the fan-out may wait for this webhook's slot.
#[derive(Debug, Default)]
pub(super) struct Patience {
    /// Not before then.
    queue_only_until: Option<Instant>,
    /// The next period without waits, once one runs out.
    next: Option<Duration>,
}

impl Patience {
    fn may_wait(&self, now: Instant) -> bool {
        self.queue_only_until.is_none_or(|until| now >= until)
    }

    fn waited(&mut self, in_time: bool, now: Instant) {
        if in_time {
            *self = Self::default();
            return;
        }
        let period = self.next.unwrap_or(QUEUE_ONLY_FIRST);
        self.queue_only_until = Some(now + period);
        self.next = Some((period * 2).min(QUEUE_ONLY_LONGEST));
    }
}

impl Line {
    /// Whether the consumer takes deliveries from the fan-out now: running, its endpoint
    /// healthy, and no failure on its way to it (`Reporter`).
    fn may_take(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
            && !self.reports.failure_unheard()
            && !self.stop.is_cancelled()
    }

    fn patience(&self) -> std::sync::MutexGuard<'_, Patience> {
        // Two plain fields, each write whole: a poisoned one is as good.
        self.patience
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request slot of the webhook: free now, or within [`PATIENCE`] when the fan-out may
    /// wait for it (the module doc).
    async fn request_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(permit) = self.requests.clone().try_acquire_owned() {
            return Some(permit);
        }
        if self.backlog.load(Ordering::SeqCst) || !self.patience().may_wait(Instant::now()) {
            return None;
        }
        let waited = tokio::time::timeout(PATIENCE, self.requests.clone().acquire_owned()).await;
        let permit = waited.ok().and_then(Result::ok);
        self.patience().waited(permit.is_some(), Instant::now());
        permit
    }
}

/// Takes the line out of the registry when the consumer leaves full speed.
pub(super) struct Registered {
    handoffs: Arc<Handoffs>,
    line: Arc<Line>,
    id: Uuid,
}

impl Registered {
    pub fn set_healthy(&self, healthy: bool) {
        self.line.healthy.store(healthy, Ordering::SeqCst);
    }

    pub fn set_backlog(&self, backlog: bool) {
        self.line.backlog.store(backlog, Ordering::SeqCst);
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut lines = self
            .handoffs
            .lines
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A consumer started after this one may have registered since: only this one's goes.
        if lines
            .get(&self.id)
            .is_some_and(|l| Arc::ptr_eq(l, &self.line))
        {
            lines.remove(&self.id);
        }
    }
}

impl Handoffs {
    /// Webhook `id`'s consumer takes deliveries from the fan-out until the answer is dropped.
    pub(super) fn register(self: &Arc<Self>, id: Uuid, line: Line) -> Registered {
        let line = Arc::new(line);
        self.lines
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, line.clone());
        Registered {
            handoffs: self.clone(),
            line,
            id,
        }
    }

    /// Starts the attempt of `task`, a fresh delivery whose log is committed, in this
    /// process, if its webhook's consumer is here and has a slot free (the module doc).
    /// Gives `task` back otherwise: it goes to the webhook's queue.
    pub async fn start(&self, task: DeliveryV1) -> Result<(), DeliveryV1> {
        let line = self
            .lines
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&task.webhook_id)
            .cloned();
        let Some(line) = line else {
            return Err(task);
        };
        if !line.may_take() {
            return Err(task);
        }
        // The consumer learns of an edit only from a delivery or a report: what it was made
        // for is checked against the webhook as the index holds it now, as it checks each
        // delivery from its queue.
        let config = line.ctx.routing.subscriptions.get(task.webhook_id);
        let same = config.is_some_and(|w| {
            w.active
                && !w.ordering.is_fifo()
                && Limits::of(&w) == line.limits
                && w.account_id == line.account_id
        });
        if !same {
            return Err(task);
        }
        // In the consumer's order (`Worker::acquire`); a permit taken is given back when a
        // later one is missing. An attempt acked before its record holds one of
        // `unrecorded`: with none left, the database is behind, and the queue waits instead.
        let Ok(unrecorded) = line.ctx.unrecorded.clone().try_acquire_owned() else {
            return Err(task);
        };
        let Some(local) = line.request_slot().await else {
            return Err(task);
        };
        // A failure may have come in while the fan-out waited for the slot.
        if !line.may_take() {
            return Err(task);
        }
        let Ok(account) = line.account.clone().try_acquire_owned() else {
            return Err(task);
        };
        let Ok(global) = line.ctx.global.clone().try_acquire_owned() else {
            return Err(task);
        };
        let attempt = attempt::run(
            line.ctx.clone(),
            line.outbox.clone(),
            Source::Local {
                task: Box::new(task),
                _unrecorded: unrecorded,
            },
            (local, None, account, global),
            None,
            line.stop.clone(),
            Some(line.reports.clone()),
        );
        line.ctx.metrics.delivery_handed_off();
        line.ctx.tracker.spawn(line.attempts.track_future(attempt));
        Ok(())
    }
}
