//! Every Prometheus metric of contract §5, defined in this one place with fixed label sets.
//!
//! A [`Metrics`] owns its own registry rather than using the process-global default one, so
//! two services in one test process never share counters. No metric carries a per-webhook or
//! per-account label: their number is unbounded and would blow up the time series count.

use std::time::Duration;

use hookrelay_core::{LogStatus, Outcome, RejectReason};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Final states of a delivery, the values of `status` on `hookrelay_deliveries_completed_total`.
const COMPLETED: [LogStatus; 2] = [LogStatus::Succeeded, LogStatus::Failed];

/// Why the HTTP listener closed a connection itself: `reason` on
/// `hookrelay_http_connections_shed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// The connection idle the longest, to make room at `max_connections`.
    Evicted,
    /// At `max_connections`, with none idle.
    Refused,
}

impl ShedReason {
    pub const ALL: [ShedReason; 2] = [Self::Evicted, Self::Refused];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Evicted => "evicted",
            Self::Refused => "refused",
        }
    }
}

/// What `/readyz` checks: `dependency` on `hookrelay_dependency_up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Database,
    Broker,
}

impl Dependency {
    pub const ALL: [Dependency; 2] = [Self::Database, Self::Broker];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Database => "database",
            Self::Broker => "broker",
        }
    }
}

/// A task whose panic is counted: `task` on `hookrelay_task_panics_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// One webhook's delivery consumer.
    WebhookConsumer,
    /// A fan-out consumer of the ingest queue.
    Fanout,
    /// The retry router.
    RetryRouter,
    /// The manager of the webhook consumers.
    DeliveryManager,
    /// The log retention job.
    Retention,
    /// The listener for webhook changes.
    SubscriptionListener,
    /// What refills the webhook queues the broker lost.
    QueueRefill,
}

impl Task {
    pub const ALL: [Task; 7] = [
        Self::WebhookConsumer,
        Self::Fanout,
        Self::RetryRouter,
        Self::DeliveryManager,
        Self::Retention,
        Self::SubscriptionListener,
        Self::QueueRefill,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebhookConsumer => "webhook_consumer",
            Self::Fanout => "fanout",
            Self::RetryRouter => "retry_router",
            Self::DeliveryManager => "delivery_manager",
            Self::Retention => "retention",
            Self::SubscriptionListener => "subscription_listener",
            Self::QueueRefill => "queue_refill",
        }
    }
}

/// The service's metrics. Code elsewhere reports what happened through the methods below,
/// never by touching a metric, so each metric's name and labels are written here only.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    events_received: IntCounterVec,
    events_rejected: IntCounterVec,
    deliveries_enqueued: IntCounter,
    deliveries_handed_off: IntCounter,
    deliveries_filtered: IntCounter,
    delivery_attempts: IntCounterVec,
    delivery_attempt_duration: Histogram,
    deliveries_completed: IntCounterVec,
    delivery_latency: Histogram,
    webhooks_disabled: IntCounter,
    inflight_deliveries: IntGauge,
    retries_scheduled: IntCounter,
    deliveries_requeued: IntCounter,
    webhook_queues_lost: IntCounter,
    deliveries_lost: IntCounter,
    deliveries_stale: IntCounter,
    webhooks_paused: IntGauge,
    http_connections: IntGauge,
    http_connections_shed: IntCounterVec,
    log_days_retired: IntCounter,
    dependency_up: IntGaugeVec,
    task_panics: IntCounterVec,
}

/// Counts one attempt as in flight until dropped, however the attempt ends.
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts one webhook as paused by its circuit breaker until dropped.
pub struct Paused(IntGauge);

impl Drop for Paused {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let events_received = IntCounterVec::new(
            Opts::new(
                "hookrelay_events_received_total",
                "Events consumed from the broker, by type.",
            ),
            &["event_type"],
        )?;
        let events_rejected = IntCounterVec::new(
            Opts::new(
                "hookrelay_events_rejected_total",
                "Events moved to the rejected queue, by reason.",
            ),
            &["reason"],
        )?;
        let deliveries_enqueued = IntCounter::new(
            "hookrelay_deliveries_enqueued_total",
            "Deliveries fanned out, into per-webhook queues or straight to a consumer.",
        )?;
        let deliveries_handed_off = IntCounter::new(
            "hookrelay_deliveries_handed_off_total",
            "Deliveries fanned out straight to this process's consumer of their webhook, \
             which had a request slot free, without a trip through its queue.",
        )?;
        let deliveries_filtered = IntCounter::new(
            "hookrelay_deliveries_filtered_total",
            "Deliveries not made because the webhook's filter refused the event (no log).",
        )?;
        let delivery_attempts = IntCounterVec::new(
            Opts::new(
                "hookrelay_delivery_attempts_total",
                "HTTP delivery attempts, by outcome.",
            ),
            &["outcome"],
        )?;
        let delivery_attempt_duration = Histogram::with_opts(
            HistogramOpts::new(
                "hookrelay_delivery_attempt_duration_seconds",
                "Duration of one HTTP delivery attempt.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0,
            ]),
        )?;
        let deliveries_completed = IntCounterVec::new(
            Opts::new(
                "hookrelay_deliveries_completed_total",
                "Deliveries that reached a final state, by status.",
            ),
            &["status"],
        )?;
        let delivery_latency = Histogram::with_opts(
            HistogramOpts::new(
                "hookrelay_delivery_latency_seconds",
                "Time from an event's receipt to its delivery's 2xx answer.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0, 36000.0,
            ]),
        )?;
        let webhooks_disabled = IntCounter::new(
            "hookrelay_webhooks_disabled_total",
            "Webhooks disabled automatically because their deliveries kept failing.",
        )?;
        let inflight_deliveries = IntGauge::new(
            "hookrelay_inflight_deliveries",
            "Delivery attempts under way in this process.",
        )?;

        let retries_scheduled = IntCounter::new(
            "hookrelay_delivery_retries_total",
            "Failed attempts whose delivery was scheduled to be tried again.",
        )?;
        let deliveries_requeued = IntCounter::new(
            "hookrelay_deliveries_requeued_total",
            "Deliveries queued again from their logs: by hand (log retry, recover, bulk retry), \
             or by hookrelay for a webhook queue the broker lost.",
        )?;
        let webhook_queues_lost = IntCounter::new(
            "hookrelay_webhook_queues_lost_total",
            "Times a webhook queue the broker had held was found missing (a node lost with its \
             disk, a queue deleted by hand); its unfinished deliveries are queued again from \
             their logs.",
        )?;
        let deliveries_lost = IntCounter::new(
            "hookrelay_deliveries_lost_total",
            "Deliveries the broker dropped from a webhook queue that survived (its node \
             restarted: deliveries in webhook queues are transient), or a killed process held \
             (handed to its consumer, or acked before its record), found by their logs and \
             queued again.",
        )?;
        let deliveries_stale = IntCounter::new(
            "hookrelay_deliveries_stale_total",
            "Deliveries overtaken by a later copy of their log, queued again since (a copy that \
             outlived the one queued for it, a retry overtaken by a retry by hand): dropped \
             unsent when found before the request, or sent once more than needed when found \
             only at the record.",
        )?;
        let webhooks_paused = IntGauge::new(
            "hookrelay_webhooks_paused",
            "Webhooks whose queue is paused by the circuit breaker in this process.",
        )?;

        let http_connections = IntGauge::new(
            "hookrelay_http_connections",
            "Connections open to the HTTP listener.",
        )?;
        let http_connections_shed = IntCounterVec::new(
            Opts::new(
                "hookrelay_http_connections_shed_total",
                "Connections the HTTP listener closed or turned away to protect itself, by \
                 reason: evicted (the connection idle the longest, to make room at \
                 max_connections), refused (at max_connections, none idle).",
            ),
            &["reason"],
        )?;
        let log_days_retired = IntCounter::new(
            "hookrelay_log_days_retired_total",
            "Days of events, logs and attempts retired whole (their partitions dropped) past log_retention.",
        )?;
        let dependency_up = IntGaugeVec::new(
            Opts::new(
                "hookrelay_dependency_up",
                "1 when this process reaches the dependency now (checked at each scrape, as \
                 /readyz does), else 0. dependency: database, broker.",
            ),
            &["dependency"],
        )?;
        let task_panics = IntCounterVec::new(
            Opts::new(
                "hookrelay_task_panics_total",
                "Tasks that ended by a panic (a bug), by task. A webhook consumer is started \
                 again; any other task stays stopped until the process restarts.",
            ),
            &["task"],
        )?;
        registry.register(Box::new(task_panics.clone()))?;
        registry.register(Box::new(dependency_up.clone()))?;
        registry.register(Box::new(log_days_retired.clone()))?;
        registry.register(Box::new(http_connections.clone()))?;
        registry.register(Box::new(http_connections_shed.clone()))?;
        registry.register(Box::new(events_received.clone()))?;
        registry.register(Box::new(events_rejected.clone()))?;
        registry.register(Box::new(deliveries_enqueued.clone()))?;
        registry.register(Box::new(deliveries_handed_off.clone()))?;
        registry.register(Box::new(deliveries_filtered.clone()))?;
        registry.register(Box::new(delivery_attempts.clone()))?;
        registry.register(Box::new(delivery_attempt_duration.clone()))?;
        registry.register(Box::new(deliveries_completed.clone()))?;
        registry.register(Box::new(delivery_latency.clone()))?;
        registry.register(Box::new(webhooks_disabled.clone()))?;
        registry.register(Box::new(inflight_deliveries.clone()))?;
        registry.register(Box::new(retries_scheduled.clone()))?;
        registry.register(Box::new(deliveries_requeued.clone()))?;
        registry.register(Box::new(webhook_queues_lost.clone()))?;
        registry.register(Box::new(deliveries_lost.clone()))?;
        registry.register(Box::new(deliveries_stale.clone()))?;
        registry.register(Box::new(webhooks_paused.clone()))?;

        // Known label values start at zero, so dashboards and `rate()` see every series
        // from the first scrape instead of only after the first occurrence.
        for outcome in Outcome::ALL {
            delivery_attempts.with_label_values(&[outcome.as_str()]);
        }
        for status in COMPLETED {
            deliveries_completed.with_label_values(&[status.as_str()]);
        }
        for reason in ShedReason::ALL {
            http_connections_shed.with_label_values(&[reason.as_str()]);
        }
        for task in Task::ALL {
            task_panics.with_label_values(&[task.as_str()]);
        }
        for reason in hookrelay_core::RejectReason::ALL {
            events_rejected.with_label_values(&[reason.as_str()]);
        }
        for (name, _) in hookrelay_core::BUILTIN_EVENT_TYPES {
            events_received.with_label_values(&[name]);
        }
        for dependency in Dependency::ALL {
            dependency_up.with_label_values(&[dependency.as_str()]);
        }

        Ok(Self {
            registry,
            events_received,
            events_rejected,
            deliveries_enqueued,
            deliveries_handed_off,
            deliveries_filtered,
            delivery_attempts,
            delivery_attempt_duration,
            deliveries_completed,
            delivery_latency,
            webhooks_disabled,
            inflight_deliveries,
            retries_scheduled,
            deliveries_requeued,
            webhook_queues_lost,
            deliveries_lost,
            deliveries_stale,
            webhooks_paused,
            http_connections,
            http_connections_shed,
            log_days_retired,
            dependency_up,
            task_panics,
        })
    }

    /// Makes the series of event types added to the catalog since (admins may add some)
    /// exist at zero too.
    pub fn known_event_types<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            self.events_received.with_label_values(&[name]);
        }
    }

    /// What the last readiness check found of `dependency`.
    pub fn dependency_checked(&self, dependency: Dependency, up: bool) {
        self.dependency_up
            .with_label_values(&[dependency.as_str()])
            .set(i64::from(up));
    }

    /// A valid event was consumed. `event_type` is a catalog name: a bounded set.
    pub fn event_received(&self, event_type: &str) {
        self.events_received.with_label_values(&[event_type]).inc();
    }

    /// An event went to the rejected queue.
    pub fn event_rejected(&self, reason: RejectReason) {
        self.events_rejected
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    pub fn deliveries_enqueued(&self, count: usize) {
        self.deliveries_enqueued.inc_by(count as u64);
    }

    pub fn delivery_handed_off(&self) {
        self.deliveries_handed_off.inc();
    }

    pub fn deliveries_filtered(&self, count: usize) {
        self.deliveries_filtered.inc_by(count as u64);
    }

    /// An HTTP attempt begins; it counts as in flight until the guard is dropped.
    pub fn attempt_started(&self) -> InFlight {
        self.inflight_deliveries.inc();
        InFlight(self.inflight_deliveries.clone())
    }

    /// An HTTP attempt ended with `outcome`.
    pub fn attempt_finished(&self, outcome: Outcome, took: Duration) {
        self.delivery_attempts
            .with_label_values(&[outcome.as_str()])
            .inc();
        self.delivery_attempt_duration.observe(took.as_secs_f64());
    }

    /// A delivery got its 2xx, `since_received` after hookrelay received the event.
    pub fn delivery_succeeded(&self, since_received: Duration) {
        self.deliveries_completed
            .with_label_values(&[LogStatus::Succeeded.as_str()])
            .inc();
        self.delivery_latency.observe(since_received.as_secs_f64());
    }

    /// A delivery ended without success.
    pub fn delivery_failed(&self) {
        self.deliveries_completed
            .with_label_values(&[LogStatus::Failed.as_str()])
            .inc();
    }

    /// A webhook was disabled automatically.
    pub fn webhook_disabled(&self) {
        self.webhooks_disabled.inc();
    }

    /// A failed attempt's delivery was scheduled to be tried again.
    pub fn retry_scheduled(&self) {
        self.retries_scheduled.inc();
    }

    /// Deliveries were queued again from their logs.
    pub fn deliveries_requeued(&self, count: usize) {
        self.deliveries_requeued.inc_by(count as u64);
    }

    /// A webhook queue the broker had held was found missing, and declared again.
    pub fn webhook_queue_lost(&self) {
        self.webhook_queues_lost.inc();
    }

    /// Deliveries found lost by the broker, from their logs, and queued again.
    pub fn deliveries_lost(&self, count: u64) {
        self.deliveries_lost.inc_by(count);
    }

    /// A delivery found overtaken, its log having been queued again since.
    pub fn delivery_stale(&self) {
        self.deliveries_stale.inc();
    }

    /// A webhook's queue is paused by its circuit breaker until the guard is dropped.
    pub fn webhook_paused(&self) -> Paused {
        self.webhooks_paused.inc();
        Paused(self.webhooks_paused.clone())
    }

    /// A day of logs was retired by the retention job.
    pub fn log_partition_dropped(&self) {
        self.log_days_retired.inc();
    }

    pub fn http_connection_opened(&self) {
        self.http_connections.inc();
    }

    pub fn http_connection_closed(&self) {
        self.http_connections.dec();
    }

    /// The listener closed or refused a connection.
    pub fn http_connection_shed(&self, reason: ShedReason) {
        self.http_connections_shed
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// A task ended by a panic.
    pub fn task_panicked(&self, task: Task) {
        self.task_panics.with_label_values(&[task.as_str()]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_metric_is_exposed() {
        let m = Metrics::new().unwrap();
        m.events_received
            .with_label_values(&["Contact.created"])
            .inc();
        m.events_rejected.with_label_values(&["not_json"]).inc();
        m.delivery_attempt_duration.observe(0.1);
        m.delivery_latency.observe(0.1);
        let text = m.render().unwrap();
        for name in [
            "hookrelay_events_received_total",
            "hookrelay_events_rejected_total",
            "hookrelay_deliveries_enqueued_total",
            "hookrelay_deliveries_filtered_total 0",
            "hookrelay_deliveries_handed_off_total 0",
            "hookrelay_delivery_attempts_total{outcome=\"blocked\"} 0",
            "hookrelay_delivery_attempt_duration_seconds_bucket",
            "hookrelay_deliveries_completed_total{status=\"failed\"} 0",
            "hookrelay_delivery_latency_seconds_bucket",
            "hookrelay_webhooks_disabled_total",
            "hookrelay_inflight_deliveries",
            "hookrelay_delivery_retries_total 0",
            "hookrelay_deliveries_requeued_total 0",
            "hookrelay_webhook_queues_lost_total 0",
            "hookrelay_deliveries_lost_total 0",
            "hookrelay_deliveries_stale_total 0",
            "hookrelay_webhooks_paused 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        // Two instances do not share state.
        assert!(Metrics::new()
            .unwrap()
            .render()
            .unwrap()
            .contains("hookrelay_events_received_total{event_type=\"Contact.created\"} 0"));
    }

    #[test]
    fn every_family_and_known_label_is_there_from_the_start() {
        let m = Metrics::new().unwrap();
        m.known_event_types(["Invoice.paid"]);
        let text = m.render().unwrap();
        for reason in hookrelay_core::RejectReason::ALL {
            let line = format!(
                "hookrelay_events_rejected_total{{reason=\"{}\"}} 0",
                reason.as_str()
            );
            assert!(text.contains(&line), "{line} missing");
        }
        for (name, _) in hookrelay_core::BUILTIN_EVENT_TYPES {
            let line = format!("hookrelay_events_received_total{{event_type=\"{name}\"}} 0");
            assert!(text.contains(&line), "{line} missing");
        }
        assert!(text.contains("hookrelay_events_received_total{event_type=\"Invoice.paid\"} 0"));
        for outcome in Outcome::ALL {
            let line = format!(
                "hookrelay_delivery_attempts_total{{outcome=\"{}\"}} 0",
                outcome.as_str()
            );
            assert!(text.contains(&line), "{line} missing");
        }
        for reason in ShedReason::ALL {
            let line = format!(
                "hookrelay_http_connections_shed_total{{reason=\"{}\"}} 0",
                reason.as_str()
            );
            assert!(text.contains(&line), "{line} missing");
        }
        assert!(text.contains("hookrelay_task_panics_total{task=\"webhook_consumer\"} 0"));
    }
}
