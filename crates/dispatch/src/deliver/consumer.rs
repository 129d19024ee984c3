//! One webhook's consumer, and its circuit breaker (`hookrelay_core::EndpointHealth`).
//!
//! - **Full**: the queue is consumed with a prefetch of twice `max_in_flight_per_webhook`
//!   (or of the webhook's own `max_in_flight`, and no more than its `rate_limit`; see
//!   `super::prefetch`). A rate-limited webhook's requests are sent no faster than its limit,
//!   counted over any sliding second (`super::gate`): this consumer is its queue's single
//!   active one across every process, so the count is exact. Attempts waiting for the rate
//!   hold their request slots, so the consumer stops reading the queue, and the deliveries
//!   wait in the broker.
//! - **Paused**: no consumer at all. The deliveries wait in RabbitMQ, durable and unacked by
//!   nobody, and the webhook holds no request slot, so any number of dead endpoints cannot
//!   starve the healthy ones. Editing the webhook (a fixed URL, say) ends the pause early.
//! - **Probe**: the queue is consumed with a prefetch of one; the first delivery is the probe.
//!   Its success resumes full speed, its failure pauses again, for longer.
//!
//! Attempts report their outcome to this loop, which alone owns the health, saves it when it
//! changes state, and disables the webhook when its deliveries have failed for too long or
//! its endpoint answered 410. A change to the webhook (enabled again, a new URL) starts its
//! health afresh, as the store does with the saved one.

mod line;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt as _;
use hookrelay_broker::{BrokerError, Consuming, Delivery};
use hookrelay_core::{ops, BreakerState, EndpointHealth, Report};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::attempt::{self, Reporter, Slots, Source};
use super::gate::RateGate;
use super::health::{from_row, to_row, EditedAt};
use super::local::{Line, Registered};
use super::outbox::Outbox;
use super::{Context, Lines};
use crate::messages;
use crate::subscriptions::WebhookConfig;

/// A webhook's own limits; none: the service's settings.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    max_in_flight: Option<u16>,
    rate_limit: Option<u32>,
}

impl Limits {
    pub(super) fn of(webhook: &WebhookConfig) -> Self {
        Self {
            max_in_flight: webhook.max_in_flight,
            rate_limit: webhook.rate_limit,
        }
    }

    fn is_custom(&self) -> bool {
        *self != Self::default()
    }
}

enum Mode {
    Full,
    Paused(DateTime<Utc>),
    Probe,
    /// The queue cannot be reached (its broker node is down): wait, then consume it at full
    /// speed or for a probe.
    Unreachable {
        probe: bool,
    },
    Stop,
}

/// The first wait before a queue that could not be reached is tried again; each wait after
/// doubles, to at most [`UNREACHABLE_LONGEST`]. Ten thousand webhooks on a node that is down
/// would otherwise cost the broker a refused declaration (and a channel) each per reconcile.
const UNREACHABLE_FIRST: Duration = Duration::from_secs(2);
const UNREACHABLE_LONGEST: Duration = Duration::from_secs(30);

struct Worker {
    ctx: Arc<Context>,
    lines: Arc<Lines>,
    outbox: Outbox,
    id: Uuid,
    stop: CancellationToken,
    health: EndpointHealth,
    /// When the webhook was last edited (its `updated_at`): the health belongs to that edit.
    edited_at: EditedAt,
    /// Set once this consumer has disabled its webhook, so that the attempts still under way
    /// do not disable it (and announce it) again.
    disabled: bool,
    /// The last wait for the queue while it cannot be reached.
    unreachable: Option<Duration>,
    /// The webhook's account and that account's share of the request slots, kept from one
    /// delivery to the next: the account changes only when the webhook is moved.
    account: Option<(String, Arc<Semaphore>)>,
}

/// Consumes webhook `id`'s queue until `stop`; then hands back to the queue what it had
/// received and not started, and waits for its attempts under way.
pub async fn consume_webhook(
    ctx: Arc<Context>,
    lines: Arc<Lines>,
    outbox: Outbox,
    id: Uuid,
    stop: CancellationToken,
) {
    let edited_at = ctx.routing.subscriptions.get(id).map(|w| w.updated_at);
    let health = ctx.health.take(id, edited_at).await;
    let mut mode = match (health.state, health.paused_until) {
        (BreakerState::Open, Some(until)) => Mode::Paused(until),
        (BreakerState::Closed, _) => Mode::Full,
        _ => Mode::Probe,
    };
    let mut worker = Worker {
        ctx,
        lines,
        outbox,
        id,
        stop,
        health,
        edited_at,
        disabled: false,
        unreachable: None,
        account: None,
    };
    debug!(webhook_id = %id, "consuming");
    loop {
        if worker.stop.is_cancelled() {
            break;
        }
        let fifo = worker.is_fifo();
        mode = match mode {
            Mode::Full if fifo => worker.line(false).await,
            Mode::Full => worker.full().await,
            Mode::Paused(until) => worker.paused(until).await,
            Mode::Probe if fifo => worker.line(true).await,
            Mode::Probe => worker.probe().await,
            Mode::Unreachable { probe } => worker.unreachable(probe).await,
            Mode::Stop => break,
        };
    }
    let Worker {
        ctx,
        health,
        edited_at,
        ..
    } = worker;
    ctx.health.put(id, edited_at, health).await;
    debug!(webhook_id = %id, "stopped consuming");
}

impl Worker {
    /// Starts consuming this webhook's queue, on a channel shared with other webhooks: at full
    /// speed, or for a probe (a prefetch of one).
    /// `prefetch`: at full speed, how many deliveries the consumer takes ahead.
    async fn open(&mut self, probe: bool, prefetch: u16) -> Result<Consuming, BrokerError> {
        // Should the declaration fail (a broker limit, say), only this webhook waits, retried
        // by the manager's next reconcile.
        self.lines.ensure(&self.ctx.routing, self.id).await?;
        let queue = self
            .ctx
            .routing
            .topology
            .webhook_queue(&self.id.to_string());
        let consuming = match probe {
            true => self.lines.probes.consume(&queue, "hookrelay-webhook").await,
            false => {
                let channels = self.lines.with_prefetch(prefetch);
                channels.consume(&queue, "hookrelay-webhook").await
            }
        };
        match &consuming {
            Ok(_) if self.unreachable.take().is_some() => {
                info!(webhook_id = %self.id, "webhook queue reachable again; consuming it");
                // Its node was down: back, it has dropped the deliveries that waited in it.
                self.ctx.routing.queues.maybe_dropped();
            }
            _ => {}
        }
        consuming
    }

    /// What follows a failure to consume the queue: a queue that cannot be reached (on a
    /// cluster, its node is down) is waited for here; anything else ends this consumer, and
    /// the manager starts a new one.
    fn cannot_open(&mut self, e: &BrokerError, probe: bool) -> Mode {
        if !e.queue_unavailable() {
            warn!(webhook_id = %self.id, error = %crate::error_chain(e), "cannot consume a webhook queue");
            return Mode::Stop;
        }
        if self.unreachable.is_none() {
            warn!(webhook_id = %self.id, reason = %e, "webhook queue cannot be reached (its RabbitMQ node is down?); consuming it again once it can");
        }
        Mode::Unreachable { probe }
    }

    async fn unreachable(&mut self, probe: bool) -> Mode {
        let wait = self
            .unreachable
            .map_or(UNREACHABLE_FIRST, |w| (w * 2).min(UNREACHABLE_LONGEST));
        self.unreachable = Some(wait);
        tokio::select! {
            _ = self.stop.cancelled() => return Mode::Stop,
            _ = tokio::time::sleep(wait) => {}
        }
        match probe {
            true => Mode::Probe,
            false => Mode::Full,
        }
    }

    /// Called with the first delivery a new consumer gets. With several processes, each
    /// consumes every webhook queue and the broker makes one consumer per queue the active one
    /// (single active consumer); the others get nothing until it goes away. So a first
    /// delivery may mean that this process has just taken the queue over from another, which
    /// ran the endpoint's breaker until now and saved it when it tripped: a pause or a trip
    /// newer than this process knows of is adopted, and the breaker holds across processes.
    /// `Some(mode)` when the delivery must go back and the consumer change mode.
    async fn take_over(&mut self) -> Option<Mode> {
        let (edited_at, row) = match self.ctx.saved_health.call(self.id).await {
            Ok(saved) => saved?,
            Err(e) => {
                warn!(webhook_id = %self.id, error = %crate::error_chain(&e), "cannot read the saved endpoint health; going on with this process's");
                return None;
            }
        };
        let newer = row.trips > self.health.trips || row.paused_until > self.health.paused_until;
        if Some(edited_at) != self.edited_at || !newer {
            return None;
        }
        self.health = from_row(&row, Utc::now());
        debug!(webhook_id = %self.id, "adopted the endpoint health another process saved");
        match (self.health.state, self.health.paused_until) {
            (BreakerState::Closed, _) => None,
            (BreakerState::Open, Some(until)) => Some(Mode::Paused(until)),
            _ => Some(Mode::Probe),
        }
    }

    /// What a consumer awaits only now and then (opening the queue, a report, a take-over,
    /// handing deliveries back, a probe's attempt) is boxed here and in `probe`: each is a
    /// state machine of up to kilobytes that every idle consumer's task would otherwise
    /// carry all the time, ten thousand of them in a process.
    async fn full(&mut self) -> Mode {
        let limits = self.limits();
        let in_flight = limits.max_in_flight.unwrap_or(self.ctx.per_webhook);
        let prefetch = match limits.is_custom() {
            true => super::prefetch(in_flight, limits.rate_limit),
            false => self.ctx.per_webhook.saturating_mul(2),
        };
        let mut consuming = match Box::pin(self.open(false, prefetch)).await {
            Ok(consuming) => consuming,
            Err(e) => return self.cannot_open(&e, false),
        };
        let mut first = true;
        let mut line: Option<Registered> = None;
        let attempts = TaskTracker::new();
        let requests = Arc::new(Semaphore::new(usize::from(in_flight)));
        let gate = limits.rate_limit.map(|rate| Arc::new(RateGate::new(rate)));
        // Each attempt under way reports once; there are never more than the prefetch.
        let (reports_tx, mut reports) = mpsc::channel::<Report>(usize::from(prefetch.max(1)));
        let reporter = Reporter::new(reports_tx);
        let next = 'consume: loop {
            let delivery = tokio::select! {
                biased;
                _ = self.stop.cancelled() => break 'consume Mode::Stop,
                Some(report) = reports.recv() => {
                    if let Some(mode) = Box::pin(self.hear(report, &reporter, line.as_ref())).await {
                        break 'consume mode;
                    }
                    continue 'consume;
                }
                next = consuming.next() => match next {
                    Some(delivery) => delivery,
                    // The broker ended the consumer (its queue deleted, its node down, the
                    // channel closed): the manager starts a new one. A node that went down
                    // drops the deliveries that waited in its queues.
                    None => {
                        self.ctx.routing.queues.maybe_dropped();
                        break 'consume Mode::Stop;
                    }
                },
            };
            if std::mem::take(&mut first) {
                if let Some(mode) = Box::pin(self.take_over()).await {
                    hand_back(delivery).await;
                    break 'consume mode;
                }
                // The first delivery is when this consumer became the queue's active one:
                // another process may have sent the limit's worth just before, so the first
                // second counts as full.
                if let Some(gate) = &gate {
                    gate.fill();
                }
                // Active, so the fan-out of this process may hand it fresh deliveries; a
                // rate-limited webhook's go through its queue, where they wait for the rate.
                if gate.is_none() {
                    line = self.register(&requests, &attempts, &reporter, limits);
                }
            }
            // Disabled (or gone), and the manager has not stopped this consumer yet: stop now
            // rather than take every queued delivery only to hand it back.
            let config = self.ctx.routing.subscriptions.get(self.id);
            let Some(config) = config.filter(|w| w.active) else {
                hand_back(delivery).await;
                break 'consume Mode::Stop;
            };
            // New limits, or made FIFO: a consumer made for them (its prefetch may differ).
            if Limits::of(&config) != limits || config.ordering.is_fifo() {
                hand_back(delivery).await;
                break 'consume Mode::Full;
            }
            let account = self.account_slots(&config);
            // Waiting for a slot stops reading the queue, so the broker holds the rest. The
            // reports keep coming meanwhile: the breaker may open while this one waits. The
            // fan-out does not wait for a slot meanwhile: its deliveries join the queue.
            if let Some(line) = &line {
                line.set_backlog(true);
            }
            let slots: Result<Slots, Mode> = loop {
                tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => break Err(Mode::Stop),
                    Some(report) = reports.recv() => {
                        if let Some(mode) = Box::pin(self.hear(report, &reporter, line.as_ref())).await {
                            break Err(mode);
                        }
                    }
                    slots = self.acquire(&requests, &account) => match slots {
                        Some(slots) => break Ok(slots),
                        None => break Err(Mode::Stop),
                    },
                }
            };
            if let Some(line) = &line {
                line.set_backlog(false);
            }
            let slots = match slots {
                Ok(slots) => slots,
                Err(mode) => {
                    hand_back(delivery).await;
                    break 'consume mode;
                }
            };
            let attempt = attempt::run(
                self.ctx.clone(),
                self.outbox.clone(),
                Source::Queue(delivery),
                slots,
                gate.clone(),
                self.stop.clone(),
                Some(reporter.clone()),
            );
            attempts.spawn(attempt);
        };
        // No new deliveries from the fan-out either; those received but not started go back
        // to the queue.
        drop(line);
        Box::pin(consuming.stop()).await;
        drop(reporter);
        attempts.close();
        // The attempts under way end on the shared channel (they ack on it) and report until
        // the last one is done: a late success means the endpoint is back, and no pause
        // after all.
        let mut next = next;
        while let Some(report) = reports.recv().await {
            if let Some(mode) = Box::pin(self.on_report(report)).await {
                if !matches!(next, Mode::Stop) {
                    next = mode;
                }
            }
        }
        attempts.wait().await;
        next
    }

    async fn paused(&mut self, until: DateTime<Utc>) -> Mode {
        let _gauge = self.ctx.metrics.webhook_paused();
        info!(webhook_id = %self.id, %until, "endpoint failing: deliveries paused until a probe");
        let mut changes = self.ctx.routing.subscriptions.changes();
        let wait = (until - Utc::now()).to_std().unwrap_or_default();
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return Mode::Stop,
                _ = &mut sleep => break,
                changed = changes.changed() => {
                    let gone = self.ctx.routing.subscriptions.get(self.id).is_none_or(|w| !w.active);
                    if changed.is_err() || gone {
                        return Mode::Stop;
                    }
                    if self.edited() {
                        info!(webhook_id = %self.id, "webhook changed while paused: deliveries resume");
                        return Mode::Full;
                    }
                }
            }
        }
        self.health.on_pause_over();
        Mode::Probe
    }

    async fn probe(&mut self) -> Mode {
        let mut consuming = match Box::pin(self.open(true, 1)).await {
            Ok(consuming) => consuming,
            Err(e) => return self.cannot_open(&e, true),
        };
        let mut first = true;
        let one = Arc::new(Semaphore::new(1));
        // A probe keeps the rate limit too: it may follow the full-speed requests closely.
        let gate = self
            .limits()
            .rate_limit
            .map(|rate| Arc::new(RateGate::new(rate)));
        let next = loop {
            let Some(delivery) = Box::pin(self.next_delivery(&mut consuming)).await else {
                break Mode::Stop;
            };
            if std::mem::take(&mut first) {
                if let Some(mode @ Mode::Paused(_)) = Box::pin(self.take_over()).await {
                    hand_back(delivery).await;
                    break mode;
                }
                if let Some(gate) = &gate {
                    gate.fill();
                }
            }
            let Some(config) = self.ctx.routing.subscriptions.get(self.id) else {
                hand_back(delivery).await;
                break Mode::Stop;
            };
            let account = self.account_slots(&config);
            let slots = tokio::select! {
                _ = self.stop.cancelled() => {
                    hand_back(delivery).await;
                    break Mode::Stop;
                }
                slots = self.acquire(&one, &account) => match slots {
                    Some(slots) => slots,
                    None => {
                        hand_back(delivery).await;
                        break Mode::Stop;
                    }
                },
            };
            debug!(webhook_id = %self.id, "probing the endpoint");
            match Box::pin(attempt::run(
                self.ctx.clone(),
                self.outbox.clone(),
                Source::Queue(delivery),
                slots,
                gate.clone(),
                self.stop.clone(),
                None,
            ))
            .await
            {
                // Nothing was sent (an unreadable message): the next delivery is the probe.
                None => continue,
                Some(report) => break Box::pin(self.on_report(report)).await.unwrap_or(Mode::Full),
            }
        };
        // The one delivery received after the probe goes back to the queue, in its place.
        Box::pin(consuming.stop()).await;
        if matches!(next, Mode::Full) {
            info!(webhook_id = %self.id, "endpoint answered: deliveries resume");
        }
        next
    }

    /// The consumer's next delivery; `None` once stopped, or once the broker ended the
    /// consumer (its queue deleted, its node down, the channel closed: a node that went down
    /// drops the deliveries that waited in its queues).
    async fn next_delivery(&self, consuming: &mut Consuming) -> Option<Delivery> {
        tokio::select! {
            _ = self.stop.cancelled() => None,
            next = consuming.next() => {
                if next.is_none() {
                    self.ctx.routing.queues.maybe_dropped();
                }
                next
            }
        }
    }

    /// Tells the health what an attempt gave and carries out what follows; `Some` when the
    /// consumer must change mode.
    async fn on_report(&mut self, report: Report) -> Option<Mode> {
        self.edited();
        let now = Utc::now();
        let effects = if report.success {
            self.health.on_success()
        } else {
            self.health
                .on_failure(&self.ctx.policy, now, rand::random::<f64>())
        };
        if report.gone {
            self.disable("the endpoint answered 410 Gone".to_owned())
                .await;
        } else if effects.disable {
            let after = humantime::format_duration(self.ctx.policy.disable_after);
            self.disable(format!("every delivery attempt failed for {after}"))
                .await;
        }
        if let (true, Some(edited_at)) = (effects.save, self.edited_at) {
            if let Err(e) = self
                .ctx
                .routing
                .store
                .save_health(self.id, edited_at, &to_row(&self.health))
                .await
            {
                warn!(webhook_id = %self.id, error = %crate::error_chain(&e), "cannot save the endpoint health");
            }
        }
        if let Some(pause) = effects.pause {
            return Some(Mode::Paused(
                now + chrono::Duration::from_std(pause).unwrap_or_default(),
            ));
        }
        effects.resume.then_some(Mode::Full)
    }

    /// Lets the fan-out of this process start attempts of this webhook (`super::local`),
    /// sharing this consumer's slots and reports; `None` if the webhook is gone meanwhile.
    fn register(
        &mut self,
        requests: &Arc<Semaphore>,
        attempts: &TaskTracker,
        reports: &Reporter,
        limits: Limits,
    ) -> Option<Registered> {
        let config = self.ctx.routing.subscriptions.get(self.id)?;
        let line = Line {
            ctx: self.ctx.clone(),
            outbox: self.outbox.clone(),
            account: self.account_slots(&config),
            account_id: config.account_id.clone(),
            limits,
            requests: requests.clone(),
            reports: reports.clone(),
            stop: self.stop.clone(),
            attempts: attempts.clone(),
            healthy: self.is_healthy().into(),
            backlog: false.into(),
            patience: Default::default(),
        };
        Some(self.ctx.handoffs.register(self.id, line))
    }

    /// No failure since the endpoint's last success, and the breaker closed.
    fn is_healthy(&self) -> bool {
        self.health.consecutive_failures == 0
            && self.health.state == BreakerState::Closed
            && !self.disabled
    }

    /// Takes an attempt's report into the endpoint's health, then tells the fan-out whether
    /// this webhook may take deliveries from it; `Some` when the consumer must change mode.
    async fn hear(
        &mut self,
        report: Report,
        reporter: &Reporter,
        line: Option<&Registered>,
    ) -> Option<Mode> {
        let mode = Box::pin(self.on_report(report)).await;
        if let Some(line) = line {
            line.set_healthy(self.is_healthy());
        }
        reporter.heard(report);
        mode
    }

    /// The slots of the account of `config` (this webhook's), as kept unless it was moved.
    fn account_slots(&mut self, config: &WebhookConfig) -> Arc<Semaphore> {
        match &self.account {
            Some((id, slots)) if *id == config.account_id => slots.clone(),
            _ => {
                let slots = self.ctx.accounts.of(&config.account_id);
                self.account = Some((config.account_id.clone(), slots.clone()));
                slots
            }
        }
    }

    /// A request slot of this webhook, one of its `account`'s share, one of the failing
    /// endpoints' share while its endpoint is failing, and one of the process; `None` if a
    /// semaphore closed. Always taken in this order, so two consumers never wait on each
    /// other; the account's before the failing share, so that an account at its share waits
    /// without holding failing slots other accounts need.
    async fn acquire(&self, local: &Arc<Semaphore>, account: &Arc<Semaphore>) -> Option<Slots> {
        let local = local.clone().acquire_owned().await.ok()?;
        let account = account.clone().acquire_owned().await.ok()?;
        let failing =
            self.health.consecutive_failures > 0 || self.health.state != BreakerState::Closed;
        let failing = match failing {
            true => Some(self.ctx.failing.clone().acquire_owned().await.ok()?),
            false => None,
        };
        let global = self.ctx.global.clone().acquire_owned().await.ok()?;
        Some((local, failing, account, global))
    }

    /// Whether the webhook is FIFO, as the index holds it now.
    fn is_fifo(&self) -> bool {
        self.ctx
            .routing
            .subscriptions
            .get(self.id)
            .is_some_and(|w| w.ordering.is_fifo())
    }

    /// The webhook's own limits, as the index holds them now.
    fn limits(&self) -> Limits {
        self.ctx
            .routing
            .subscriptions
            .get(self.id)
            .map_or_else(Limits::default, |w| Limits::of(&w))
    }

    /// Whether the webhook changed since its health began; if so, the health starts afresh.
    fn edited(&mut self) -> bool {
        let current = self
            .ctx
            .routing
            .subscriptions
            .get(self.id)
            .map(|w| w.updated_at);
        if current == self.edited_at {
            return false;
        }
        self.edited_at = current;
        self.health = EndpointHealth::default();
        self.disabled = false;
        true
    }

    /// Disables the webhook and announces it with `Webhook.disabled`. The event goes first: a
    /// crash in between leaves the webhook active, and the next failure does both again,
    /// rather than a disabled webhook that nobody was told about.
    async fn disable(&mut self, reason: String) {
        if self.disabled {
            return;
        }
        let Some(webhook) = self
            .ctx
            .routing
            .subscriptions
            .get(self.id)
            .filter(|w| w.active)
        else {
            return;
        };
        let now = Utc::now();
        let event = ops::webhook_disabled(
            self.id,
            &webhook.account_id,
            &webhook.url,
            &reason,
            self.health.failing_since.unwrap_or(now),
            now,
        );
        let message = messages::operational(&self.ctx.routing.topology, &self.ctx.origin, &event);
        if let Err(e) = self.outbox.call(message).await {
            warn!(webhook_id = %self.id, error = %crate::error_chain(&e), "cannot announce that a webhook is disabled; will try at its next failure");
            return;
        }
        match self
            .ctx
            .routing
            .store
            .auto_disable_webhook(self.id, &reason)
            .await
        {
            Ok(changed) => {
                self.disabled = true;
                if changed {
                    self.ctx.metrics.webhook_disabled();
                    warn!(webhook_id = %self.id, %reason, "webhook disabled");
                    // The manager stops this consumer as soon as the index knows.
                    self.ctx.routing.subscriptions.reload_or_warn(self.id).await;
                }
            }
            Err(e) => {
                warn!(webhook_id = %self.id, error = %crate::error_chain(&e), "cannot disable a webhook; will try at its next failure")
            }
        }
    }
}

/// Gives a delivery back to its queue, at its place. Boxed, as what `Worker::full` awaits
/// only now and then. Failing, its channel is gone, which hands it back all the same.
fn hand_back(delivery: Delivery) -> BoxFuture<'static, ()> {
    async move { super::attempt::nack(&delivery, None).await }.boxed()
}

#[cfg(test)]
mod tests {
    /// The size of the future an async fn of five arguments returns, without making one.
    fn future_size<A, B, C, D, E, Fut>(_: fn(A, B, C, D, E) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn a_webhook_consumer_task_stays_small() {
        // A process runs one per webhook, ten thousand at a time: the rare paths are boxed
        // to keep it under 2 KB in a debug build, and the bound leaves room for compilers.
        let size = future_size(super::consume_webhook);
        assert!(
            size <= 3 * 1024,
            "a webhook consumer's task takes {size} bytes"
        );
    }
}
