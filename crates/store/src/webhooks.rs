use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hookrelay_core::{
    AccountId, Description, EventList, Filter, HeaderSet, Ordering, Secret, WebhookStatus,
    WebhookUrl,
};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{to_int, webhook_status, Cursor, Page, Store, StoreError};

/// Rotated-out secrets kept signing at most, beside the current one: every delivery carries
/// one signature per secret, and receivers refuse headers of more than 8 to 16 KiB.
pub const MAX_PREVIOUS_SECRETS: usize = 3;

/// The reason recorded when a webhook is disabled through the API without one.
pub const DISABLED_BY_HAND: &str = "disabled through the API";

const COLUMNS: &str =
    "w.id, w.account_id, w.url, w.secret, w.previous_secrets, w.headers, w.events, \
                       w.status, w.disabled_reason, w.description, w.created_at, w.updated_at, \
                       w.version, w.filter, w.rate_limit, w.max_in_flight, w.ordering, \
                       w.ordering_changed_at, \
                       h.failing_since, h.consecutive_failures, h.trips, h.paused_until";
/// Every read of a webhook comes with its health, if it has any for its current version.
const FROM: &str = "webhooks w LEFT JOIN webhook_health h
                    ON h.webhook_id = w.id AND h.webhook_version = w.updated_at";

/// A secret in plain text, and when it stops signing (`None`: the current one).
pub type OpenedSecret = (String, Option<DateTime<Utc>>);

/// A secret replaced by a rotation, still signing beside the new one until it expires.
#[derive(Clone)]
pub struct PreviousSecret {
    pub secret: String,
    pub expires_at: DateTime<Utc>,
}

/// The saved state of a webhook's endpoint health (see `hookrelay_core::EndpointHealth`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthRow {
    pub failing_since: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub trips: u32,
    pub paused_until: Option<DateTime<Utc>>,
}

/// A row of `webhooks` as stored. Values are not re-validated on the way out: a row edited by
/// hand in psql is still listed and can be fixed through the API.
#[derive(Clone)]
pub struct WebhookRow {
    pub id: Uuid,
    pub account_id: String,
    pub url: String,
    /// As stored: sealed when `secret_key` was set, plain otherwise. Only the delivery side
    /// needs the secret itself ([`Store::open_secrets`]), so a value no configured key opens
    /// never stops the API from reading the webhook.
    pub secret: Option<String>,
    /// Older secrets of a rotation, newest first, expired ones included; as stored.
    pub previous_secrets: Vec<PreviousSecret>,
    pub headers: BTreeMap<String, String>,
    pub events: Vec<String>,
    pub status: WebhookStatus,
    pub disabled_reason: Option<String>,
    pub description: Option<String>,
    /// The payload filter as saved; compiled by whoever reads it (`Filter::parse`).
    pub filter: Option<serde_json::Value>,
    /// Requests a second at most, over any sliding second.
    pub rate_limit: Option<u32>,
    /// Requests at once at most, instead of `max_in_flight_per_webhook`.
    pub max_in_flight: Option<u16>,
    pub ordering: Ordering,
    /// When an edit last changed `ordering`; `None`: as created.
    pub ordering_changed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// One more at every change, by hand included (migration V7): which of two reads of a
    /// webhook is the newer.
    pub version: i64,
    pub health: HealthRow,
}

// By hand so that the secret can never reach a log line through `{:?}`.
impl std::fmt::Debug for WebhookRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRow")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("url", &self.url)
            .field("has_secret", &self.secret.is_some())
            .field("previous_secrets", &self.previous_secrets.len())
            .field("events", &self.events)
            .field("status", &self.status)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl WebhookRow {
    fn from_row(row: &Row) -> Self {
        let headers: serde_json::Value = row.get("headers");
        let headers = match headers {
            serde_json::Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        let previous: serde_json::Value = row.get("previous_secrets");
        // Written only by `rotate_secret`; an entry edited by hand into another shape is left
        // out rather than stopping every read of the webhook.
        let previous_secrets = match previous {
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|item| {
                    Some(PreviousSecret {
                        secret: item.get("secret")?.as_str()?.to_owned(),
                        expires_at: DateTime::parse_from_rfc3339(item.get("expires_at")?.as_str()?)
                            .ok()?
                            .with_timezone(&Utc),
                    })
                })
                .collect(),
            _ => Vec::new(),
        };
        let count = |name: &str| row.get::<_, Option<i32>>(name).map_or(0, crate::count);
        Self {
            id: row.get("id"),
            account_id: row.get("account_id"),
            url: row.get("url"),
            secret: row.get("secret"),
            previous_secrets,
            headers,
            events: row.get("events"),
            status: webhook_status(row.get("id"), row.get("status")),
            disabled_reason: row.get("disabled_reason"),
            description: row.get("description"),
            filter: row.get("filter"),
            // Checked positive by the table; out of range only if edited by hand past it.
            rate_limit: row
                .get::<_, Option<i32>>("rate_limit")
                .and_then(|n| u32::try_from(n).ok()),
            max_in_flight: row
                .get::<_, Option<i32>>("max_in_flight")
                .and_then(|n| u16::try_from(n).ok()),
            // Checked by the table.
            ordering: Ordering::parse(row.get("ordering")).unwrap_or_default(),
            ordering_changed_at: row.get("ordering_changed_at"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
            version: row.get("version"),
            health: HealthRow {
                failing_since: row.get("failing_since"),
                consecutive_failures: count("consecutive_failures"),
                trips: count("trips"),
                paused_until: row.get("paused_until"),
            },
        }
    }

    pub fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            key: self.id.to_string(),
        }
    }
}

#[derive(Debug)]
pub struct NewWebhook {
    pub account_id: AccountId,
    pub url: WebhookUrl,
    pub secret: Option<Secret>,
    pub headers: HeaderSet,
    pub events: EventList,
    pub description: Option<Description>,
    pub filter: Option<Filter>,
    pub rate_limit: Option<u32>,
    pub max_in_flight: Option<u16>,
    pub ordering: Ordering,
}

/// A change to a webhook: `None` leaves a field as it is; for nullable fields `Some(None)`
/// clears it.
#[derive(Debug, Default)]
pub struct WebhookPatch {
    pub account_id: Option<AccountId>,
    pub url: Option<WebhookUrl>,
    pub secret: Option<Option<Secret>>,
    pub headers: Option<HeaderSet>,
    pub events: Option<EventList>,
    pub description: Option<Option<Description>>,
    pub filter: Option<Option<Filter>>,
    pub rate_limit: Option<Option<u32>>,
    pub max_in_flight: Option<Option<u16>>,
    pub ordering: Option<Ordering>,
    pub status: Option<WebhookStatus>,
    /// Why, when this patch disables the webhook. Without one, a webhook already disabled
    /// keeps its reason and an active one gets [`DISABLED_BY_HAND`].
    pub disabled_reason: Option<String>,
}

#[derive(Debug, Default)]
pub struct WebhookFilter {
    /// `None` lists every account's webhooks (admin token only).
    pub account_id: Option<String>,
    pub status: Option<WebhookStatus>,
}

/// Fails with [`StoreError::QuotaExceeded`] when `account` has `max` webhooks already (not
/// counting webhook `moving`, on its way in). Holds a lock on the account until `tx` ends.
async fn check_quota(
    tx: &deadpool_postgres::Transaction<'_>,
    account: &str,
    moving: Option<Uuid>,
    max: u32,
) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('hookrelay.webhooks:' || $1, 0))",
        &[&account],
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT count(*) FROM webhooks
             WHERE account_id = $1 AND ($2::uuid IS NULL OR id <> $2)",
            &[&account, &moving],
        )
        .await?;
    let count: i64 = row.get(0);
    if count >= i64::from(max) {
        return Err(StoreError::QuotaExceeded(format!(
            "account `{account}` has {count} webhooks, the most max_webhooks_per_account \
             ({max}) allows: delete one first"
        )));
    }
    Ok(())
}

/// What a header value of webhook `id` is sealed for: the webhook and the header's name, so
/// that a sealed value opens under no other header or webhook.
fn header_owner(id: Uuid, name: &str) -> Vec<u8> {
    let mut owner = id.as_bytes().to_vec();
    owner.extend_from_slice(b"/header/");
    owner.extend_from_slice(name.to_ascii_lowercase().as_bytes());
    owner
}

fn cursor_position(
    after: Option<&Cursor>,
) -> Result<(Option<DateTime<Utc>>, Option<Uuid>), StoreError> {
    match after {
        None => Ok((None, None)),
        Some(c) => {
            let id = Uuid::parse_str(&c.key).map_err(|_| {
                StoreError::Invalid("the cursor does not belong to this list".into())
            })?;
            Ok((Some(c.created_at), Some(id)))
        }
    }
}

impl Store {
    /// Inserts a webhook, unless its account has `max_per_account` already: then
    /// [`StoreError::QuotaExceeded`]. The account is locked for the count and the insert, so
    /// that two creations at once cannot both take its last place.
    pub async fn insert_webhook(
        &self,
        new: &NewWebhook,
        max_per_account: u32,
    ) -> Result<WebhookRow, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        check_quota(&tx, new.account_id.as_str(), None, max_per_account).await?;
        let sql = format!(
            "WITH w AS (
                INSERT INTO webhooks (id, account_id, url, secret, headers, events, description,
                                      filter, rate_limit, max_in_flight, ordering)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                RETURNING *)
             SELECT {COLUMNS} FROM w LEFT JOIN webhook_health h ON false"
        );
        let id = Uuid::now_v7();
        let row = tx
            .query_one(
                &sql,
                &[
                    &id,
                    &new.account_id.as_str(),
                    &new.url.as_str(),
                    &new.secret
                        .as_ref()
                        .map(|s| self.seal(s.expose(), id))
                        .transpose()?,
                    &self.seal_headers(&new.headers, id)?,
                    &new.events.names(),
                    &new.description.as_ref().map(Description::as_str),
                    &new.filter.as_ref().map(Filter::as_json),
                    &new.rate_limit.map(to_int),
                    &new.max_in_flight.map(i32::from),
                    &new.ordering.as_str(),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(WebhookRow::from_row(&row))
    }

    /// One webhook; `account` limits the search to that account's webhooks.
    pub async fn get_webhook(
        &self,
        id: Uuid,
        account: Option<&str>,
    ) -> Result<Option<WebhookRow>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM {FROM} WHERE w.id = $1 AND ($2::text IS NULL OR w.account_id = $2)"
        );
        let row = client.query_opt(&sql, &[&id, &account]).await?;
        Ok(row.as_ref().map(WebhookRow::from_row))
    }

    pub async fn list_webhooks(
        &self,
        filter: &WebhookFilter,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<WebhookRow>, StoreError> {
        let (at, id) = cursor_position(after)?;
        let client = self.client().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM {FROM}
             WHERE ($1::text IS NULL OR w.account_id = $1)
               AND ($2::text IS NULL OR w.status = $2)
               AND ($3::timestamptz IS NULL OR (w.created_at, w.id) < ($3, $4::uuid))
             ORDER BY w.created_at DESC, w.id DESC
             LIMIT $5"
        );
        let rows = client
            .query(
                &sql,
                &[
                    &filter.account_id,
                    &filter.status.map(WebhookStatus::as_str),
                    &at,
                    &id,
                    &(limit as i64 + 1),
                ],
            )
            .await?;
        let rows = rows.iter().map(WebhookRow::from_row).collect();
        Ok(Page::from_rows(rows, limit, WebhookRow::cursor))
    }

    /// Applies `patch` in one statement, so a failure changes nothing. `None` when no such
    /// webhook is visible to `account`. A change gives the webhook a clean bill of health (its
    /// pause and its auto-disable clock start over), as the delivery worker does in memory.
    pub async fn update_webhook(
        &self,
        id: Uuid,
        account: Option<&str>,
        patch: &WebhookPatch,
        max_per_account: u32,
    ) -> Result<Option<WebhookRow>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Moved to another account: it takes a place there.
        if let Some(to) = &patch.account_id {
            check_quota(&tx, to.as_str(), Some(id), max_per_account).await?;
        }
        // In SET, a bare column name is the row's value before the update. The statement's
        // parts see one snapshot: the answer is read afterwards, to show the health reset.
        let sql = "WITH reset AS (
                DELETE FROM webhook_health
                WHERE webhook_id = $1
                  AND EXISTS (SELECT 1 FROM webhooks
                              WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)))
            UPDATE webhooks SET
                account_id = COALESCE($3, account_id),
                url = COALESCE($4, url),
                secret = CASE WHEN $5 THEN $6 ELSE secret END,
                headers = COALESCE($7, headers),
                events = COALESCE($8, events),
                description = CASE WHEN $9 THEN $10 ELSE description END,
                status = COALESCE($11, status),
                disabled_reason = CASE
                    WHEN $11::text IS NULL THEN disabled_reason
                    WHEN $11 = 'active' THEN NULL
                    ELSE COALESCE($12, CASE WHEN status = 'disabled' THEN disabled_reason END, $13)
                    END,
                filter = CASE WHEN $14 THEN $15 ELSE filter END,
                rate_limit = CASE WHEN $16 THEN $17 ELSE rate_limit END,
                max_in_flight = CASE WHEN $18 THEN $19 ELSE max_in_flight END,
                ordering = COALESCE($20, ordering),
                ordering_changed_at = CASE WHEN $20 <> ordering THEN now()
                                           ELSE ordering_changed_at END,
                updated_at = now()
             WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)";
        let changed = tx
            .execute(
                sql,
                &[
                    &id,
                    &account,
                    &patch.account_id.as_ref().map(AccountId::as_str),
                    &patch.url.as_ref().map(WebhookUrl::as_str),
                    &patch.secret.is_some(),
                    &patch
                        .secret
                        .as_ref()
                        .and_then(|s| s.as_ref().map(|s| self.seal(s.expose(), id)))
                        .transpose()?,
                    &patch
                        .headers
                        .as_ref()
                        .map(|h| self.seal_headers(h, id))
                        .transpose()?,
                    &patch.events.as_ref().map(EventList::names),
                    &patch.description.is_some(),
                    &patch
                        .description
                        .as_ref()
                        .and_then(|d| d.as_ref().map(Description::as_str)),
                    &patch.status.map(WebhookStatus::as_str),
                    &patch.disabled_reason,
                    &DISABLED_BY_HAND,
                    &patch.filter.is_some(),
                    &patch
                        .filter
                        .as_ref()
                        .and_then(|f| f.as_ref().map(Filter::as_json)),
                    &patch.rate_limit.is_some(),
                    &patch.rate_limit.flatten().map(to_int),
                    &patch.max_in_flight.is_some(),
                    &patch.max_in_flight.flatten().map(i32::from),
                    &patch.ordering.map(Ordering::as_str),
                ],
            )
            .await?;
        tx.commit().await?;
        drop(client);
        if changed == 0 {
            return Ok(None);
        }
        self.get_webhook(id, account).await
    }

    /// Every webhook, for the dispatcher's in-memory index.
    pub async fn load_webhooks(&self) -> Result<Vec<WebhookRow>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(&format!("SELECT {COLUMNS} FROM {FROM}"), &[])
            .await?;
        Ok(rows.iter().map(WebhookRow::from_row).collect())
    }

    /// The event type names of the catalog.
    pub async fn event_type_names(&self) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let rows = client.query("SELECT name FROM event_types", &[]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Disables an active webhook on hookrelay's own decision (its deliveries kept failing, or
    /// its endpoint answered 410). `false` when it was not active any more: nothing changed.
    pub async fn auto_disable_webhook(&self, id: Uuid, reason: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE webhooks SET status = 'disabled', disabled_reason = $2, updated_at = now()
                 WHERE id = $1 AND status = 'active'",
                &[&id, &reason],
            )
            .await?;
        Ok(n > 0)
    }

    /// Replaces the secret with `new`. The current one keeps signing beside it until `grace`
    /// from now (none when `grace` is zero); expired older ones are dropped, and of the others
    /// the [`MAX_PREVIOUS_SECRETS`] that expire last are kept: the oldest ends early. Answers the
    /// webhook and until when its previous secret signs (`None` when there was none, or no
    /// grace); `None` when no such webhook is visible to `account`.
    pub async fn rotate_secret(
        &self,
        id: Uuid,
        account: Option<&str>,
        new: &Secret,
        grace: std::time::Duration,
    ) -> Result<Option<(WebhookRow, Option<DateTime<Utc>>)>, StoreError> {
        let client = self.client().await?;
        let grace_secs = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let rotated = client
            .query_opt(
                "WITH reset AS (
                    DELETE FROM webhook_health
                    WHERE webhook_id = $1
                      AND EXISTS (SELECT 1 FROM webhooks
                                  WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)))
                 UPDATE webhooks w SET
                    previous_secrets = (
                        SELECT COALESCE(
                            jsonb_agg(p ORDER BY (p->>'expires_at')::timestamptz DESC), '[]')
                        FROM (
                            SELECT p FROM (
                                SELECT jsonb_build_object(
                                           'secret', w.secret,
                                           'expires_at', to_jsonb(now() + make_interval(secs => $4::float8))) AS p
                                WHERE w.secret IS NOT NULL AND $4::float8 > 0
                                UNION ALL
                                SELECT p FROM jsonb_array_elements(w.previous_secrets) AS p
                                WHERE (p->>'expires_at')::timestamptz > now()
                            ) unexpired
                            ORDER BY (p->>'expires_at')::timestamptz DESC
                            LIMIT $5
                        ) kept),
                    secret = $3,
                    updated_at = now()
                 -- `old` is the row as it was: whether a secret is being rotated out.
                 FROM webhooks old
                 WHERE w.id = $1 AND ($2::text IS NULL OR w.account_id = $2) AND old.id = w.id
                 RETURNING CASE WHEN old.secret IS NOT NULL AND $4::float8 > 0
                                THEN now() + make_interval(secs => $4::float8) END",
                &[
                    &id,
                    &account,
                    &self.seal(new.expose(), id)?,
                    &(grace_secs as f64),
                    &(MAX_PREVIOUS_SECRETS as i64),
                ],
            )
            .await?;
        drop(client);
        let Some(rotated) = rotated else {
            return Ok(None);
        };
        let previous_expires_at: Option<DateTime<Utc>> = rotated.get(0);
        Ok(self
            .get_webhook(id, account)
            .await?
            .map(|row| (row, previous_expires_at)))
    }

    /// Deletes a webhook; its logs stay. `false` when no such webhook is visible to `account`.
    pub async fn delete_webhook(
        &self,
        id: Uuid,
        account: Option<&str>,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM webhooks WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)",
                &[&id, &account],
            )
            .await?;
        Ok(n > 0)
    }

    /// The value to store for `secret` of webhook `id`: sealed when a key is set.
    fn seal(&self, secret: &str, id: Uuid) -> Result<String, StoreError> {
        self.seal_for(secret, id, id.as_bytes())
    }

    fn open(&self, stored: &str, id: Uuid) -> Result<String, StoreError> {
        self.open_for(stored, id, id.as_bytes())
    }

    /// `plain`, a value of webhook `id`, sealed for `owner` (which binds it to its place).
    fn seal_for(&self, plain: &str, id: Uuid, owner: &[u8]) -> Result<String, StoreError> {
        let mut nonce = [0u8; hookrelay_core::sealing::NONCE_BYTES];
        rand::Rng::fill(&mut rand::rng(), &mut nonce[..]);
        self.sealer
            .seal(plain, owner, nonce)
            .map_err(|error| StoreError::Sealed {
                webhook_id: id,
                error,
            })
    }

    fn open_for(&self, stored: &str, id: Uuid, owner: &[u8]) -> Result<String, StoreError> {
        self.sealer
            .open(stored, owner)
            .map_err(|error| StoreError::Sealed {
                webhook_id: id,
                error,
            })
    }

    /// Seals `stored`, a value of webhook `id` sealed for `owner`, as the current keys would,
    /// unless it is so already; answers whether it changed.
    fn reseal_if_stale(
        &self,
        stored: &mut String,
        id: Uuid,
        owner: &[u8],
    ) -> Result<bool, StoreError> {
        if self.sealer.is_current(stored) {
            return Ok(false);
        }
        let plain = self.open_for(stored, id, owner)?;
        *stored = self.seal_for(&plain, id, owner)?;
        Ok(true)
    }

    /// Custom headers as stored: each value sealed when a key is set, for its own header of
    /// its own webhook (users put credentials in them).
    fn seal_headers(&self, headers: &HeaderSet, id: Uuid) -> Result<serde_json::Value, StoreError> {
        let mut stored = serde_json::Map::new();
        for (name, value) in headers.iter() {
            let sealed = self.seal_for(value, id, &header_owner(id, name))?;
            stored.insert(name.to_owned(), serde_json::Value::String(sealed));
        }
        Ok(serde_json::Value::Object(stored))
    }

    /// The row's custom headers in plain text.
    pub fn open_headers(&self, row: &WebhookRow) -> Result<BTreeMap<String, String>, StoreError> {
        row.headers
            .iter()
            .map(|(name, stored)| {
                let plain = self.open_for(stored, row.id, &header_owner(row.id, name))?;
                Ok((name.clone(), plain))
            })
            .collect()
    }

    /// The row's secrets in plain text, newest first, each with when it stops signing
    /// (`None` for the current one).
    pub fn open_secrets(&self, row: &WebhookRow) -> Result<Vec<OpenedSecret>, StoreError> {
        let current = row.secret.iter().map(|s| (s.as_str(), None));
        let previous = row
            .previous_secrets
            .iter()
            .map(|p| (p.secret.as_str(), Some(p.expires_at)));
        current
            .chain(previous)
            .map(|(stored, expires)| Ok((self.open(stored, row.id)?, expires)))
            .collect()
    }

    /// Stores every webhook secret and custom header value as the current keys would (sealed
    /// under `secret_key`, or plain without one), a batch of rows locked at a time, so that an
    /// old key can then be dropped. Neither `updated_at` nor the endpoint health changes. Answers how many rows
    /// were rewritten, and how many were looked at.
    pub async fn reencrypt_secrets(&self) -> Result<(u64, u64), StoreError> {
        const BATCH: i64 = 500;
        let mut after = Uuid::nil();
        let (mut rewritten, mut seen) = (0u64, 0u64);
        loop {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // No change notifications: the secrets stay what they were (see migration V3).
            tx.batch_execute("SET LOCAL hookrelay.quiet = 'on'").await?;
            let rows = tx
                .query(
                    "SELECT id, secret, previous_secrets, headers FROM webhooks
                     WHERE id > $1 ORDER BY id LIMIT $2 FOR UPDATE",
                    &[&after, &BATCH],
                )
                .await?;
            let Some(last) = rows.last() else {
                return Ok((rewritten, seen));
            };
            after = last.get("id");
            for row in &rows {
                seen += 1;
                let id: Uuid = row.get("id");
                let own = id.as_bytes();
                let mut secret: Option<String> = row.get("secret");
                let mut previous: serde_json::Value = row.get("previous_secrets");
                let mut headers: serde_json::Value = row.get("headers");
                let mut stale = false;
                if let Some(stored) = &mut secret {
                    stale |= self.reseal_if_stale(stored, id, own)?;
                }
                if let serde_json::Value::Array(items) = &mut previous {
                    for item in items {
                        if let Some(serde_json::Value::String(stored)) = item.get_mut("secret") {
                            stale |= self.reseal_if_stale(stored, id, own)?;
                        }
                    }
                }
                if let serde_json::Value::Object(values) = &mut headers {
                    for (name, value) in values.iter_mut() {
                        if let serde_json::Value::String(stored) = value {
                            stale |= self.reseal_if_stale(stored, id, &header_owner(id, name))?;
                        }
                    }
                }
                if stale {
                    tx.execute(
                        "UPDATE webhooks SET secret = $2, previous_secrets = $3, headers = $4
                         WHERE id = $1",
                        &[&id, &secret, &previous, &headers],
                    )
                    .await?;
                    rewritten += 1;
                }
            }
            tx.commit().await?;
        }
    }
}
