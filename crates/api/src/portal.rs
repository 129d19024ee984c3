//! Portal sessions (`hookrelay_core::portal`): `POST /v1/portal-sessions` gives a platform a
//! short-lived link into one account's portal, for its customer's browser; `DELETE` ends
//! every session of an account at once.
//!
//! A token is checked without the database: its MAC, its expiry, and the account's
//! revocation time, from a cache of `portal_revocations` read again at most every
//! [`REVOCATIONS_FRESH_FOR`] (and at once in the process that revoked). Tokens are never
//! logged: they travel in the `Authorization` header and, in a link, in the fragment, which
//! browsers do not send.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use hookrelay_core::portal::{
    Capabilities, PortalClaims, TokenError, DEFAULT_SESSION_SECS, MAX_SESSION_SECS,
};
use hookrelay_core::{AccountId, Invalid};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::{ApiError, AppState};

/// How long a read of the revocations is trusted: a session ended through another process
/// stops working within this.
const REVOCATIONS_FRESH_FOR: Duration = Duration::from_secs(2);

/// The ended sessions, by account: tokens issued at or before the time no longer count.
#[derive(Default)]
pub struct Revocations {
    by_account: ArcSwap<HashMap<String, DateTime<Utc>>>,
    read_at: tokio::sync::Mutex<Option<Instant>>,
}

impl Revocations {
    /// When `account`'s sessions were last ended, from a read at most
    /// [`REVOCATIONS_FRESH_FOR`] old.
    async fn of(&self, state: &AppState, account: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        {
            let mut read_at = self.read_at.lock().await;
            if read_at.is_none_or(|t| t.elapsed() >= REVOCATIONS_FRESH_FOR) {
                // Older revocations cannot concern a token still valid.
                let since = Utc::now()
                    - chrono::Duration::seconds(MAX_SESSION_SECS as i64)
                    - chrono::Duration::minutes(5);
                let fresh = state.store().portal_revocations(since).await?;
                self.by_account.store(Arc::new(fresh));
                *read_at = Some(Instant::now());
            }
        }
        Ok(self.by_account.load().get(account).copied())
    }

    fn note(&self, account: &str, at: DateTime<Utc>) {
        let mut map = HashMap::clone(&self.by_account.load());
        map.insert(account.to_owned(), at);
        self.by_account.store(Arc::new(map));
    }
}

/// The account and capabilities of portal token `token`, or 401.
pub(crate) async fn check(
    state: &AppState,
    token: &str,
) -> Result<(String, Capabilities), ApiError> {
    let claims = match PortalClaims::verify(&state.inner.portal_key, token, Utc::now()) {
        Ok(claims) => claims,
        Err(TokenError::Expired) => return Err(ended()),
        Err(TokenError::Invalid) => {
            return Err(ApiError::unauthorized(
                "unauthorized",
                "the token is not valid",
            ))
        }
    };
    let revoked = state
        .inner
        .revocations
        .of(state, &claims.account_id)
        .await?;
    if revoked.is_some_and(|at| claims.issued() <= at) {
        return Err(ended());
    }
    Ok((claims.account_id, claims.capabilities))
}

fn ended() -> ApiError {
    ApiError::unauthorized(
        "session_ended",
        "the portal session has ended (expired or revoked); open the portal again from the platform",
    )
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// The account whose portal the session opens.
    account_id: String,
    /// How long the session lasts: 60 s to 7 days; 1 hour if absent.
    #[schema(minimum = 60, maximum = 604800)]
    ttl_seconds: Option<u64>,
    /// `read` (webhooks, logs, statistics) and `manage` (create, change, delete, rotate,
    /// test, retry, recover, replay); both if absent.
    #[schema(example = json!(["read"]))]
    capabilities: Option<Vec<String>>,
}

/// A portal session.
#[derive(Serialize, ToSchema)]
pub struct Session {
    /// Bearer token for the API, scoped to the account; also in `url`.
    token: String,
    /// The portal, opened with this session: `{public_url}/portal#token=…`.
    url: String,
    expires_at: DateTime<Utc>,
    capabilities: Vec<&'static str>,
}

/// Opens a portal session for one account (admin token only): a short-lived token, and the
/// link to the portal with it, for the platform to hand its customer's browser (or to
/// embed in an `<iframe>`: see `portal_frame_ancestors`).
#[utoipa::path(post, path = "/v1/portal-sessions", tag = "portal", request_body = CreateSession,
    responses((status = 201, description = "Opened", body = Session)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    caller.require_admin()?;
    let account =
        AccountId::parse(&body.account_id).map_err(|e| ApiError::invalid("account_id", e))?;
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_SESSION_SECS);
    if !(60..=MAX_SESSION_SECS).contains(&ttl) {
        return Err(ApiError::invalid(
            "ttl_seconds",
            Invalid::new(
                "out_of_range",
                format!("ttl_seconds is 60 to {MAX_SESSION_SECS} (7 days)"),
            ),
        ));
    }
    let capabilities = match &body.capabilities {
        Some(names) => {
            Capabilities::parse(names).map_err(|e| ApiError::invalid("capabilities", e))?
        }
        None => Capabilities::ALL,
    };
    let now = Utc::now();
    let claims = PortalClaims {
        session: Uuid::now_v7(),
        account_id: account.as_str().to_owned(),
        capabilities,
        issued_at_ms: now.timestamp_millis(),
        expires_at: now.timestamp() + ttl as i64,
    };
    let token = claims.sign(&state.inner.portal_key);
    tracing::info!(account_id = %claims.account_id, session = %claims.session, ttl, "portal session opened");
    Ok((
        StatusCode::CREATED,
        Json(Session {
            url: format!("{}/portal#token={token}", state.inner.public_url),
            token,
            expires_at: claims.expires(),
            capabilities: capabilities.names(),
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RevokeQuery {
    /// The account whose sessions end.
    account_id: String,
}

/// Ends every portal session of an account at once (admin token only): their next call
/// answers 401 `session_ended`, in every process within two seconds.
#[utoipa::path(delete, path = "/v1/portal-sessions", tag = "portal", params(RevokeQuery),
    responses((status = 204, description = "Ended")))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RevokeQuery>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let account =
        AccountId::parse(&q.account_id).map_err(|e| ApiError::invalid("account_id", e))?;
    let at = state
        .store()
        .revoke_portal_sessions(account.as_str())
        .await?;
    state.inner.revocations.note(account.as_str(), at);
    tracing::info!(account_id = %account, "portal sessions ended");
    Ok(StatusCode::NO_CONTENT)
}
