//! The attempt writer: delivery workers hand it their attempt records and wait; it writes
//! whatever has gathered in one transaction, then answers them all (`crate::batcher`).

use hookrelay_store::{AttemptRecord, Store};
use tokio_util::task::TaskTracker;

use crate::batcher::{BatchError, Batcher, Handler};

const MAX_BATCH: usize = 512;
/// Bounded: when the database is slow, workers wait here instead of piling up records.
const QUEUE: usize = 4096;
/// Attempts acked before their record is committed, at most: a full queue's worth.
pub const UNRECORDED: usize = QUEUE;

/// Answers, for each record once committed, whether its delivery was still its log's
/// current one (and moved it; see `hookrelay_core::is_current`).
pub type AttemptWriter = Batcher<AttemptRecord, bool>;

/// Starts the writer; it stops once every handle is dropped and what was sent is written.
pub fn start(store: Store, tracker: &TaskTracker) -> AttemptWriter {
    Batcher::start(
        "the attempt writer",
        Writer(store),
        MAX_BATCH,
        QUEUE,
        tracker,
    )
}

struct Writer(Store);

impl Handler for Writer {
    type Item = AttemptRecord;
    type Output = bool;

    async fn handle(&mut self, records: Vec<AttemptRecord>) -> Vec<Result<bool, BatchError>> {
        let store = &self.0;
        match store.record_attempts(&records).await {
            Ok(current) => current.into_iter().map(Ok).collect(),
            // One record the database refuses must not hold back the others.
            Err(e) if e.is_refusal() => {
                let mut results = Vec::with_capacity(records.len());
                for record in records {
                    results.push(write_alone(store, record).await);
                }
                results
            }
            Err(e) => BatchError::for_all(records.len(), BatchError::failed(e)),
        }
    }
}

/// Writes one record; if the database refuses its values, writes it again without the
/// receiver's answer and with the reason instead, so the attempt is still on record.
async fn write_alone(store: &Store, record: AttemptRecord) -> Result<bool, BatchError> {
    let first = |current: Vec<bool>| current.first().copied().unwrap_or(false);
    match store.record_attempts(std::slice::from_ref(&record)).await {
        Ok(current) => Ok(first(current)),
        Err(e) if e.is_refusal() => {
            tracing::error!(log_id = %record.log_id, error = %crate::error_chain(&e), "attempt refused by the database; recording it without the answer");
            // The code only: the database's text goes to the service log, not to admins.
            let plain = AttemptRecord {
                response_body: None,
                error: Some(format!(
                    "the attempt's details could not be stored (SQLSTATE {})",
                    e.sqlstate().unwrap_or("unknown")
                )),
                ..record
            };
            store
                .record_attempts(std::slice::from_ref(&plain))
                .await
                .map(first)
                .map_err(BatchError::failed)
        }
        Err(e) => Err(BatchError::failed(e)),
    }
}
