//! The batching attempt writer: delivery workers hand it their attempt records and wait; it
//! writes whatever has gathered in one transaction, then answers them all. Under load the
//! batches grow by themselves; when quiet, a record is written at once.

use hookrelay_store::{AttemptRecord, Store};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

const MAX_BATCH: usize = 512;
/// Bounded: when the database is slow, workers wait here instead of piling up records.
const QUEUE: usize = 4096;

/// `Ok(true)` when the record's delivery was still its log's current one (and moved it).
type Reply = oneshot::Sender<Result<bool, String>>;

#[derive(Clone)]
pub struct AttemptWriter {
    tx: mpsc::Sender<(AttemptRecord, Reply)>,
}

impl AttemptWriter {
    /// The writer stops once every handle is dropped and what was sent is written.
    pub fn start(store: Store, tracker: &TaskTracker) -> Self {
        let (tx, mut rx) = mpsc::channel::<(AttemptRecord, Reply)>(QUEUE);
        tracker.spawn(async move {
            let mut buffer = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut buffer, MAX_BATCH).await > 0 {
                let (records, replies): (Vec<AttemptRecord>, Vec<Reply>) = buffer.drain(..).unzip();
                match store.record_attempts(&records).await {
                    Ok(current) => {
                        for (reply, current) in replies.into_iter().zip(current) {
                            let _ = reply.send(Ok(current));
                        }
                    }
                    // One record the database refuses must not hold back the others.
                    Err(e) if e.is_refusal() => {
                        for (record, reply) in records.into_iter().zip(replies) {
                            let _ = reply.send(write_alone(&store, record).await);
                        }
                    }
                    Err(e) => {
                        let e = crate::error_chain(&e);
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Waits until `record` is committed; answers whether its delivery was still its log's
    /// current one (see `hookrelay_core::is_current`).
    pub async fn write(&self, record: AttemptRecord) -> Result<bool, String> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send((record, reply))
            .await
            .map_err(|_| "the attempt writer has stopped".to_owned())?;
        done.await
            .map_err(|_| "the attempt writer has stopped".to_owned())?
    }
}

/// Writes one record; if the database refuses its values, writes it again without the
/// receiver's answer and with the reason instead, so the attempt is still on record.
async fn write_alone(store: &Store, record: AttemptRecord) -> Result<bool, String> {
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
                .map_err(|e| crate::error_chain(&e))
        }
        Err(e) => Err(crate::error_chain(&e)),
    }
}
