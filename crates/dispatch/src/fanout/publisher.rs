//! The fan-out's publishing: its confirm channel, and the webhook queues it has made sure
//! exist.

use std::collections::HashSet;

use std::sync::Arc;

use hookrelay_broker::lapin::Connection;
use hookrelay_broker::Outgoing;
use uuid::Uuid;

use super::plan::{delivery_task, Planned};
use super::{Context, FanoutError};
use crate::publish::{self, Routes};

/// The fan-out's confirm channel, and the webhook queues it has made sure exist.
pub(super) struct Publisher {
    pub inner: hookrelay_broker::Publisher,
    declared: HashSet<Uuid>,
}

impl Publisher {
    pub async fn open(ctx: &Context, connection: &Arc<Connection>) -> Result<Self, FanoutError> {
        let inner = hookrelay_broker::Publisher::open(connection).await?;
        ctx.topology.declare_base(inner.declarer()).await?;
        Ok(Self {
            inner,
            declared: HashSet::new(),
        })
    }

    /// Publishes `messages` and waits for their confirms, finding a route for any returned.
    pub async fn send(&mut self, ctx: &Context, messages: &[Outgoing]) -> Result<(), FanoutError> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut routes = Routes::new(&ctx.topology, &ctx.subscriptions, &mut self.declared);
        self.inner.publish_all(messages, &mut routes).await?;
        let dropped = routes.dropped;
        publish::end_dropped(&ctx.store, &dropped).await?;
        Ok(())
    }

    /// Publishes every delivery, confirmed as a batch. A webhook's queue is declared
    /// (idempotently) the first time this channel sends to it, so a webhook created a moment
    /// ago, whose queue the delivery workers have not declared yet, does not lose its first
    /// deliveries.
    pub async fn publish_deliveries(
        &mut self,
        ctx: &Context,
        planned: &[Planned],
    ) -> Result<(), FanoutError> {
        for p in planned {
            if !self.declared.contains(&p.log.webhook_id) {
                ctx.topology
                    .declare_webhook(self.inner.declarer(), &p.log.webhook_id.to_string())
                    .await?;
                self.declared.insert(p.log.webhook_id);
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
            ctx.topology
                .delete_webhook(self.inner.declarer(), &id.to_string())
                .await?;
            ctx.store
                .fail_open_logs(*id, "the webhook was deleted")
                .await?;
            self.declared.remove(id);
        }
        let messages: Vec<Outgoing> = planned
            .iter()
            .filter(|p| !deleted.contains(&p.log.webhook_id))
            .map(|p| publish::delivery(&ctx.topology, &delivery_task(p)))
            .collect();
        self.send(ctx, &messages).await
    }
}
