use chrono::{DateTime, Utc};
use hookrelay_core::AccountId;
use uuid::Uuid;

use crate::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub account_id: String,
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// Stores a key by its hash; the key itself is never written anywhere.
    pub async fn insert_api_key(
        &self,
        account: &AccountId,
        key_hash: &[u8],
        key_prefix: &str,
    ) -> Result<ApiKeyRow, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO api_keys (id, account_id, key_hash, key_prefix)
                 VALUES ($1, $2, $3, $4)
                 RETURNING id, account_id, key_prefix, created_at",
                &[&Uuid::now_v7(), &account.as_str(), &key_hash, &key_prefix],
            )
            .await?;
        Ok(ApiKeyRow {
            id: row.get("id"),
            account_id: row.get("account_id"),
            key_prefix: row.get("key_prefix"),
            created_at: row.get("created_at"),
        })
    }

    /// The account a key belongs to, if the key exists and is not revoked.
    pub async fn account_for_key_hash(
        &self,
        key_hash: &[u8],
    ) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT account_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
                &[&key_hash],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Revokes key `id`; `account` limits it to that account's keys. `false` when no such key
    /// is visible (or it was revoked already): every call after the first changes nothing.
    pub async fn revoke_api_key(
        &self,
        id: Uuid,
        account: Option<&str>,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE api_keys SET revoked_at = now()
                 WHERE id = $1 AND revoked_at IS NULL
                   AND ($2::text IS NULL OR account_id = $2)",
                &[&id, &account],
            )
            .await?;
        Ok(n > 0)
    }
}
