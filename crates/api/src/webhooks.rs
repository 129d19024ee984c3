use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use hookrelay_core::{
    net, AccountId, BreakerState, Description, EndpointHealth, EventList, Filter, HeaderSet,
    Invalid, Ordering, Secret, WebhookStatus, WebhookUrl, MAX_RATE_LIMIT,
};
use hookrelay_store::{NewWebhook, WebhookFilter, WebhookPatch, WebhookRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{Caller, ListScope};
use crate::extract::{double_option, ApiJson, ApiPath, ApiQuery};
use crate::pagination::{page_params, ListBody};
use crate::{ApiError, AppState};

const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// What a custom header's value is shown as: users put credentials in them, so a value is
/// answered only to the admin token that asks for it (`?reveal=headers`). Sent back as it is
/// in a change, it keeps the value stored.
pub const MASKED: &str = "********";

/// A webhook as the API shows it: never its secret, only whether it has one; its custom
/// headers' values masked unless revealed.
///
/// `health` is `healthy`; `paused` while its circuit breaker holds its deliveries back until
/// `paused_until`; then `probing` until one delivery (the probe) has gone out: its success
/// resumes the queue, its failure pauses it again, for longer. `failing_since` is when its
/// current run of failed attempts began: `disable_after` later, it is disabled.
#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    id: Uuid,
    account_id: String,
    url: String,
    has_secret: bool,
    /// Sent with every delivery, as given; each value answered as `********` unless the admin
    /// token asks for them (`GET /v1/webhooks/{id}?reveal=headers`).
    headers: BTreeMap<String, String>,
    events: Vec<String>,
    /// `active` or `disabled`.
    #[schema(value_type = String, example = "active")]
    status: WebhookStatus,
    disabled_reason: Option<String>,
    description: Option<String>,
    /// Which events of its types it receives (null: all), as saved.
    #[schema(value_type = Option<Object>, example = json!({"data.status": {"$in": ["read", "delivered"]}}))]
    filter: Option<serde_json::Value>,
    /// Requests a second at most, over any sliding second, retries included; null: none.
    rate_limit: Option<u32>,
    /// Requests at once at most; null: the service's `max_in_flight_per_webhook`.
    max_in_flight: Option<u16>,
    /// `unordered`, or `fifo`: one delivery at a time, in the order the events were
    /// published, a failing one holding the line.
    #[schema(value_type = String, example = "unordered")]
    ordering: Ordering,
    /// `healthy`, `paused` or `probing`.
    #[schema(value_type = String, example = "healthy")]
    health: BreakerState,
    paused_until: Option<DateTime<Utc>>,
    failing_since: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<WebhookRow> for WebhookView {
    fn from(row: WebhookRow) -> Self {
        let saved = &row.health;
        let health = EndpointHealth::restore(
            saved.consecutive_failures,
            saved.trips,
            saved.failing_since,
            saved.paused_until,
            Utc::now(),
        );
        Self {
            id: row.id,
            account_id: row.account_id,
            url: row.url,
            has_secret: row.secret.is_some(),
            headers: row
                .headers
                .into_keys()
                .map(|name| (name, MASKED.to_owned()))
                .collect(),
            events: row.events,
            status: row.status,
            disabled_reason: row.disabled_reason,
            description: row.description,
            filter: row.filter,
            rate_limit: row.rate_limit,
            max_in_flight: row.max_in_flight,
            ordering: row.ordering,
            health: health.state,
            paused_until: health.paused_until,
            failing_since: row.health.failing_since,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Required with the admin token; an API key's own account otherwise.
    #[schema(min_length = 1, max_length = 128)]
    account_id: Option<String>,
    /// `https://` (or `http://`), a public address unless allow_private_networks is set.
    #[schema(
        example = "https://example.com/hooks",
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://"
    )]
    url: String,
    /// Signs every delivery: `whsec_<base64>` or plain text, at least 24 bytes of key.
    secret: Option<String>,
    /// Custom headers sent with every delivery (hop-by-hop, `proxy-*` and the signature
    /// headers are refused).
    headers: Option<BTreeMap<String, String>>,
    /// Event types from the catalog (`GET /v1/event-types`), at least one.
    #[schema(example = json!(["Contact.created"]), min_items = 1)]
    events: Vec<String>,
    description: Option<String>,
    /// Delivers only the events whose body (as sent) passes: MongoDB-style operators
    /// (`$eq $neq $gt $gte $lt $lte $in $nin $exist $regex $and $or $not`) over dotted paths; a
    /// plain value means `$eq`. Checked when saved: a bad one answers 422 `invalid_filter`.
    #[schema(value_type = Option<Object>, example = json!({"data.status": {"$in": ["read", "delivered"]}, "data.amount": {"$gte": 100}}))]
    filter: Option<serde_json::Value>,
    /// At most this many requests to its URL in any sliding second, retries included, however
    /// many processes run (1 to 10 000); deliveries over it wait in the broker.
    #[schema(minimum = 1, maximum = 10000)]
    rate_limit: Option<i64>,
    /// At most this many requests at once (1 to the service's `max_in_flight_per_account`),
    /// instead of its `max_in_flight_per_webhook`.
    #[schema(minimum = 1)]
    max_in_flight: Option<i64>,
    /// `unordered` (the default) or `fifo`: deliveries one at a time, in the order the
    /// account's events were published; a failing one is retried at the head of the line and
    /// the next waits (`POST /v1/webhooks/{id}/skip` moves the line on).
    #[schema(example = "unordered")]
    ordering: Option<String>,
}

/// Creates a webhook.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, description = "Created", body = WebhookView)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    let account_id = match (&caller, body.account_id) {
        (Caller::Admin, None) => {
            return Err(ApiError::invalid(
                "account_id",
                Invalid::new("required", "account_id is required with the admin token"),
            ))
        }
        (_, Some(raw)) => parse_account(&caller, &raw)?,
        (Caller::Account(own) | Caller::Portal(own, _), None) => {
            AccountId::parse(own).map_err(|e| ApiError::invalid("account_id", e))?
        }
    };
    let url = parse_url(&state, &body.url).await?;
    let secret = body.secret.as_deref().map(parse_secret).transpose()?;
    let headers = parse_headers(body.headers.unwrap_or_default())?;
    let events = parse_events(&state, &body.events).await?;
    let description = body
        .description
        .as_deref()
        .map(parse_description)
        .transpose()?;
    let filter = body.filter.as_ref().and_then(parse_filter).transpose()?;
    let rate_limit = body.rate_limit.map(parse_rate_limit).transpose()?;
    let max_in_flight = body
        .max_in_flight
        .map(|n| parse_max_in_flight(&state, n))
        .transpose()?;
    let ordering = body
        .ordering
        .as_deref()
        .map(parse_ordering)
        .transpose()?
        .unwrap_or_default();
    if ordering.is_fifo() {
        state.pipeline().prepare_fifo().await?;
    }
    let row = state
        .store()
        .insert_webhook(
            &NewWebhook {
                account_id,
                url,
                secret,
                headers,
                events,
                description,
                filter,
                rate_limit,
                max_in_flight,
                ordering,
            },
            state.inner.max_webhooks_per_account,
        )
        .await?;
    state.pipeline().webhook_written(row.clone()).await;
    tracing::info!(webhook_id = %row.id, account_id = %row.account_id, "webhook created");
    Ok((StatusCode::CREATED, Json(row.into())))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this account's webhooks (an API key sees only its own account's anyway).
    account_id: Option<String>,
    /// `active` or `disabled`.
    status: Option<String>,
    /// At most this many items (1 to 500; 50 if absent).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

/// The webhooks, newest first.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(ListQuery),
    responses((status = 200, description = "A page of webhooks", body = ListBody<WebhookView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ListBody<WebhookView>>, ApiError> {
    let (limit, cursor) = page_params(q.limit, q.cursor.as_deref())?;
    let status = q
        .status
        .as_deref()
        .map(WebhookStatus::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("status", e))?;
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
    let filter = WebhookFilter { account_id, status };
    let page = state
        .store()
        .list_webhooks(&filter, cursor.as_ref(), limit)
        .await?;
    Ok(Json(ListBody::from_page(
        page,
        WebhookRow::cursor,
        WebhookView::from,
    )))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// `headers`: answer the custom headers' values (admin token only).
    reveal: Option<String>,
}

/// One webhook.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The webhook's id"), ReadQuery),
    responses((status = 200, description = "The webhook", body = WebhookView)))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReadQuery>,
) -> Result<Json<WebhookView>, ApiError> {
    let id = parse_id(&id)?;
    let reveal = match q.reveal.as_deref() {
        None => false,
        Some("headers") => {
            caller.require_admin()?;
            true
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "reveal",
                Invalid::new("invalid_value", "reveal takes `headers`"),
            ))
        }
    };
    let row = find_webhook(&state, &caller, id).await?;
    let headers = match reveal {
        true => Some(state.store().open_headers(&row)?),
        false => None,
    };
    let mut view = WebhookView::from(row);
    if let Some(headers) = headers {
        view.headers = headers;
    }
    Ok(Json(view))
}

/// Only the fields given change. `secret`, `headers`, `description` and `filter` take null to
/// clear them; the others cannot be null.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = String, required = false)]
    account_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = String, required = false)]
    url: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, required = false)]
    secret: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<BTreeMap<String, String>>, required = false)]
    headers: Option<Option<BTreeMap<String, String>>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Vec<String>, required = false)]
    events: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, required = false)]
    description: Option<Option<String>>,
    /// Applies to the events fanned out after the change; null removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Object>, required = false)]
    filter: Option<Option<serde_json::Value>>,
    /// Null removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>, required = false)]
    rate_limit: Option<Option<i64>>,
    /// Null goes back to the service's `max_in_flight_per_webhook`.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>, required = false)]
    max_in_flight: Option<Option<i64>>,
    /// `unordered` or `fifo`; applies to the events fanned out after the change.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = String, required = false)]
    ordering: Option<Option<String>>,
    /// `active` or `disabled`.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = String, required = false)]
    status: Option<Option<String>>,
}

/// Headers given back masked (as answered) keep the value stored under their name: the
/// console, or a script, can send back a webhook as it was answered without losing its
/// headers. Reads the webhook only when a value is masked.
async fn keep_masked(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    mut given: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ApiError> {
    if !given.values().any(|v| v == MASKED) {
        return Ok(given);
    }
    let row = find_webhook(state, caller, id).await?;
    // Header names are case-insensitive: `x-api-key` sent back keeps `X-Api-Key`'s value.
    let stored: BTreeMap<String, String> = state
        .store()
        .open_headers(&row)?
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect();
    for (name, value) in given.iter_mut() {
        if value == MASKED {
            if let Some(kept) = stored.get(&name.to_ascii_lowercase()) {
                value.clone_from(kept);
            }
        }
    }
    Ok(given)
}

/// A PATCH may leave a required field out, but not set it to `null`.
fn not_null<T>(field: &str, value: Option<Option<T>>) -> Result<Option<T>, ApiError> {
    match value {
        Some(None) => Err(ApiError::invalid(
            field,
            Invalid::new(
                "required",
                format!("{field} cannot be null; leave it out to keep it"),
            ),
        )),
        Some(Some(v)) => Ok(Some(v)),
        None => Ok(None),
    }
}

/// Changes a webhook.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path, description = "The webhook's id")), request_body = UpdateWebhook,
    responses((status = 200, description = "The webhook as changed", body = WebhookView)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> Result<Json<WebhookView>, ApiError> {
    let id = parse_id(&id)?;
    let mut patch = WebhookPatch {
        account_id: not_null("account_id", body.account_id)?
            .map(|a| parse_account(&caller, &a))
            .transpose()?,
        ..Default::default()
    };
    if let Some(raw) = not_null("url", body.url)? {
        patch.url = Some(parse_url(&state, &raw).await?);
    }
    patch.secret = body
        .secret
        .map(|s| s.as_deref().map(parse_secret).transpose())
        .transpose()?;
    patch.headers = match body.headers {
        None => None,
        Some(given) => {
            let given = keep_masked(&state, &caller, id, given.unwrap_or_default()).await?;
            Some(parse_headers(given)?)
        }
    };
    if let Some(raw) = not_null("events", body.events)? {
        patch.events = Some(parse_events(&state, &raw).await?);
    }
    patch.description = body
        .description
        .map(|d| d.as_deref().map(parse_description).transpose())
        .transpose()?;
    patch.filter = body
        .filter
        .map(|f| f.as_ref().and_then(parse_filter).transpose())
        .transpose()?;
    patch.rate_limit = body
        .rate_limit
        .map(|n| n.map(parse_rate_limit).transpose())
        .transpose()?;
    patch.max_in_flight = body
        .max_in_flight
        .map(|n| n.map(|n| parse_max_in_flight(&state, n)).transpose())
        .transpose()?;
    patch.ordering = not_null("ordering", body.ordering)?
        .as_deref()
        .map(parse_ordering)
        .transpose()?;
    if patch.ordering.is_some_and(Ordering::is_fifo) {
        state.pipeline().prepare_fifo().await?;
    }
    patch.status = not_null("status", body.status)?
        .as_deref()
        .map(WebhookStatus::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("status", e))?;
    apply(&state, &caller, id, &patch).await
}

/// Deletes a webhook; its queued deliveries end `failed`.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path, description = "The webhook's id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    if state.store().delete_webhook(id, caller.scope()).await? {
        state.pipeline().webhook_deleted(id).await;
        tracing::info!(webhook_id = %id, "webhook deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(webhook_not_found())
    }
}

/// Enables a webhook and clears `disabled_reason`; its waiting deliveries go out.
#[utoipa::path(post, path = "/v1/webhooks/{id}/enable", tag = "webhooks", params(("id" = Uuid, Path, description = "The webhook's id")),
    responses((status = 200, description = "The webhook, active", body = WebhookView)))]
pub async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WebhookView>, ApiError> {
    let id = parse_id(&id)?;
    let patch = WebhookPatch {
        status: Some(WebhookStatus::Active),
        ..Default::default()
    };
    apply(&state, &caller, id, &patch).await
}

const MAX_REASON_CHARS: usize = 500;

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableWebhook {
    /// Shown as `disabled_reason`; at most 500 characters.
    reason: Option<String>,
}

/// Disables a webhook: deliveries wait in its queue until it is enabled.
///
/// Takes an optional body `{"reason": "..."}`, kept as `disabled_reason`.
#[utoipa::path(post, path = "/v1/webhooks/{id}/disable", tag = "webhooks", params(("id" = Uuid, Path, description = "The webhook's id")), request_body = Option<DisableWebhook>,
    responses((status = 200, description = "The webhook, disabled", body = WebhookView)))]
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<DisableWebhook>,
) -> Result<Json<WebhookView>, ApiError> {
    let id = parse_id(&id)?;
    let reason = match body.reason {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => {
            return Err(ApiError::invalid(
                "reason",
                Invalid::new(
                    "too_long",
                    format!("a reason is at most {MAX_REASON_CHARS} characters"),
                ),
            ))
        }
        Some(r) if !r.trim().is_empty() => Some(
            Description::parse(&r)
                .map_err(|e| ApiError::invalid("reason", e))?
                .as_str()
                .to_owned(),
        ),
        _ => None,
    };
    let patch = WebhookPatch {
        status: Some(WebhookStatus::Disabled),
        disabled_reason: reason,
        ..Default::default()
    };
    apply(&state, &caller, id, &patch).await
}

async fn apply(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    patch: &WebhookPatch,
) -> Result<Json<WebhookView>, ApiError> {
    let row = state
        .store()
        .update_webhook(
            id,
            caller.scope(),
            patch,
            state.inner.max_webhooks_per_account,
        )
        .await?
        .ok_or_else(webhook_not_found)?;
    state.pipeline().webhook_written(row.clone()).await;
    tracing::info!(webhook_id = %row.id, status = %row.status, "webhook updated");
    Ok(Json(row.into()))
}

/// The longest a rotated-out secret may keep signing.
const MAX_GRACE_SECONDS: u64 = 7 * 24 * 3600;
const DEFAULT_GRACE_SECONDS: u64 = 24 * 3600;

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The new secret; generated if absent.
    secret: Option<String>,
    /// How long the old secret keeps signing beside the new one (default 86 400, at most
    /// 604 800).
    #[schema(maximum = 604800)]
    grace_seconds: Option<u64>,
}

/// The new secret, answered this once.
#[derive(Serialize, ToSchema)]
pub struct RotatedSecret {
    id: Uuid,
    secret: String,
    /// Until when the previous secret signs beside the new one; `null` when it stopped at
    /// once (or there was none).
    previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// Gives the webhook a new secret; the old one keeps signing for the grace period.
///
/// `POST /v1/webhooks/{id}/rotate-secret {secret?, grace_seconds?}`: a new secret, generated
/// when none is given. During the grace period (default 24 h) deliveries carry a signature
/// by each secret, so receivers can switch without losing one.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks", params(("id" = Uuid, Path, description = "The webhook's id")), request_body = Option<RotateSecret>,
    responses((status = 200, description = "The new secret, shown once", body = RotatedSecret)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RotateSecret>,
) -> Result<Json<RotatedSecret>, ApiError> {
    let id = parse_id(&id)?;
    let secret = match body.secret.as_deref() {
        Some(raw) => parse_secret(raw)?,
        None => Secret::from_random_bytes(rand::random()),
    };
    let grace_seconds = body.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if grace_seconds > MAX_GRACE_SECONDS {
        return Err(ApiError::invalid(
            "grace_seconds",
            Invalid::new(
                "out_of_range",
                format!("grace_seconds is at most {MAX_GRACE_SECONDS} (7 days)"),
            ),
        ));
    }
    let grace = Duration::from_secs(grace_seconds);
    let (row, previous_secret_expires_at) = state
        .store()
        .rotate_secret(id, caller.scope(), &secret, grace)
        .await?
        .ok_or_else(webhook_not_found)?;
    state.pipeline().webhook_written(row.clone()).await;
    tracing::info!(webhook_id = %row.id, grace_seconds, "webhook secret rotated");
    Ok(Json(RotatedSecret {
        id: row.id,
        secret: secret.expose().to_owned(),
        previous_secret_expires_at,
    }))
}

/// A window of logs by `created_at`: from `since`, before `until` (now when absent).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
}

/// How many failed logs are being queued again.
#[derive(Serialize, ToSchema)]
pub struct Requeued {
    /// How many deliveries were queued again.
    pub count: i64,
}

/// Queues again every `failed` delivery of this webhook created in the window; calling it
/// twice queues nothing more.
///
/// `POST /v1/webhooks/{id}/recover {since, until?}`: queues again every `failed` log of this
/// webhook created in the window, paced, and answers how many. Calling it twice sends no log
/// twice: each is taken once, and one queued again is no longer `failed`.
#[utoipa::path(post, path = "/v1/webhooks/{id}/recover", tag = "webhooks", params(("id" = Uuid, Path, description = "The webhook's id")), request_body = Recover,
    responses((status = 202, description = "Queued", body = Requeued)))]
pub async fn recover(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Recover>,
) -> Result<(StatusCode, Json<Requeued>), ApiError> {
    let id = parse_id(&id)?;
    let (since, until) = window(body.since, body.until)?;
    let webhook = find_webhook(&state, &caller, id).await?;
    let count = state
        .pipeline()
        .requeue(hookrelay_store::RequeueFilter {
            webhook_id: Some(webhook.id),
            account_id: Some(webhook.account_id),
            since: Some(since),
            until,
            ..Default::default()
        })
        .await?;
    tracing::info!(webhook_id = %id, count, "recovering failed deliveries");
    Ok((StatusCode::ACCEPTED, Json(Requeued { count })))
}

/// A window of events by the time hookrelay received them: from `since`, before `until`
/// (now when absent).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayWindow {
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
}

/// Delivers to this webhook, once each and in received order, every stored event of its
/// account in the window, of a type it subscribes to, that it has not received; events from
/// before it existed included.
///
/// `POST /v1/webhooks/{id}/replay {since, until?}`: paced like a bulk retry; answers how
/// many. Calling it twice sends nothing twice: an event with a log for this webhook counts
/// as received. One call takes at most 100 000 events (the oldest first); call again for
/// the rest. Each replayed delivery gets one attempt, as a retry by hand does.
#[utoipa::path(post, path = "/v1/webhooks/{id}/replay", tag = "webhooks", params(("id" = Uuid, Path, description = "The webhook's id")), request_body = ReplayWindow,
    responses((status = 202, description = "Being replayed", body = Requeued),
        (status = 409, description = "The webhook is disabled", body = crate::error::ErrorBody)))]
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReplayWindow>,
) -> Result<(StatusCode, Json<Requeued>), ApiError> {
    let id = parse_id(&id)?;
    let (since, until) = window(body.since, body.until)?;
    let webhook = find_webhook(&state, &caller, id).await?;
    if webhook.status != WebhookStatus::Active {
        // Its queue is not consumed while disabled: the replay would only wait there.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "webhook_disabled",
            "the webhook is disabled; enable it first",
        ));
    }
    let count = state
        .pipeline()
        .replay(hookrelay_store::Replay {
            webhook_id: webhook.id,
            account_id: webhook.account_id,
            event_types: webhook.events,
            since,
            until: until.unwrap_or_else(Utc::now),
            // Saved checked: one that no longer compiles passes everything, as in the fan-out.
            filter: webhook
                .filter
                .as_ref()
                .and_then(|f| hookrelay_core::Filter::parse(f).ok()),
        })
        .await?;
    tracing::info!(webhook_id = %id, count, "replaying stored events");
    Ok((StatusCode::ACCEPTED, Json(Requeued { count })))
}

/// The delivery skipped.
#[derive(Serialize, ToSchema)]
pub struct Skipped {
    /// The log of the delivery ended `failed`.
    pub log_id: Uuid,
}

/// Ends the first delivery of a FIFO webhook's line `failed` (its `error` says it was
/// skipped), so that the next goes at once. For a delivery that will never succeed (a
/// receiver refusing it for good) when its retries would hold the line for hours.
///
/// `POST /v1/webhooks/{id}/skip`: answers the log skipped; 409 `not_fifo` for an unordered
/// webhook, 409 `line_empty` when nothing waits. An attempt of it under way is recorded, but
/// does not bring it back.
#[utoipa::path(post, path = "/v1/webhooks/{id}/skip", tag = "webhooks", params(("id" = Uuid, Path, description = "The webhook's id")),
    responses((status = 200, description = "Skipped", body = Skipped),
        (status = 409, description = "Not a FIFO webhook, or nothing waits", body = crate::error::ErrorBody)))]
pub async fn skip(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Skipped>, ApiError> {
    let id = parse_id(&id)?;
    let webhook = find_webhook(&state, &caller, id).await?;
    if !webhook.ordering.is_fifo() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_fifo",
            "the webhook is not FIFO: its deliveries do not wait for each other",
        ));
    }
    let skipped = state
        .pipeline()
        .skip(webhook.id, Some(webhook.account_id.clone()))
        .await?;
    let Some(log_id) = skipped else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "line_empty",
            "no delivery of the webhook is waiting",
        ));
    };
    tracing::info!(webhook_id = %id, %log_id, "FIFO line moved on by hand");
    Ok(Json(Skipped { log_id }))
}

/// Checks a window: `until`, when given, after `since`.
pub(crate) fn window(
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
) -> Result<(DateTime<Utc>, Option<DateTime<Utc>>), ApiError> {
    check_time("since", since)?;
    if let Some(until) = until {
        check_time("until", until)?;
    }
    if until.is_some_and(|until| until <= since) {
        return Err(ApiError::invalid(
            "until",
            Invalid::new("invalid_window", "until must be after since"),
        ));
    }
    Ok((since, until))
}

/// A time the database can store and RFC 3339 can write, or 422 naming `field`.
pub(crate) fn check_time(field: &str, at: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    hookrelay_core::check_time(at).map_err(|e| ApiError::invalid(field, e))
}

/// The webhook `id` visible to `caller`: another account's answers 404, as one that does
/// not exist.
pub(crate) async fn find_webhook(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<WebhookRow, ApiError> {
    state
        .store()
        .get_webhook(id, caller.scope())
        .await?
        .ok_or_else(webhook_not_found)
}

pub(crate) fn webhook_not_found() -> ApiError {
    ApiError::not_found("no such webhook")
}

/// A malformed id cannot name a webhook: 404, like any other unknown id.
pub(crate) fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| webhook_not_found())
}

pub(crate) fn parse_account(caller: &Caller, raw: &str) -> Result<AccountId, ApiError> {
    let account = AccountId::parse(raw).map_err(|e| ApiError::invalid("account_id", e))?;
    match caller.scope() {
        Some(own) if own != account.as_str() => Err(ApiError::invalid(
            "account_id",
            Invalid::new(
                "forbidden_account",
                "an account API key can only manage its own account's webhooks",
            ),
        )),
        _ => Ok(account),
    }
}

fn parse_secret(raw: &str) -> Result<Secret, ApiError> {
    Secret::parse(raw).map_err(|e| ApiError::invalid("secret", e))
}

/// Headers as given; a value still masked here stands for no stored value (a new header, or
/// one renamed), and is refused rather than sent to receivers as `********`.
fn parse_headers(raw: BTreeMap<String, String>) -> Result<HeaderSet, ApiError> {
    if let Some(name) = raw
        .iter()
        .find_map(|(name, v)| (v == MASKED).then_some(name))
    {
        return Err(ApiError::invalid(
            "headers",
            Invalid::new(
                "invalid_header",
                format!(
                    "header `{}` is sent as the mask {MASKED}, and this webhook has no value \
                     stored under that name to keep: send the value itself",
                    name.escape_debug()
                ),
            ),
        ));
    }
    HeaderSet::parse(raw).map_err(|e| ApiError::invalid("headers", e))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterTest {
    /// A filter, as a webhook's `filter` takes it.
    #[schema(value_type = Object, example = json!({"data.status": "read"}))]
    filter: serde_json::Value,
    /// A body as a receiver gets it: `{"id", "type", "account_id", "timestamp", "data"}`.
    #[schema(value_type = Object, example = json!({"type": "Message.received", "data": {"status": "read"}}))]
    payload: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct FilterTestResult {
    /// Whether the payload passes; false when the filter is bad.
    matches: bool,
    /// What is wrong with the filter, if anything: what saving it would answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Tries a filter on a payload, as the fan-out would decide: a bad filter answers 200 with
/// `error`, so that an editor can show why beside it.
#[utoipa::path(post, path = "/v1/webhooks/filter-test", tag = "webhooks", request_body = FilterTest,
    responses((status = 200, description = "Whether the payload passes", body = FilterTestResult)))]
pub async fn filter_test(
    _caller: Caller,
    ApiJson(body): ApiJson<FilterTest>,
) -> Json<FilterTestResult> {
    Json(match parse_filter(&body.filter) {
        None => FilterTestResult {
            matches: true,
            error: None,
        },
        Some(Ok(filter)) => FilterTestResult {
            matches: filter.matches(&body.payload),
            error: None,
        },
        Some(Err(e)) => FilterTestResult {
            matches: false,
            error: Some(e.message),
        },
    })
}

fn parse_ordering(raw: &str) -> Result<Ordering, ApiError> {
    Ordering::parse(raw).map_err(|e| ApiError::invalid("ordering", e))
}

fn parse_rate_limit(n: i64) -> Result<u32, ApiError> {
    match u32::try_from(n) {
        Ok(n @ 1..=MAX_RATE_LIMIT) => Ok(n),
        _ => Err(ApiError::invalid(
            "rate_limit",
            Invalid::new(
                "out_of_range",
                format!("rate_limit is 1 to {MAX_RATE_LIMIT} requests a second, or null for none"),
            ),
        )),
    }
}

fn parse_max_in_flight(state: &AppState, n: i64) -> Result<u16, ApiError> {
    let most = u16::try_from(state.inner.max_in_flight_per_account).unwrap_or(u16::MAX);
    match u16::try_from(n) {
        Ok(n) if (1..=most).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(
            "max_in_flight",
            Invalid::new(
                "out_of_range",
                format!(
                    "max_in_flight is 1 to {most} (this service's max_in_flight_per_account), or \
                     null for the default"
                ),
            ),
        )),
    }
}

/// `None` for `{}`, which lets every event through: the same as no filter, and shown as such.
fn parse_filter(raw: &serde_json::Value) -> Option<Result<Filter, ApiError>> {
    if raw.as_object().is_some_and(serde_json::Map::is_empty) {
        return None;
    }
    // Stored as jsonb, which refuses what JSON allows: a NUL character.
    let storable = hookrelay_core::check_storable(raw).map_err(|e| ApiError::invalid("filter", e));
    Some(storable.and_then(|()| Filter::parse(raw).map_err(|e| ApiError::invalid("filter", e))))
}

fn parse_description(raw: &str) -> Result<Description, ApiError> {
    Description::parse(raw).map_err(|e| ApiError::invalid("description", e))
}

async fn parse_events(state: &AppState, raw: &[String]) -> Result<EventList, ApiError> {
    let events = EventList::parse(raw).map_err(|e| ApiError::invalid("events", e))?;
    let unknown = state.store().unknown_event_types(&events.names()).await?;
    if !unknown.is_empty() {
        return Err(ApiError::invalid(
            "events",
            Invalid::new(
                "unknown_event_type",
                format!(
                    "not in the event type catalog: {}; see GET /v1/event-types",
                    unknown.join(", ")
                ),
            ),
        ));
    }
    Ok(events)
}

/// Parses the URL and, unless private networks are allowed, refuses one whose host is or
/// resolves to a non-public address. A name that does not resolve now is accepted: DNS may
/// be down for a moment, and every delivery checks the address again before connecting.
async fn parse_url(state: &AppState, raw: &str) -> Result<WebhookUrl, ApiError> {
    let url = WebhookUrl::parse(raw).map_err(|e| ApiError::invalid("url", e))?;
    if state.inner.allow_private_networks {
        return Ok(url);
    }
    if let Some(host) = url.domain().filter(|h| net::is_local_name(h)) {
        return Err(ApiError::invalid(
            "url",
            Invalid::new(
                "private_address",
                format!(
                    "`{host}` names this machine (RFC 6761), not a public address; set \
                     allow_private_networks to deliver inside your own network"
                ),
            ),
        ));
    }
    let addresses: Vec<IpAddr> = match (url.ip_literal(), url.domain()) {
        (Some(ip), _) => vec![ip],
        (None, Some(host)) => {
            let lookup = tokio::net::lookup_host((host, url.port_or_default()));
            match tokio::time::timeout(DNS_TIMEOUT, lookup).await {
                Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
                _ => Vec::new(),
            }
        }
        (None, None) => Vec::new(),
    };
    if let Some((ip, why)) = addresses
        .into_iter()
        .find_map(|ip| net::why_not_public(ip).map(|why| (ip, why)))
    {
        return Err(ApiError::invalid(
            "url",
            Invalid::new(
                "private_address",
                format!(
                    "the URL's host is or resolves to {ip}, which is not a public address \
                     ({why}); set allow_private_networks to deliver inside your own network"
                ),
            ),
        ));
    }
    Ok(url)
}
