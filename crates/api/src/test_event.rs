//! `POST /v1/webhooks/{id}/test`: a `Webhook.test` event to one webhook, through the
//! pipeline like any other event, so that it proves the whole path to the endpoint.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hookrelay_core::{LogStatus, WebhookStatus};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ErrorBody;
use crate::extract::ApiPath;
use crate::webhooks::{find_webhook, parse_id};
use crate::{ApiError, AppState};

#[derive(Serialize, ToSchema)]
pub struct TestSent {
    /// The log its delivery is written to (`GET /v1/logs/{log_id}`), a moment after this
    /// answer.
    log_id: Uuid,
    /// `pending`.
    #[schema(value_type = String, example = "pending")]
    status: LogStatus,
}

/// Sends a `Webhook.test` event to this webhook alone, through the normal pipeline.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The webhook's id")),
    responses((status = 202, description = "Queued; follow it with GET /v1/logs/{log_id}", body = TestSent),
        (status = 409, description = "The webhook is disabled", body = ErrorBody)))]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<TestSent>), ApiError> {
    let id = parse_id(&id)?;
    let webhook = find_webhook(&state, &caller, id).await?;
    if webhook.status != WebhookStatus::Active {
        // Its queue is not consumed while disabled: the test would only wait there.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "webhook_disabled",
            "the webhook is disabled; enable it to send a test event",
        ));
    }
    let log_id = state.pipeline().send_test(id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TestSent {
            log_id,
            status: LogStatus::Pending,
        }),
    ))
}
