use chrono::{DateTime, Utc};
use hookrelay_core::EventType;
use tokio_postgres::Row;

use crate::{Cursor, Page, Store, StoreError};

#[derive(Debug, Clone)]
pub struct EventTypeRow {
    pub name: String,
    pub description: String,
    pub builtin: bool,
    /// The JSON Schema its events' `data` must satisfy, as saved; checked by whoever reads it.
    pub schema: Option<serde_json::Value>,
    /// An example `data` that satisfies the schema.
    pub example: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What the columns of an event type read are.
const COLUMNS: &str = "name, description, builtin, schema, example, created_at, updated_at";

/// A change to an event type: `None` leaves a field as it is; `Some(None)` clears it.
#[derive(Debug, Default)]
pub struct EventTypePatch {
    pub description: Option<String>,
    pub schema: Option<Option<serde_json::Value>>,
    pub example: Option<Option<serde_json::Value>>,
}

impl EventTypeRow {
    fn from_row(row: &Row) -> Self {
        Self {
            name: row.get("name"),
            description: row.get("description"),
            builtin: row.get("builtin"),
            schema: row.get("schema"),
            example: row.get("example"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
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
        let sql = format!(
            "SELECT {COLUMNS} FROM event_types
                 WHERE $1::timestamptz IS NULL
                    OR created_at < $1 OR (created_at = $1 AND name > $2)
                 ORDER BY created_at DESC, name ASC
                 LIMIT $3"
        );
        let rows = client
            .query(&sql, &[&at, &key, &(limit as i64 + 1)])
            .await?;
        let rows = rows.iter().map(EventTypeRow::from_row).collect();
        Ok(Page::from_rows(rows, limit, EventTypeRow::cursor))
    }

    pub async fn insert_event_type(
        &self,
        name: &EventType,
        description: &str,
        schema: Option<&serde_json::Value>,
        example: Option<&serde_json::Value>,
    ) -> Result<EventTypeRow, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO event_types (name, description, schema, example) VALUES ($1, $2, $3, $4)
             RETURNING {COLUMNS}"
        );
        let row = client
            .query_one(&sql, &[&name.as_str(), &description, &schema, &example])
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

    /// One event type.
    pub async fn get_event_type(&self, name: &str) -> Result<Option<EventTypeRow>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM event_types WHERE name = $1");
        let row = client.query_opt(&sql, &[&name]).await?;
        Ok(row.as_ref().map(EventTypeRow::from_row))
    }

    /// Every event type, by name: the fan-out's catalog, and the receivers' document.
    pub async fn all_event_types(&self) -> Result<Vec<EventTypeRow>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM event_types ORDER BY name");
        let rows = client.query(&sql, &[]).await?;
        Ok(rows.iter().map(EventTypeRow::from_row).collect())
    }

    /// Applies `patch` to event type `name`; `None` when there is no such type.
    pub async fn update_event_type(
        &self,
        name: &str,
        patch: &EventTypePatch,
    ) -> Result<Option<EventTypeRow>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "UPDATE event_types SET
                description = COALESCE($2, description),
                schema = CASE WHEN $3 THEN $4 ELSE schema END,
                example = CASE WHEN $5 THEN $6 ELSE example END,
                updated_at = now()
             WHERE name = $1
             RETURNING {COLUMNS}"
        );
        let row = client
            .query_opt(
                &sql,
                &[
                    &name,
                    &patch.description,
                    &patch.schema.is_some(),
                    &patch.schema.clone().flatten(),
                    &patch.example.is_some(),
                    &patch.example.clone().flatten(),
                ],
            )
            .await?;
        Ok(row.as_ref().map(EventTypeRow::from_row))
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
