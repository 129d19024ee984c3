//! `POST /v1/webhooks/{id}/test`: a `Webhook.test` event, or an example of a catalog type,
//! to one webhook, through the pipeline like any other event, so that it proves the whole
//! path to the endpoint.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hookrelay_core::{ops, EventType, Invalid, LogStatus, WebhookStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ErrorBody;
use crate::extract::{ApiJson, ApiPath};
use crate::state::Example;
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

/// What to send; an empty body sends `Webhook.test`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// Send an event of this catalog type, with the type's `example` as its `data`, instead
    /// of `Webhook.test`: what a receiver gets for that type, to build against. The type
    /// need not be one the webhook subscribes to, and the webhook's filter does not apply.
    #[serde(default)]
    event_type: Option<String>,
}

/// Sends a `Webhook.test` event, or an example of an event type, to this webhook alone,
/// through the normal pipeline.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The webhook's id")),
    request_body(content = Option<TestRequest>, description = "Empty for `Webhook.test`"),
    responses((status = 202, description = "Queued; follow it with GET /v1/logs/{log_id}", body = TestSent),
        (status = 409, description = "The webhook is disabled", body = ErrorBody)))]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<TestRequest>,
) -> Result<(StatusCode, Json<TestSent>), ApiError> {
    let id = parse_id(&id)?;
    let webhook = find_webhook(&state, &caller, id).await?;
    let example = match body.event_type {
        None => None,
        Some(name) => Some(example_of(&state, &name).await?),
    };
    if webhook.status != WebhookStatus::Active {
        // Its queue is not consumed while disabled: the test would only wait there.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "webhook_disabled",
            "the webhook is disabled; enable it to send a test event",
        ));
    }
    let log_id = state.pipeline().send_test(id, example).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TestSent {
            log_id,
            status: LogStatus::Pending,
        }),
    ))
}

/// The event to send as an example of type `name`: a catalog type of the platform's, with an
/// example saved.
async fn example_of(state: &AppState, name: &str) -> Result<Example, ApiError> {
    let invalid = |code: &'static str, message: String| {
        ApiError::invalid("event_type", Invalid::new(code, message))
    };
    let name = EventType::parse(name).map_err(|e| ApiError::invalid("event_type", e))?;
    if ops::is_operational(name.as_str()) {
        return Err(invalid(
            "reserved_event_type",
            format!("`{name}` is hookrelay's own; leave `event_type` out to send `Webhook.test`"),
        ));
    }
    let row = state
        .store()
        .get_event_type(name.as_str())
        .await?
        .ok_or_else(|| {
            invalid(
                "unknown_event_type",
                format!("`{name}` is not in the event type catalog; see GET /v1/event-types"),
            )
        })?;
    let data = row.example.ok_or_else(|| {
        invalid(
            "no_example",
            format!("`{name}` has no example; set one with PATCH /v1/event-types/{name}"),
        )
    })?;
    Ok(Example {
        event_type: row.name,
        data,
    })
}
