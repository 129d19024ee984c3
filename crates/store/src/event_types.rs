use chrono::{DateTime, Utc};
use hookrelay_core::EventType;
use tokio_postgres::Row;

use crate::{Cursor, Page, Store, StoreError};

#[derive(Debug, Clone)]
pub struct EventTypeRow {
    pub name: String,
    pub description: String,
    pub builtin: bool,
    pub created_at: DateTime<Utc>,
}

impl EventTypeRow {
    fn from_row(row: &Row) -> Self {
        Self {
            name: row.get("name"),
            description: row.get("description"),
            builtin: row.get("builtin"),
            created_at: row.get("created_at"),
        }
    }

    pub fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            key: self.name.clone(),
        }
    }
}

impl Store {
    /// The catalog, newest first; types added together are in name order.
    pub async fn list_event_types(
        &self,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<EventTypeRow>, StoreError> {
        let client = self.client().await?;
        let (at, key) = after.map(|c| (c.created_at, c.key.clone())).unzip();
        let rows = client
            .query(
                "SELECT name, description, builtin, created_at FROM event_types
                 WHERE $1::timestamptz IS NULL
                    OR created_at < $1 OR (created_at = $1 AND name > $2)
                 ORDER BY created_at DESC, name ASC
                 LIMIT $3",
                &[&at, &key, &(limit as i64 + 1)],
            )
            .await?;
        let rows = rows.iter().map(EventTypeRow::from_row).collect();
        Ok(Page::from_rows(rows, limit, EventTypeRow::cursor))
    }

    pub async fn insert_event_type(
        &self,
        name: &EventType,
        description: &str,
    ) -> Result<EventTypeRow, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO event_types (name, description) VALUES ($1, $2)
                 RETURNING name, description, builtin, created_at",
                &[&name.as_str(), &description],
            )
            .await
            .map_err(|e| {
                if StoreError::is_unique_violation(&e) {
                    StoreError::Conflict(format!("event type `{name}` already exists"))
                } else {
                    e.into()
                }
            })?;
        Ok(EventTypeRow::from_row(&row))
    }

    /// The names among `names` that the catalog does not hold, in the order given.
    pub async fn unknown_event_types(&self, names: &[String]) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT n FROM unnest($1::text[]) WITH ORDINALITY AS t(n, i)
                 WHERE NOT EXISTS (SELECT 1 FROM event_types e WHERE e.name = t.n)
                 ORDER BY i",
                &[&names],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
