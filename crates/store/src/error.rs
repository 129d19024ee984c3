/// What can go wrong talking to PostgreSQL. `Conflict`, `QuotaExceeded` and `Invalid` are the
/// caller's fault; everything else is ours or the database's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database_url: {0}")]
    Config(String),
    #[error("could not get a database connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The read replica (`database_read_url`) cannot be reached; the primary may be fine.
    #[error("could not get a connection to the read replica")]
    Replica(#[source] deadpool_postgres::PoolError),
    #[error("database error")]
    Db(#[from] tokio_postgres::Error),
    #[error("could not run the database migrations")]
    Migrate(#[from] refinery::Error),
    /// The row already exists (a unique key).
    #[error("{0}")]
    Conflict(String),
    /// A count the caller controls is at its limit (the message names the limit).
    #[error("{0}")]
    QuotaExceeded(String),
    /// The caller passed something the query cannot use, such as a cursor of another list.
    #[error("{0}")]
    Invalid(String),
    /// A row holds what its table's constraints should have kept out (edited by hand, with
    /// a constraint dropped).
    #[error("unexpected data in the database: {0}")]
    Corrupt(String),
    /// A webhook's stored secret cannot be opened with the configured keys.
    #[error("webhook {webhook_id}: {error}")]
    Sealed {
        webhook_id: uuid::Uuid,
        error: hookrelay_core::sealing::SealError,
    },
}

impl StoreError {
    /// Whether the database refused the values it was given, rather than failed: trying the
    /// same values again fails the same way, while other values may pass. That is any SQLSTATE
    /// outside the classes of a database fault or of hookrelay's own mistakes, such as
    /// `22` (data exception) or `54` (program limit exceeded: `stack depth limit exceeded`
    /// for a document nested too deep).
    pub fn is_refusal(&self) -> bool {
        /// Connection (08), transaction state (25), authorization (28), missing database or
        /// schema (3D, 3F), rollback (40: serialization, deadlock), syntax or access (42),
        /// resources (53), object state (55: locks), operator intervention (57), system
        /// (58), configuration (F0), foreign data (HV), PL/pgSQL (P0), internal (XX).
        const FAULTS: [&str; 15] = [
            "08", "25", "28", "3D", "3F", "40", "42", "53", "55", "57", "58", "F0", "HV", "P0",
            "XX",
        ];
        self.sqlstate()
            .is_some_and(|code| !FAULTS.iter().any(|class| code.starts_with(class)))
    }

    /// The SQLSTATE of a database error: a fixed code, safe to show where its message is not.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::Db(e) => e.code().map(|c| c.code()),
            _ => None,
        }
    }

    /// Whether a query failed on a unique constraint, i.e. the row already exists.
    pub(crate) fn is_unique_violation(err: &tokio_postgres::Error) -> bool {
        err.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    }
}
