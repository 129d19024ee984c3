//! The API's view of the pipeline (`hookrelay_api::Pipeline`), implemented over the
//! dispatcher: the one place where the two meet, so neither crate depends on the other.

use futures::future::BoxFuture;
use hookrelay_api::{Pipeline, PipelineError};
use hookrelay_broker::Broker;
use hookrelay_dispatch::{Dispatcher, RequestError};
use hookrelay_store::{RequeueFilter, WebhookRow};
use uuid::Uuid;

pub struct DispatchPipeline {
    pub dispatcher: Dispatcher,
    pub broker: Broker,
}

fn api_error(err: RequestError) -> PipelineError {
    match err {
        RequestError::Store(e) => PipelineError::Store(e),
        RequestError::WebhookGone => PipelineError::Conflict(err.to_string()),
        RequestError::BrokerDown | RequestError::Publish(_) => {
            // The broker's or the database's own words go to the log, not to the client.
            tracing::warn!(error = %hookrelay_core::error_chain(&err), "cannot queue deliveries again");
            PipelineError::Unavailable(err.to_string())
        }
        RequestError::Encode(_) => PipelineError::Internal(hookrelay_core::error_chain(&err)),
    }
}

impl Pipeline for DispatchPipeline {
    fn broker_ready(&self) -> bool {
        self.broker.is_connected()
    }

    fn webhook_written(&self, row: WebhookRow) -> BoxFuture<'_, ()> {
        Box::pin(self.dispatcher.webhook_written(row))
    }

    fn webhook_deleted(&self, id: Uuid) -> BoxFuture<'_, ()> {
        Box::pin(self.dispatcher.webhook_deleted(id))
    }

    fn retry_log(
        &self,
        id: Uuid,
        account: Option<String>,
    ) -> BoxFuture<'_, Result<bool, PipelineError>> {
        Box::pin(async move {
            self.dispatcher
                .retry_log(id, account)
                .await
                .map_err(api_error)
        })
    }

    fn requeue(&self, filter: RequeueFilter) -> BoxFuture<'_, Result<i64, PipelineError>> {
        Box::pin(async move { self.dispatcher.requeue(filter).await.map_err(api_error) })
    }

    fn replay(&self, replay: hookrelay_store::Replay) -> BoxFuture<'_, Result<i64, PipelineError>> {
        Box::pin(async move { self.dispatcher.replay(replay).await.map_err(api_error) })
    }

    fn prepare_fifo(&self) -> BoxFuture<'_, Result<(), PipelineError>> {
        Box::pin(async move { self.dispatcher.prepare_fifo().await.map_err(api_error) })
    }

    fn skip(
        &self,
        id: Uuid,
        account: Option<String>,
    ) -> BoxFuture<'_, Result<Option<Uuid>, PipelineError>> {
        Box::pin(async move {
            self.dispatcher
                .skip(id, account.as_deref())
                .await
                .map_err(api_error)
        })
    }

    fn send_test(
        &self,
        id: Uuid,
        example: Option<hookrelay_api::Example>,
    ) -> BoxFuture<'_, Result<Uuid, PipelineError>> {
        let example = example.map(|e| hookrelay_dispatch::Example {
            event_type: e.event_type,
            data: e.data,
        });
        Box::pin(async move {
            self.dispatcher
                .send_test(id, example)
                .await
                .map_err(api_error)
        })
    }
}
