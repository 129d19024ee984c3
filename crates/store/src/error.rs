/// What can go wrong talking to PostgreSQL. `Conflict` and `Invalid` are the caller's fault;
/// everything else is ours or the database's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database_url: {0}")]
    Config(String),
    #[error("could not get a database connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error")]
    Db(#[from] tokio_postgres::Error),
    #[error("could not run the database migrations")]
    Migrate(#[from] refinery::Error),
    /// The row already exists (a unique key).
    #[error("{0}")]
    Conflict(String),
    /// The caller passed something the query cannot use, such as a cursor of another list.
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// Whether the database refused a value (SQLSTATE class 22, data exception) rather than
    /// failed: trying the same values again fails the same way.
    pub fn is_data_error(&self) -> bool {
        matches!(self, Self::Db(e) if e.code().is_some_and(|c| c.code().starts_with("22")))
    }

    /// Whether a query failed on a unique constraint, i.e. the row already exists.
    pub(crate) fn is_unique_violation(err: &tokio_postgres::Error) -> bool {
        err.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    }
}
