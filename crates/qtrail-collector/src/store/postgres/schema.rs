//! The store's schema: SQL migrations embedded in the binary (`migrations/NNNN_*.sql`), applied
//! at open in one transaction under an advisory lock, so that replicas starting together apply
//! each migration once; the version reached is recorded in `schema_version`. A database at a
//! newer version than this binary knows is refused: an older collector must not write rows whose
//! meaning has moved on.

use postgres::Client;
use tracing::info;

use super::PgError;
use crate::store::StoreError;

/// The migrations, numbered from 1, in order.
const MIGRATIONS: &[(i32, &str)] =
    &[(1, include_str!("migrations/0001_initial.sql")), (2, include_str!("migrations/0002_alerts.sql"))];

/// The schema version this binary writes.
pub(crate) const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Key of the transaction-level advisory lock held while migrating ("qtrail" in ASCII, then 1):
/// distinct from any lock other parts of the collector take.
const MIGRATION_LOCK: i64 = 0x7174_7261_696c_0001;

/// Brings the database's schema to [`LATEST`]; returns the version it was at.
///
/// # Errors
/// [`StoreError::Backend`] when the database is at a newer version than [`LATEST`], or on a
/// failure of the database (nothing applied).
pub(crate) fn migrate(client: &mut Client) -> Result<i32, PgError> {
    let mut txn = client.transaction()?;
    // Held until commit: a second replica waits here, then finds the schema current.
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    // "already exists, skipping" is the usual case, not news for the log.
    txn.batch_execute("SET LOCAL client_min_messages = warning")?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )?;
    let current: i32 = txn.query_one("SELECT COALESCE(max(version), 0) FROM schema_version", &[])?.get(0);
    if current > LATEST {
        return Err(PgError::Store(StoreError::Backend(format!(
            "the database's schema is at version {current}, newer than version {LATEST} that this collector knows: \
             run a newer qtrail-collector"
        ))));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > current) {
        txn.batch_execute(sql)?;
        txn.execute("INSERT INTO schema_version (version) VALUES ($1)", &[version])?;
        info!(version, "applied a postgresql store migration");
    }
    txn.commit()?;
    Ok(current)
}
