//! The contract between a component crate and the `beehive` binary.
//!
//! The binary binds every listener first (so port 0 works in tests and every
//! component's address is known before any client is built), then hands each component
//! a [`Context`] and its listener. The component returns a [`Bound`]: its readiness
//! checks and the future that serves until the shutdown signal fires. `serve all`
//! shares one [`Infra`] (one PostgreSQL pool, one Redis connection, one AMQP connection)
//! among all components of the process.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::admin::ReadinessCheck;
use crate::config::{Component, Settings};
use crate::infra::{self, InfraError};
use crate::shutdown::Shutdown;

/// Why a component could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error(transparent)]
    Infra(#[from] InfraError),
    #[error("{component}: {message}")]
    Config {
        component: Component,
        message: String,
    },
    #[error("{component} failed: {source}")]
    Failed {
        component: Component,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ComponentError {
    /// A failure of `component` caused by `source`.
    pub fn failed(
        component: Component,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Failed {
            component,
            source: source.into(),
        }
    }
}

/// Infrastructure connections, opened on first use and shared by every component of
/// the process.
pub struct Infra {
    settings: Settings,
    postgres: OnceCell<sqlx::PgPool>,
    redis: OnceCell<redis::aio::ConnectionManager>,
    amqp: OnceCell<Arc<lapin::Connection>>,
}

impl Infra {
    /// Nothing is connected until asked for.
    pub fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            postgres: OnceCell::new(),
            redis: OnceCell::new(),
            amqp: OnceCell::new(),
        })
    }

    /// The PostgreSQL pool (the database is created if missing).
    pub async fn postgres(&self) -> Result<sqlx::PgPool, InfraError> {
        self.postgres
            .get_or_try_init(|| {
                infra::connect_postgres(
                    &self.settings.database_url,
                    self.settings.database_max_connections,
                )
            })
            .await
            .cloned()
    }

    /// The Redis connection manager (reconnects on its own).
    pub async fn redis(&self) -> Result<redis::aio::ConnectionManager, InfraError> {
        self.redis
            .get_or_try_init(|| infra::connect_redis(&self.settings.redis_url))
            .await
            .cloned()
    }

    /// The AMQP connection. Components open their own channels on it and must handle
    /// it closing (a broker restart) by reconnecting through [`infra::connect_amqp`].
    pub async fn amqp(&self) -> Result<Arc<lapin::Connection>, InfraError> {
        self.amqp
            .get_or_try_init(|| async {
                infra::connect_amqp(&self.settings.amqp_url)
                    .await
                    .map(Arc::new)
            })
            .await
            .cloned()
    }
}

/// What a component gets from the binary.
#[derive(Clone)]
pub struct Context {
    pub settings: Settings,
    pub infra: Arc<Infra>,
    pub shutdown: Shutdown,
}

/// The future that runs a component until shutdown.
pub type ServeFuture = Pin<Box<dyn Future<Output = Result<(), ComponentError>> + Send>>;

/// A started component.
pub struct Bound {
    pub component: Component,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What `/readyz` must check for it.
    pub readiness: Vec<ReadinessCheck>,
    /// Serves until the shutdown signal fires, then finishes in-flight work.
    pub serve: ServeFuture,
}
