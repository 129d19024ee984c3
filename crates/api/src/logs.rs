//! The Webhook Logs routes. For now, queueing deliveries again: one log, or the failed logs
//! of a window. (Reading the logs comes with the logs API.)

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use hookrelay_core::{EventType, Invalid};
use hookrelay_store::RequeueFilter;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath};
use crate::webhooks::{parse_account, window, Requeued};
use crate::{ApiError, AppState};

fn log_not_found() -> ApiError {
    ApiError::not_found("no such log")
}

/// A log whose delivery was queued again.
#[derive(Serialize)]
pub struct Retried {
    id: Uuid,
    status: &'static str,
}

/// `POST /v1/logs/{id}/retry`: one more attempt of a log, whatever its status, with the same
/// body and `webhook-id`. The log goes `pending` until the attempt is recorded; a failure of
/// this attempt is final (no new retry schedule).
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<Retried>), ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| log_not_found())?;
    let queued = state
        .pipeline()
        .retry_log(id, caller.scope().map(str::to_owned))
        .await?;
    if !queued {
        return Err(log_not_found());
    }
    tracing::info!(log_id = %id, "log queued again");
    Ok((
        StatusCode::ACCEPTED,
        Json(Retried {
            id,
            status: "pending",
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRetry {
    account_id: Option<String>,
    webhook_id: Option<String>,
    event_type: Option<String>,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
}

/// `POST /v1/logs/retry {account_id?, webhook_id?, event_type?, since, until?}`: queues
/// again, paced, every `failed` log that matches, and answers how many. An account key is
/// limited to its own account; the admin token without `account_id` reaches every account.
pub async fn retry_bulk(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<BulkRetry>,
) -> Result<(StatusCode, Json<Requeued>), ApiError> {
    let (since, until) = window(body.since, body.until)?;
    let account_id = match body.account_id.as_deref() {
        Some(raw) => Some(parse_account(&caller, raw)?.as_str().to_owned()),
        None => caller.scope().map(str::to_owned),
    };
    let webhook_id = match body.webhook_id.as_deref() {
        None => None,
        Some(raw) => {
            let not_found =
                || ApiError::invalid("webhook_id", Invalid::new("not_found", "no such webhook"));
            let id = Uuid::parse_str(raw).map_err(|_| not_found())?;
            state
                .store()
                .get_webhook(id, caller.scope())
                .await?
                .ok_or_else(not_found)?;
            Some(id)
        }
    };
    let event_type = body
        .event_type
        .as_deref()
        .map(EventType::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("event_type", e))?
        .map(|t| t.as_str().to_owned());
    let count = state
        .pipeline()
        .requeue(RequeueFilter {
            account_id,
            webhook_id,
            event_type,
            since: Some(since),
            until,
            ..Default::default()
        })
        .await?;
    tracing::info!(count, "bulk retry of failed deliveries");
    Ok((StatusCode::ACCEPTED, Json(Requeued { count })))
}
