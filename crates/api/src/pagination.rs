use hookrelay_core::Invalid;
use hookrelay_store::{Cursor, Page};
use serde::Serialize;
use utoipa::ToSchema;

use crate::ApiError;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

/// `limit` and `cursor` as given in a query, checked.
pub fn page_params(
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<(usize, Option<Cursor>), ApiError> {
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT as u32).contains(&n) => n as usize,
        Some(_) => {
            return Err(ApiError::invalid(
                "limit",
                Invalid::new(
                    "out_of_range",
                    format!("limit must be between 1 and {MAX_LIMIT}"),
                ),
            ))
        }
    };
    let cursor = match cursor {
        None | Some("") => None,
        Some(raw) => Some(Cursor::decode(raw).ok_or_else(|| {
            ApiError::invalid(
                "cursor",
                Invalid::new("invalid_cursor", "cursor is not one this API answered"),
            )
        })?),
    };
    Ok((limit, cursor))
}

/// The contract's list shape: `{"items": [...], "next_cursor": "..." | null}`.
#[derive(Serialize, ToSchema)]
pub struct ListBody<T> {
    /// Newest first.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

impl<T> ListBody<T> {
    pub fn from_page<R>(page: Page<R>, view: impl Fn(R) -> T) -> Self {
        Self {
            next_cursor: page.next.as_ref().map(Cursor::encode),
            items: page.items.into_iter().map(view).collect(),
        }
    }
}
