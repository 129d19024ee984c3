//! A dedicated connection that LISTENs for webhook changes. Not from the pool: a pooled
//! connection may be recycled, and LISTEN belongs to one session.

use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::task::TaskTracker;
use tracing::warn;
use uuid::Uuid;

use crate::pool::parse_config;
use crate::{StoreError, WEBHOOK_CHANGES_CHANNEL};

/// What the listener tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookChange {
    /// This webhook was inserted or updated, and is now at `version` (absent from a
    /// notification sent before migration V7).
    Written { id: Uuid, version: Option<i64> },
    /// This webhook was deleted.
    Deleted(Uuid),
    /// Notifications may have been missed: reload everything.
    All,
}

impl WebhookChange {
    /// Reads a notification's payload (`{"op", "id", "version"?}`); one it cannot read means
    /// everything is to be reloaded.
    fn parse(payload: &str) -> Self {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(payload) else {
            return Self::All;
        };
        let Some(id) = value
            .get("id")
            .and_then(|id| id.as_str())
            .and_then(|id| Uuid::parse_str(id).ok())
        else {
            return Self::All;
        };
        if value.get("op").and_then(|op| op.as_str()) == Some("delete") {
            return Self::Deleted(id);
        }
        let version = value.get("version").and_then(|v| v.as_i64());
        Self::Written { id, version }
    }
}

/// A live LISTEN session. Dropping it closes the connection.
pub struct WebhookListener {
    // The session lasts as long as its client.
    _client: tokio_postgres::Client,
    pub changes: mpsc::Receiver<WebhookChange>,
}

/// Starts listening; the connection is driven by a task on `tracker`. `changes` ends when the
/// connection is lost; the caller reconnects and reloads everything, since notifications
/// sent in between are gone.
pub async fn listen_webhook_changes(
    database_url: &str,
    tracker: &TaskTracker,
) -> Result<WebhookListener, StoreError> {
    let config = parse_config(database_url)?;
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, rx) = mpsc::channel(1024);
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    tracker.spawn(async move {
        let mut missed = false;
        while let Some(message) = messages.next().await {
            let note = match message {
                Ok(AsyncMessage::Notification(note)) => note,
                Ok(_) => continue,
                Err(e) => {
                    warn!(error = %e, "the connection listening for webhook changes failed");
                    break;
                }
            };
            let change = WebhookChange::parse(note.payload());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_read_with_their_version() {
        let id = Uuid::from_u128(7);
        let written = format!(r#"{{"op":"update","id":"{id}","version":12}}"#);
        assert_eq!(
            WebhookChange::parse(&written),
            WebhookChange::Written {
                id,
                version: Some(12)
            }
        );
        let before_v7 = format!(r#"{{"op":"insert","id":"{id}"}}"#);
        assert_eq!(
            WebhookChange::parse(&before_v7),
            WebhookChange::Written { id, version: None }
        );
        let deleted = format!(r#"{{"op":"delete","id":"{id}"}}"#);
        assert_eq!(WebhookChange::parse(&deleted), WebhookChange::Deleted(id));
        for unreadable in ["", "{}", r#"{"op":"update","id":"x"}"#] {
            assert_eq!(WebhookChange::parse(unreadable), WebhookChange::All);
        }
    }
}
