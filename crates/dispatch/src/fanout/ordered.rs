//! The ordered fan-out, for FIFO webhooks. The competing consumers of `{ns}.ingest` take
//! events in parallel, so two events of one account may be written in either order. Once a
//! FIFO webhook exists, `{ns}.ingest.ordered` is bound to the events exchange too: a second
//! copy of every event, taken by a single active consumer across every process, batch after
//! batch. It writes the logs of the FIFO webhooks only, numbered in the order of the events
//! (`open_deliveries.seq`), and the competing side leaves those webhooks to it. A FIFO
//! webhook's consumer sends its open deliveries by that number (`crate::deliver::line`).
//!
//! The API binds the queue before it writes a FIFO webhook (`bind_ordered`), so every event
//! published once the webhook exists reaches this side. The queue stays bound once it has
//! been: unbinding while another process still leaves its FIFO webhooks to this side would
//! lose their events. Without FIFO webhooks the consumer acks each batch without a write.
//! Until a process knows the queue is bound (`Routing::ordered_bound`), its competing side
//! fans out to FIFO webhooks too.

use std::time::Duration;

use hookrelay_broker::{Broker, BrokerError, Connection, Declarer};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::plan::{Accepted, Side};
use super::Context;
use crate::publish::Routing;

/// Declares the ordered queue, bound if a FIFO webhook exists or it was bound before.
pub(super) async fn declare(ctx: &Context, connection: &Connection) -> Result<(), BrokerError> {
    declare_on(&ctx.routing, connection).await
}

async fn declare_on(routing: &Routing, connection: &Connection) -> Result<(), BrokerError> {
    let bound = routing.subscriptions.has_fifo() || routing.ordered_bound();
    declare_bound(routing, connection, bound).await
}

/// Binds the ordered queue now: a FIFO webhook is about to be written.
pub async fn bind_ordered(routing: &Routing, connection: &Connection) -> Result<(), BrokerError> {
    declare_bound(routing, connection, true).await
}

async fn declare_bound(
    routing: &Routing,
    connection: &Connection,
    bound: bool,
) -> Result<(), BrokerError> {
    let declarer = Declarer::new(connection.clone());
    let declared = routing.topology.declare_ordered(&declarer, bound).await;
    declarer.close().await;
    declared?;
    if bound && !routing.ordered_bound() {
        info!("FIFO webhooks exist: the ordered fan-out's queue is bound");
        routing.set_ordered_bound();
    }
    Ok(())
}

/// Whether event `a` may concern a webhook this side serves: one of its account's webhooks
/// subscribed to its type, or a test event (whose webhook is looked up later).
pub(super) fn concerns(ctx: &Context, a: &Accepted<'_>) -> bool {
    let now = chrono::Utc::now();
    a.event.test_target().is_some()
        || ctx
            .routing
            .subscriptions
            .matching(a.event.account_id.as_str(), a.event.event_type.as_str())
            .iter()
            .any(|w| Side::Ordered.serves(w, now))
}

/// Binds the ordered queue as soon as a FIFO webhook appears, until `shutdown`; then the
/// ordered fan-out keeps it bound at each (re)connection.
pub async fn bind_when_needed(
    routing: std::sync::Arc<Routing>,
    broker: Broker,
    shutdown: CancellationToken,
) {
    let mut changes = routing.subscriptions.changes();
    while !routing.ordered_bound() {
        if routing.subscriptions.has_fifo() {
            let Some(connection) = broker.next_connection(&shutdown).await else {
                return;
            };
            if let Err(e) = declare_on(&routing, &connection).await {
                warn!(error = %crate::error_chain(&e), "cannot bind the ordered fan-out's queue; will try again");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}
