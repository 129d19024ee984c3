//! The fan-out's writing step, where it meets what the database says: an event the log
//! table refuses is set apart and rejected, and rows that existed already (a duplicate, or
//! this very event redelivered after a crash) are sorted out.

use std::collections::{HashMap, HashSet};

use hookrelay_core::{LogStatus, RejectReason, Rejection};
use std::sync::Arc;

use hookrelay_store::{NewEvent, NewLog, StoreError};
use tracing::warn;
use uuid::Uuid;

use super::intake::rejected;
use super::plan::{Accepted, Planned, Side};
use super::{Context, FanoutError};
use crate::publish::PipelinePublisher;

/// Validation should keep out everything PostgreSQL refuses; should something slip through,
/// it must not stop the consumer. The batch is written again one event at a time, and an
/// event the database refuses is rejected with its reason, like any other bad event. A fault
/// of the database itself (connection, resources, shutdown) fails the batch instead, which
/// goes back to the queue whole.
pub(super) async fn isolate_refused(
    ctx: &Context,
    side: Side,
    publisher: &mut PipelinePublisher,
    accepted: &[Accepted<'_>],
    events: &[Arc<NewEvent>],
    planned: &[Planned],
    settled: &mut HashSet<usize>,
) -> Result<(HashMap<Uuid, Option<Arc<NewEvent>>>, HashSet<String>), FanoutError> {
    let mut inserted = HashMap::new();
    let mut refused = HashSet::new();
    for a in accepted {
        let logs: Vec<NewLog> = planned
            .iter()
            .filter(|p| p.log.event.id == a.event.id)
            .map(|p| p.log.clone())
            .collect();
        let event: Vec<_> = events
            .iter()
            .filter(|e| e.id == a.event.id && e.account_id == a.event.account_id.as_str())
            .cloned()
            .collect();
        match ctx.routing.store.insert_logs(&event, &logs).await {
            Ok(ids) => inserted.extend(ids),
            Err(e) if e.is_refusal() => {
                // The database's own text stays in the service log: it may quote the event
                // or name tables, and the rejected queue is read by publishers.
                let rejection = Rejection::new(
                    RejectReason::RefusedByDatabase,
                    format!(
                        "the log table refused the event (SQLSTATE {}); see the hookrelay log \
                         for details",
                        e.sqlstate().unwrap_or("unknown")
                    ),
                );
                // Rejected (and counted) by the competing side, which sees every event too.
                if side != Side::Ordered {
                    publisher
                        .publish(&[rejected(ctx, a.delivery, &rejection)])
                        .await?;
                    ctx.metrics.event_rejected(rejection.reason);
                    warn!(event_id = %a.event.id, error = %crate::error_chain(&e), "event rejected by the database");
                }
                refused.insert(a.event.id.clone());
                // Safe in the rejected queue now: acked even if the batch fails later.
                settled.insert(a.index);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((inserted, refused))
}

/// A log row that existed already means a duplicate event — or this very event, redelivered
/// after a crash between writing its logs and publishing its deliveries. For a redelivered
/// event, deliveries never attempted are published again (possibly a second time: receivers
/// dedupe on `webhook-id`); for a fresh duplicate, nothing is sent.
pub(super) async fn recover_conflicts(
    ctx: &Context,
    accepted: &[Accepted<'_>],
    conflicts: Vec<Planned>,
) -> Result<Vec<Planned>, StoreError> {
    let redelivered: HashSet<&str> = accepted
        .iter()
        .filter(|a| a.redelivered)
        .map(|a| a.event.id.as_str())
        .collect();
    let candidates: Vec<Planned> = conflicts
        .into_iter()
        .filter(|p| redelivered.contains(p.log.event.id.as_str()))
        .collect();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<(Uuid, String)> = candidates
        .iter()
        .map(|p| (p.log.webhook_id, p.log.event.id.clone()))
        .collect();
    let existing: HashMap<(Uuid, String), hookrelay_store::ExistingLog> = ctx
        .routing
        .store
        .existing_logs(&keys)
        .await?
        .into_iter()
        .map(|e| ((e.webhook_id, e.event_id.clone()), e))
        .collect();
    Ok(candidates
        .into_iter()
        .filter_map(|mut p| {
            let found = existing.get(&(p.log.webhook_id, p.log.event.id.clone()))?;
            if found.status != Some(LogStatus::Pending) || found.attempts > 0 {
                return None;
            }
            p.log.id = found.id;
            p.received_at = found.received_at;
            Some(p)
        })
        .collect())
}
