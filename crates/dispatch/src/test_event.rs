//! `Webhook.test`, or an example of a catalog type, sent by hand to one webhook: through the
//! events exchange and the fan-out like any event, so that it proves the whole path to the
//! endpoint.

use hookrelay_broker::{Broker, PublishError};
use hookrelay_core::ops::{self, OriginKey};
use tracing::info;
use uuid::Uuid;

use crate::messages;
use crate::publish::{Declare, PipelinePublisher, Routing};
use crate::RequestError;

/// An event of a catalog type with its example as data, in place of `Webhook.test`.
#[derive(Debug, Clone)]
pub struct Example {
    pub event_type: String,
    pub data: serde_json::Value,
}

/// Sends `Webhook.test`, or `example`, to webhook `id` alone; answers the id its log will
/// have.
pub async fn send(
    routing: &std::sync::Arc<Routing>,
    broker: &Broker,
    origin: &OriginKey,
    id: Uuid,
    example: Option<Example>,
) -> Result<Uuid, RequestError> {
    let webhook = routing
        .subscriptions
        .get(id)
        .ok_or(RequestError::WebhookGone)?;
    let log_id = Uuid::now_v7();
    let now = chrono::Utc::now();
    let event = match example {
        None => ops::webhook_test(log_id, id, &webhook.account_id, &webhook.url, now),
        Some(example) => ops::example(
            log_id,
            id,
            &webhook.account_id,
            &example.event_type,
            example.data,
            now,
        ),
    };
    let message = messages::operational(&routing.topology, origin, &event);
    let connection = broker.connection().ok_or(RequestError::BrokerDown)?;
    let mut publisher = PipelinePublisher::open(routing, &connection, Declare::Nothing)
        .await
        .map_err(PublishError::from)?;
    let sent = publisher.publish(&[message]).await;
    publisher.close().await;
    sent?;
    info!(webhook_id = %id, %log_id, event_type = %event.event_type, "test event sent");
    Ok(log_id)
}
