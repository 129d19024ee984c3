use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use hookrelay_core::{check_storable, Description, EventSchema, EventType, Invalid};
use hookrelay_store::{EventTypePatch, EventTypeRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

mod receivers;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::pagination::{page_params, ListBody};
use crate::{ApiError, AppState};

#[derive(Serialize, ToSchema)]
pub struct EventTypeView {
    name: String,
    description: String,
    /// Seeded by hookrelay rather than added through the API.
    builtin: bool,
    /// The JSON Schema (draft 2020-12) its events' `data` must satisfy; null: any.
    #[schema(value_type = Option<Object>)]
    schema: Option<serde_json::Value>,
    /// An example `data`, which satisfies the schema.
    #[schema(value_type = Option<Object>)]
    example: Option<serde_json::Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<EventTypeRow> for EventTypeView {
    fn from(row: EventTypeRow) -> Self {
        Self {
            name: row.name,
            description: row.description,
            builtin: row.builtin,
            schema: row.schema,
            example: row.example,
            created_at: row.created_at,
            updated_at: row.updated_at,
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
    /// A JSON Schema (draft 2020-12) that every event's `data` must satisfy; events that do
    /// not are rejected with `schema_mismatch`. Checked when saved (422 `invalid_schema`).
    #[schema(value_type = Option<Object>, example = json!({"type": "object", "required": ["contact_id"], "properties": {"contact_id": {"type": "string"}}}))]
    schema: Option<serde_json::Value>,
    /// An example `data`; it must satisfy the schema (422 `invalid_example`).
    #[schema(value_type = Option<Object>)]
    example: Option<serde_json::Value>,
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
    let (schema, example) = check_schema(body.schema, body.example)?;
    let row = state
        .store()
        .insert_event_type(
            &name,
            description.as_str(),
            schema.as_ref(),
            example.as_ref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// A change to an event type: the fields given.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEventType {
    description: Option<String>,
    /// Null removes it: the type's events are not checked any more.
    #[serde(default, deserialize_with = "crate::extract::double_option")]
    #[schema(value_type = Option<Object>, required = false)]
    schema: Option<Option<serde_json::Value>>,
    /// Null removes it.
    #[serde(default, deserialize_with = "crate::extract::double_option")]
    #[schema(value_type = Option<Object>, required = false)]
    example: Option<Option<serde_json::Value>>,
}

/// Changes an event type's description, schema or example (admin token only). A schema
/// applies to the events fanned out from about a second later.
#[utoipa::path(patch, path = "/v1/event-types/{name}", tag = "event types",
    params(("name" = String, Path, description = "The event type's name")),
    request_body = UpdateEventType,
    responses((status = 200, description = "The type as changed", body = EventTypeView)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateEventType>,
) -> Result<Json<EventTypeView>, ApiError> {
    caller.require_admin()?;
    let not_found = || ApiError::not_found("no such event type");
    let current = state
        .store()
        .get_event_type(&name)
        .await?
        .ok_or_else(not_found)?;
    let description = body
        .description
        .as_deref()
        .map(|d| Description::parse(d).map_err(|e| ApiError::invalid("description", e)))
        .transpose()?;
    // The example is checked against the schema it will have, given or kept.
    let schema = body.schema.clone().unwrap_or(current.schema.clone());
    let example = body.example.clone().unwrap_or(current.example.clone());
    check_schema(schema, example)?;
    let patch = EventTypePatch {
        description: description.map(|d| d.as_str().to_owned()),
        schema: body.schema,
        example: body.example,
    };
    let row = state
        .store()
        .update_event_type(&name, &patch)
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(event_type = %name, has_schema = row.schema.is_some(), "event type changed");
    Ok(Json(row.into()))
}

/// A schema that compiles, and an example that satisfies it (or any example without one).
fn check_schema(
    schema: Option<serde_json::Value>,
    example: Option<serde_json::Value>,
) -> Result<(Option<serde_json::Value>, Option<serde_json::Value>), ApiError> {
    if let Some(example) = &example {
        check_storable(example).map_err(|e| ApiError::invalid("example", e))?;
    }
    let compiled = schema
        .as_ref()
        .map(EventSchema::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("schema", e))?;
    if let (Some(compiled), Some(example)) = (&compiled, &example) {
        compiled.check(example).map_err(|mismatch| {
            ApiError::invalid(
                "example",
                Invalid::new(
                    "invalid_example",
                    format!("the example does not satisfy the schema: {mismatch}"),
                ),
            )
        })?;
    }
    Ok((schema, example))
}

/// The payloads receivers get, per event type, as an OpenAPI 3.1 document of `webhooks`:
/// each type's envelope with its schema as `data`, and its example. For receivers to read,
/// and to generate their types from.
#[utoipa::path(get, path = "/v1/event-types/openapi.json", tag = "event types",
    responses((status = 200, description = "An OpenAPI 3.1 document of the webhooks sent", body = Object)))]
pub async fn receivers_document(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let types = state.store().all_event_types().await?;
    Ok(Json(receivers::document(&types)))
}
