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
use crate::extract::ApiJson;
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
