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
//! Everything is durable and every message persistent: a broker restart loses nothing.
//! Messages keep their routing key (the webhook id) through the tiers: tiers are reached by a
//! header, not a key, and dead-lettering keeps the key when no other is configured.

use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use hookrelay_core::DelayTier;

/// The header that names a retry's delay tier, matched by the tier queues' bindings. Not
/// `x-…`: a headers exchange ignores binding arguments that start with `x-`, and every tier
/// would match every message.
pub const TIER_HEADER: &str = "hookrelay-delay-tier";
/// The header that holds when a retry is due, in Unix milliseconds.
pub const DUE_HEADER: &str = "x-hookrelay-due";

#[derive(Debug, Clone)]
pub struct Topology {
    ns: String,
}

impl Topology {
    pub fn new(namespace: &str) -> Self {
        Self {
            ns: namespace.to_owned(),
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

    /// Declares the objects every process needs; idempotent, so every process does it.
    pub async fn declare_base(&self, channel: &Channel) -> Result<(), lapin::Error> {
        exchange(channel, &self.events_exchange(), ExchangeKind::Topic).await?;
        exchange(channel, &self.deliveries_exchange(), ExchangeKind::Direct).await?;
        queue(channel, &self.ingest_queue(), FieldTable::default()).await?;
        bind(channel, &self.ingest_queue(), &self.events_exchange(), "#").await?;
        queue(channel, &self.rejected_queue(), FieldTable::default()).await?;
        Ok(())
    }

    /// Declares the delay tiers and the queue of due retries; idempotent.
    pub async fn declare_retry(&self, channel: &Channel) -> Result<(), lapin::Error> {
        exchange(channel, &self.retry_exchange(), ExchangeKind::Headers).await?;
        exchange(channel, &self.expired_exchange(), ExchangeKind::Fanout).await?;
        queue(channel, &self.due_queue(), FieldTable::default()).await?;
        bind(channel, &self.due_queue(), &self.expired_exchange(), "").await?;
        for tier in DelayTier::all() {
            let queue = self.retry_queue(tier);
            let mut args = FieldTable::default();
            let ttl = u32::try_from(tier.ttl().as_millis()).unwrap_or(u32::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongUInt(ttl));
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.expired_exchange().into()),
            );
            self::queue(channel, &queue, args).await?;
            let mut binding = FieldTable::default();
            binding.insert("x-match".into(), AMQPValue::LongString("all".into()));
            binding.insert(
                TIER_HEADER.into(),
                AMQPValue::LongString(tier.name().into()),
            );
            channel
                .queue_bind(
                    &queue,
                    &self.retry_exchange(),
                    "",
                    QueueBindOptions::default(),
                    binding,
                )
                .await?;
        }
        Ok(())
    }

    /// Declares a webhook's queue and binds it; idempotent.
    pub async fn declare_webhook(
        &self,
        channel: &Channel,
        webhook_id: &str,
    ) -> Result<(), lapin::Error> {
        let queue = self.webhook_queue(webhook_id);
        let mut args = FieldTable::default();
        // One consumer at a time across all processes: a webhook's deliveries are never
        // raced by two services, and a standby takes over when the active one goes away.
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        self::queue(channel, &queue, args).await?;
        bind(channel, &queue, &self.deliveries_exchange(), webhook_id).await
    }

    /// Deletes every object of the namespace, messages included: for tests and for removing
    /// a deployment. Webhook queues are named by id, so the caller lists them.
    pub async fn delete_all(
        &self,
        channel: &Channel,
        webhook_ids: &[String],
    ) -> Result<(), lapin::Error> {
        for id in webhook_ids {
            self.delete_webhook(channel, id).await?;
        }
        let tiers = DelayTier::all().map(|t| self.retry_queue(t));
        for queue in [self.ingest_queue(), self.rejected_queue(), self.due_queue()]
            .into_iter()
            .chain(tiers)
        {
            channel
                .queue_delete(&queue, QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [
            self.events_exchange(),
            self.deliveries_exchange(),
            self.retry_exchange(),
            self.expired_exchange(),
        ] {
            channel
                .exchange_delete(&exchange, lapin::options::ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }

    /// Deletes a webhook's queue, and the deliveries still in it.
    pub async fn delete_webhook(
        &self,
        channel: &Channel,
        webhook_id: &str,
    ) -> Result<(), lapin::Error> {
        channel
            .queue_delete(
                &self.webhook_queue(webhook_id),
                QueueDeleteOptions::default(),
            )
            .await?;
        Ok(())
    }
}

async fn exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(name, kind, durable, FieldTable::default())
        .await
}

async fn queue(channel: &Channel, name: &str, args: FieldTable) -> Result<(), lapin::Error> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel.queue_declare(name, durable, args).await.map(|_| ())
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), lapin::Error> {
    channel
        .queue_bind(
            queue,
            exchange,
            key,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}
