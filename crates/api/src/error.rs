use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookrelay_core::{error_chain, Invalid};
use hookrelay_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// An answer of the contract's error shape: `{"error":{"code","message","field"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// A value that does not pass validation, named by its field.
    pub fn invalid(field: &str, invalid: Invalid) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            invalid.code,
            invalid.message,
        )
        .with_field(field)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(message) => Self::new(StatusCode::CONFLICT, "conflict", message),
            StoreError::QuotaExceeded(message) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", message)
            }
            StoreError::Invalid(message) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_cursor", message)
                    .with_field("cursor")
            }
            StoreError::Db(ref e) if e.as_db_error().is_none() => {
                tracing::warn!(error = %error_chain(&err), "database connection lost");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is not reachable; try again shortly",
                )
            }
            StoreError::Replica(_) => {
                tracing::warn!(error = %error_chain(&err), "read replica unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the read replica is not reachable; try again shortly (deliveries go on)",
                )
            }
            StoreError::Pool(_) => {
                tracing::warn!(error = %error_chain(&err), "database unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is not reachable; try again shortly",
                )
            }
            other => {
                tracing::error!(error = %error_chain(&other), "request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

impl From<crate::PipelineError> for ApiError {
    fn from(err: crate::PipelineError) -> Self {
        match err {
            crate::PipelineError::Unavailable(message) => {
                tracing::warn!(%message, "the pipeline cannot take the request now");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            crate::PipelineError::Conflict(message) => {
                Self::new(StatusCode::CONFLICT, "conflict", message)
            }
            crate::PipelineError::Internal(message) => {
                tracing::error!(%message, "the pipeline failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
            crate::PipelineError::Store(e) => e.into(),
        }
    }
}

/// The body of every answer that is not a success (contract §4).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, for programs: `unauthorized`, `not_found`, `invalid_json`,
    /// `required`, `private_address`, `conflict`, `unavailable`, ...
    #[schema(example = "required")]
    code: String,
    /// What went wrong, for people.
    message: String,
    /// The field of the body or query at fault, when there is one.
    field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        (self.status, Json(body)).into_response()
    }
}
