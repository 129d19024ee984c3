//! `hookrelay publish`: sends test events to `{ns}.events` as an upstream service would
//! (persistent, JSON, routing key = type), with publisher confirms. For the README tour, the
//! benchmark, and checking a deployment by hand.

use std::time::Instant;

use anyhow::{bail, Context as _};
use hookrelay_broker::{NoRoutes, Outgoing, Publisher, QueueType, Topology};
use hookrelay_core::{AccountId, EventType};
use tracing::debug;

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
    queue_type: QueueType,
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
    let mut publisher = Publisher::open(&connection).await?;
    let topology = Topology::with_queue_type(namespace, queue_type);
    topology.declare_base(publisher.declarer()).await?;
    let exchange = topology.events_exchange();

    let started = Instant::now();
    let mut ids = Vec::with_capacity(args.count);
    let mut window = Vec::with_capacity(WINDOW);
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
        window.push(Outgoing::json(
            exchange.clone(),
            event_type.as_str().to_owned(),
            serde_json::to_vec(&body)?,
        ));
        ids.push(id);
        if window.len() >= WINDOW || n + 1 == args.count {
            publisher
                .publish_all(&window, &mut NoRoutes)
                .await
                .context("the broker did not take an event")?;
            window.clear();
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    publisher.close().await;
    // Every event is confirmed already: a connection that does not close cleanly loses
    // nothing.
    if let Err(e) = connection.close().await {
        debug!(error = %e, "the broker connection did not close cleanly");
    }
    Ok(Published { ids, seconds })
}
