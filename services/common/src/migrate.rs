//! Database migrations of every component, applied as one sequence.
//!
//! Each component keeps its own `migrations/` folder and PostgreSQL schema. Versions
//! are namespaced by component (auth 1_000_000+, user 2_000_000+, social 3_000_000+,
//! message 4_000_000+, file 7_000_000+) so they merge into one migrator and one
//! `_sqlx_migrations` table without clashing. `beehive migrate` runs the merged list;
//! `beehive migrate --wait` (every pod's init container) blocks until the database has
//! every version this binary knows, so no pod serves an older schema.

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// A failure to apply or wait for migrations.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("migration version {0} appears in two components")]
    DuplicateVersion(i64),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("timed out after {waited:?} waiting for migrations {missing:?}")]
    Timeout { waited: Duration, missing: Vec<i64> },
}

/// Merges component migrators into one, ordered by version.
pub fn combine(migrators: &[&Migrator]) -> Result<Migrator, MigrationError> {
    let mut seen = BTreeSet::new();
    let mut all = Vec::new();
    for migrator in migrators {
        for migration in migrator.iter() {
            if !seen.insert(migration.version) {
                return Err(MigrationError::DuplicateVersion(migration.version));
            }
            all.push(migration.clone());
        }
    }
    all.sort_by_key(|m| m.version);
    Ok(Migrator::with_migrations(all))
}

/// Applies every pending migration (under sqlx's advisory lock, so concurrent runners
/// are safe).
pub async fn run(pool: &PgPool, migrator: &Migrator) -> Result<(), MigrationError> {
    migrator.run(pool).await?;
    Ok(())
}

/// Versions of `migrator` not yet applied successfully.
pub async fn missing(pool: &PgPool, migrator: &Migrator) -> Result<Vec<i64>, MigrationError> {
    let table_exists: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    let applied: BTreeSet<i64> = if table_exists {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect()
    } else {
        BTreeSet::new()
    };
    Ok(migrator
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect())
}

/// Waits until every migration of `migrator` is applied, polling once a second.
pub async fn wait(
    pool: &PgPool,
    migrator: &Migrator,
    timeout: Duration,
) -> Result<(), MigrationError> {
    let started = tokio::time::Instant::now();
    loop {
        let pending = match missing(pool, migrator).await {
            Ok(pending) => pending,
            Err(MigrationError::Database(error)) => {
                tracing::info!(%error, "database not reachable yet");
                migrator.iter().map(|m| m.version).collect()
            }
            Err(other) => return Err(other),
        };
        if pending.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(MigrationError::Timeout {
                waited: timeout,
                missing: pending,
            });
        }
        tracing::info!(missing = ?pending, "waiting for migrations");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
