//! A dedicated connection that LISTENs for webhook changes. Not from the pool: a pooled
//! connection may be recycled, and LISTEN belongs to one session.

use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

use crate::pool::parse_config;
use crate::{StoreError, WEBHOOK_CHANGES_CHANNEL};

/// What the listener tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookChange {
    /// This webhook was inserted, updated or deleted.
    One(Uuid),
    /// Notifications may have been missed: reload everything.
    All,
}

/// A live LISTEN session. Dropping it closes the connection.
pub struct WebhookListener {
    // The session lasts as long as its client.
    _client: tokio_postgres::Client,
    pub changes: mpsc::Receiver<WebhookChange>,
}

/// Starts listening. `changes` ends when the connection is lost; the caller reconnects and
/// reloads everything, since notifications sent in between are gone.
pub async fn listen_webhook_changes(database_url: &str) -> Result<WebhookListener, StoreError> {
    let config = parse_config(database_url)?;
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, rx) = mpsc::channel(1024);
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        let mut missed = false;
        while let Some(message) = messages.next().await {
            let note = match message {
                Ok(AsyncMessage::Notification(note)) => note,
                Ok(_) => continue,
                Err(_) => break,
            };
            let change = serde_json::from_str::<serde_json::Value>(note.payload())
                .ok()
                .and_then(|v| v.get("id")?.as_str().and_then(|s| Uuid::parse_str(s).ok()))
                .map_or(WebhookChange::All, WebhookChange::One);
            if missed && tx.try_send(WebhookChange::All).is_ok() {
                missed = false;
            }
            // Never wait on a slow reader while holding the connection: note the loss and
            // let a full reload catch up instead.
            match tx.try_send(change) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => missed = true,
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {WEBHOOK_CHANGES_CHANNEL}"))
        .await?;
    Ok(WebhookListener {
        _client: client,
        changes: rx,
    })
}
