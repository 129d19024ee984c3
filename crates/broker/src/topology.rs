//! The AMQP objects of one deployment, all named under its namespace (contract §1, DESIGN).
//!
//! ```text
//! {ns}.events            topic exchange: upstream services publish here
//! {ns}.ingest            queue bound to {ns}.events with `#`: the fan-out consumes it
//! {ns}.events.rejected   queue: events that break the contract, with x-hookrelay-error
//! {ns}.deliveries        direct exchange, routing key = webhook id
//! {ns}.webhook.<id>      one queue per webhook, single active consumer
//! {ns}.retry             headers exchange: a retry goes to the tier its header names
//! {ns}.retry.<ttl>       delay tiers (250ms … 524288000ms): x-message-ttl, dead-lettered to
//! {ns}.retry.expired     fanout exchange, into
//! {ns}.retry.due         queue: the retry router sends each message on to its webhook
//!                        queue when due, or to the next tier
//! ```
//! Everything is durable, and every message persistent but a delivery in its webhook queue,
//! which is transient: its durable record is its log in PostgreSQL, from which a delivery
//! that a broker restart took is queued again (`hookrelay_dispatch`'s lost-delivery check).
//! A delivery waiting in a delay tier is persistent, so that a retry keeps its time.
//! Messages keep their routing key (the webhook id) through the tiers: tiers are reached by a
//! header, not a key, and dead-lettering keeps the key when no other is configured.
//!
//! Queue types ([`QueueType`]): the queues every event passes through are classic queues of
//! version 2 (RabbitMQ ≥ 3.10), the faster storage for a queue with steady traffic. Webhook
//! queues name no version and get the broker's default (`classic_queue.default_version`, or
//! a `queue-version` policy): each holds a few messages at a time, and version 2 creates and
//! deletes its segment files whenever such a queue fills and drains, which took twice the
//! broker CPU of version 1 at ten thousand webhooks on RabbitMQ 3.10 (docs/operations.md,
//! "Classic queue versions"). Naming version 1 instead would fail on RabbitMQ 4.3, which no
//! longer has it.
//!
//! With `quorum`, the queues every event passes through (ingest, rejected, the delay tiers
//! and the due queue: 25 per deployment) are quorum queues, replicated on a RabbitMQ cluster,
//! and the tiers dead-letter at least once; the webhook queues stay classic, since a quorum
//! queue per webhook costs the cluster minutes and gigabytes at ten thousand webhooks
//! (docs/operations.md, "Quorum queues on a cluster").

use std::fmt;
use std::str::FromStr;

use lapin::types::{AMQPValue, FieldTable};
use lapin::ExchangeKind;

use hookrelay_core::DelayTier;

use crate::message::TIER_HEADER;
use crate::{BrokerError, Declarer};

/// The kind of the shared queues (setting `queue_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
}

impl QueueType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        }
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QueueType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "classic" => Ok(Self::Classic),
            "quorum" => Ok(Self::Quorum),
            other => Err(format!("`{other}` is not a queue type: classic or quorum")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Topology {
    ns: String,
    shared: QueueType,
}

impl Topology {
    /// The topology of namespace `namespace` with classic queues.
    pub fn new(namespace: &str) -> Self {
        Self::with_queue_type(namespace, QueueType::Classic)
    }

    pub fn with_queue_type(namespace: &str, shared: QueueType) -> Self {
        Self {
            ns: namespace.to_owned(),
            shared,
        }
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.ns)
    }

    pub fn ingest_queue(&self) -> String {
        format!("{}.ingest", self.ns)
    }

    /// The ordered fan-out's copy of the events, for FIFO webhooks: one consumer at a time
    /// takes them in the order they were published.
    pub fn ordered_queue(&self) -> String {
        format!("{}.ingest.ordered", self.ns)
    }

    pub fn rejected_queue(&self) -> String {
        format!("{}.events.rejected", self.ns)
    }

    pub fn deliveries_exchange(&self) -> String {
        format!("{}.deliveries", self.ns)
    }

    pub fn webhook_queue(&self, webhook_id: &str) -> String {
        format!("{}.webhook.{webhook_id}", self.ns)
    }

    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.ns)
    }

    pub fn retry_queue(&self, tier: DelayTier) -> String {
        format!("{}.retry.{}", self.ns, tier.name())
    }

    pub fn expired_exchange(&self) -> String {
        format!("{}.retry.expired", self.ns)
    }

    pub fn due_queue(&self) -> String {
        format!("{}.retry.due", self.ns)
    }

    /// The arguments of a queue every event passes through.
    fn shared_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        match self.shared {
            QueueType::Classic => {
                args.insert("x-queue-version".into(), AMQPValue::LongInt(2));
            }
            QueueType::Quorum => {
                args.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString("quorum".into()),
                );
            }
        }
        args
    }

    /// Declares the objects every process needs; idempotent, so every process does it.
    pub async fn declare_base(&self, d: &Declarer) -> Result<(), BrokerError> {
        d.exchange(&self.events_exchange(), ExchangeKind::Topic)
            .await?;
        d.exchange(&self.deliveries_exchange(), ExchangeKind::Direct)
            .await?;
        d.queue(&self.ingest_queue(), self.shared_args()).await?;
        d.bind(
            &self.ingest_queue(),
            &self.events_exchange(),
            "#",
            FieldTable::default(),
        )
        .await?;
        d.queue(&self.rejected_queue(), self.shared_args()).await?;
        Ok(())
    }

    /// Declares the ordered fan-out's queue, bound to the events exchange when `bound`
    /// (while FIFO webhooks exist; an unbound one receives nothing and costs nothing);
    /// idempotent.
    pub async fn declare_ordered(&self, d: &Declarer, bound: bool) -> Result<(), BrokerError> {
        let queue = self.ordered_queue();
        let mut args = self.shared_args();
        // One fan-out at a time takes them, in order, whichever processes run.
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        d.queue(&queue, args).await?;
        if bound {
            d.bind(&queue, &self.events_exchange(), "#", FieldTable::default())
                .await?;
        }
        Ok(())
    }

    /// Declares the delay tiers and the queue of due retries; idempotent.
    pub async fn declare_retry(&self, d: &Declarer) -> Result<(), BrokerError> {
        d.exchange(&self.retry_exchange(), ExchangeKind::Headers)
            .await?;
        d.exchange(&self.expired_exchange(), ExchangeKind::Fanout)
            .await?;
        d.queue(&self.due_queue(), self.shared_args()).await?;
        d.bind(
            &self.due_queue(),
            &self.expired_exchange(),
            "",
            FieldTable::default(),
        )
        .await?;
        for tier in DelayTier::all() {
            let queue = self.retry_queue(tier);
            let mut args = self.shared_args();
            let ttl = u32::try_from(tier.ttl().as_millis()).unwrap_or(u32::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongUInt(ttl));
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.expired_exchange().into()),
            );
            if self.shared == QueueType::Quorum {
                // Classic queues dead-letter at most once: a node that crashes as a retry
                // expires may drop it. Quorum queues can keep it until the due queue has it,
                // which needs publishes refused (not old messages dropped) when full.
                args.insert(
                    "x-dead-letter-strategy".into(),
                    AMQPValue::LongString("at-least-once".into()),
                );
                args.insert(
                    "x-overflow".into(),
                    AMQPValue::LongString("reject-publish".into()),
                );
            }
            d.queue(&queue, args).await?;
            let mut binding = FieldTable::default();
            binding.insert("x-match".into(), AMQPValue::LongString("all".into()));
            binding.insert(
                TIER_HEADER.into(),
                AMQPValue::LongString(tier.name().into()),
            );
            d.bind(&queue, &self.retry_exchange(), "", binding).await?;
        }
        Ok(())
    }

    /// Declares a webhook's queue and binds it; idempotent.
    pub async fn declare_webhook(&self, d: &Declarer, webhook_id: &str) -> Result<(), BrokerError> {
        let queue = self.webhook_queue(webhook_id);
        let mut args = FieldTable::default();
        // One consumer at a time across all processes: a webhook's deliveries are never
        // raced by two services, and a standby takes over when the active one goes away.
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        // No `x-queue-version`: the broker's default, as the module's doc says. A queue an
        // earlier release declared with version 2 is used as found (`Declarer::queue`).
        d.queue(&queue, args).await?;
        d.bind(
            &queue,
            &self.deliveries_exchange(),
            webhook_id,
            FieldTable::default(),
        )
        .await
    }

    /// Deletes every object of the namespace, messages included: for tests and for removing
    /// a deployment. Webhook queues are named by id, so the caller lists them.
    pub async fn delete_all(
        &self,
        d: &Declarer,
        webhook_ids: &[String],
    ) -> Result<(), BrokerError> {
        for id in webhook_ids {
            self.delete_webhook(d, id).await?;
        }
        let tiers = DelayTier::all().map(|t| self.retry_queue(t));
        for queue in [
            self.ingest_queue(),
            self.ordered_queue(),
            self.rejected_queue(),
            self.due_queue(),
        ]
        .into_iter()
        .chain(tiers)
        {
            d.delete_queue(&queue).await?;
        }
        for exchange in [
            self.events_exchange(),
            self.deliveries_exchange(),
            self.retry_exchange(),
            self.expired_exchange(),
        ] {
            d.delete_exchange(&exchange).await?;
        }
        Ok(())
    }

    /// Deletes a webhook's queue, and the deliveries still in it.
    pub async fn delete_webhook(&self, d: &Declarer, webhook_id: &str) -> Result<(), BrokerError> {
        d.delete_queue(&self.webhook_queue(webhook_id)).await
    }
}
