//! Keys hookrelay keeps for itself in `service_keys`.

use crate::{Store, StoreError};

impl Store {
    /// The service key `name`, made from `fresh` the first time any process asks. Every
    /// process of a deployment gets the same key, whichever made it.
    pub async fn service_key(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StoreError> {
        let client = self.client().await?;
        // Two statements, so the SELECT sees a key another process committed meanwhile.
        client
            .execute(
                "INSERT INTO service_keys (name, key) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &fresh],
            )
            .await?;
        let row = client
            .query_one("SELECT key FROM service_keys WHERE name = $1", &[&name])
            .await?;
        Ok(row.get(0))
    }
}
