//! The delivery workers' publisher: retries into the delay tiers and hookrelay's own events.
//! Workers hand it a message and wait; it publishes whatever has gathered on one confirm
//! channel, waits for the confirms together, then answers each worker for its own message.
//! Batches grow by themselves under load, like the attempt writer's.
//!
//! One owner per channel is what makes returned messages safe to handle (see
//! `hookrelay_broker::Publisher`); thousands of webhook consumers share this one.

use std::collections::HashSet;
use std::sync::Arc;

use hookrelay_broker::lapin::Connection;
use hookrelay_broker::{Outgoing, PublishError, Publisher, Topology};
use hookrelay_store::Store;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::publish::{self, Routes, WebhookQueues};
use crate::recover::Recovery;
use crate::subscriptions::Subscriptions;

const MAX_BATCH: usize = 256;
/// Bounded: when the broker is slow, workers wait here.
const QUEUE: usize = 1024;

type Reply = oneshot::Sender<Result<(), String>>;

#[derive(Clone)]
pub struct BatchPublisher {
    tx: mpsc::Sender<(Outgoing, Reply)>,
}

impl BatchPublisher {
    /// Publishes on `connection` until every handle is dropped. A batch whose channel failed
    /// closes it; the next batch opens a new one (and declares the topology again), so a
    /// channel closed by the broker (an exchange deleted by hand, say) heals by itself.
    pub fn start(
        connection: Arc<Connection>,
        topology: Topology,
        subscriptions: Arc<Subscriptions>,
        store: Store,
        recovery: Recovery,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Outgoing, Reply)>(QUEUE);
        tokio::spawn(async move {
            let mut publisher: Option<Publisher> = None;
            let mut queues = WebhookQueues::telling(recovery);
            let mut buffer = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut buffer, MAX_BATCH).await > 0 {
                let (messages, replies): (Vec<Outgoing>, Vec<Reply>) = buffer.drain(..).unzip();
                let mut dropped = HashSet::new();
                let result = async {
                    if publisher.is_none() {
                        let fresh = Publisher::open(&connection).await?;
                        topology.declare_base(fresh.declarer()).await?;
                        topology.declare_retry(fresh.declarer()).await?;
                        queues.clear();
                        publisher = Some(fresh);
                    }
                    let Some(open) = publisher.as_mut() else {
                        return Err(PublishError::Nacked);
                    };
                    let mut routes = Routes::new(&topology, &subscriptions, &mut queues);
                    let results = open.publish_each(&messages, &mut routes).await;
                    dropped = routes.dropped;
                    results
                }
                .await;
                if let Err(e) = publish::end_dropped(&store, &dropped).await {
                    warn!(error = %crate::error_chain(&e), "cannot end the logs of a deleted webhook");
                }
                let results: Vec<Result<(), String>> = match result {
                    Ok(each) => each
                        .into_iter()
                        .map(|r| r.map_err(|e| crate::error_chain(&e)))
                        .collect(),
                    Err(e) => {
                        let e = crate::error_chain(&e);
                        warn!(error = %e, messages = messages.len(), "cannot publish retries or events");
                        if let Some(broken) = publisher.take() {
                            broken.close().await;
                        }
                        messages.iter().map(|_| Err(e.clone())).collect()
                    }
                };
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            if let Some(open) = publisher {
                open.close().await;
            }
        });
        Self { tx }
    }

    /// Waits until `message` is confirmed by the broker.
    pub async fn publish(&self, message: Outgoing) -> Result<(), String> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send((message, reply))
            .await
            .map_err(|_| "the publisher has stopped".to_owned())?;
        done.await
            .map_err(|_| "the publisher has stopped".to_owned())?
    }
}
