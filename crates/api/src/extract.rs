//! Body and query extractors that answer the contract's error shape, naming the offending
//! field, instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A JSON body. Parsed whatever the `content-type` says, since `curl -d` sends a form type by
/// default and refusing it would only confuse. An empty body reads as `{}` when `T` allows it.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let read = tokio::time::timeout(crate::BODY_DEADLINE, Bytes::from_request(req, state));
        let bytes = read.await.map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "body_timeout",
                format!(
                    "the body did not arrive within {}s",
                    crate::BODY_DEADLINE.as_secs()
                ),
            )
        })?;
        let bytes = bytes.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "body_too_large",
                    "the body is larger than this server accepts (setting max_request_bytes)",
                )
            } else {
                // axum's text names its own internals; the cause goes to the log.
                tracing::debug!(error = %rejection.body_text(), "cannot read a request body");
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "the request body could not be read",
                )
            }
        })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
            let path = err.path().to_string();
            json_error(&path, err.into_inner())
        })?;
        // Trailing bytes after the value (`{...} garbage`) are as malformed as a bad value.
        de.end().map_err(|e| json_error("", e))?;
        Ok(Self(value))
    }
}

fn json_error(path: &str, inner: serde_json::Error) -> ApiError {
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {inner}"),
        );
    }
    data_error(path, &inner.to_string())
}

/// A path parameter, with the error shape: axum's own rejection (for `%FF`, which is no
/// UTF-8) is plain text naming Rust types.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => {
                tracing::debug!(error = %rejection.body_text(), "unusable path parameter");
                Err(ApiError::not_found(
                    "no such resource: the path is not valid UTF-8",
                ))
            }
        }
    }
}

/// Query parameters, with the same error shape as bodies.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded(query));
        let value = serde_path_to_error::deserialize(de)
            .map_err(|err| data_error(&err.path().to_string(), &err.into_inner().to_string()))?;
        Ok(Self(value))
    }
}

fn form_urlencoded(query: &str) -> url::form_urlencoded::Parse<'_> {
    url::form_urlencoded::parse(query.as_bytes())
}

/// serde names the Rust type it expected ("expected struct CreateWebhook", "expected u64"):
/// an internal detail that tells a client nothing. Such an ending is said in JSON's terms.
fn public_message(message: &str) -> String {
    let Some((head, expected)) = message.split_once(", expected ") else {
        return message.to_owned();
    };
    let first = expected.split_whitespace().next().unwrap_or_default();
    let plain = match first {
        "struct" | "tuple" | "unit" | "map" => "a JSON object",
        "enum" => "one of the documented values",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative whole number",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        _ => return message.to_owned(),
    };
    format!("{head}, expected {plain}")
}

/// Turns serde's message into a field name and an error code people can act on.
fn data_error(path: &str, message: &str) -> ApiError {
    let message = &public_message(message);
    let quoted = |prefix: &str| {
        message
            .split_once(prefix)
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(name, _)| name.to_owned())
    };
    // serde_path_to_error already ends the path with an unknown key, not with a missing one.
    let join = |name: String| {
        if path.is_empty() || path == "." {
            name
        } else if path == name || path.ends_with(&format!(".{name}")) {
            path.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    let unprocessable = |code: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message);
    if let Some(name) = quoted("unknown field `") {
        unprocessable("unknown_field").with_field(join(name))
    } else if let Some(name) = quoted("missing field `") {
        unprocessable("required").with_field(join(name))
    } else if path.is_empty() || path == "." {
        unprocessable("invalid_type")
    } else {
        unprocessable("invalid_type").with_field(path)
    }
}

/// `Some(None)` for an explicit `null`, `Some(Some(v))` for a value, and (with
/// `#[serde(default)]`) `None` when the field is absent: what a PATCH needs to tell "clear
/// this" from "leave it".
pub fn double_option<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde::Deserialize::deserialize(de).map(Some)
}
