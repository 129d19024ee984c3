use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;
use tracing::info;

use crate::pool::parse_config;
use crate::StoreError;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// An arbitrary constant: the advisory lock that keeps two starting services from running
/// the migrations at the same moment.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_7265_6c61; // "hookrela"

/// Creates the database named in `database_url` when it does not exist yet. The server's
/// `postgres` database is only visited when the target is missing, so a role that may not
/// connect there (or create databases) works as long as its database exists.
pub async fn ensure_database(database_url: &str) -> Result<(), StoreError> {
    let config = parse_config(database_url)?;
    match config.connect(NoTls).await {
        Ok((client, connection)) => {
            drop(client);
            // Closing: nothing it could still report changes that the database exists.
            let _ = connection.await;
            return Ok(());
        }
        Err(e) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {}
        Err(e) => return Err(e.into()),
    }
    let name = config.get_dbname().unwrap_or_default().to_owned();
    let mut admin = config.clone();
    admin.dbname("postgres");
    let (client, connection) = admin.connect(NoTls).await?;
    let driver = tokio::spawn(connection);
    let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match client.batch_execute(&sql).await {
        Ok(()) => info!(database = %name, "created the database"),
        // Another service starting at the same moment created it first.
        Err(e)
            if e.code() == Some(&SqlState::DUPLICATE_DATABASE)
                || e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {}
        Err(e) => return Err(e.into()),
    }
    drop(client);
    // The work is done; how the connection closes changes nothing.
    let _ = driver.await;
    Ok(())
}

/// Applies the migrations not applied yet; a no-op when the schema is current. Runs under an
/// advisory lock, so several services starting together apply each migration once.
pub async fn migrate(database_url: &str) -> Result<usize, StoreError> {
    migrate_to(database_url, None).await
}

/// [`migrate`], up to migration `version` only when one is given: a database as an earlier
/// release left it, for the tests of an upgrade.
pub async fn migrate_to(database_url: &str, version: Option<u32>) -> Result<usize, StoreError> {
    ensure_database(database_url).await?;
    let config = parse_config(database_url)?;
    let (mut client, connection) = config.connect(NoTls).await?;
    let driver = tokio::spawn(connection);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let target = match version {
        Some(version) => refinery::Target::Version(version),
        None => refinery::Target::Latest,
    };
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .set_target(target)
        .run_async(&mut client)
        .await;
    // The lock dies with the session anyway; unlocking is only to be quick about it.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let applied = report?.applied_migrations().len();
    if applied > 0 {
        info!(applied, "applied database migrations");
    }
    drop(client);
    // The work is done; how the connection closes changes nothing.
    let _ = driver.await;
    Ok(applied)
}
