//! Isolation for integration tests against the real PostgreSQL, Redis and RabbitMQ.
//!
//! Every [`TestEnv`] gets its own database (created from scratch, migrated, dropped
//! when the env is dropped) and its own `BEEHIVE_INSTALLATION` prefix, so its Redis
//! keys and RabbitMQ exchanges/queues never meet another test's. Servers are found at
//! `BEEHIVE_TEST_DATABASE_URL` (admin connection, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), `BEEHIVE_TEST_REDIS_URL` and
//! `BEEHIVE_TEST_AMQP_URL`; `scripts/infra.sh` starts them when absent.
//!
//! Besides isolation: [`serve`] starts components in-process, [`logs`] captures what
//! they log (verification codes of the dev mail sink), [`amqp`] consumes a gateway
//! instance's queue.

pub mod amqp;
pub mod logs;
pub mod serve;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use beehive_common::config::{Component, Settings};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPool;
use sqlx::{Connection, Executor, PgConnection};

/// The admin URL of the test PostgreSQL server.
pub fn admin_database_url() -> String {
    std::env::var("BEEHIVE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// One test's private world.
pub struct TestEnv {
    /// Settings pointing at the private database and prefix, listeners on port 0,
    /// rate limits off (tests of rate limiting turn them on).
    pub settings: Settings,
    /// A pool on the private database, migrated with every migrator given.
    pub pool: PgPool,
    database: String,
}

impl TestEnv {
    /// Creates the database, runs `migrators`, and builds settings.
    pub async fn new(migrators: &[&Migrator]) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let database = format!("bh_test_{}", &id[..16]);
        let admin = admin_database_url();
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("test PostgreSQL at {admin} unreachable ({e}); run scripts/infra.sh")
        });
        conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{database}\""
        ))))
        .await
        .expect("create test database");
        let _ = conn.close().await;
        let url = match admin.rfind('/') {
            Some(slash) => format!("{}/{database}", &admin[..slash]),
            None => panic!("BEEHIVE_TEST_DATABASE_URL has no database part"),
        };
        let mut map = BTreeMap::new();
        map.insert("BEEHIVE_DATABASE_URL".to_owned(), url);
        map.insert(
            "BEEHIVE_DATABASE_MAX_CONNECTIONS".to_owned(),
            "8".to_owned(),
        );
        map.insert("BEEHIVE_INSTALLATION".to_owned(), format!("t{}", &id[..12]));
        map.insert(
            "BEEHIVE_INSTANCE_ID".to_owned(),
            format!("test-{}", &id[..8]),
        );
        map.insert("BEEHIVE_RATE_LIMITS".to_owned(), "off".to_owned());
        map.insert("BEEHIVE_HTTP_ADDR".to_owned(), "127.0.0.1:0".to_owned());
        map.insert("BEEHIVE_ADMIN_ADDR".to_owned(), "127.0.0.1:0".to_owned());
        for (var, key) in [
            ("BEEHIVE_TEST_REDIS_URL", "BEEHIVE_REDIS_URL"),
            ("BEEHIVE_TEST_AMQP_URL", "BEEHIVE_AMQP_URL"),
        ] {
            if let Ok(value) = std::env::var(var) {
                map.insert(key.to_owned(), value);
            }
        }
        let (mut settings, _) = Settings::from_map(&map).expect("test settings are valid");
        for component in Component::ALL {
            settings.set_listen_addr(component, SocketAddr::from(([127, 0, 0, 1], 0)));
        }
        let pool = beehive_common::infra::connect_postgres(&settings.database_url, 8)
            .await
            .expect("connect to test database");
        let migrator = beehive_common::migrate::combine(migrators).expect("migrations combine");
        beehive_common::migrate::run(&pool, &migrator)
            .await
            .expect("migrations apply");
        Self {
            settings,
            pool,
            database,
        }
    }

    /// The private database's name.
    pub fn database(&self) -> &str {
        &self.database
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Drop the database from a plain thread with its own runtime: Drop cannot await,
        // and blocking the test's runtime on its own pool could deadlock. FORCE ends the
        // pool's connections.
        let database = self.database.clone();
        let handle = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin_database_url()).await {
                    let _ = conn
                        .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
                        ))))
                        .await;
                }
            });
        });
        let _ = handle.join();
    }
}
