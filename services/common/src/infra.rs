//! Connections to PostgreSQL, Redis and RabbitMQ with the behaviour every component
//! wants: bounded pools, a missing database created on first start, and fast, clear
//! failures instead of silent retry loops when a server is absent.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Executor};

use crate::config::SecretUrl;

/// A failure to reach infrastructure at start-up.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error("invalid database URL {url}: {source}")]
    DatabaseUrl { url: String, source: sqlx::Error },
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Postgres { url: String, source: sqlx::Error },
    #[error("cannot connect to Redis at {url}: {source}")]
    Redis {
        url: String,
        source: redis::RedisError,
    },
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Amqp { url: String, source: lapin::Error },
}

/// Opens a pool, creating the database first when it does not exist (local runs and
/// tests; in Kubernetes the migration Job's role owns it).
pub async fn connect_postgres(url: &SecretUrl, max_connections: u32) -> Result<PgPool, InfraError> {
    let options =
        PgConnectOptions::from_str(url.expose()).map_err(|source| InfraError::DatabaseUrl {
            url: url.redacted(),
            source,
        })?;
    let options = options.log_statements(tracing::log::LevelFilter::Trace);
    let pool_options = || {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Some(Duration::from_secs(300)))
    };
    match pool_options().connect_with(options.clone()).await {
        Ok(pool) => Ok(pool),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("3D000") => {
            create_database(&options)
                .await
                .map_err(|source| InfraError::Postgres {
                    url: url.redacted(),
                    source,
                })?;
            pool_options()
                .connect_with(options)
                .await
                .map_err(|source| InfraError::Postgres {
                    url: url.redacted(),
                    source,
                })
        }
        Err(source) => Err(InfraError::Postgres {
            url: url.redacted(),
            source,
        }),
    }
}

async fn create_database(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let name = options.get_database().unwrap_or("beehive").to_owned();
    let admin = options.clone().database("postgres");
    let mut conn = admin.connect().await?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    let statement = format!("CREATE DATABASE {quoted}");
    match conn
        .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(statement)))
        .await
    {
        Ok(_) => {
            tracing::info!(database = %name, "created database");
            Ok(())
        }
        // Another process created it at the same moment.
        Err(sqlx::Error::Database(db))
            if matches!(db.code().as_deref(), Some("42P04") | Some("23505")) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// A Redis connection manager that reconnects on its own, with bounded retries so an
/// absent server fails start-up within seconds.
pub async fn connect_redis(url: &SecretUrl) -> Result<redis::aio::ConnectionManager, InfraError> {
    let error = |source| InfraError::Redis {
        url: url.redacted(),
        source,
    };
    let client = redis::Client::open(url.expose()).map_err(error)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    redis::aio::ConnectionManager::new_with_config(client, config)
        .await
        .map_err(error)
}

/// Opens an AMQP connection.
pub async fn connect_amqp(url: &SecretUrl) -> Result<lapin::Connection, InfraError> {
    lapin::Connection::connect(url.expose(), lapin::ConnectionProperties::default())
        .await
        .map_err(|source| InfraError::Amqp {
            url: url.redacted(),
            source,
        })
}
