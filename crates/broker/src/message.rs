//! Messages in hookrelay's own terms: a [`Delivery`] received, an [`Outgoing`] message to
//! publish, and the [`Headers`] hookrelay reads and writes, typed. How they travel as AMQP
//! properties and field tables is this module's business alone.
//!
//! Headers hookrelay does not know (a publisher's own, RabbitMQ's dead-letter history) are
//! carried along as they came when a message is published again, so that a rejected event
//! reaches `{ns}.events.rejected` with everything its publisher sent.

use chrono::{DateTime, Utc};
use hookrelay_core::ops::ORIGIN_HEADER;
use hookrelay_core::{DelayTier, RejectReason, TRACEPARENT_HEADER};
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;

use crate::BrokerError;

/// The header that names a retry's delay tier, matched by the tier queues' bindings. Not
/// `x-…`: a headers exchange ignores binding arguments that start with `x-`, and every tier
/// would match every message.
pub(crate) const TIER_HEADER: &str = "hookrelay-delay-tier";
/// When a retry is due, in Unix milliseconds.
const DUE_HEADER: &str = "x-hookrelay-due";
/// A rejected event's one-line reason (contract §1), its reason code, and the routing key it
/// was published with (the rejected queue is reached by the default exchange, which takes
/// the queue's name as key).
const REJECTION_ERROR: &str = "x-hookrelay-error";
const REJECTION_REASON: &str = "x-hookrelay-reason";
const REJECTED_ROUTING_KEY: &str = "x-hookrelay-routing-key";
/// RabbitMQ's record of a message's dead-letterings: one entry per hop through a delay tier.
const DEAD_LETTER_HISTORY: [&str; 3] = ["x-death", "x-first-death-", "x-last-death-"];

/// Why an event went to `{ns}.events.rejected`, as its headers say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: RejectReason,
    /// One line for the publisher.
    pub error: String,
    /// The routing key the event was published with.
    pub routing_key: String,
}

/// The headers hookrelay reads and writes, and the others a message came with.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    /// The delay tier a retry waits in.
    pub tier: Option<DelayTier>,
    /// When a delayed message is due.
    pub due: Option<DateTime<Utc>>,
    /// The tag that proves an event is hookrelay's own (`hookrelay_core::ops::OriginKey`).
    pub origin_tag: Option<String>,
    /// The W3C `traceparent` a publisher sent with an event, unchecked.
    pub traceparent: Option<String>,
    pub rejected: Option<Rejected>,
    /// Everything else, as it came.
    pub others: OtherHeaders,
}

/// The headers of a message that hookrelay does not read, carried along as they came.
#[derive(Debug, Clone, Default)]
pub struct OtherHeaders(FieldTable);

impl Headers {
    /// Forgets the delay: the tier, the due time, and RabbitMQ's dead-letter history, which
    /// grows with every hop through the tiers and means nothing once a delivery is due.
    pub fn forget_delay(&mut self) {
        self.tier = None;
        self.due = None;
        self.retain_others(|name| {
            name != TIER_HEADER
                && name != DUE_HEADER
                && !DEAD_LETTER_HISTORY
                    .iter()
                    .any(|prefix| name.starts_with(prefix))
        });
    }

    /// Forgets the origin tag, which is only good for its own body.
    pub fn forget_origin_tag(&mut self) {
        self.origin_tag = None;
        self.retain_others(|name| name != ORIGIN_HEADER);
    }

    /// Keeps the other headers whose names `keep` accepts; a known name whose value was not
    /// of its kind waits among them, and goes with its typed field.
    fn retain_others(&mut self, keep: impl Fn(&str) -> bool) {
        let mut others = FieldTable::default();
        for (name, value) in self.others.0.inner() {
            if keep(name.as_str()) {
                others.insert(name.clone(), value.clone());
            }
        }
        self.others = OtherHeaders(others);
    }

    /// Reads a message's headers. A known header whose value is not of the expected kind is
    /// kept among the others, untouched, so that publishing the message again changes nothing.
    fn read(table: Option<&FieldTable>) -> Self {
        let mut headers = Self::default();
        let Some(table) = table else {
            return headers;
        };
        let (mut reason, mut error, mut routing_key) = (None, None, None);
        for (name, value) in table.inner() {
            let known = match name.as_str() {
                TIER_HEADER => set(
                    &mut headers.tier,
                    text(value).and_then(|t| DelayTier::from_name(&t)),
                ),
                DUE_HEADER => set(
                    &mut headers.due,
                    millis(value).and_then(DateTime::from_timestamp_millis),
                ),
                ORIGIN_HEADER => set(&mut headers.origin_tag, text(value)),
                TRACEPARENT_HEADER => set(&mut headers.traceparent, text(value)),
                REJECTION_REASON => set(&mut reason, text(value)),
                REJECTION_ERROR => set(&mut error, text(value)),
                REJECTED_ROUTING_KEY => set(&mut routing_key, text(value)),
                _ => false,
            };
            if !known {
                headers.others.0.insert(name.clone(), value.clone());
            }
        }
        match (
            reason.as_deref().and_then(RejectReason::parse),
            error,
            routing_key,
        ) {
            (Some(reason), Some(error), Some(routing_key)) => {
                headers.rejected = Some(Rejected {
                    reason,
                    error,
                    routing_key,
                });
            }
            // Part of a rejection only: not one of ours; kept as it came.
            (_, error, routing_key) => {
                let parts = [
                    (REJECTION_REASON, reason),
                    (REJECTION_ERROR, error),
                    (REJECTED_ROUTING_KEY, routing_key),
                ];
                for (name, value) in parts {
                    if let Some(value) = value {
                        headers.others.0.insert(name.into(), long_string(&value));
                    }
                }
            }
        }
        headers
    }

    /// The field table to publish, `None` when there is nothing to say.
    fn table(&self) -> Option<FieldTable> {
        let mut table = self.others.0.clone();
        if let Some(tier) = self.tier {
            table.insert(TIER_HEADER.into(), long_string(&tier.name()));
        }
        if let Some(due) = self.due {
            table.insert(
                DUE_HEADER.into(),
                AMQPValue::LongLongInt(due.timestamp_millis()),
            );
        }
        if let Some(tag) = &self.origin_tag {
            table.insert(ORIGIN_HEADER.into(), long_string(tag));
        }
        if let Some(traceparent) = &self.traceparent {
            table.insert(TRACEPARENT_HEADER.into(), long_string(traceparent));
        }
        if let Some(rejected) = &self.rejected {
            table.insert(REJECTION_ERROR.into(), long_string(&rejected.error));
            table.insert(
                REJECTION_REASON.into(),
                long_string(rejected.reason.as_str()),
            );
            table.insert(
                REJECTED_ROUTING_KEY.into(),
                long_string(&rejected.routing_key),
            );
        }
        (!table.inner().is_empty()).then_some(table)
    }
}

/// Sets `slot` when `value` is there; answers whether it was.
fn set<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    match value {
        Some(value) => {
            *slot = Some(value);
            true
        }
        None => false,
    }
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn millis(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

/// Whether the broker keeps a message on disk. A quorum queue keeps every message on disk,
/// replicated, whatever it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Written to disk in a durable queue: it survives a broker restart (delivery mode 2).
    Persistent,
    /// Held in memory (paged to disk under memory pressure): a classic queue whose node
    /// restarts comes back without it. For messages whose durable record is elsewhere.
    Transient,
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    pub headers: Headers,
    pub durability: Durability,
}

impl Outgoing {
    /// A persistent JSON message without headers.
    pub fn json(exchange: String, routing_key: String, body: Vec<u8>) -> Self {
        Self {
            exchange,
            routing_key,
            body,
            content_type: Some("application/json".to_owned()),
            headers: Headers::default(),
            durability: Durability::Persistent,
        }
    }

    pub(crate) fn properties(&self) -> BasicProperties {
        let mode = match self.durability {
            Durability::Persistent => 2,
            Durability::Transient => 1,
        };
        let mut properties = BasicProperties::default().with_delivery_mode(mode);
        if let Some(content_type) = &self.content_type {
            properties = properties.with_content_type(content_type.as_str().into());
        }
        if let Some(headers) = self.headers.table() {
            properties = properties.with_headers(headers);
        }
        properties
    }

    /// A message the broker handed back (returned, or delivered), as one to publish again.
    pub(crate) fn from_amqp(
        exchange: &str,
        routing_key: &str,
        body: Vec<u8>,
        properties: &BasicProperties,
    ) -> Self {
        Self {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            body,
            content_type: properties.content_type().as_ref().map(|c| c.to_string()),
            headers: Headers::read(properties.headers().as_ref()),
            durability: match properties.delivery_mode() {
                Some(1) => Durability::Transient,
                _ => Durability::Persistent,
            },
        }
    }
}

/// A message received from a queue. It is settled once, by [`Delivery::ack`] or
/// [`Delivery::nack`] (or with its whole batch); one dropped unsettled goes back to its queue
/// when its channel closes.
pub struct Delivery(lapin::message::Delivery);

impl Delivery {
    pub(crate) fn new(delivery: lapin::message::Delivery) -> Self {
        Self(delivery)
    }

    /// A delivery that no broker sent, for tests of what is done with one: settling it does
    /// nothing.
    pub fn detached(exchange: &str, routing_key: &str, body: Vec<u8>, headers: &Headers) -> Self {
        let mut delivery =
            lapin::message::Delivery::mock(0, exchange.into(), routing_key.into(), false, body);
        if let Some(table) = headers.table() {
            delivery.properties = BasicProperties::default().with_headers(table);
        }
        Self(delivery)
    }

    pub fn body(&self) -> &[u8] {
        &self.0.data
    }

    pub fn routing_key(&self) -> &str {
        self.0.routing_key.as_str()
    }

    /// Whether the broker delivered it before (to a consumer that did not settle it).
    pub fn redelivered(&self) -> bool {
        self.0.redelivered
    }

    /// Its headers, read afresh at each call.
    pub fn headers(&self) -> Headers {
        Headers::read(self.0.properties.headers().as_ref())
    }

    /// The same message, to publish again (its exchange and routing key as received).
    pub fn to_outgoing(&self) -> Outgoing {
        Outgoing::from_amqp(
            self.0.exchange.as_str(),
            self.0.routing_key.as_str(),
            self.0.data.clone(),
            &self.0.properties,
        )
    }

    pub(crate) fn tag(&self) -> u64 {
        self.0.delivery_tag
    }

    /// Done with: the broker forgets it. Always this delivery alone, never `multiple`, which
    /// on a channel shared by many consumers would settle the neighbours' deliveries.
    pub async fn ack(&self) -> Result<(), BrokerError> {
        self.0.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// Back to its queue, at its place, for whoever consumes it next.
    pub async fn nack(&self) -> Result<(), BrokerError> {
        let requeue = BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        self.0.acker.nack(requeue).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_survive_being_published_again() {
        let mut table = FieldTable::default();
        table.insert("x-publisher-own".into(), long_string("kept"));
        table.insert("x-death".into(), AMQPValue::LongInt(3));
        table.insert("x-first-death-queue".into(), long_string("q"));
        table.insert(DUE_HEADER.into(), AMQPValue::LongLongInt(1_700_000_000_123));
        table.insert(TIER_HEADER.into(), long_string("4000ms"));
        // A known name with a value of another kind stays as it came.
        table.insert(ORIGIN_HEADER.into(), AMQPValue::LongInt(7));
        table.insert(TRACEPARENT_HEADER.into(), long_string("00-abc"));
        let headers = Headers::read(Some(&table));
        assert_eq!(headers.tier, DelayTier::from_name("4000ms"));
        assert!(headers.tier.is_some());
        assert_eq!(
            headers.due,
            DateTime::from_timestamp_millis(1_700_000_000_123)
        );
        assert_eq!(headers.origin_tag, None);
        assert_eq!(headers.traceparent.as_deref(), Some("00-abc"));
        let again = headers.table().unwrap();
        assert_eq!(again.inner().len(), table.inner().len());
        assert_eq!(
            again.inner().get(ORIGIN_HEADER),
            Some(&AMQPValue::LongInt(7))
        );

        let mut due = headers.clone();
        due.forget_delay();
        let left = due.table().unwrap();
        assert!(left.inner().contains_key("x-publisher-own"));
        for gone in ["x-death", "x-first-death-queue", DUE_HEADER, TIER_HEADER] {
            assert!(!left.inner().contains_key(gone), "{gone}");
        }
        // The origin tag of another kind goes too.
        let mut untagged = headers.clone();
        untagged.forget_origin_tag();
        assert!(!untagged
            .table()
            .unwrap()
            .inner()
            .contains_key(ORIGIN_HEADER));
        assert!(Headers::default().table().is_none(), "nothing to say");
    }

    #[test]
    fn a_rejection_is_read_back_whole_or_kept_as_it_came() {
        let rejected = Headers {
            rejected: Some(Rejected {
                reason: RejectReason::NotJson,
                error: "not JSON".into(),
                routing_key: "Contact.created".into(),
            }),
            ..Headers::default()
        };
        let read = Headers::read(rejected.table().as_ref());
        assert_eq!(read.rejected, rejected.rejected);

        let mut partial = FieldTable::default();
        partial.insert(REJECTION_ERROR.into(), long_string("someone else's"));
        let read = Headers::read(Some(&partial));
        assert_eq!(read.rejected, None);
        assert_eq!(read.table().unwrap().inner().len(), 1);
    }

    #[test]
    fn outgoing_messages_are_persistent_unless_made_transient() {
        let mut message = Outgoing::json("ex".into(), "key".into(), b"{}".to_vec());
        let properties = message.properties();
        assert_eq!(*properties.delivery_mode(), Some(2));
        assert!(properties.headers().is_none());
        let back = Outgoing::from_amqp("ex", "key", b"{}".to_vec(), &properties);
        assert_eq!(back.content_type.as_deref(), Some("application/json"));
        assert_eq!(back.durability, Durability::Persistent);

        message.durability = Durability::Transient;
        let properties = message.properties();
        assert_eq!(*properties.delivery_mode(), Some(1));
        let back = Outgoing::from_amqp("ex", "key", b"{}".to_vec(), &properties);
        assert_eq!(back.durability, Durability::Transient);
    }
}
