//! The admin HTTP server every process runs on `BEEHIVE_ADMIN_ADDR` (`:9090`):
//! `/healthz` (the process is alive), `/readyz` (its dependencies answer, so a
//! Kubernetes Service may send it traffic) and `/metrics` (Prometheus text).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::shutdown::Shutdown;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One dependency readiness depends on: a name and a probe.
#[derive(Clone)]
pub struct ReadinessCheck {
    name: &'static str,
    probe: Arc<dyn Fn() -> CheckFuture + Send + Sync>,
}

impl ReadinessCheck {
    /// A check named `name` that is ready when `probe` returns `Ok`.
    pub fn new<F, Fut>(name: &'static str, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            name,
            probe: Arc::new(move || Box::pin(probe())),
        }
    }

    /// PostgreSQL answers `SELECT 1`.
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        Self::new("postgres", move || {
            let pool = pool.clone();
            async move {
                sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
    }

    /// Redis answers `PING`.
    pub fn redis(conn: redis::aio::ConnectionManager) -> Self {
        Self::new("redis", move || {
            let mut conn = conn.clone();
            async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
    }

    /// The check's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Runs the probe with a deadline.
    pub async fn run(&self) -> Result<(), String> {
        match tokio::time::timeout(Duration::from_secs(2), (self.probe)()).await {
            Ok(result) => result,
            Err(_) => Err("timed out after 2s".to_owned()),
        }
    }
}

/// Readiness: every check must pass.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<ReadinessCheck>,
}

impl Readiness {
    /// No checks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check.
    pub fn with(mut self, check: ReadinessCheck) -> Self {
        self.checks.push(check);
        self
    }

    /// Adds checks.
    pub fn extend(&mut self, checks: impl IntoIterator<Item = ReadinessCheck>) {
        self.checks.extend(checks);
    }

    /// Runs every check concurrently; `Ok` or the failing names with reasons.
    pub async fn check(&self) -> Result<(), Vec<(String, String)>> {
        let results = futures::future::join_all(
            self.checks
                .iter()
                .map(|c| async move { (c.name(), c.run().await) }),
        )
        .await;
        let failures: Vec<(String, String)> = results
            .into_iter()
            .filter_map(|(name, r)| r.err().map(|e| (name.to_owned(), e)))
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }
}

/// `/healthz` and `/readyz` handlers, also mounted by the gateway on its public port.
pub fn health_routes<S: Clone + Send + Sync + 'static>(readiness: Readiness) -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(readiness))
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> impl IntoResponse {
    match readiness.check().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ready"})),
        ),
        Err(failures) => {
            for (name, reason) in &failures {
                tracing::warn!(dependency = %name, %reason, "not ready");
            }
            let names: Vec<&str> = failures.iter().map(|(n, _)| n.as_str()).collect();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"status": "not_ready", "failing": names})),
            )
        }
    }
}

/// The admin router: health routes plus `/metrics`.
pub fn router(readiness: Readiness) -> Router {
    let handle = crate::telemetry::metrics_handle();
    health_routes(readiness).route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    )
}

/// Binds the admin server; returns the bound address and the serving future, which
/// ends after `shutdown` fires.
pub async fn bind(
    addr: SocketAddr,
    readiness: Readiness,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(readiness);
    let serve = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.wait_owned())
            .await
    };
    Ok((local, serve))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_names_failing_checks() {
        let readiness = Readiness::new()
            .with(ReadinessCheck::new("ok", || async { Ok(()) }))
            .with(ReadinessCheck::new("down", || async {
                Err("refused".to_owned())
            }));
        let failures = readiness.check().await.expect_err("one check fails");
        assert_eq!(failures, vec![("down".to_owned(), "refused".to_owned())]);
    }

    #[tokio::test]
    async fn admin_server_serves_health_and_metrics() {
        let shutdown = Shutdown::new();
        let (addr, serve) = bind(
            "127.0.0.1:0".parse().expect("addr"),
            Readiness::new(),
            shutdown.clone(),
        )
        .await
        .expect("bind");
        let server = tokio::spawn(serve);
        metrics::counter!("beehive_test_counter").increment(1);
        let body = http_get(addr, "/metrics").await;
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        let body = http_get(addr, "/readyz").await;
        assert!(body.contains("\"ready\""), "{body}");
        shutdown.trigger();
        server.await.expect("join").expect("serve");
    }

    async fn http_get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = String::new();
        stream.read_to_string(&mut out).await.expect("read");
        out
    }
}
