use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::StoreError;

/// Sizes and deadlines of the pool. A request that cannot get a connection within
/// `wait_timeout` fails instead of queueing without bound.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_size: usize,
    pub wait_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 16,
            wait_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A handle on the database; cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool,
    /// The read replica's, when `database_read_url` is set: the logs API and the
    /// statistics read there, the pipeline never does.
    pub(crate) reads: Option<Pool>,
    /// Seals webhook secrets on the way in and opens them on the way out.
    pub(crate) sealer: std::sync::Arc<hookrelay_core::sealing::Sealer>,
}

impl Store {
    /// Builds the pool. No connection is made yet: the first query makes one, so a service
    /// can start while the database is briefly away and report it through `/readyz`.
    pub fn connect(database_url: &str, options: &PoolOptions) -> Result<Self, StoreError> {
        Ok(Self {
            pool: pool(database_url, options, None)?,
            reads: None,
            sealer: Default::default(),
        })
    }

    /// Reads of logs and statistics go to the replica at `database_read_url` from now on.
    /// A statement there runs for `statement_timeout` at most, so that a replica stuck in
    /// recovery answers an error rather than hold the reader.
    pub fn with_read_replica(
        mut self,
        database_read_url: &str,
        options: &PoolOptions,
        statement_timeout: Duration,
    ) -> Result<Self, StoreError> {
        self.reads = Some(pool(database_read_url, options, Some(statement_timeout))?);
        Ok(self)
    }

    /// A connection for the reads a replica may serve: the replica's when there is one.
    pub(crate) async fn read_client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        match &self.reads {
            Some(reads) => reads.get().await.map_err(StoreError::Replica),
            None => self.client().await,
        }
    }

    /// Stores webhook secrets sealed under `sealer`'s current key (contract §2), and opens
    /// those sealed under any of its keys.
    pub fn with_sealer(mut self, sealer: hookrelay_core::sealing::Sealer) -> Self {
        self.sealer = std::sync::Arc::new(sealer);
        self
    }

    /// One round trip to the database, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}

/// A pool of connections to `url`; each with `statement_timeout` when given.
fn pool(
    url: &str,
    options: &PoolOptions,
    statement_timeout: Option<Duration>,
) -> Result<Pool, StoreError> {
    let mut config = parse_config(url)?;
    config.connect_timeout(options.connect_timeout);
    // Every statement here is short. JIT compilation, which PostgreSQL starts on a cost
    // estimate alone (and a table of open deliveries that just emptied still looks big),
    // would add half a second to a query that takes a millisecond.
    let mut settings = String::from("-c jit=off");
    if let Some(timeout) = statement_timeout {
        settings.push_str(&format!(" -c statement_timeout={}", timeout.as_millis()));
    }
    let settings = match config.get_options() {
        Some(given) => format!("{given} {settings}"),
        None => settings,
    };
    config.options(settings);
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // A `SELECT 1` per checkout would double the round trips; a broken connection
            // is noticed by the failing query and dropped by the pool instead.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(options.max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.wait_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .build()
        .map_err(|e| StoreError::Config(e.to_string()))
}

/// Checks a database URL without connecting.
pub fn validate_database_url(database_url: &str) -> Result<(), StoreError> {
    parse_config(database_url).map(drop)
}

/// Where a database URL points, without user name or password: safe for messages.
pub fn describe_database_url(database_url: &str) -> String {
    let Ok(config) = parse_config(database_url) else {
        return "the configured database".into();
    };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or_default())
}

pub(crate) fn parse_config(database_url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let config = tokio_postgres::Config::from_str(database_url)
        .map_err(|e| StoreError::Config(e.to_string()))?;
    if config.get_dbname().is_none() {
        return Err(StoreError::Config(
            "it names no database (add /<name> to the URL)".into(),
        ));
    }
    Ok(config)
}
