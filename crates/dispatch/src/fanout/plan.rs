//! The fan-out's deciding step: which deliveries a batch of valid events makes, given the
//! subscription index. It reads and writes nothing: what needs the database (whether a test
//! event's webhook may receive it) is found out before.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookrelay_broker::Delivery;
use hookrelay_core::{DeliveryV1, Event, Traceparent};
use hookrelay_store::{new_log_id, NewEvent, NewLog};
use tracing::warn;
use uuid::Uuid;

use crate::subscriptions::{Subscriptions, WebhookConfig};

/// A valid event of the batch, with the body every webhook receives for it.
pub(super) struct Accepted<'a> {
    /// Its position in the batch.
    pub index: usize,
    pub delivery: &'a Delivery,
    pub event: Event,
    pub received_at: DateTime<Utc>,
    pub redelivered: bool,
    pub payload: Arc<str>,
    pub traceparent: Option<Traceparent>,
}

/// One planned delivery: a log row and the message that goes with it.
pub(super) struct Planned {
    pub log: NewLog,
    pub received_at: DateTime<Utc>,
}

/// What the fan-out of a batch writes: the events to store, and a log per delivery.
pub(super) struct Plan {
    pub events: Vec<Arc<NewEvent>>,
    pub planned: Vec<Planned>,
    /// Deliveries a webhook's filter refused.
    pub filtered: usize,
}

/// How long after an edit changed a webhook's ordering both sides serve it. Processes hear
/// of a change within milliseconds (LISTEN/NOTIFY), or at the next full reload of their
/// index (a minute) should a notification be lost: meanwhile one that has heard and one that
/// has not could each leave an event to the other side. Serving it from both, an event's
/// second log is the duplicate the store does not write (`Store::insert_logs`).
pub const ORDERING_OVERLAP: Duration = Duration::from_secs(120);

/// Which webhooks a fan-out serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The competing consumers of `{ns}.ingest`: every webhook, but the FIFO ones once the
    /// ordered fan-out's queue is bound (`ordered_bound`); until then, those too.
    Competing { ordered_bound: bool },
    /// The single active consumer of `{ns}.ingest.ordered`: the FIFO webhooks only, their
    /// logs numbered in the order of the events.
    Ordered,
}

impl Side {
    /// Whether this side fans out to `webhook`, at `now`: both do for
    /// [`ORDERING_OVERLAP`] after an edit changed its ordering.
    pub fn serves(self, webhook: &WebhookConfig, now: DateTime<Utc>) -> bool {
        let changing = webhook.ordering_changed_at.is_some_and(|at| {
            now - at < chrono::Duration::from_std(ORDERING_OVERLAP).unwrap_or_default()
        });
        let fifo = webhook.ordering.is_fifo();
        match self {
            Self::Competing { ordered_bound } => !fifo || !ordered_bound || changing,
            Self::Ordered => fifo || changing,
        }
    }
}

/// One delivery per webhook of the event's account subscribed to its type, but for
/// hookrelay's news of a webhook, which goes to the account's other webhooks, never to it;
/// and a test event to its one webhook (subscribed or not) when `tests` holds it, under the
/// log id the API has answered already. A webhook's filter decides over the body as sent,
/// read once per event and only if one of its webhooks has a filter. Only the webhooks
/// `side` serves.
pub(super) fn plan(
    accepted: &[Accepted<'_>],
    subscriptions: &Subscriptions,
    tests: &HashSet<Uuid>,
    side: Side,
    keep_unmatched: bool,
) -> Plan {
    let mut events = Vec::with_capacity(accepted.len());
    let mut planned = Vec::new();
    let mut filtered = 0;
    let now = Utc::now();
    for a in accepted {
        let event = Arc::new(NewEvent {
            account_id: a.event.account_id.as_str().to_owned(),
            id: a.event.id.clone(),
            event_type: a.event.event_type.as_str().to_owned(),
            body: a.payload.clone(),
            occurred_at: a.event.occurred_at,
            received_at: a.received_at,
            traceparent: a.traceparent.as_ref().map(Traceparent::to_string),
        });
        let before = planned.len();
        let plan = |log_id: Uuid, webhook_id: Uuid| Planned {
            log: NewLog {
                id: log_id,
                webhook_id,
                event: event.clone(),
                seq: None,
            },
            received_at: a.received_at,
        };
        if let Some((webhook, log_id)) = a.event.test_target() {
            if tests.contains(&webhook) {
                planned.push(plan(log_id, webhook));
            } else {
                warn!(webhook_id = %webhook, %log_id, "test event dropped: the webhook is gone, disabled or of another account");
            }
        } else {
            let about = a.event.about_webhook();
            let mut body = None;
            for webhook in subscriptions
                .matching(a.event.account_id.as_str(), a.event.event_type.as_str())
                .into_iter()
                .filter(|w| Some(w.id) != about && side.serves(w, now))
            {
                if let Some(filter) = &webhook.filter {
                    let body = body.get_or_insert_with(|| read_body(&a.payload));
                    if !filter.matches(body) {
                        filtered += 1;
                        continue;
                    }
                }
                planned.push(plan(new_log_id(a.received_at), webhook.id));
            }
        }
        if keep_unmatched || planned.len() > before {
            events.push(event);
        }
    }
    Plan {
        events,
        planned,
        filtered,
    }
}

/// The body as sent, for filters. It was written by hookrelay from a valid event, so it
/// reads; were it not to, filters would see nothing and `$exist: false` alone would pass.
fn read_body(payload: &str) -> serde_json::Value {
    serde_json::from_str(payload).unwrap_or(serde_json::Value::Null)
}

/// The message of a planned delivery, its first attempt.
pub(super) fn delivery_task(p: &Planned) -> DeliveryV1 {
    DeliveryV1 {
        log_id: p.log.id,
        webhook_id: p.log.webhook_id,
        event_id: p.log.event.id.clone(),
        event_type: p.log.event.event_type.clone(),
        attempt: 1,
        received_at: p.received_at,
        payload: p.log.event.body.to_string(),
        requeue: 0,
        traceparent: p.log.event.traceparent.clone(),
    }
}
