//! The fan-out's last step: one delivery per new log row, into its webhook's queue or
//! straight to its consumer.

use std::collections::HashSet;

use chrono::Utc;
use hookrelay_broker::Outgoing;
use hookrelay_core::DeliveryTask;
use uuid::Uuid;

use super::plan::{delivery_task, Planned};
use super::{Context, FanoutError};
use crate::messages;
use crate::publish::PipelinePublisher;

/// Hands each delivery whose webhook's consumer is in this process, with a slot free, straight
/// to it (`crate::deliver::Handoffs`), and publishes the others, confirmed as a batch. A
/// webhook's queue is declared (idempotently) the first time this channel sends to it, so a
/// webhook created a moment ago, whose queue the delivery workers have not declared yet, does
/// not lose its first deliveries. A webhook whose queue cannot be reached has its deliveries
/// sent round through the delay tiers instead, so that the batch, and the other webhooks'
/// deliveries in it, go on (`crate::publish`'s module doc).
pub(super) async fn publish(
    ctx: &Context,
    publisher: &mut PipelinePublisher,
    planned: &[Planned],
) -> Result<(), FanoutError> {
    let mut queued = Vec::with_capacity(planned.len());
    for p in planned {
        if let Err(task) = ctx.handoffs.start(delivery_task(p)).await {
            queued.push((p, task));
        }
    }
    let mut unreachable = HashSet::new();
    for (p, _) in &queued {
        let id = p.log.webhook_id;
        if !unreachable.contains(&id) && !publisher.ensure_queue(id).await? {
            unreachable.insert(id);
        }
    }
    // A webhook deleted while this batch was planned: declaring its queue above may have
    // brought the queue back after the delivery workers removed it. Remove it again and end
    // its logs instead of sending into it.
    let deleted: HashSet<Uuid> = queued
        .iter()
        .map(|(p, _)| p.log.webhook_id)
        .filter(|id| ctx.routing.subscriptions.get(*id).is_none())
        .collect();
    for id in &deleted {
        publisher.remove_queue(*id).await?;
        ctx.routing
            .store
            .fail_open_logs(*id, "the webhook was deleted")
            .await?;
    }
    let now = Utc::now();
    let mut messages = Vec::with_capacity(queued.len());
    for (p, task) in queued
        .into_iter()
        .filter(|(p, _)| !deleted.contains(&p.log.webhook_id))
    {
        let message: Outgoing = messages::delivery(&ctx.routing.topology, &DeliveryTask::V1(task))?;
        messages.push(match unreachable.contains(&p.log.webhook_id) {
            true => messages::round_unreachable(&ctx.routing.topology, message, now),
            false => message,
        });
    }
    Ok(publisher.publish(&messages).await?)
}
