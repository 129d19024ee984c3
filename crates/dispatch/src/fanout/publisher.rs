//! The fan-out's publishing: its confirm channel, and the webhook queues it has made sure
//! exist.

use std::collections::HashSet;
use std::sync::Arc;

use hookrelay_broker::lapin::Connection;
use hookrelay_broker::Outgoing;
use uuid::Uuid;

use super::plan::{delivery_task, Planned};
use super::{Context, FanoutError};
use crate::publish::{self, Routes, WebhookQueues};

/// The fan-out's confirm channel, and what it knows of the webhook queues.
pub(super) struct Publisher {
    pub inner: hookrelay_broker::Publisher,
    queues: WebhookQueues,
}

impl Publisher {
    pub async fn open(ctx: &Context, connection: &Arc<Connection>) -> Result<Self, FanoutError> {
        let inner = hookrelay_broker::Publisher::open(connection).await?;
        ctx.topology.declare_base(inner.declarer()).await?;
        Ok(Self {
            inner,
            queues: WebhookQueues::telling(ctx.recovery.clone()),
        })
    }

    /// Publishes `messages` and waits for their confirms, finding a route for any returned.
    pub async fn send(&mut self, ctx: &Context, messages: &[Outgoing]) -> Result<(), FanoutError> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut routes = Routes::new(&ctx.topology, &ctx.subscriptions, &mut self.queues);
        self.inner.publish_all(messages, &mut routes).await?;
        let dropped = routes.dropped;
        publish::end_dropped(&ctx.store, &dropped).await?;
        Ok(())
    }

    /// Publishes every delivery, confirmed as a batch. A webhook's queue is declared
    /// (idempotently) the first time this channel sends to it, so a webhook created a moment
    /// ago, whose queue the delivery workers have not declared yet, does not lose its first
    /// deliveries. A webhook whose queue cannot be reached has its deliveries sent round
    /// through the delay tiers instead, so that the batch, and the other webhooks' deliveries
    /// in it, go on (`publish`'s module doc).
    pub async fn publish_deliveries(
        &mut self,
        ctx: &Context,
        planned: &[Planned],
    ) -> Result<(), FanoutError> {
        let mut unreachable = HashSet::new();
        for p in planned {
            let id = p.log.webhook_id;
            if !unreachable.contains(&id)
                && !self
                    .queues
                    .ensure(&ctx.topology, self.inner.declarer(), id)
                    .await?
            {
                unreachable.insert(id);
            }
        }
        // A webhook deleted while this batch was planned: declaring its queue above may have
        // brought the queue back after the delivery workers removed it. Remove it again and
        // end its logs instead of sending into it.
        let deleted: HashSet<Uuid> = planned
            .iter()
            .map(|p| p.log.webhook_id)
            .filter(|id| ctx.subscriptions.get(*id).is_none())
            .collect();
        for id in &deleted {
            // A queue whose node is down is left to the sweep, which removes it once it
            // can; the other webhooks' deliveries need not wait for that.
            match ctx
                .topology
                .delete_webhook(self.inner.declarer(), &id.to_string())
                .await
            {
                Err(e) if !hookrelay_broker::queue_unavailable(&e) => return Err(e.into()),
                _ => {}
            }
            ctx.store
                .fail_open_logs(*id, "the webhook was deleted")
                .await?;
            self.queues.forget(*id);
        }
        let messages: Vec<Outgoing> = planned
            .iter()
            .filter(|p| !deleted.contains(&p.log.webhook_id))
            .map(|p| {
                let message = publish::delivery(&ctx.topology, &delivery_task(p));
                match unreachable.contains(&p.log.webhook_id) {
                    true => publish::round_unreachable(&ctx.topology, &message),
                    false => message,
                }
            })
            .collect();
        self.send(ctx, &messages).await
    }
}
