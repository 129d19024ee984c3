//! The settings of contract §6, their defaults, and how they are read: an optional TOML file
//! (`--config`), then `HOOKRELAY_<NAME>` environment variables, which win. Every value is
//! checked at start-up; a bad one stops the service with a message naming the setting and
//! where it came from, never with the value of a secret.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use hookrelay_broker::QueueType;
use hookrelay_core::sealing::{Sealer, SealingKey};
use hookrelay_core::RetrySchedule;
use serde::Deserialize;
use serde_with::{serde_as, DisplayFromStr, PickFirst};

const ENV_PREFIX: &str = "HOOKRELAY_";

/// Settings whose values must never be printed, not even in an error message.
const SECRET_SETTINGS: [&str; 6] = [
    "admin_token",
    "database_url",
    "database_read_url",
    "amqp_url",
    "secret_key",
    "old_secret_keys",
];

#[serde_as]
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// PostgreSQL. The database is created on start if it does not exist.
    pub database_url: String,
    /// A streaming replica of `database_url`, optional: the logs API, the statistics and the
    /// console read from it (a reader may see a log a replication lag late), the pipeline
    /// never does. Unset, reads go to `database_url`.
    pub database_read_url: Option<String>,
    /// RabbitMQ, AMQP 0-9-1. Several nodes of one cluster, separated by commas: a process
    /// whose node goes away connects to the next.
    pub amqp_url: String,
    /// Prefix of every AMQP object hookrelay declares (`{ns}.events`, ...), so deployments
    /// and tests can share a broker.
    pub namespace: String,
    /// `classic`, or `quorum` on a RabbitMQ cluster: the queues every event passes through
    /// (ingest, rejected, the retry tiers) are then replicated. Webhook queues stay classic.
    #[serde_as(as = "DisplayFromStr")]
    pub queue_type: QueueType,
    /// Address of the HTTP listener: admin API, `/healthz`, `/readyz`, `/metrics`.
    #[serde_as(as = "DisplayFromStr")]
    pub listen: SocketAddr,
    /// Bearer token of the admin API. Unset, every `/v1` call answers 401.
    pub admin_token: Option<String>,
    /// Encrypts webhook secrets at rest: standard base64 of 32 random bytes
    /// (`openssl rand -base64 32`). Unset, secrets are stored as given.
    pub secret_key: Option<String>,
    /// Keys that sealed secrets before `secret_key` was rotated, comma-separated: they still
    /// open, until `hookrelay reencrypt` has moved every secret to `secret_key`.
    pub old_secret_keys: Option<String>,
    /// Allow webhook URLs on loopback, private and link-local addresses. For development
    /// and tests only: on a shared service it lets accounts reach the internal network.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub allow_private_networks: bool,
    /// Delays between delivery attempts: `5s,5m,30m,2h,5h,10h,10h` means 8 attempts. Each
    /// is jittered by ±20 %; a `Retry-After` on a 429 or 503 may stretch it to twice.
    #[serde_as(as = "DisplayFromStr")]
    pub retry_schedule: RetrySchedule,
    /// Deadline of one delivery attempt, from connecting to reading the answer.
    #[serde_as(as = "DisplayFromStr")]
    pub request_timeout: HumanDuration,
    /// A webhook whose every attempt has failed for this long is disabled.
    #[serde_as(as = "DisplayFromStr")]
    pub disable_after: HumanDuration,
    /// Failed attempts in a row (and no success) that pause a webhook's queue; one probe
    /// goes out after each pause, the pauses growing like the retry schedule.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub breaker_threshold: u32,
    /// Logs queued again per second by bulk retries, recovers and lost-queue refills, at most:
    /// for every job of the deployment together, not per job or per process.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub requeue_rate: u32,
    /// Events, logs and attempts older than this are retired a whole day at a time (their
    /// daily partitions dropped); a day that holds a log still under way is kept.
    #[serde_as(as = "DisplayFromStr")]
    pub log_retention: HumanDuration,
    /// How long an event id is remembered: the same id again within it gives no second
    /// delivery to a webhook. At least the retry schedule.
    #[serde_as(as = "DisplayFromStr")]
    pub dedupe_window: HumanDuration,
    /// Store events that match no webhook too (a replay can then reach them). Off: at a
    /// platform's volume, most events may match nothing, and each would cost a row.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub keep_unmatched_events: bool,
    /// Largest event body accepted, in bytes; larger events are rejected.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub max_event_bytes: usize,
    /// Deepest nesting of arrays and objects in an event's `data`; deeper events are
    /// rejected before they reach the database (whose JSON parser recurses).
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub max_event_depth: usize,
    /// Webhooks one account may have at most: each is a queue and a consumer on the shared
    /// broker, and held in every process's memory. Past it, creating one answers 429.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub max_webhooks_per_account: u32,
    /// Deliveries to one webhook under way at once in this process.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub max_in_flight_per_webhook: u16,
    /// Deliveries under way at once in this process, all webhooks together.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub max_in_flight_total: usize,
    /// Deliveries of one account under way at once in this process, all its webhooks
    /// together: what one account's hanging endpoints can hold of `max_in_flight_total`.
    /// Unset: a quarter of `max_in_flight_total`.
    #[serde_as(as = "Option<PickFirst<(_, DisplayFromStr)>>")]
    pub max_in_flight_per_account: Option<usize>,
    /// Fan-out consumers of the ingest queue in this process.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub ingest_workers: usize,
    /// Connections to PostgreSQL.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub database_pool_size: usize,
    /// Connections the HTTP listener keeps open at once. At the cap, the connection idle the
    /// longest is closed to make room for a new one.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub max_connections: usize,
    /// Requests of one client under way at once: one credential (a bearer token), or one
    /// address for requests without one. Past it, a request answers 429 at once, so that no
    /// client can hold the listener; health, readiness and metrics are never counted.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub max_requests_per_client: usize,
    /// How long a client may take to send a request's headers, counted from the connection
    /// or from the previous answer: it also closes kept-alive connections left idle.
    #[serde_as(as = "DisplayFromStr")]
    pub header_read_timeout: HumanDuration,
    /// The largest request body the API reads.
    #[serde_as(as = "PickFirst<(_, DisplayFromStr)>")]
    pub max_request_bytes: usize,
    /// How long a stopping service waits for work under way before it exits anyway.
    #[serde_as(as = "DisplayFromStr")]
    pub shutdown_timeout: HumanDuration,
    /// `text` for people, `json` for log collectors. Levels come from `RUST_LOG`.
    #[serde_as(as = "DisplayFromStr")]
    pub log_format: LogFormat,
    /// An OpenTelemetry collector's OTLP/HTTP address (`http://collector:4318`): spans of
    /// delivery attempts go to its `/v1/traces`. Unset (the default), nothing is exported.
    #[serde_as(as = "Option<DisplayFromStr>")]
    pub otlp_endpoint: Option<url::Url>,
    /// The address the platform's customers reach hookrelay at: portal session links are
    /// `{public_url}/portal#token=…`. Unset, `http://{listen}`.
    #[serde_as(as = "Option<DisplayFromStr>")]
    pub public_url: Option<url::Url>,
    /// The origins whose pages may show the portal in a frame, space-separated
    /// (`https://app.example.com https://admin.example.com`); empty (the default): none.
    pub portal_frame_ancestors: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/hookrelay".into(),
            database_read_url: None,
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            namespace: "hookrelay".into(),
            queue_type: QueueType::Classic,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: None,
            secret_key: None,
            old_secret_keys: None,
            allow_private_networks: false,
            retry_schedule: RetrySchedule::default(),
            request_timeout: HumanDuration(Duration::from_secs(15)),
            disable_after: HumanDuration(Duration::from_secs(5 * 24 * 3600)),
            breaker_threshold: 10,
            requeue_rate: 200,
            log_retention: HumanDuration(Duration::from_secs(30 * 24 * 3600)),
            dedupe_window: HumanDuration(Duration::from_secs(7 * 24 * 3600)),
            keep_unmatched_events: false,
            max_event_bytes: 256 * 1024,
            max_event_depth: 64,
            max_webhooks_per_account: 100,
            max_in_flight_per_webhook: 16,
            max_in_flight_total: 1024,
            max_in_flight_per_account: None,
            ingest_workers: 2,
            database_pool_size: 16,
            max_connections: 1024,
            max_requests_per_client: 64,
            header_read_timeout: HumanDuration(Duration::from_secs(10)),
            max_request_bytes: 1024 * 1024,
            shutdown_timeout: HumanDuration(Duration::from_secs(30)),
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            public_url: None,
            portal_frame_ancestors: String::new(),
        }
    }
}

// By hand, so that printing the settings never prints the admin token or the passwords in
// the URLs.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("database_url", &redact_password(&self.database_url))
            .field(
                "database_read_url",
                &self.database_read_url.as_deref().map(redact_password),
            )
            .field("amqp_url", &redact_passwords(&self.amqp_url))
            .field("namespace", &self.namespace)
            .field("queue_type", &self.queue_type)
            .field("listen", &self.listen)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "old_secret_keys",
                &self.old_secret_keys.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_private_networks", &self.allow_private_networks)
            .field("retry_schedule", &self.retry_schedule.to_string())
            .field("request_timeout", &self.request_timeout)
            .field("disable_after", &self.disable_after)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("requeue_rate", &self.requeue_rate)
            .field("log_retention", &self.log_retention)
            .field("dedupe_window", &self.dedupe_window)
            .field("keep_unmatched_events", &self.keep_unmatched_events)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("max_event_depth", &self.max_event_depth)
            .field("max_webhooks_per_account", &self.max_webhooks_per_account)
            .field("max_in_flight_per_webhook", &self.max_in_flight_per_webhook)
            .field("max_in_flight_total", &self.max_in_flight_total)
            .field("max_in_flight_per_account", &self.max_in_flight_per_account)
            .field("ingest_workers", &self.ingest_workers)
            .field("database_pool_size", &self.database_pool_size)
            .field("max_connections", &self.max_connections)
            .field("max_requests_per_client", &self.max_requests_per_client)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("log_format", &self.log_format)
            .field(
                "public_url",
                &self.public_url.as_ref().map(url::Url::as_str),
            )
            .field("portal_frame_ancestors", &self.portal_frame_ancestors)
            .field(
                "otlp_endpoint",
                &self
                    .otlp_endpoint
                    .as_ref()
                    .map(|u| redact_password(u.as_str())),
            )
            .finish()
    }
}

/// Each URL of a comma-separated list, with its password redacted. A piece that is not an
/// AMQP URL (a password's raw comma splits one in two) is not shown at all.
fn redact_passwords(raw: &str) -> String {
    raw.split(',')
        .map(str::trim)
        .map(|url| match url::Url::parse(url) {
            Ok(u) if ["amqp", "amqps"].contains(&u.scheme()) => redact_password(url),
            _ => "<unparsable>".into(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_password(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("redacted"));
            url.to_string()
        }
        Ok(url) => url.to_string(),
        Err(_) => "<unparsable>".into(),
    }
}

/// A duration written as `15s`, `5m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = hookrelay_core::Invalid;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        hookrelay_core::parse_duration(raw).map(Self)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "`{other}` is not a log format: use `text` or `json`"
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// A setting that could not be used, with where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

/// Where a setting's value came from, for error messages.
enum Source {
    File,
    Env,
}

impl Settings {
    /// Reads the file (if any) and the process environment. Also answers warnings to log
    /// once logging is set up: `HOOKRELAY_*` variables that are no setting are ignored, since
    /// platforms add such variables on their own (Kubernetes makes `HOOKRELAY_PORT` for a
    /// service named hookrelay), while an unknown key in the file is an error.
    pub fn load(config_file: Option<&Path>) -> Result<(Self, Vec<String>), SettingsError> {
        Self::load_from(config_file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given, so tests need not touch the
    /// process's own.
    pub fn load_from(
        config_file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, Vec<String>), SettingsError> {
        let mut warnings = Vec::new();
        let mut table = match config_file {
            None => toml::Table::new(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    SettingsError(format!(
                        "cannot read the config file {}: {e}",
                        path.display()
                    ))
                })?;
                text.parse::<toml::Table>().map_err(|e| {
                    SettingsError(format!(
                        "the config file {} is not valid TOML: {e}",
                        path.display()
                    ))
                })?
            }
        };
        let mut sources: BTreeMap<String, Source> =
            table.keys().map(|k| (k.clone(), Source::File)).collect();
        for (name, value) in env {
            if let Some(key) = name.strip_prefix(ENV_PREFIX) {
                let key = key.to_ascii_lowercase();
                if !known().contains(&key.as_str()) {
                    warnings.push(format!("ignoring {name}: it is not a hookrelay setting"));
                    continue;
                }
                table.insert(key.clone(), toml::Value::String(value));
                sources.insert(key, Source::Env);
            }
        }
        let describe = |key: &str| match sources.get(key) {
            Some(Source::Env) => format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
            _ => format!("`{key}` in the config file"),
        };
        let settings: Self =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|err| {
                let key = err.path().to_string();
                let message = err.inner().message().to_owned();
                if let Some(unknown) = message
                    .strip_prefix("unknown field `")
                    .and_then(|rest| rest.split_once('`'))
                    .map(|(name, _)| name.to_owned())
                {
                    return SettingsError(format!(
                        "unknown setting {}; known settings: {}",
                        describe(&unknown),
                        known().join(", ")
                    ));
                }
                if SECRET_SETTINGS.contains(&key.as_str()) {
                    return SettingsError(format!(
                        "invalid setting {}: expected a string",
                        describe(&key)
                    ));
                }
                SettingsError(format!("invalid setting {}: {message}", describe(&key)))
            })?;
        settings.validate().map_err(|(key, why)| {
            SettingsError(format!("invalid setting {}: {why}", describe(key)))
        })?;
        Ok((settings, warnings))
    }

    /// Where portal session links point.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }

    /// The origins that may frame the portal, each checked to be `http(s)://host[:port]`, so
    /// that none can add to the content security policy it goes into.
    pub fn frame_ancestors(&self) -> Result<Vec<String>, String> {
        self.portal_frame_ancestors
            .split_whitespace()
            .map(|raw| {
                let origin = url::Url::parse(raw)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                    .filter(|u| u.path() == "/" && u.query().is_none() && u.fragment().is_none())
                    .filter(|u| u.username().is_empty() && u.password().is_none())
                    .map(|u| u.origin().ascii_serialization())
                    .filter(|o| o.trim_end_matches('/') == raw.trim_end_matches('/'));
                origin.ok_or_else(|| {
                    format!(
                        "`{}` is not an origin: give https://host or https://host:port, \
                         space-separated",
                        raw.escape_debug()
                    )
                })
            })
            .collect()
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        hookrelay_store::validate_database_url(&self.database_url)
            .map_err(|e| ("database_url", e.to_string()))?;
        if let Some(url) = &self.database_read_url {
            hookrelay_store::validate_database_url(url)
                .map_err(|e| ("database_read_url", e.to_string()))?;
        }
        hookrelay_broker::validate_url(&self.amqp_url).map_err(|e| ("amqp_url", e.to_string()))?;
        if let Some(url) = &self.public_url {
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err((
                    "public_url",
                    "give the http:// or https:// address customers reach hookrelay at".into(),
                ));
            }
        }
        self.frame_ancestors()
            .map_err(|why| ("portal_frame_ancestors", why))?;
        if let Some(endpoint) = &self.otlp_endpoint {
            if !matches!(endpoint.scheme(), "http" | "https") {
                return Err((
                    "otlp_endpoint",
                    format!(
                        "`{}:` is not OTLP/HTTP: give the collector's http:// or https:// address",
                        endpoint.scheme()
                    ),
                ));
            }
        }
        let namespace_ok = !self.namespace.is_empty()
            && self.namespace.len() <= 64
            && self
                .namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !namespace_ok {
            return Err((
                "namespace",
                format!(
                    "`{}` is not a namespace: use 1 to 64 letters, digits, `-`, `_` or `.`",
                    self.namespace.escape_debug()
                ),
            ));
        }
        if self
            .admin_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err((
                "admin_token",
                "it is empty; leave it unset to turn the admin API off".into(),
            ));
        }
        // The messages name the setting, never the value: these are keys.
        self.sealer()
            .map_err(|(key, invalid)| (key, invalid.message))?;
        let timeout = self.request_timeout.0;
        if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(300) {
            return Err(("request_timeout", "it must be between 100ms and 5m".into()));
        }
        if self.disable_after.0 < Duration::from_secs(1)
            || self.disable_after.0 > Duration::from_secs(365 * 24 * 3600)
        {
            return Err(("disable_after", "it must be between 1s and 365 days".into()));
        }
        if !(1..=100_000).contains(&self.breaker_threshold) {
            return Err((
                "breaker_threshold",
                "it must be between 1 and 100000".into(),
            ));
        }
        if !(1..=100_000).contains(&self.requeue_rate) {
            return Err(("requeue_rate", "it must be between 1 and 100000".into()));
        }
        if self.log_retention.0 < Duration::from_secs(3600)
            || self.log_retention.0 > Duration::from_secs(3650 * 24 * 3600)
        {
            return Err((
                "log_retention",
                "it must be between 1h and 3650 days".into(),
            ));
        }
        let schedule: Duration = self.retry_schedule.delays().iter().sum();
        // Shorter, a retry's event could come back as new while its first delivery is still
        // being retried.
        if self.dedupe_window.0 < schedule
            || self.dedupe_window.0 > Duration::from_secs(3650 * 24 * 3600)
        {
            return Err((
                "dedupe_window",
                format!(
                    "it must be at least the retry schedule ({}s) and at most 3650 days",
                    schedule.as_secs()
                ),
            ));
        }
        if self.max_event_bytes < 1024 || self.max_event_bytes > 64 * 1024 * 1024 {
            return Err((
                "max_event_bytes",
                "it must be between 1024 and 67108864".into(),
            ));
        }
        // PostgreSQL's default stack takes about 1 000 levels of jsonb; stay well below.
        if self.max_webhooks_per_account == 0 {
            return Err(("max_webhooks_per_account", "it must be at least 1".into()));
        }
        if !(1..=512).contains(&self.max_event_depth) {
            return Err(("max_event_depth", "it must be between 1 and 512".into()));
        }
        if !(1..=1024).contains(&self.max_in_flight_per_webhook) {
            return Err((
                "max_in_flight_per_webhook",
                "it must be between 1 and 1024".into(),
            ));
        }
        if !(1..=100_000).contains(&self.max_in_flight_total) {
            return Err((
                "max_in_flight_total",
                "it must be between 1 and 100000".into(),
            ));
        }
        if self
            .max_in_flight_per_account
            .is_some_and(|n| !(1..=self.max_in_flight_total).contains(&n))
        {
            return Err((
                "max_in_flight_per_account",
                "it must be between 1 and max_in_flight_total".into(),
            ));
        }
        if !(1..=self.max_connections.max(1)).contains(&self.max_requests_per_client) {
            return Err((
                "max_requests_per_client",
                "it must be between 1 and max_connections".into(),
            ));
        }
        if !(1..=64).contains(&self.ingest_workers) {
            return Err(("ingest_workers", "it must be between 1 and 64".into()));
        }
        if !(1..=1000).contains(&self.database_pool_size) {
            return Err(("database_pool_size", "it must be between 1 and 1000".into()));
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(("max_connections", "it must be between 1 and 1000000".into()));
        }
        let second = Duration::from_secs(1);
        let hour = Duration::from_secs(3600);
        if self.header_read_timeout.0 < second || self.header_read_timeout.0 > hour {
            return Err(("header_read_timeout", "it must be between 1s and 1h".into()));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_request_bytes) {
            return Err((
                "max_request_bytes",
                "it must be between 1024 and 67108864".into(),
            ));
        }
        Ok(())
    }

    /// The keys that seal and open webhook secrets (`secret_key`, `old_secret_keys`).
    pub fn sealer(&self) -> Result<Sealer, (&'static str, hookrelay_core::Invalid)> {
        let current = self
            .secret_key
            .as_deref()
            .map(SealingKey::parse)
            .transpose()
            .map_err(|e| ("secret_key", e))?;
        let old = self
            .old_secret_keys
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter(|k| !k.trim().is_empty())
            .map(SealingKey::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ("old_secret_keys", e))?;
        Ok(Sealer::new(current, old))
    }

    /// File descriptors the service may need at once: the listener's connections, a socket
    /// per delivery under way and about as many idle in the client's pool, the database
    /// pool, and a reserve for the broker, the listener and files.
    pub fn descriptors_needed(&self) -> u64 {
        // A read replica has a pool of its own, as large.
        let pools = 1 + usize::from(self.database_read_url.is_some());
        (self.max_connections
            + 2 * self.max_in_flight_total
            + pools * self.database_pool_size
            + 128) as u64
    }

    /// Deliveries of one account under way at once: the setting, or a quarter of the total.
    pub fn in_flight_per_account(&self) -> usize {
        self.max_in_flight_per_account
            .unwrap_or((self.max_in_flight_total / 4).max(1))
    }

    /// Where the database is, without user name or password: safe for logs and messages.
    pub fn database_display(&self) -> String {
        hookrelay_store::describe_database_url(&self.database_url)
    }
}

/// The name of every setting: the fields of [`Settings`], read from its `Deserialize`, which
/// names them to any deserializer that asks, so that a setting added to the struct is known
/// here without a second list to keep.
fn known() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names: &'static [&'static str] = &[];
        // Always `Err`: the deserializer stops as soon as it has the names.
        let _ = Settings::deserialize(FieldNames(&mut names));
        names
    })
}

/// A deserializer that only notes the field names of the struct asked of it.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

/// How [`FieldNames`] stops, once it has the names (or when asked for anything but a struct).
#[derive(Debug)]
struct Noted;

impl fmt::Display for Noted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names noted")
    }
}

impl std::error::Error for Noted {}

impl serde::de::Error for Noted {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Self
    }
}

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = Noted;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Noted> {
        Err(Noted)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Noted> {
        *self.0 = fields;
        Err(Noted)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile_like::TempFile {
        tempfile_like::TempFile::new(text)
    }

    /// A file removed on drop; tests in one process run in parallel, so names are unique.
    mod tempfile_like {
        pub struct TempFile(pub std::path::PathBuf);
        impl TempFile {
            pub fn new(text: &str) -> Self {
                static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = std::env::temp_dir().join(format!(
                    "hookrelay-settings-{}-{n}.toml",
                    std::process::id()
                ));
                std::fs::write(&path, text).unwrap();
                Self(path)
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = Settings::load_from(None, env(&[])).unwrap().0;
        assert_eq!(
            s.database_url,
            "postgres://postgres@127.0.0.1:5432/hookrelay"
        );
        assert_eq!(s.amqp_url, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(s.namespace, "hookrelay");
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.admin_token, None);
        assert!(!s.allow_private_networks);
        assert_eq!(s.retry_schedule.max_attempts(), 8);
        assert_eq!(s.request_timeout.0, Duration::from_secs(15));
        assert_eq!(s.disable_after.0, Duration::from_secs(5 * 24 * 3600));
        assert_eq!(s.breaker_threshold, 10);
        assert_eq!(s.max_event_bytes, 262_144);
        assert_eq!(s.max_in_flight_per_webhook, 16);
        assert_eq!(s.database_display(), "127.0.0.1:5432/hookrelay");
    }

    #[test]
    fn every_field_of_the_settings_is_a_known_setting() {
        let names = known();
        assert!(names.len() >= 27, "{names:?}");
        for name in [
            "database_url",
            "amqp_url",
            "otlp_endpoint",
            "max_in_flight_total",
        ] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        let (settings, warnings) =
            Settings::load_from(None, env(&[("HOOKRELAY_SHUTDOWN_TIMEOUT", "7s")])).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(settings.shutdown_timeout.0, Duration::from_secs(7));
    }

    #[test]
    fn the_example_file_documents_exactly_the_defaults() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/hookrelay.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let keys: Vec<&str> = text
            .lines()
            .map(|l| l.trim_start_matches("# "))
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
            .filter(|k| known().contains(k))
            .collect();
        assert_eq!(keys, known(), "every setting, in order");
        let (from_file, _) = Settings::load_from(Some(&path), env(&[])).unwrap();
        let defaults = Settings::default();
        assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn env_wins_over_the_file() {
        let f = file("namespace = \"from-file\"\nrequest_timeout = \"3s\"\nallow_private_networks = true\nmax_event_bytes = 2048\n");
        let (s, warnings) = Settings::load_from(
            Some(&f.0),
            env(&[
                ("HOOKRELAY_NAMESPACE", "from-env"),
                ("HOOKRELAY_ADMIN_TOKEN", "12345"),
                ("HOOKRELAY_MAX_IN_FLIGHT_PER_WEBHOOK", "4"),
                ("HOOKRELAY_RETRY_SCHEDULE", "1s,2s"),
                ("OTHER_VAR", "ignored"),
                ("HOOKRELAY_PORT", "tcp://10.0.0.1:8080"),
            ]),
        )
        .unwrap();
        assert_eq!(
            warnings,
            vec!["ignoring HOOKRELAY_PORT: it is not a hookrelay setting"]
        );
        assert_eq!(s.namespace, "from-env");
        assert_eq!(s.request_timeout.0, Duration::from_secs(3));
        assert!(s.allow_private_networks);
        assert_eq!(s.max_event_bytes, 2048);
        assert_eq!(
            s.admin_token.as_deref(),
            Some("12345"),
            "a numeric token stays a string"
        );
        assert_eq!(s.max_in_flight_per_webhook, 4);
        assert_eq!(s.retry_schedule.max_attempts(), 3);
        let (s, _) =
            Settings::load_from(None, env(&[("HOOKRELAY_ALLOW_PRIVATE_NETWORKS", "true")]))
                .unwrap();
        assert!(s.allow_private_networks);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases: [(&[(&str, &str)], &str); 18] = [
            (
                &[("HOOKRELAY_DISABLE_AFTER", "0s")],
                "HOOKRELAY_DISABLE_AFTER",
            ),
            (
                &[("HOOKRELAY_BREAKER_THRESHOLD", "0")],
                "HOOKRELAY_BREAKER_THRESHOLD",
            ),
            (
                &[("HOOKRELAY_REQUEUE_RATE", "fast")],
                "HOOKRELAY_REQUEUE_RATE",
            ),
            (
                &[("HOOKRELAY_REQUEST_TIMEOUT", "soon")],
                "HOOKRELAY_REQUEST_TIMEOUT",
            ),
            (
                &[("HOOKRELAY_DATABASE_URL", "mysql://x")],
                "HOOKRELAY_DATABASE_URL",
            ),
            (&[("HOOKRELAY_AMQP_URL", "http://x")], "HOOKRELAY_AMQP_URL"),
            (&[("HOOKRELAY_LISTEN", "localhost")], "HOOKRELAY_LISTEN"),
            (
                &[("HOOKRELAY_ALLOW_PRIVATE_NETWORKS", "maybe")],
                "HOOKRELAY_ALLOW_PRIVATE_NETWORKS",
            ),
            (
                &[("HOOKRELAY_RETRY_SCHEDULE", "5s,x")],
                "HOOKRELAY_RETRY_SCHEDULE",
            ),
            (&[("HOOKRELAY_NAMESPACE", "a b")], "HOOKRELAY_NAMESPACE"),
            (&[("HOOKRELAY_ADMIN_TOKEN", " ")], "HOOKRELAY_ADMIN_TOKEN"),
            (&[("HOOKRELAY_LOG_FORMAT", "xml")], "HOOKRELAY_LOG_FORMAT"),
            // Shorter than the retry schedule: a retried event could come back as new.
            (
                &[("HOOKRELAY_DEDUPE_WINDOW", "1h")],
                "HOOKRELAY_DEDUPE_WINDOW",
            ),
            (
                &[("HOOKRELAY_DATABASE_READ_URL", "mysql://x")],
                "HOOKRELAY_DATABASE_READ_URL",
            ),
            (
                &[("HOOKRELAY_OTLP_ENDPOINT", "collector:4318")],
                "HOOKRELAY_OTLP_ENDPOINT",
            ),
            (
                &[("HOOKRELAY_OTLP_ENDPOINT", "grpc://collector:4317")],
                "HOOKRELAY_OTLP_ENDPOINT",
            ),
            (
                &[("HOOKRELAY_PUBLIC_URL", "ftp://hooks.example.com")],
                "HOOKRELAY_PUBLIC_URL",
            ),
            (
                &[(
                    "HOOKRELAY_PORTAL_FRAME_ANCESTORS",
                    "https://a.example.com 'self'",
                )],
                "HOOKRELAY_PORTAL_FRAME_ANCESTORS",
            ),
        ];
        for (vars, expected) in cases {
            let err = Settings::load_from(None, env(vars))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{vars:?}: {err}");
        }
    }

    #[test]
    fn amqp_url_may_name_several_nodes_and_hides_every_password() {
        let two = "amqp://u:hunter2@10.0.0.1:5672/%2f, amqp://u:swordfish@10.0.0.2:5672/%2f";
        let s = Settings::load_from(None, env(&[("HOOKRELAY_AMQP_URL", two)])).unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("swordfish"),
            "{shown}"
        );
        assert!(shown.contains("10.0.0.2"), "{shown}");
        for (bad, says) in [
            ("amqp://u:hunter2@h1/%2f,http://h2", "URL 2 of 2"),
            ("amqp://u:hunter2@h1/%2f,,amqp://h2", "URL 2 of 3"),
            // A raw comma in a password splits the URL; no part of it is shown.
            (
                "amqp://u:hun,ter2:x@h1/%2f",
                "a comma in a password is written %2C",
            ),
        ] {
            let err = Settings::load_from(None, env(&[("HOOKRELAY_AMQP_URL", bad)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("HOOKRELAY_AMQP_URL")
                    && err.contains(says)
                    && !err.contains("hunter2")
                    && !err.contains("ter2"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn file_errors_name_the_key_and_hide_secrets() {
        let f = file("colour = \"blue\"\n");
        let err = Settings::load_from(Some(&f.0), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown setting `colour` in the config file"),
            "{err}"
        );
        let f = file("request_timeout = \"forever\"\n");
        let err = Settings::load_from(Some(&f.0), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`request_timeout` in the config file"),
            "{err}"
        );
        let f = file("database_url = \"postgres://u:hunter2@/\"\n");
        let err = Settings::load_from(Some(&f.0), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("database_url") && !err.contains("hunter2"),
            "{err}"
        );
        let f = file("not toml = =");
        assert!(Settings::load_from(Some(&f.0), env(&[]))
            .unwrap_err()
            .to_string()
            .contains("not valid TOML"));
        let missing = Path::new("/nonexistent/hookrelay.toml");
        assert!(Settings::load_from(Some(missing), env(&[]))
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
    }
}
