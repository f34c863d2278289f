//! Runs Beehive components in this process: one (`beehive serve auth`) or all of them
//! (`beehive serve all`, the local/embedded mode).
//!
//! Listeners are bound first so that port 0 works and every component's address is
//! known before any gRPC client is created; then each component's `bind` builds its
//! state; then everything serves until the shutdown signal, when servers stop
//! accepting, drain in-flight work and the process exits.

pub mod search;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use beehive_common::admin::Readiness;
use beehive_common::component::{Bound, ComponentError, Context, Infra, ServeFuture};
use beehive_common::config::{Component, Settings};
use beehive_common::shutdown::Shutdown;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

/// Builds a component from its context and bound listener.
pub type BindFn =
    fn(Context, TcpListener) -> Pin<Box<dyn Future<Output = Result<Bound, ComponentError>> + Send>>;

/// The components this build contains, with their migrations.
pub struct Registry {
    components: BTreeMap<Component, BindFn>,
    migrators: Vec<&'static Migrator>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            components: BTreeMap::new(),
            migrators: Vec::new(),
        }
    }

    /// Adds a component and its migrations.
    pub fn with(
        mut self,
        component: Component,
        bind: BindFn,
        migrator: Option<&'static Migrator>,
    ) -> Self {
        self.components.insert(component, bind);
        self.migrators.extend(migrator);
        self
    }

    /// Every component this build can serve, in start order.
    pub fn available(&self) -> Vec<Component> {
        Component::ALL
            .into_iter()
            .filter(|c| self.components.contains_key(c))
            .collect()
    }

    /// All migrations, merged.
    pub fn migrator(&self) -> Result<Migrator, beehive_common::migrate::MigrationError> {
        beehive_common::migrate::combine(&self.migrators)
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("component {0} is not part of this build yet")]
    Unavailable(Component),
    #[error("cannot listen on {addr} for {component}: {source}")]
    Bind {
        component: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Component(#[from] ComponentError),
    #[error(transparent)]
    Infra(#[from] beehive_common::infra::InfraError),
    #[error(transparent)]
    Migration(#[from] beehive_common::migrate::MigrationError),
    #[error("cannot write the address file {path}: {source}")]
    AddrFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Addresses of a running process, written to `--addr-file` for scripts and tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Addresses {
    pub http: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub grpc: BTreeMap<String, SocketAddr>,
}

/// A started process: its addresses and the future that runs it to the end.
pub struct Running {
    pub addresses: Addresses,
    pub done: Pin<Box<dyn Future<Output = Result<(), ServeError>> + Send>>,
}

/// Applies every pending migration (the database is created if missing).
pub async fn migrate(settings: &Settings, registry: &Registry) -> Result<(), ServeError> {
    let pool = beehive_common::infra::connect_postgres(&settings.database_url, 2).await?;
    let migrator = registry.migrator()?;
    beehive_common::migrate::run(&pool, &migrator).await?;
    pool.close().await;
    Ok(())
}

/// Waits until the database schema has every migration this binary knows.
pub async fn wait_for_migrations(
    settings: &Settings,
    registry: &Registry,
    timeout: Duration,
) -> Result<(), ServeError> {
    let migrator = registry.migrator()?;
    let deadline = tokio::time::Instant::now() + timeout;
    let pool = loop {
        match beehive_common::infra::connect_postgres(&settings.database_url, 1).await {
            Ok(pool) => break pool,
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%error, "waiting for the database");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(error) => return Err(error.into()),
        }
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    beehive_common::migrate::wait(&pool, &migrator, left).await?;
    pool.close().await;
    Ok(())
}

/// Starts `components` in this process. With `run_migrations`, pending migrations are
/// applied first (`serve all`).
pub async fn start(
    settings: Settings,
    registry: &Registry,
    components: &[Component],
    run_migrations: bool,
    shutdown: Shutdown,
) -> Result<Running, ServeError> {
    for component in components {
        if !registry.components.contains_key(component) {
            return Err(ServeError::Unavailable(*component));
        }
    }
    if run_migrations {
        migrate(&settings, registry).await?;
    }
    let mut settings = settings;
    // Bind every listener before building any component, so that with port 0 each
    // component's real address is known to the clients of the others.
    let mut listeners = Vec::new();
    for &component in components {
        let addr = if component == Component::Gateway {
            settings.http_addr
        } else {
            settings.listen_addr(component)
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                component: component.name(),
                addr,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| ServeError::Bind {
            component: component.name(),
            addr,
            source,
        })?;
        if component == Component::Gateway {
            settings.http_addr = local;
        } else {
            settings.set_listen_addr(component, local);
            if components.len() > 1 {
                // In one process, components reach each other on loopback.
                let port = local.port();
                settings.set_component_addr(component, format!("http://127.0.0.1:{port}"));
            }
        }
        listeners.push((component, listener));
    }

    let infra = Infra::new(settings.clone());
    // With the gateway and other components in one process, the shutdown signal reaches
    // the gateway only; the others stop once it has drained (see [`run_components`]).
    let rest = if components.contains(&Component::Gateway) && components.len() > 1 {
        Shutdown::new()
    } else {
        shutdown.clone()
    };
    let context = Context {
        settings: settings.clone(),
        infra,
        shutdown: shutdown.clone(),
    };
    let mut readiness = Readiness::new();
    let mut serving = Vec::new();
    let mut grpc = BTreeMap::new();
    let mut http = None;
    for (component, listener) in listeners {
        let bind = registry.components[&component];
        let context = if component == Component::Gateway {
            context.clone()
        } else {
            Context {
                shutdown: rest.clone(),
                ..context.clone()
            }
        };
        let bound = bind(context, listener).await?;
        tracing::info!(component = %component, addr = %bound.addr, "component started");
        if component == Component::Gateway {
            http = Some(bound.addr);
        } else {
            grpc.insert(component.name().to_owned(), bound.addr);
        }
        readiness.extend(bound.readiness);
        serving.push((component, bound.serve));
    }

    // The admin server outlives the shutdown signal until every component stopped: a
    // draining gateway keeps answering /healthz (liveness) and failing /readyz for
    // its whole drain window.
    let admin_stop = Shutdown::new();
    let (admin, admin_serve) =
        beehive_common::admin::bind(settings.admin_addr, readiness, admin_stop.clone())
            .await
            .map_err(|source| ServeError::Bind {
                component: "admin",
                addr: settings.admin_addr,
                source,
            })?;
    let addresses = Addresses { http, admin, grpc };

    let done = Box::pin(async move {
        let admin_task = tokio::spawn(admin_serve);
        let first_error = run_components(serving, shutdown, rest).await;
        admin_stop.trigger();
        let _ = admin_task.await;
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    });
    Ok(Running { addresses, done })
}

/// Serves every component to the end and returns the first error.
///
/// `shutdown` is the process's signal (SIGTERM); `rest` is the one the components other
/// than the gateway serve until (the same signal when there is no gateway among them).
/// With a gateway, SIGTERM stops it first: it drains its sockets over its window while
/// every other component keeps answering the calls the drain still makes (and the
/// reconnects of clients to other processes), and `rest` fires once the gateway has
/// exited. A component failing stops everything at once.
pub async fn run_components(
    serving: Vec<(Component, ServeFuture)>,
    shutdown: Shutdown,
    rest: Shutdown,
) -> Option<ServeError> {
    let mut tasks = Vec::new();
    for (component, serve) in serving {
        let shutdown = shutdown.clone();
        let rest = rest.clone();
        tasks.push((
            component,
            tokio::spawn(async move {
                let result = serve.await;
                if let Err(error) = &result {
                    // One component failing takes the process down rather than leaving a
                    // half-working server behind a passing liveness probe.
                    tracing::error!(component = %component, %error, "component stopped with an error");
                    shutdown.trigger();
                    rest.trigger();
                }
                if component == Component::Gateway {
                    tracing::info!("gateway stopped; stopping the other components");
                    rest.trigger();
                }
                result
            }),
        ));
    }
    let mut first_error = None;
    for (component, task) in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                first_error.get_or_insert(ServeError::Component(error));
            }
            Err(join) => {
                first_error.get_or_insert(ServeError::Component(ComponentError::failed(
                    component,
                    join.to_string(),
                )));
            }
        }
    }
    shutdown.trigger();
    rest.trigger();
    first_error
}

/// Writes the addresses as JSON, atomically (write then rename), so a reader never sees
/// a partial file.
pub fn write_addr_file(path: &std::path::Path, addresses: &Addresses) -> Result<(), ServeError> {
    let error = |source| ServeError::AddrFile {
        path: path.to_owned(),
        source,
    };
    let json = serde_json::to_vec_pretty(addresses).map_err(|e| error(std::io::Error::other(e)))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json).map_err(error)?;
    std::fs::rename(&tmp, path).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A component that serves until its signal, then takes `drain` to stop, logging both.
    fn component(
        name: &'static str,
        signal: Shutdown,
        drain: Duration,
        log: Arc<Mutex<Vec<String>>>,
    ) -> ServeFuture {
        Box::pin(async move {
            signal.wait().await;
            log.lock().expect("log").push(format!("{name} signalled"));
            tokio::time::sleep(drain).await;
            log.lock().expect("log").push(format!("{name} stopped"));
            Ok(())
        })
    }

    #[tokio::test]
    async fn sigterm_stops_the_gateway_first_and_the_rest_after_its_drain() {
        let shutdown = Shutdown::new();
        let rest = Shutdown::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let serving = vec![
            (
                Component::Gateway,
                component(
                    "gateway",
                    shutdown.clone(),
                    Duration::from_secs(2),
                    log.clone(),
                ),
            ),
            (
                Component::Auth,
                component("auth", rest.clone(), Duration::from_millis(10), log.clone()),
            ),
            (
                Component::Message,
                component(
                    "message",
                    rest.clone(),
                    Duration::from_millis(10),
                    log.clone(),
                ),
            ),
        ];
        let run = tokio::spawn(run_components(serving, shutdown.clone(), rest.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        shutdown.trigger();
        // During the gateway's drain (2 s) the others still serve.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!rest.is_triggered());
        assert_eq!(
            *log.lock().expect("log"),
            vec!["gateway signalled".to_string()]
        );
        assert!(run.await.expect("joined").is_none());
        let log = log.lock().expect("log").clone();
        let at = |entry: &str| log.iter().position(|l| l == entry).expect(entry);
        assert!(at("gateway stopped") < at("auth signalled"), "{log:?}");
        assert!(at("gateway stopped") < at("message signalled"), "{log:?}");
        assert_eq!(log.len(), 6, "{log:?}");
    }

    #[tokio::test]
    async fn a_failing_component_stops_everything_at_once() {
        let shutdown = Shutdown::new();
        let rest = Shutdown::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let failing: ServeFuture = Box::pin(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(ComponentError::failed(Component::Auth, "database gone"))
        });
        let serving = vec![
            (
                Component::Gateway,
                component(
                    "gateway",
                    shutdown.clone(),
                    Duration::from_secs(1),
                    log.clone(),
                ),
            ),
            (Component::Auth, failing),
            (
                Component::Message,
                component(
                    "message",
                    rest.clone(),
                    Duration::from_millis(10),
                    log.clone(),
                ),
            ),
        ];
        let error = run_components(serving, shutdown.clone(), rest.clone()).await;
        assert!(matches!(error, Some(ServeError::Component(_))), "{error:?}");
        let log = log.lock().expect("log").clone();
        let at = |entry: &str| log.iter().position(|l| l == entry).expect(entry);
        assert!(at("message signalled") < at("gateway stopped"), "{log:?}");
    }
}
