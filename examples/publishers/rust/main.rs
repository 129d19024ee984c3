//! Publish one event to hookrelay, as an upstream service would, with lapin.
//!
//! Run it (this folder is a Cargo project of its own, outside hookrelay's workspace):
//!
//! ```sh
//! cargo run --manifest-path examples/publishers/rust/Cargo.toml -- \
//!     Contact.created acc_1 '{"name":"Ada"}'
//! ```
//!
//! Environment: AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f), HOOKRELAY_NAMESPACE
//! (default hookrelay), EVENT_ID (default: a new UUID). Prints `published <event id>` once the
//! broker has confirmed the message; exits non-zero, saying why on stderr, otherwise.

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};

/// How long the broker may take to connect and confirm before we give up.
const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [event_type, account_id, data] = args.as_slice() else {
        eprintln!("usage: hookrelay-publish-example <event type> <account id> <data as JSON>");
        return ExitCode::from(2);
    };
    let data: serde_json::Value = match serde_json::from_str(data) {
        Ok(data) => data,
        Err(e) => {
            eprintln!("data is not JSON: {e}");
            return ExitCode::from(2);
        }
    };
    let url = env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
    let namespace = env_or("HOOKRELAY_NAMESPACE", "hookrelay");
    // A stable id lets a retry of this program (after a crash, or a timeout whose publish did
    // land) be delivered once: hookrelay dedupes on it. Pass your own business key if any.
    let event_id = env_or("EVENT_ID", &uuid::Uuid::new_v4().to_string());
    let body = serde_json::json!({
        "id": event_id,
        "type": event_type,
        "account_id": account_id,
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "data": data,
    })
    .to_string();

    let exchange = format!("{namespace}.events");
    let publishing = publish(&url, &exchange, event_type, body.as_bytes(), &event_id);
    match tokio::time::timeout(TIMEOUT, publishing).await {
        Ok(Ok(())) => {
            println!("published {event_id}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("not published: {e}");
            ExitCode::FAILURE
        }
        // Unknown outcome: the message may have landed. Publishing again with the same
        // EVENT_ID is safe, as hookrelay delivers an id once per webhook.
        Err(_) => {
            eprintln!("not published: no confirm from the broker within {TIMEOUT:?}");
            ExitCode::FAILURE
        }
    }
}

async fn publish(
    url: &str,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    event_id: &str,
) -> Result<(), Box<dyn Error>> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let result = publish_on(&connection, exchange, routing_key, body, event_id).await;
    let _ = connection.close(200, "done".into()).await;
    result
}

async fn publish_on(
    connection: &Connection,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    event_id: &str,
) -> Result<(), Box<dyn Error>> {
    let channel = connection.create_channel().await?;
    // With confirms, the broker acks each message once it has taken responsibility for it
    // (written it to disk, for a persistent one), or nacks it.
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2) // persistent: survives a broker restart
        .with_message_id(event_id.into());
    // Without `mandatory`, a message no queue is bound for is silently dropped; with it, the
    // broker hands it back (basic.return, then the ack).
    let options = BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            body,
            properties,
        )
        .await?;
    match confirm.await? {
        Confirmation::Ack(None) => Ok(()),
        // An ack that carries the message back: routed to no queue.
        Confirmation::Ack(Some(returned)) => Err(format!(
            "returned ({} {}): no queue is bound to {exchange} for {routing_key:?} \
             (has hookrelay ever started with this namespace?)",
            returned.reply_code, returned.reply_text
        )
        .into()),
        Confirmation::Nack(_) => Err("the broker refused the message (nack)".into()),
        Confirmation::NotRequested => Err("publisher confirms were not enabled".into()),
    }
}

/// The variable's value, or `default` when it is unset or empty.
fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| default.to_owned())
}
