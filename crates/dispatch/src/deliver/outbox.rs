//! The delivery workers' publisher: retries into the delay tiers and hookrelay's own events.
//! Workers hand it a message and wait; it publishes whatever has gathered on one confirm
//! channel, waits for the confirms together, then answers each worker for its own message
//! (`crate::batcher`).
//!
//! One owner per channel is what makes returned messages safe to handle (see
//! `hookrelay_broker::Publisher`); thousands of webhook consumers share this one.

use std::sync::Arc;

use hookrelay_broker::{Connection, Outgoing};
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::batcher::{BatchError, Batcher, Handler};
use crate::publish::{Declare, PipelinePublisher, Routing};

const MAX_BATCH: usize = 256;
/// Bounded: when the broker is slow, workers wait here.
const QUEUE: usize = 1024;

/// Answers once the message is confirmed by the broker.
pub type Outbox = Batcher<Outgoing, ()>;

/// Publishes on `connection` until every handle is dropped. A batch whose channel failed
/// closes it; the next batch opens a new one (and declares the topology again), so a channel
/// closed by the broker (an exchange deleted by hand, say) heals by itself.
pub fn start(connection: Connection, routing: Arc<Routing>, tracker: &TaskTracker) -> Outbox {
    let handler = Sending {
        connection,
        routing,
        open: None,
    };
    Batcher::start("the workers' publisher", handler, MAX_BATCH, QUEUE, tracker)
}

struct Sending {
    connection: Connection,
    routing: Arc<Routing>,
    open: Option<PipelinePublisher>,
}

impl Handler for Sending {
    type Item = Outgoing;
    type Output = ();

    async fn handle(&mut self, messages: Vec<Outgoing>) -> Vec<Result<(), BatchError>> {
        let count = messages.len();
        let publisher = match &mut self.open {
            Some(open) => open,
            None => {
                let opened =
                    PipelinePublisher::open(&self.routing, &self.connection, Declare::WithRetries)
                        .await;
                match opened {
                    Ok(publisher) => self.open.insert(publisher),
                    Err(e) => {
                        warn!(error = %crate::error_chain(&e), messages = count, "cannot open a channel for retries and events");
                        return BatchError::for_all(count, BatchError::failed(e));
                    }
                }
            }
        };
        match publisher.publish_each(&messages).await {
            Ok(each) => each
                .into_iter()
                .map(|r| r.map_err(BatchError::failed))
                .collect(),
            Err(e) => {
                warn!(error = %crate::error_chain(&e), messages = messages.len(), "cannot publish retries or events");
                if let Some(broken) = self.open.take() {
                    broken.close().await;
                }
                BatchError::for_all(count, BatchError::failed(e))
            }
        }
    }

    async fn close(self) {
        if let Some(publisher) = self.open {
            publisher.close().await;
        }
    }
}
