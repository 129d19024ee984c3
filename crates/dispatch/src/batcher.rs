//! One task serving many callers in batches: each caller hands it an item and waits; the task
//! takes whatever has gathered, handles it at once (one transaction, one round of confirms,
//! one query), and answers every caller for its own item. Under load the batches grow by
//! themselves; when quiet, an item is handled at once, without a timer.
//!
//! The delivery workers use three: the attempt writer, their publisher (retries and
//! hookrelay's own events), and the lookup of the endpoint health other processes saved. Each
//! is a [`Handler`] and a function that starts it, alike in shape by design: what differs is
//! what `handle` does with a batch.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

/// Why an item was not handled.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// The task is gone (the service is stopping).
    #[error("{0} has stopped")]
    Stopped(&'static str),
    /// The item's own failure, or its whole batch's: shared by every caller it concerns.
    #[error(transparent)]
    Failed(Arc<dyn std::error::Error + Send + Sync>),
}

impl BatchError {
    pub fn failed(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Failed(Arc::new(error))
    }

    /// The results of a batch of `count` items that failed whole, for this reason.
    pub fn for_all<R>(count: usize, error: BatchError) -> Vec<Result<R, BatchError>> {
        (0..count).map(|_| Err(error.clone())).collect()
    }
}

/// What a batcher does with a batch.
pub trait Handler: Send + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;

    /// Handles `items`, answering one result per item, in their order.
    fn handle(
        &mut self,
        items: Vec<Self::Item>,
    ) -> impl std::future::Future<Output = Vec<Result<Self::Output, BatchError>>> + Send;

    /// Called once every handle is gone and the last batch is handled.
    fn close(self) -> impl std::future::Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async {}
    }
}

type Reply<R> = oneshot::Sender<Result<R, BatchError>>;

/// A handle on a batching task; cheap to clone. The task ends once every handle is dropped
/// and what was sent is handled.
pub struct Batcher<T, R> {
    name: &'static str,
    tx: mpsc::Sender<(T, Reply<R>)>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts `handler` on `tracker`, named `name` in errors, with batches of at most
    /// `max_batch` items and at most `queue` items waiting: when the handler is slow,
    /// callers wait rather than pile up.
    pub fn start<H>(
        name: &'static str,
        mut handler: H,
        max_batch: usize,
        queue: usize,
        tracker: &TaskTracker,
    ) -> Self
    where
        H: Handler<Item = T, Output = R>,
    {
        let (tx, mut rx) = mpsc::channel::<(T, Reply<R>)>(queue.max(1));
        let max_batch = max_batch.max(1);
        tracker.spawn(async move {
            let mut buffer = Vec::with_capacity(max_batch);
            while rx.recv_many(&mut buffer, max_batch).await > 0 {
                let (items, replies): (Vec<T>, Vec<Reply<R>>) = buffer.drain(..).unzip();
                let mut results = handler.handle(items).await.into_iter();
                for reply in replies {
                    let result = results
                        .next()
                        .unwrap_or_else(|| Err(BatchError::Failed(Arc::new(Unanswered(name)))));
                    // A caller that stopped waiting (its task was cancelled) has nobody to
                    // tell: its item was handled all the same.
                    let _ = reply.send(result);
                }
            }
            handler.close().await;
        });
        Self { name, tx }
    }

    /// Hands `item` over and waits for its result.
    pub async fn call(&self, item: T) -> Result<R, BatchError> {
        self.submit(item).await?.answer().await
    }

    /// Hands `item` over, waiting only for room in the queue: what is handed over is handled
    /// even if nobody waits for its answer.
    pub async fn submit(&self, item: T) -> Result<Submitted<R>, BatchError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((item, reply))
            .await
            .map_err(|_| BatchError::Stopped(self.name))?;
        Ok(Submitted {
            name: self.name,
            answer,
        })
    }
}

/// An item handed over to a batcher, its answer still to come.
pub struct Submitted<R> {
    name: &'static str,
    answer: oneshot::Receiver<Result<R, BatchError>>,
}

impl<R> Submitted<R> {
    pub async fn answer(self) -> Result<R, BatchError> {
        self.answer
            .await
            .map_err(|_| BatchError::Stopped(self.name))?
    }
}

/// A handler that answered fewer results than it was given items: a bug, reported to the
/// callers it left out rather than leaving them waiting.
#[derive(Debug, thiserror::Error)]
#[error("{0} gave no answer for this item")]
struct Unanswered(&'static str);

#[cfg(test)]
mod tests {
    use super::*;

    /// Doubles numbers, refuses odd ones, and notes the size of each batch.
    struct Doubler(Arc<std::sync::Mutex<Vec<usize>>>);

    #[derive(Debug, thiserror::Error)]
    #[error("odd")]
    struct Odd;

    impl Handler for Doubler {
        type Item = u32;
        type Output = u32;

        async fn handle(&mut self, items: Vec<u32>) -> Vec<Result<u32, BatchError>> {
            self.0.lock().unwrap().push(items.len());
            items
                .into_iter()
                .map(|n| match n % 2 {
                    0 => Ok(n * 2),
                    _ => Err(BatchError::failed(Odd)),
                })
                .collect()
        }
    }

    #[tokio::test]
    async fn each_caller_gets_the_answer_for_its_own_item() {
        let tracker = TaskTracker::new();
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let batcher = Batcher::start("doubler", Doubler(sizes.clone()), 3, 16, &tracker);
        let calls: Vec<_> = (0..20u32)
            .map(|n| {
                let batcher = batcher.clone();
                tokio::spawn(async move { (n, batcher.call(n).await) })
            })
            .collect();
        for call in calls {
            match call.await.unwrap() {
                (n, Ok(doubled)) => assert_eq!(doubled, n * 2),
                (n, Err(BatchError::Failed(e))) => {
                    assert_eq!(n % 2, 1);
                    assert_eq!(e.to_string(), "odd");
                }
                (n, Err(other)) => panic!("{n}: {other:?}"),
            }
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert!(sizes.iter().all(|s| (1..=3).contains(s)), "{sizes:?}");
        drop(batcher);
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test]
    async fn a_batcher_whose_task_is_gone_says_so() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let stopped: Batcher<u32, u32> = Batcher {
            name: "doubler",
            tx,
        };
        match stopped.call(2).await {
            Err(BatchError::Stopped("doubler")) => {}
            other => panic!("{other:?}"),
        }
    }
}
