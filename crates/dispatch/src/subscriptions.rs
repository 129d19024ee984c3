//! The in-memory subscription index: `(account_id, event_type) → webhooks`, and every
//! webhook's delivery settings by id. Loaded at start, kept current by LISTEN/NOTIFY, and
//! fully reloaded every minute and after any lost notification as a safety net.
//!
//! A webhook this process writes through the API is applied from the row the API wrote; a
//! change notification then reads the row only when the index does not hold its version yet
//! (migration V7 numbers every change), and a deletion reads nothing.
//!
//! Readers never lock: the index is immutable and swapped whole (`arc-swap`) by the one
//! change running at a time. There is no lock to poison, so no reader can ever mistake a
//! failure for "no subscribers" and ack an event with no deliveries.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use backon::Retryable;
use chrono::{DateTime, Utc};
use hookrelay_core::{Filter, HeaderSet, Ordering, Secret, WebhookStatus};
use hookrelay_store::{Store, StoreError, WebhookChange, WebhookRow};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use uuid::Uuid;

const FULL_RELOAD_EVERY: Duration = Duration::from_secs(60);
/// Deleted webhooks remembered, at most: a row the API read just before a deletion must not
/// bring its webhook back. Deletions are rare; past this many the oldest knowledge goes.
const DELETED_KEPT: usize = 10_000;

/// What a delivery needs to know about its webhook, read afresh for every attempt.
pub struct WebhookConfig {
    pub id: Uuid,
    pub account_id: String,
    pub url: String,
    /// Signing secrets, newest first, each with when it stops signing (a rotated-out one).
    pub secrets: Vec<(Secret, Option<DateTime<Utc>>)>,
    /// Why the secrets or the custom header values could not be opened (no configured key
    /// sealed them), if so: nothing is sent unsigned, or without its headers, in their place.
    pub unsealable: Option<String>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub events: Vec<String>,
    /// Which events of its types it receives; `None`: all.
    pub filter: Option<Filter>,
    /// Requests a second at most, over any sliding second.
    pub rate_limit: Option<u32>,
    /// Requests at once at most, instead of `max_in_flight_per_webhook`.
    pub max_in_flight: Option<u16>,
    /// FIFO: its deliveries are fanned out by the ordered fan-out and go out one at a time.
    pub ordering: Ordering,
    /// When an edit last changed `ordering` (`crate::fanout`'s overlap); `None`: as created.
    pub ordering_changed_at: Option<DateTime<Utc>>,
    pub active: bool,
    /// Changes whenever the webhook is edited, so a paused delivery worker can tell that
    /// its endpoint may have been fixed.
    pub updated_at: DateTime<Utc>,
    /// One more at every change of the row: which of two reads is the newer.
    pub version: i64,
}

impl WebhookConfig {
    fn from_row(row: WebhookRow, store: &Store) -> Self {
        // What was valid when saved keeps working: a row saved before a rule was added (a
        // short plain secret, a header now reserved) signs with its secret and sends its other
        // headers. A secret no configured key opens makes every attempt fail loudly rather
        // than go out unsigned.
        let opened = store
            .open_secrets(&row)
            .and_then(|secrets| Ok((secrets, store.open_headers(&row)?)));
        let (secrets, stored_headers, unsealable) = match opened {
            Ok((secrets, headers)) => (
                secrets
                    .into_iter()
                    .filter_map(|(plain, expires)| Some((Secret::from_stored(&plain)?, expires)))
                    .collect(),
                headers,
                None,
            ),
            Err(e) => {
                let why = crate::error_chain(&e);
                warn!(webhook_id = %row.id, error = %why, "cannot open the webhook's secret or headers; its deliveries fail until the key is configured");
                (Vec::new(), Default::default(), Some(why))
            }
        };
        let (headers, dropped) = HeaderSet::from_stored(stored_headers);
        if !dropped.is_empty() {
            warn!(webhook_id = %row.id, headers = ?dropped, "stored headers are not allowed any more; sending the others");
        }
        let headers = headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    http::HeaderName::from_bytes(k.as_bytes()).ok()?,
                    http::HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect();
        // A stored filter that no longer compiles (edited by hand, or saved under other
        // rules) lets every event through: a few deliveries too many can be told apart by
        // their receiver, events never logged cannot be found by anyone.
        let filter = row.filter.as_ref().and_then(|source| match Filter::parse(source) {
            Ok(filter) => Some(filter),
            Err(e) => {
                warn!(webhook_id = %row.id, error = %e, "the stored filter does not compile; every event of the webhook's types goes to it");
                None
            }
        });
        Self {
            id: row.id,
            account_id: row.account_id,
            url: row.url,
            secrets,
            unsealable,
            headers,
            events: row.events,
            filter,
            rate_limit: row.rate_limit,
            max_in_flight: row.max_in_flight,
            ordering: row.ordering,
            ordering_changed_at: row.ordering_changed_at,
            active: row.status == WebhookStatus::Active,
            updated_at: row.updated_at,
            version: row.version,
        }
    }

    /// The secrets that sign at `now`: the current one and those rotated out less than
    /// their grace period ago.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<Secret> {
        self.secrets
            .iter()
            .filter(|(_, expires)| expires.is_none_or(|at| at > now))
            .map(|(secret, _)| secret.clone())
            .collect()
    }
}

/// Persistent maps (`imbl`): a copy shares all but the changed path with the original, so a
/// change costs O(log n) plus the webhooks of its account and event types, rather than a
/// copy of ten thousand webhooks, and a reader holding the old index keeps it whole.
#[derive(Default, Clone)]
struct Index {
    by_id: imbl::HashMap<Uuid, Arc<WebhookConfig>>,
    by_key: imbl::HashMap<(String, String), Vec<Arc<WebhookConfig>>>,
    /// FIFO webhooks held, active or not.
    fifo: usize,
}

impl Index {
    fn new(webhooks: impl IntoIterator<Item = Arc<WebhookConfig>>) -> Self {
        let mut index = Self::default();
        for webhook in webhooks {
            index.put(webhook);
        }
        index
    }

    /// Adds `webhook`, or replaces the webhook of that id.
    fn put(&mut self, webhook: Arc<WebhookConfig>) {
        self.remove(webhook.id);
        self.fifo += usize::from(webhook.ordering.is_fifo());
        if webhook.active {
            for event in &webhook.events {
                self.by_key
                    .entry((webhook.account_id.clone(), event.clone()))
                    .or_default()
                    .push(webhook.clone());
            }
        }
        self.by_id.insert(webhook.id, webhook);
    }

    fn remove(&mut self, id: Uuid) {
        let Some(old) = self.by_id.remove(&id) else {
            return;
        };
        self.fifo -= usize::from(old.ordering.is_fifo());
        if !old.active {
            return;
        }
        for event in &old.events {
            let key = (old.account_id.clone(), event.clone());
            let emptied = self.by_key.get_mut(&key).is_some_and(|webhooks| {
                webhooks.retain(|w| w.id != id);
                webhooks.is_empty()
            });
            if emptied {
                self.by_key.remove(&key);
            }
        }
    }
}

pub struct Subscriptions {
    store: Store,
    index: ArcSwap<Index>,
    /// Bumped on every change, so the delivery manager knows to reconcile its consumers.
    generation: watch::Sender<u64>,
    /// Changes run one at a time: a full reload that read the table before a change must not
    /// finish after the single reload that applied it, bringing back what it removed. The
    /// lock holds the webhooks found deleted, which no row written earlier brings back.
    changing: tokio::sync::Mutex<HashSet<Uuid>>,
}

impl Subscriptions {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            index: ArcSwap::from_pointee(Index::default()),
            generation: watch::Sender::new(0),
            changing: tokio::sync::Mutex::new(HashSet::new()),
        }
    }

    /// The active webhooks of `account_id` subscribed to `event_type`.
    pub fn matching(&self, account_id: &str, event_type: &str) -> Vec<Arc<WebhookConfig>> {
        self.index
            .load()
            .by_key
            .get(&(account_id.to_owned(), event_type.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Whether any webhook is FIFO: the ordered fan-out is needed.
    pub fn has_fifo(&self) -> bool {
        self.index.load().fifo > 0
    }

    pub fn get(&self, id: Uuid) -> Option<Arc<WebhookConfig>> {
        self.index.load().by_id.get(&id).cloned()
    }

    /// Every known webhook id with whether it is active.
    pub fn all(&self) -> Vec<(Uuid, bool)> {
        self.index
            .load()
            .by_id
            .values()
            .map(|w| (w.id, w.active))
            .collect()
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub async fn reload_all(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.changing.lock().await;
        let rows = self.store.load_webhooks().await?;
        // A webhook held at the version read is kept as it is: its secrets opened and its
        // filter compiled once, not at every reload.
        let held = self.index.load();
        let index = Index::new(rows.into_iter().map(|row| {
            match held.by_id.get(&row.id).filter(|w| w.version == row.version) {
                Some(same) => same.clone(),
                None => Arc::new(WebhookConfig::from_row(row, &self.store)),
            }
        }));
        self.index.store(Arc::new(index));
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// The webhooks whose secrets no configured key opens, with why.
    pub fn unsealable(&self) -> Vec<String> {
        self.index
            .load()
            .by_id
            .values()
            .filter_map(|w| w.unsealable.clone())
            .collect()
    }

    /// Applies a webhook row this process has just written, now: the webhook matches the very
    /// next event, and the change notification that follows finds this version here and
    /// reads nothing. A row older than the one held (a later change was read meanwhile) is
    /// not applied.
    pub async fn apply_written(&self, row: WebhookRow) {
        let deleted = self.changing.lock().await;
        if self.holds(row.id, Some(row.version)) || deleted.contains(&row.id) {
            return;
        }
        self.put(row);
    }

    /// A new index, with `change` made to a copy of this one; under the `changing` lock.
    fn change(&self, change: impl FnOnce(&mut Index)) {
        let mut index = Index::clone(&self.index.load());
        change(&mut index);
        self.index.store(Arc::new(index));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Puts `row`'s webhook in the index; under the `changing` lock.
    fn put(&self, row: WebhookRow) {
        let config = Arc::new(WebhookConfig::from_row(row, &self.store));
        self.change(|index| index.put(config));
    }

    /// Forgets webhook `id`, deleted: no read needed.
    pub async fn remove(&self, id: Uuid) {
        let mut deleted = self.changing.lock().await;
        self.forget(&mut deleted, id);
    }

    /// Takes webhook `id` out of the index, and remembers it deleted.
    fn forget(&self, deleted: &mut HashSet<Uuid>, id: Uuid) {
        self.change(|index| index.remove(id));
        if deleted.len() >= DELETED_KEPT {
            deleted.clear();
        }
        deleted.insert(id);
    }

    /// Whether the index holds webhook `id` at `version` or later already.
    fn holds(&self, id: Uuid, version: Option<i64>) -> bool {
        match (self.get(id), version) {
            (Some(held), Some(version)) => held.version >= version,
            _ => false,
        }
    }

    /// Applies a change to webhook `id` now; should that fail, the notification (or the
    /// periodic reload) still will.
    pub async fn reload_or_warn(&self, id: Uuid) {
        if let Err(e) = self.reload_one(id).await {
            warn!(webhook_id = %id, error = %crate::error_chain(&e), "cannot refresh a changed webhook; the listener will");
        }
    }

    pub async fn reload_one(&self, id: Uuid) -> Result<(), StoreError> {
        let mut deleted = self.changing.lock().await;
        let Some(row) = self.store.get_webhook(id, None).await? else {
            self.forget(&mut deleted, id);
            return Ok(());
        };
        // Changes run one at a time, under the lock: this copy is the latest.
        self.put(row);
        Ok(())
    }
}

/// Follows webhook changes until `shutdown`: LISTEN, and on every (re)connection or lost
/// notification a full reload, since what happened in between is unknown.
pub async fn listen(
    subscriptions: Arc<Subscriptions>,
    database_url: String,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let backoff = hookrelay_broker::reconnect_backoff();
    loop {
        let connect = (|| hookrelay_store::listen_webhook_changes(&database_url, &tracker))
            .retry(backoff)
            .notify(|e, d| warn!(error = %e, retry_in = ?d, "cannot listen for webhook changes"));
        let mut listener = tokio::select! {
            _ = shutdown.cancelled() => return,
            l = connect => match l { Ok(l) => l, Err(_) => continue },
        };
        if let Err(e) = subscriptions.reload_all().await {
            warn!(error = %crate::error_chain(&e), "cannot reload the webhooks");
        }
        let mut tick = tokio::time::interval(FULL_RELOAD_EVERY);
        tick.reset();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = subscriptions.reload_all().await {
                        warn!(error = %crate::error_chain(&e), "periodic reload of the webhooks failed");
                    }
                }
                change = listener.changes.recv() => match change {
                    Some(WebhookChange::Written { id, version }) => {
                        if subscriptions.holds(id, version) {
                            continue;
                        }
                        debug!(webhook_id = %id, "webhook changed");
                        if let Err(e) = subscriptions.reload_one(id).await {
                            warn!(error = %crate::error_chain(&e), "cannot reload a changed webhook");
                        }
                    }
                    Some(WebhookChange::Deleted(id)) => {
                        debug!(webhook_id = %id, "webhook deleted");
                        subscriptions.remove(id).await;
                    }
                    Some(WebhookChange::All) => {
                        if let Err(e) = subscriptions.reload_all().await {
                            warn!(error = %crate::error_chain(&e), "cannot reload the webhooks");
                        }
                    }
                    None => {
                        warn!("lost the webhook change listener; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(id: Uuid, account: &str, events: &[&str], active: bool) -> Arc<WebhookConfig> {
        Arc::new(WebhookConfig {
            id,
            account_id: account.to_owned(),
            url: "https://example.com/hook".to_owned(),
            secrets: Vec::new(),
            unsealable: None,
            headers: Vec::new(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            filter: None,
            rate_limit: None,
            max_in_flight: None,
            ordering: Ordering::Unordered,
            ordering_changed_at: None,
            active,
            updated_at: Utc::now(),
            version: 1,
        })
    }

    fn matching(index: &Index, account: &str, event: &str) -> Vec<Uuid> {
        let key = (account.to_owned(), event.to_owned());
        let mut ids: Vec<Uuid> = index
            .by_key
            .get(&key)
            .map(|w| w.iter().map(|w| w.id).collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    #[test]
    fn a_change_updates_the_index_in_place_and_leaves_earlier_copies_whole() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let index = Index::new([
            webhook(a, "acc", &["Contact.created", "Message.received"], true),
            webhook(b, "acc", &["Contact.created"], true),
        ]);
        let mut both = vec![a, b];
        both.sort();
        assert_eq!(matching(&index, "acc", "Contact.created"), both);

        // Edited: another event, another account.
        let mut edited = index.clone();
        edited.put(webhook(a, "other", &["Message.received"], true));
        assert_eq!(matching(&edited, "acc", "Contact.created"), vec![b]);
        assert_eq!(
            matching(&edited, "acc", "Message.received"),
            Vec::<Uuid>::new()
        );
        assert!(!edited
            .by_key
            .contains_key(&("acc".into(), "Message.received".into())));
        assert_eq!(matching(&edited, "other", "Message.received"), vec![a]);
        // The copy readers still hold is unchanged.
        assert_eq!(matching(&index, "acc", "Contact.created"), both);
        assert_eq!(matching(&index, "acc", "Message.received"), vec![a]);

        // Disabled: known by id, matched by nothing.
        edited.put(webhook(a, "other", &["Message.received"], false));
        assert!(edited.by_id.get(&a).is_some_and(|w| !w.active));
        assert_eq!(
            matching(&edited, "other", "Message.received"),
            Vec::<Uuid>::new()
        );

        // Deleted.
        edited.remove(b);
        assert!(edited.by_id.get(&b).is_none());
        assert!(edited.by_key.is_empty());
        assert_eq!(edited.by_id.len(), 1);
    }

    fn row(id: Uuid, version: i64, events: &[&str]) -> WebhookRow {
        WebhookRow {
            id,
            account_id: "acc".into(),
            url: "https://example.com/hook".into(),
            secret: None,
            previous_secrets: Vec::new(),
            headers: Default::default(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            status: WebhookStatus::Active,
            disabled_reason: None,
            description: None,
            filter: None,
            rate_limit: None,
            max_in_flight: None,
            ordering: Ordering::Unordered,
            ordering_changed_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            version,
            health: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_row_written_here_is_applied_without_a_read_and_never_by_an_older_one() {
        // Never connected: every step below must do without the database.
        let store = Store::connect(
            "postgres://nobody@127.0.0.1:1/none",
            &hookrelay_store::PoolOptions::default(),
        )
        .unwrap();
        let subscriptions = Subscriptions::new(store);
        let id = Uuid::new_v4();
        subscriptions
            .apply_written(row(id, 2, &["Contact.created"]))
            .await;
        assert_eq!(subscriptions.matching("acc", "Contact.created").len(), 1);
        // Its own notification (version 2) needs no read; a later change does.
        assert!(subscriptions.holds(id, Some(2)));
        assert!(!subscriptions.holds(id, Some(3)));
        assert!(
            !subscriptions.holds(id, None),
            "a notification without a version"
        );
        assert!(!subscriptions.holds(Uuid::new_v4(), Some(1)));
        // An older row, written before a change another process made and this one read.
        subscriptions
            .apply_written(row(id, 1, &["Message.received"]))
            .await;
        assert_eq!(subscriptions.matching("acc", "Contact.created").len(), 1);
        assert!(subscriptions.matching("acc", "Message.received").is_empty());
        subscriptions.remove(id).await;
        assert!(subscriptions.get(id).is_none());
        assert!(subscriptions.matching("acc", "Contact.created").is_empty());
        // A row the API read just before the webhook was deleted does not bring it back.
        subscriptions
            .apply_written(row(id, 3, &["Contact.created"]))
            .await;
        assert!(subscriptions.get(id).is_none());
    }
}
