use hookrelay_core::Invalid;
use hookrelay_store::{Cursor, Page};
use serde::Serialize;
use utoipa::ToSchema;

use crate::ApiError;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;
/// The JSON bytes of a page's items at most, whatever `limit` asks: a page of big items
/// (webhooks with many headers, say) ends early, its `next_cursor` where it stopped, so that
/// no answer is built bigger than this in memory (one item more at worst).
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

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

impl<T: Serialize> ListBody<T> {
    /// The answer for `page`, each row shown by `view`, cut at [`MAX_PAGE_BYTES`]: the next
    /// page then starts after the last row shown (`cursor_of` it).
    pub fn from_page<R>(
        page: Page<R>,
        cursor_of: impl Fn(&R) -> Cursor,
        view: impl Fn(R) -> T,
    ) -> Self {
        let mut items = Vec::with_capacity(page.items.len());
        let mut bytes = 0;
        let mut last = None;
        for row in page.items {
            if bytes >= MAX_PAGE_BYTES {
                return Self {
                    items,
                    next_cursor: last.as_ref().map(Cursor::encode),
                };
            }
            let cursor = cursor_of(&row);
            let item = view(row);
            bytes += json_size(&item);
            items.push(item);
            last = Some(cursor);
        }
        Self {
            items,
            next_cursor: page.next.as_ref().map(Cursor::encode),
        }
    }
}

/// The bytes `value` takes as JSON, counted without writing them anywhere.
fn json_size(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing the answer's own types does not fail; should it, the item counts as
    // nothing here and the answer itself reports the failure.
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => 0,
    }
}
