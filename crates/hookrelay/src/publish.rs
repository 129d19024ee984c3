//! `hookrelay publish`: sends test events to `{ns}.events` as an upstream service would
//! (persistent, JSON, routing key = type), with publisher confirms. For the README tour, the
//! benchmark, and checking a deployment by hand.

use std::time::Instant;

use anyhow::{bail, Context as _};
use hookrelay_broker::lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use hookrelay_broker::Topology;
use hookrelay_core::{AccountId, EventType};

/// Confirms awaited together; bounds the messages in flight.
const WINDOW: usize = 1000;

#[derive(Debug, Clone)]
pub struct PublishArgs {
    pub event_type: String,
    pub account_id: String,
    pub data: String,
    /// The event id; with `count > 1`, `{id}-{n}`. A fresh UUID when absent.
    pub id: Option<String>,
    pub count: usize,
}

/// What was published.
#[derive(Debug)]
pub struct Published {
    pub ids: Vec<String>,
    pub seconds: f64,
}

pub async fn publish(
    amqp_url: &str,
    namespace: &str,
    args: &PublishArgs,
) -> anyhow::Result<Published> {
    let event_type =
        EventType::parse(&args.event_type).map_err(|e| anyhow::anyhow!("--type: {e}"))?;
    let account =
        AccountId::parse(&args.account_id).map_err(|e| anyhow::anyhow!("--account: {e}"))?;
    let data: serde_json::Value = serde_json::from_str(&args.data).context("--data is not JSON")?;
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let connection = hookrelay_broker::connect(amqp_url).await.context(
        "cannot connect to the broker (is RabbitMQ running? `rabbitmq-server -detached`)",
    )?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let topology = Topology::new(namespace);
    topology.declare_base(&channel).await?;
    let exchange = topology.events_exchange();
    let properties = hookrelay_broker::persistent_json();

    let started = Instant::now();
    let mut ids = Vec::with_capacity(args.count);
    let mut pending = Vec::with_capacity(WINDOW);
    for n in 0..args.count {
        let id = match (&args.id, args.count) {
            (Some(id), 1) => id.clone(),
            (Some(id), _) => format!("{id}-{n}"),
            (None, _) => uuid::Uuid::new_v4().to_string(),
        };
        let body = serde_json::json!({
            "id": id,
            "type": event_type.as_str(),
            "account_id": account.as_str(),
            "occurred_at": chrono::Utc::now().to_rfc3339(),
            "data": data,
        });
        let bytes = serde_json::to_vec(&body)?;
        pending.push(
            channel
                .basic_publish(
                    &exchange,
                    event_type.as_str(),
                    BasicPublishOptions::default(),
                    &bytes,
                    properties.clone(),
                )
                .await?,
        );
        ids.push(id);
        if pending.len() >= WINDOW {
            for confirm in pending.drain(..) {
                if !confirm.await?.is_ack() {
                    bail!("the broker refused an event");
                }
            }
        }
    }
    for confirm in pending {
        if !confirm.await?.is_ack() {
            bail!("the broker refused an event");
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = channel.close(200, "done").await;
    let _ = connection.close(200, "done").await;
    Ok(Published { ids, seconds })
}
