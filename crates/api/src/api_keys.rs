use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hookrelay_core::AccountId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Caller, API_KEY_PREFIX};
use crate::extract::{ApiJson, ApiPath};
use crate::state::sha256;
use crate::{ApiError, AppState};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    #[schema(min_length = 1, max_length = 128)]
    account_id: String,
}

/// The only answer that ever holds the key: it is stored as a SHA-256 digest.
#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    id: Uuid,
    account_id: String,
    key: String,
    created_at: DateTime<Utc>,
}

/// Creates an API key that reaches one account's webhooks and logs (admin token only). The
/// key is in this answer and nowhere else.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api keys", request_body = CreateApiKey,
    responses((status = 201, description = "Created; keep `key`, it is not shown again", body = CreatedApiKey)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    caller.require_admin()?;
    let account =
        AccountId::parse(&body.account_id).map_err(|e| ApiError::invalid("account_id", e))?;
    let random: [u8; 32] = rand::random();
    let key = format!(
        "{API_KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    );
    let prefix: String = key.chars().take(API_KEY_PREFIX.len() + 6).collect();
    let row = state
        .store()
        .insert_api_key(&account, &sha256(&key), &prefix)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            id: row.id,
            account_id: row.account_id,
            key,
            created_at: row.created_at,
        }),
    ))
}

/// Revokes an API key: it stops working at once. The admin token revokes any key; an
/// account's key revokes its own account's keys, itself included. Another account's key, or
/// one revoked already, answers 404.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api keys",
    params(("id" = Uuid, Path, description = "The key's id, as answered when it was made")),
    responses((status = 204, description = "Revoked"),
        (status = 404, description = "No such key of this account", body = crate::error::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::not_found("no such API key");
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    caller.refuse_portal()?;
    if !state.store().revoke_api_key(id, caller.scope()).await? {
        return Err(not_found());
    }
    tracing::info!(api_key_id = %id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
