//! The API's view of the pipeline (`hookrelay_api::Pipeline`), implemented over the
//! dispatcher: the one place where the two meet, so neither crate depends on the other.

use futures::future::BoxFuture;
use hookrelay_api::{Pipeline, PipelineError};
use hookrelay_broker::Broker;
use hookrelay_dispatch::{Dispatcher, RecoverError};
use hookrelay_store::RequeueFilter;
use uuid::Uuid;

pub struct DispatchPipeline {
    pub dispatcher: Dispatcher,
    pub broker: Broker,
}

fn api_error(err: RecoverError) -> PipelineError {
    match err {
        RecoverError::Store(e) => PipelineError::Store(e),
        RecoverError::WebhookGone => PipelineError::Conflict(err.to_string()),
        RecoverError::BrokerDown | RecoverError::Publish(_) => {
            // The broker's or the database's own words go to the log, not to the client.
            tracing::warn!(error = %hookrelay_core::error_chain(&err), "cannot queue deliveries again");
            PipelineError::Unavailable(err.to_string())
        }
    }
}

impl Pipeline for DispatchPipeline {
    fn broker_ready(&self) -> bool {
        self.broker.is_connected()
    }

    fn webhook_changed(&self, id: Uuid) -> BoxFuture<'_, ()> {
        Box::pin(self.dispatcher.webhook_changed(id))
    }

    fn retry_log(
        &self,
        id: Uuid,
        account: Option<String>,
    ) -> BoxFuture<'_, Result<bool, PipelineError>> {
        Box::pin(async move {
            self.dispatcher
                .recovery()
                .retry_log(id, account)
                .await
                .map_err(api_error)
        })
    }

    fn requeue(&self, filter: RequeueFilter) -> BoxFuture<'_, Result<i64, PipelineError>> {
        Box::pin(async move {
            self.dispatcher
                .recovery()
                .requeue(filter)
                .await
                .map_err(api_error)
        })
    }

    fn send_test(&self, id: Uuid) -> BoxFuture<'_, Result<Uuid, PipelineError>> {
        Box::pin(async move {
            self.dispatcher
                .recovery()
                .send_test(id)
                .await
                .map_err(api_error)
        })
    }
}
