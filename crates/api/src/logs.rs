//! The Webhook Logs routes: the filtered list, one log with its attempts, and queueing
//! deliveries again (one log, or the failed logs of a window).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use hookrelay_core::LogStatus;
use hookrelay_core::{AccountId, EventType, Invalid};
use hookrelay_store::{AttemptRow, Cursor, LogDetail, LogFilter, LogRow, RequeueFilter};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{Caller, ListScope};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::pagination::{page_params, ListBody};
use crate::webhooks::{check_time, parse_account, window, Requeued};
use crate::{ApiError, AppState};

/// What a log shows in the list and alone, but for `attempts` (a count in the list, the
/// attempts themselves alone).
#[derive(Serialize, ToSchema)]
pub struct LogFields {
    id: Uuid,
    webhook_id: Uuid,
    account_id: String,
    event_id: String,
    event_type: String,
    /// `pending`, `retrying`, `succeeded` or `failed`.
    #[schema(value_type = String, example = "succeeded")]
    status: LogStatus,
    response_status: Option<u16>,
    error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    next_attempt_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    /// The W3C `traceparent` the event came with, if any.
    traceparent: Option<String>,
}

/// A log as the list shows it: everything but the payload and the answer's body.
#[derive(Serialize, ToSchema)]
pub struct LogView {
    #[serde(flatten)]
    fields: LogFields,
    /// How many attempts were made.
    attempts: u32,
}

impl From<LogRow> for LogFields {
    fn from(row: LogRow) -> Self {
        Self {
            id: row.id,
            webhook_id: row.webhook_id,
            account_id: row.account_id,
            event_id: row.event_id,
            event_type: row.event_type,
            status: row.status,
            response_status: row.response_status,
            error: row.error,
            created_at: row.created_at,
            updated_at: row.updated_at,
            next_attempt_at: row.next_attempt_at,
            delivered_at: row.delivered_at,
            traceparent: row.traceparent,
        }
    }
}

impl From<LogRow> for LogView {
    fn from(row: LogRow) -> Self {
        Self {
            attempts: row.attempts,
            fields: row.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    attempt: u32,
    started_at: DateTime<Utc>,
    duration_ms: u32,
    response_status: Option<u16>,
    response_body: Option<String>,
    error: Option<String>,
}

impl From<AttemptRow> for AttemptView {
    fn from(row: AttemptRow) -> Self {
        Self {
            attempt: row.attempt,
            started_at: row.started_at,
            duration_ms: row.duration_ms,
            response_status: row.response_status,
            response_body: row.response_body,
            error: row.error,
        }
    }
}

/// One log whole: the body sent (as JSON, not a string of it), the last answer's body, and
/// its latest attempts (100 at most) in order.
#[derive(Serialize, ToSchema)]
pub struct LogDetailView {
    #[serde(flatten)]
    log: LogFields,
    /// The body sent, byte for byte. Null once its event is retired while the log lives on
    /// (a log made by a replay outlives the event it replayed).
    #[schema(value_type = Option<Object>)]
    payload: Option<Box<RawValue>>,
    response_body: Option<String>,
    /// The latest attempts, 100 at most, oldest first.
    attempts: Vec<AttemptView>,
    /// Every attempt on record.
    attempts_total: u64,
    /// When older attempts are not shown: pass as `cursor` to
    /// `GET /v1/logs/{id}/attempts` for them. Null when every attempt is shown.
    older_attempts_cursor: Option<String>,
}

impl TryFrom<LogDetail> for LogDetailView {
    type Error = ApiError;

    fn try_from(detail: LogDetail) -> Result<Self, ApiError> {
        // The body stored is the JSON the fan-out built; should it not be, that is ours to
        // fix, not the caller's.
        let payload = detail
            .payload
            .map(RawValue::from_string)
            .transpose()
            .map_err(|e| {
                tracing::error!(log_id = %detail.log.id, error = %e, "a stored payload is not JSON");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            })?;
        Ok(Self {
            log: detail.log.into(),
            payload,
            response_body: detail.response_body,
            attempts: detail.attempts.into_iter().map(AttemptView::from).collect(),
            attempts_total: detail.attempts_total,
            older_attempts_cursor: detail.older_attempts.as_ref().map(Cursor::encode),
        })
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    webhook_id: Option<String>,
    account_id: Option<String>,
    /// `pending`, `retrying`, `succeeded` or `failed`.
    status: Option<String>,
    event_type: Option<String>,
    event_id: Option<String>,
    /// Created at or after (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// At most this many items (1 to 500; 50 if absent).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

/// The Webhook Logs: one per event and webhook, newest first.
///
/// `GET /v1/logs?webhook_id=&account_id=&status=&event_type=&event_id=&since=&until=`: the
/// Webhook Logs, newest first. An account key sees its own account's logs only.
#[utoipa::path(get, path = "/v1/logs", tag = "logs", params(ListQuery),
    responses((status = 200, description = "A page of logs", body = ListBody<LogView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ListBody<LogView>>, ApiError> {
    let (limit, cursor) = page_params(q.limit, q.cursor.as_deref())?;
    let invalid = |field: &str, code: &'static str, message: String| {
        ApiError::invalid(field, Invalid::new(code, message))
    };
    let webhook_id = q
        .webhook_id
        .as_deref()
        .map(|raw| {
            Uuid::parse_str(raw).map_err(|_| {
                invalid(
                    "webhook_id",
                    "invalid_id",
                    "webhook_id is not a UUID".into(),
                )
            })
        })
        .transpose()?;
    let status = q
        .status
        .as_deref()
        .map(|raw| {
            LogStatus::parse(raw).ok_or_else(|| {
                invalid(
                    "status",
                    "invalid_status",
                    "status is one of pending, retrying, succeeded, failed".into(),
                )
            })
        })
        .transpose()?;
    let event_type = event_type_filter(q.event_type.as_deref())?;
    let event_id = q
        .event_id
        .map(|id| {
            hookrelay_core::check_event_id(&id)
                .map(|()| id)
                .map_err(|e| ApiError::invalid("event_id", e))
        })
        .transpose()?;
    let (since, until) = match (q.since, q.until) {
        (Some(since), until) => {
            let (since, until) = window(since, until)?;
            (Some(since), until)
        }
        (None, until) => (None, until.map(|u| check_time("until", u)).transpose()?),
    };
    let asked = q
        .account_id
        .as_deref()
        .map(AccountId::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("account_id", e))?
        .map(|a| a.as_str().to_owned());
    let account_id = match caller.list_scope(asked) {
        ListScope::Account(account) => account,
        ListScope::Nothing => {
            return Ok(Json(ListBody {
                items: Vec::new(),
                next_cursor: None,
            }))
        }
    };
    let filter = LogFilter {
        account_id,
        webhook_id,
        status,
        event_type,
        event_id,
        since,
        until,
    };
    let page = state
        .store()
        .list_logs(&filter, cursor.as_ref(), limit)
        .await?;
    Ok(Json(ListBody::from_page(
        page,
        LogRow::cursor,
        LogView::from,
    )))
}

/// One log, with the body sent and every attempt.
///
/// `GET /v1/logs/{id}`: one log with its payload, last answer and attempts. Another
/// account's log answers 404, as a log that does not exist.
#[utoipa::path(get, path = "/v1/logs/{id}", tag = "logs", params(("id" = Uuid, Path, description = "The log's id")),
    responses((status = 200, description = "The log", body = LogDetailView)))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<LogDetailView>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| log_not_found())?;
    let detail = state
        .store()
        .get_log(id, caller.scope())
        .await?
        .ok_or_else(log_not_found)?;
    Ok(Json(detail.try_into()?))
}

/// The body a log's receiver got, byte for byte.
///
/// `GET /v1/logs/{id}/payload`: the exact bytes sent (and signed), for checking a signature
/// or replaying a request by hand; `GET /v1/logs/{id}` holds the same JSON within its own.
/// A log that outlived its event (a replay's log may) answers 404 `payload_gone`; another
/// account's log answers 404, as a log that does not exist.
#[utoipa::path(get, path = "/v1/logs/{id}/payload", tag = "logs", params(("id" = Uuid, Path, description = "The log's id")),
    responses((status = 200, description = "The body sent, byte for byte", content_type = "application/json", body = Object)))]
pub async fn payload(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| log_not_found())?;
    let body = state
        .store()
        .get_log_payload(id, caller.scope())
        .await?
        .ok_or_else(log_not_found)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "payload_gone",
                "this log's event is no longer stored",
            )
        })?;
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AttemptsQuery {
    /// Attempts per page, 1 to 500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the page before, or a log's `older_attempts_cursor`.
    cursor: Option<String>,
}

/// A log's attempts, newest first, a page at a time.
///
/// `GET /v1/logs/{id}/attempts?limit=&cursor=`: every attempt of a log, for one with more
/// than its answer shows. Another account's log answers 404.
#[utoipa::path(get, path = "/v1/logs/{id}/attempts", tag = "logs",
    params(("id" = Uuid, Path, description = "The log's id"), AttemptsQuery),
    responses((status = 200, description = "A page of attempts, newest first", body = ListBody<AttemptView>)))]
pub async fn attempts(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<AttemptsQuery>,
) -> Result<Json<ListBody<AttemptView>>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| log_not_found())?;
    let (limit, cursor) = page_params(q.limit, q.cursor.as_deref())?;
    let page = state
        .store()
        .list_attempts(id, caller.scope(), cursor.as_ref(), limit)
        .await?
        .ok_or_else(log_not_found)?;
    Ok(Json(ListBody::from_page(
        page,
        AttemptRow::cursor,
        AttemptView::from,
    )))
}

/// An `event_type` filter, checked as a name (it need not be in the catalog: a type removed
/// since still has logs).
fn event_type_filter(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    Ok(raw
        .map(EventType::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("event_type", e))?
        .map(|t| t.as_str().to_owned()))
}

fn log_not_found() -> ApiError {
    ApiError::not_found("no such log")
}

/// A log whose delivery was queued again.
#[derive(Serialize, ToSchema)]
pub struct Retried {
    id: Uuid,
    /// `pending`.
    #[schema(value_type = String, example = "pending")]
    status: LogStatus,
}

/// Queues one more delivery of a log, whatever its status.
///
/// `POST /v1/logs/{id}/retry`: one more attempt of a log, whatever its status, with the same
/// body and `webhook-id`. The log goes `pending` until the attempt is recorded; a failure of
/// this attempt is final (no new retry schedule).
#[utoipa::path(post, path = "/v1/logs/{id}/retry", tag = "logs", params(("id" = Uuid, Path, description = "The log's id")),
    responses((status = 202, description = "Queued", body = Retried)))]
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
            status: LogStatus::Pending,
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRetry {
    account_id: Option<String>,
    webhook_id: Option<String>,
    event_type: Option<String>,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
}

/// Queues again every `failed` log that matches, paced.
///
/// `POST /v1/logs/retry {account_id?, webhook_id?, event_type?, since, until?}`: queues
/// again, paced, every `failed` log that matches, and answers how many. An account key is
/// limited to its own account; the admin token without `account_id` reaches every account.
#[utoipa::path(post, path = "/v1/logs/retry", tag = "logs", request_body = BulkRetry,
    responses((status = 202, description = "Queued", body = Requeued)))]
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
    let event_type = event_type_filter(body.event_type.as_deref())?;
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
