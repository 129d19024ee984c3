//! Ending portal sessions (`hookrelay_core::portal`): the time before which an account's
//! session tokens no longer count.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::{Store, StoreError};

impl Store {
    /// Ends every portal session of `account` issued until now; answers that time.
    pub async fn revoke_portal_sessions(&self, account: &str) -> Result<DateTime<Utc>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO portal_revocations (account_id, revoked_before) VALUES ($1, now())
                 ON CONFLICT (account_id) DO UPDATE SET revoked_before = now()
                 RETURNING revoked_before",
                &[&account],
            )
            .await?;
        Ok(row.get(0))
    }

    /// The revocations that may still matter: those newer than the longest session.
    pub async fn portal_revocations(
        &self,
        since: DateTime<Utc>,
    ) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT account_id, revoked_before FROM portal_revocations
                 WHERE revoked_before >= $1",
                &[&since],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
