use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use axum::http::{Method, StatusCode};
use hookrelay_core::portal::{Capabilities, PORTAL_TOKEN_PREFIX};

use crate::listener::Admission;
use crate::state::sha256;
use crate::{ApiError, AppState};

/// Account API keys start with this, so a key found in a config file or a leak scanner is
/// recognisable, and so a token that cannot be a key costs no database lookup.
pub const API_KEY_PREFIX: &str = "hr_";

/// Who is calling: the admin token reaches every account, an account key only its own.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    Account(String),
    /// A portal session of this account (`crate::portal`): what it may do was checked when
    /// the request came in, by its method.
    Portal(String, Capabilities),
}

/// Which accounts a list shows.
pub enum ListScope {
    /// An account key asked for another account: an empty list, as if that account had
    /// nothing (never an error that would tell it exists).
    Nothing,
    /// Only this account, or every account (`None`, the admin's without a filter).
    Account(Option<String>),
}

impl Caller {
    /// The scope of a list for which `account_id` was asked (already checked): an account
    /// key sees its own account whatever it asks for.
    pub fn list_scope(&self, asked: Option<String>) -> ListScope {
        match (self.scope(), asked) {
            (Some(own), Some(asked)) if asked != own => ListScope::Nothing,
            (Some(own), _) => ListScope::Account(Some(own.to_owned())),
            (None, asked) => ListScope::Account(asked),
        }
    }

    /// The account a query must be limited to, `None` for the admin.
    pub fn scope(&self) -> Option<&str> {
        match self {
            Self::Admin => None,
            Self::Account(id) | Self::Portal(id, _) => Some(id),
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Self::Admin => Ok(()),
            Self::Account(_) => Err(ApiError::unauthorized(
                "admin_only",
                "this call needs the admin token; an account API key cannot make it",
            )),
            Self::Portal(..) => Err(forbidden("this call needs the admin token")),
        }
    }

    /// Refuses portal sessions: what only a credential of the account itself may do (its API
    /// keys).
    pub fn refuse_portal(&self) -> Result<(), ApiError> {
        match self {
            Self::Portal(..) => Err(forbidden("a portal session cannot manage API keys")),
            _ => Ok(()),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(admin_sha256) = state.inner.admin_token_sha256 else {
            return Err(ApiError::unauthorized(
                "admin_token_unset",
                "the admin API is off because no admin token is set: set HOOKRELAY_ADMIN_TOKEN \
                 (or admin_token in the config file) and restart hookrelay",
            ));
        };
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "unauthorized",
                    "send `Authorization: Bearer <token>` with the admin token or an account API key",
                )
            })?;
        let digest = sha256(token);
        let caller = if token.starts_with(PORTAL_TOKEN_PREFIX) {
            let (account, capabilities) = crate::portal::check(state, token).await?;
            // Reading is a GET; anything else changes something, but trying a filter.
            let reads = parts.method == Method::GET
                || parts.method == Method::HEAD
                || parts.uri.path().ends_with("/webhooks/filter-test");
            match reads {
                true if !capabilities.can_read() => {
                    return Err(forbidden("this portal session cannot read"))
                }
                false if !capabilities.manage => {
                    return Err(forbidden(
                        "this portal session may only read: it cannot change anything",
                    ))
                }
                _ => Self::Portal(account, capabilities),
            }
        } else if digest == admin_sha256 {
            Self::Admin
        } else if let Some(account) = match token.starts_with(API_KEY_PREFIX) {
            true => state.store().account_for_key_hash(&digest).await?,
            false => None,
        } {
            Self::Account(account)
        } else {
            return Err(ApiError::unauthorized(
                "unauthorized",
                "the token is not valid",
            ));
        };
        // Counted against its credential from here on, no longer its address.
        if let Some(admission) = parts.extensions.get::<Admission>() {
            if !admission.authenticated(&digest) {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "quota_exceeded",
                    admission.refusal_message(),
                ));
            }
        }
        Ok(caller)
    }
}

/// 403 `forbidden`: a valid credential that may not do this.
pub(crate) fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// `admin` (the admin token), `account` (an account API key) or `portal` (a portal
    /// session).
    #[schema(example = "admin")]
    role: &'static str,
    /// The key's account; null for the admin token.
    account_id: Option<String>,
    /// What a portal session may do (`read`, `manage`); an API key and the admin token may
    /// do both.
    capabilities: Vec<&'static str>,
}

/// Who the token is, for the console to show the admin's account field or an account's own
/// portal.
#[utoipa::path(get, path = "/v1/whoami", tag = "api keys",
    responses((status = 200, description = "The caller", body = WhoAmI)))]
pub async fn whoami(caller: Caller) -> axum::Json<WhoAmI> {
    axum::Json(match caller {
        Caller::Admin => WhoAmI {
            role: "admin",
            account_id: None,
            capabilities: Capabilities::ALL.names(),
        },
        Caller::Account(id) => WhoAmI {
            role: "account",
            account_id: Some(id),
            capabilities: Capabilities::ALL.names(),
        },
        Caller::Portal(id, capabilities) => WhoAmI {
            role: "portal",
            account_id: Some(id),
            capabilities: capabilities.names(),
        },
    })
}
