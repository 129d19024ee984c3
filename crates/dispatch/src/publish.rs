//! The pipeline's publisher, assembled here and nowhere else: a confirming
//! `hookrelay_broker::Publisher`, what it knows of the webhook queues, and the routes it finds
//! for a message the broker returned. The fan-out, the retry router, the delivery workers'
//! outbox, recovery and test events all publish through a [`PipelinePublisher`].
//!
//! A delivery whose webhook queue is missing gets the queue declared and is sent again,
//! unless its webhook was deleted: then it is dropped, and the webhook's open logs are ended
//! once the publish is over (no lock is held on them then). Anything else whose queue is
//! missing gets the namespace's topology declared again. Webhook queues are declared through
//! the registry ([`QueueRegistry`]), which tells a queue the broker lost from a new one.
//!
//! A webhook queue that exists but cannot be reached (on a cluster, a classic queue lives on
//! one node, and that node is down) takes no message: one published to it comes back, and
//! declaring it fails. Its deliveries then wait in the delay tiers, which are shared and, with
//! `queue_type = quorum`, replicated, and come back to it every [`UNREACHABLE_WAIT`] until
//! its node is back. So the other webhooks' deliveries, and the events that carry them, never
//! wait for that node, and the broker keeps every delivery it confirmed in a queue or a tier
//! (one its node drops on a restart is found by its log: `crate::lost`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use hookrelay_broker::{
    BatchLimits, Batches, BrokerError, Connection, Declarer, Outgoing, PublishError, Publisher,
    Reroute, ReturnHandler, Topology,
};
use hookrelay_store::Store;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::messages::{round_unreachable, UNREACHABLE_WAIT};
use crate::queues::QueueRegistry;
use crate::subscriptions::Subscriptions;

/// What every publisher of the pipeline needs to find routes.
pub struct Routing {
    pub topology: Topology,
    /// Whether a returned delivery's webhook still exists.
    pub subscriptions: Arc<Subscriptions>,
    /// Ends the open logs of a webhook found deleted.
    pub store: Store,
    pub queues: Arc<QueueRegistry>,
    /// Set once this process has bound the ordered fan-out's queue, or found it bound:
    /// from then on the competing fan-out leaves FIFO webhooks to it (`crate::fanout`).
    pub ordered_bound: AtomicBool,
}

impl Routing {
    pub fn ordered_bound(&self) -> bool {
        self.ordered_bound.load(AtomicOrdering::Acquire)
    }

    pub fn set_ordered_bound(&self) {
        self.ordered_bound.store(true, AtomicOrdering::Release);
    }
}

/// What a publisher declares when it opens its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declare {
    /// Nothing: it publishes where others have declared (a returned message still finds its
    /// route).
    Nothing,
    /// The exchanges, the ingest and the rejected queue.
    Base,
    /// Those and the delay tiers, for the publishers that send retries.
    WithRetries,
}

pub struct PipelinePublisher {
    routing: Arc<Routing>,
    publisher: Publisher,
    queues: WebhookQueues,
}

impl PipelinePublisher {
    /// Opens a confirm channel on `connection` and declares what `declare` says.
    pub async fn open(
        routing: &Arc<Routing>,
        connection: &Connection,
        declare: Declare,
    ) -> Result<Self, BrokerError> {
        let publisher = Publisher::open(connection).await?;
        let topology = &routing.topology;
        let declared = match declare {
            Declare::Nothing => Ok(()),
            Declare::Base => topology.declare_base(publisher.declarer()).await,
            Declare::WithRetries => match topology.declare_base(publisher.declarer()).await {
                Ok(()) => topology.declare_retry(publisher.declarer()).await,
                Err(e) => Err(e),
            },
        };
        if let Err(e) = declared {
            publisher.close().await;
            return Err(e);
        }
        Ok(Self {
            routing: routing.clone(),
            publisher,
            queues: WebhookQueues::default(),
        })
    }

    /// Publishes `messages` and waits for their confirms, finding a route for any returned.
    pub async fn publish(&mut self, messages: &[Outgoing]) -> Result<(), PublishError> {
        let (published, dropped) = self.publish_leaving_dropped(messages).await;
        self.end_dropped(&dropped).await;
        published
    }

    /// As [`PipelinePublisher::publish`], for a caller holding locks on logs (a transaction
    /// that takes logs to queue again): the webhooks whose deliveries were dropped because
    /// they are gone are answered, for the caller to [`end_dropped`] once it holds no lock on
    /// their logs. Ending them here would wait for the caller's own locks.
    ///
    /// [`end_dropped`]: PipelinePublisher::end_dropped
    pub async fn publish_leaving_dropped(
        &mut self,
        messages: &[Outgoing],
    ) -> (Result<(), PublishError>, HashSet<Uuid>) {
        if messages.is_empty() {
            return (Ok(()), HashSet::new());
        }
        let mut routes = Routes::new(&self.routing, &mut self.queues);
        let published = self.publisher.publish_all(messages, &mut routes).await;
        (published, routes.dropped)
    }

    /// As [`PipelinePublisher::publish`], with a result per message, so that one refused
    /// message fails only its own sender. The outer error (the channel or the routes failed)
    /// leaves every message's fate unknown.
    pub async fn publish_each(
        &mut self,
        messages: &[Outgoing],
    ) -> Result<Vec<Result<(), PublishError>>, PublishError> {
        let mut routes = Routes::new(&self.routing, &mut self.queues);
        let published = self.publisher.publish_each(messages, &mut routes).await;
        let dropped = routes.dropped;
        self.end_dropped(&dropped).await;
        published
    }

    /// Makes sure webhook `id`'s queue exists; `false` when it cannot be reached, now or
    /// less than [`UNREACHABLE_WAIT`] ago. Declaring is idempotent, so a webhook created a
    /// moment ago, whose queue the delivery workers have not declared yet, loses nothing.
    pub async fn ensure_queue(&mut self, id: Uuid) -> Result<bool, BrokerError> {
        self.queues
            .ensure(&self.routing, self.publisher.declarer(), id)
            .await
    }

    /// Removes deleted webhook `id`'s queue, which declaring it may have brought back after
    /// the delivery workers removed it. One whose node is down is left to the workers' sweep,
    /// which removes it once it can.
    pub async fn remove_queue(&mut self, id: Uuid) -> Result<(), BrokerError> {
        self.queues.forget(id);
        match self
            .routing
            .topology
            .delete_webhook(self.publisher.declarer(), &id.to_string())
            .await
        {
            Err(e) if !e.queue_unavailable() => Err(e),
            _ => Ok(()),
        }
    }

    pub async fn close(self) {
        self.publisher.close().await;
    }

    /// Ends the open logs of webhooks whose deliveries were dropped because they are gone.
    /// Should that fail (the database away), the delivery workers' sweep of deleted webhooks
    /// ends them: it does so at each pass while the tombstone lasts (`TOMBSTONE_GRACE`), and
    /// a deleted webhook gets no new logs once the subscription index knows, seconds later.
    /// Failing the whole publish for it would only send its batch round again.
    pub async fn end_dropped(&self, dropped: &HashSet<Uuid>) {
        for id in dropped {
            if let Err(e) = self
                .routing
                .store
                .fail_open_logs(*id, "the webhook was deleted")
                .await
            {
                warn!(webhook_id = %id, error = %crate::error_chain(&e), "cannot end the logs of a deleted webhook; the sweep will");
            }
        }
    }
}

/// A queue consumed in batches, each batch published on before it is acked, and the
/// publisher it is published with: the fan-out's and the retry router's shape.
pub struct Relay {
    pub batches: Batches,
    pub publisher: PipelinePublisher,
}

impl Relay {
    /// Opens the publisher first, since it declares the queue consumed.
    pub async fn open(
        routing: &Arc<Routing>,
        connection: &Connection,
        declare: Declare,
        queue: &str,
        limits: BatchLimits,
        name: &str,
    ) -> Result<Self, BrokerError> {
        let publisher = PipelinePublisher::open(routing, connection, declare).await?;
        match Batches::open(connection, queue, limits, name).await {
            Ok(batches) => Ok(Self { batches, publisher }),
            Err(e) => {
                publisher.close().await;
                Err(e)
            }
        }
    }

    /// Closing the channels, however the relay ended, hands every message not yet acked back
    /// to its queue at once; a channel left open would hold them until the connection closes.
    pub async fn close(self, why: &str) {
        self.batches.close(why).await;
        self.publisher.close().await;
    }
}

/// What one publisher knows of the webhook queues: those it declared (skipped from then on)
/// and those it found unreachable, and when.
#[derive(Default)]
struct WebhookQueues {
    declared: HashSet<Uuid>,
    unreachable: HashMap<Uuid, Instant>,
    /// Whether the delay tiers have been declared on this publisher's channel, which the
    /// first delivery it sends round an unreachable queue needs.
    tiers: bool,
}

impl WebhookQueues {
    async fn ensure(
        &mut self,
        routing: &Routing,
        declarer: &Declarer,
        id: Uuid,
    ) -> Result<bool, BrokerError> {
        if self.declared.contains(&id) {
            return Ok(true);
        }
        if self
            .unreachable
            .get(&id)
            .is_some_and(|since| since.elapsed() < UNREACHABLE_WAIT)
        {
            return Ok(false);
        }
        match routing.queues.declare(declarer, id).await {
            Ok(()) => {
                self.declared.insert(id);
                if self.unreachable.remove(&id).is_some() {
                    info!(webhook_id = %id, "webhook queue reachable again");
                }
                Ok(true)
            }
            Err(e) if e.queue_unavailable() => {
                if !self.tiers {
                    routing.topology.declare_retry(declarer).await?;
                    self.tiers = true;
                }
                if self.unreachable.insert(id, Instant::now()).is_none() {
                    warn!(webhook_id = %id, reason = %e, "webhook queue cannot be reached (its RabbitMQ node is down?); its deliveries wait in the delay tiers until it can");
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Forgets that `id`'s queue was declared: it is declared again before the next use.
    fn forget(&mut self, id: Uuid) {
        self.declared.remove(&id);
    }
}

/// The return handler of every pipeline publisher.
struct Routes<'a> {
    routing: &'a Routing,
    queues: &'a mut WebhookQueues,
    /// Webhooks whose deliveries were dropped because the webhook is gone.
    dropped: HashSet<Uuid>,
}

impl<'a> Routes<'a> {
    fn new(routing: &'a Routing, queues: &'a mut WebhookQueues) -> Self {
        Self {
            routing,
            queues,
            dropped: HashSet::new(),
        }
    }
}

impl ReturnHandler for Routes<'_> {
    type Error = BrokerError;

    async fn reroute(
        &mut self,
        declarer: &Declarer,
        returned: &Outgoing,
    ) -> Result<Reroute, Self::Error> {
        let topology = &self.routing.topology;
        let exchange = returned.exchange.as_str();
        if exchange == topology.deliveries_exchange() {
            let key = returned.routing_key.as_str();
            let Ok(webhook_id) = Uuid::parse_str(key) else {
                error!(
                    routing_key = key,
                    "a returned delivery has no webhook id; dropped"
                );
                return Ok(Reroute::Drop);
            };
            if self.routing.subscriptions.get(webhook_id).is_none() {
                self.dropped.insert(webhook_id);
                return Ok(Reroute::Drop);
            }
            // It came back, so whatever this publisher knew of its queue no longer holds.
            self.queues.forget(webhook_id);
            if !self
                .queues
                .ensure(self.routing, declarer, webhook_id)
                .await?
            {
                let round = round_unreachable(topology, returned.clone(), Utc::now());
                return Ok(Reroute::Instead(Box::new(round)));
            }
        } else if exchange == topology.retry_exchange() {
            topology.declare_retry(declarer).await?;
        } else {
            // The events exchange's ingest queue, or the rejected queue.
            topology.declare_base(declarer).await?;
        }
        Ok(Reroute::Resend)
    }
}
