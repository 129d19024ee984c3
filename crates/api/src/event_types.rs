use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use hookrelay_core::{Description, EventType};
use hookrelay_store::EventTypeRow;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::{page_params, ListBody};
use crate::{ApiError, AppState};

#[derive(Serialize, ToSchema)]
pub struct EventTypeView {
    name: String,
    description: String,
    /// Seeded by hookrelay rather than added through the API.
    builtin: bool,
    created_at: DateTime<Utc>,
}

impl From<EventTypeRow> for EventTypeView {
    fn from(row: EventTypeRow) -> Self {
        Self {
            name: row.name,
            description: row.description,
            builtin: row.builtin,
            created_at: row.created_at,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many items (1 to 500; 50 if absent).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

/// The event type catalog.
#[utoipa::path(get, path = "/v1/event-types", tag = "event types", params(ListQuery),
    responses((status = 200, description = "A page of event types, by name", body = ListBody<EventTypeView>)))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ListBody<EventTypeView>>, ApiError> {
    let (limit, cursor) = page_params(q.limit, q.cursor.as_deref())?;
    if let Some(c) = &cursor {
        EventType::parse(&c.key).map_err(|_| {
            ApiError::invalid(
                "cursor",
                hookrelay_core::Invalid::new(
                    "invalid_cursor",
                    "the cursor does not belong to this list",
                ),
            )
        })?;
    }
    let page = state
        .store()
        .list_event_types(cursor.as_ref(), limit)
        .await?;
    Ok(Json(ListBody::from_page(
        page,
        EventTypeRow::cursor,
        EventTypeView::from,
    )))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEventType {
    /// Dot-separated words, as `Invoice.paid`; case-sensitive.
    name: String,
    #[serde(default)]
    description: Option<String>,
}

/// Adds an event type to the catalog (admin token only).
#[utoipa::path(post, path = "/v1/event-types", tag = "event types", request_body = CreateEventType,
    responses((status = 201, description = "Added", body = EventTypeView)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateEventType>,
) -> Result<(StatusCode, Json<EventTypeView>), ApiError> {
    caller.require_admin()?;
    let name = EventType::parse(&body.name).map_err(|e| ApiError::invalid("name", e))?;
    let description = Description::parse(body.description.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::invalid("description", e))?;
    let row = state
        .store()
        .insert_event_type(&name, description.as_str())
        .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}
