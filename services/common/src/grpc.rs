//! gRPC plumbing shared by every client and server.
//!
//! Clients: [`balanced_channel`] resolves a component's DNS name to every address
//! behind it (a headless Service gives one per pod), balances requests over them and
//! re-resolves periodically, because a ClusterIP would pin each HTTP/2 connection to
//! one pod. [`ClientStack`] adds a deadline and a concurrency limit that fails fast
//! with `unavailable` instead of queueing without bound, and [`Retry`] retries
//! idempotent calls within a budget.
//!
//! Servers: [`server`] builds a tonic server with a deadline, HTTP/2 keepalive and a
//! [`LoadShedLayer`] that answers `unavailable` when the in-flight limit is reached.
//!
//! Metrics: every call through a [`ClientChannel`] and every request a server's
//! [`LoadShedLayer`] sees is timed per method and gRPC status code
//! (`beehive_grpc_client_request_duration_seconds`,
//! `beehive_grpc_server_request_duration_seconds`), until the response headers: the whole
//! call for unary RPCs, the time to the first message for streams.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use crate::config::Settings;
use crate::error::Error;
use crate::shutdown::Shutdown;

/// An invalid component address.
#[derive(Debug, thiserror::Error)]
#[error("invalid gRPC address {addr:?}: {message}")]
pub struct AddrError {
    addr: String,
    message: String,
}

/// A channel over every address `url`'s host resolves to, re-resolved every
/// `settings.dns_refresh` until `shutdown` fires. Returns at once: while the name does
/// not resolve, calls fail with `unavailable` after their deadline.
pub fn balanced_channel(
    url: &str,
    settings: &Settings,
    shutdown: &Shutdown,
) -> Result<Channel, AddrError> {
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| AddrError {
        addr: url.to_owned(),
        message: e.to_string(),
    })?;
    let scheme = uri.scheme_str().unwrap_or("http").to_owned();
    let host = uri
        .host()
        .ok_or_else(|| AddrError {
            addr: url.to_owned(),
            message: "no host".to_owned(),
        })?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let (channel, sender) = Channel::balance_channel::<SocketAddr>(64);
    let connect_timeout = settings.grpc_timeout.min(Duration::from_secs(5));
    let refresh = settings.dns_refresh;
    let shutdown = shutdown.clone();
    let name = format!("{host}:{port}");
    tokio::spawn(async move {
        let mut known: HashSet<SocketAddr> = HashSet::new();
        loop {
            match tokio::net::lookup_host(name.as_str()).await {
                Ok(addrs) => {
                    let current: HashSet<SocketAddr> = addrs.collect();
                    for gone in known.difference(&current) {
                        if sender.send(Change::Remove(*gone)).await.is_err() {
                            return;
                        }
                    }
                    for new in current.difference(&known) {
                        let endpoint = match Endpoint::from_shared(format!("{scheme}://{new}")) {
                            Ok(e) => e,
                            Err(error) => {
                                tracing::warn!(%error, addr = %new, "cannot build endpoint");
                                continue;
                            }
                        };
                        let endpoint = endpoint
                            .connect_timeout(connect_timeout)
                            .tcp_nodelay(true)
                            .http2_keep_alive_interval(Duration::from_secs(30))
                            .keep_alive_timeout(Duration::from_secs(10))
                            .keep_alive_while_idle(true);
                        if sender.send(Change::Insert(*new, endpoint)).await.is_err() {
                            return;
                        }
                    }
                    if current != known {
                        tracing::debug!(target = %name, endpoints = current.len(), "gRPC endpoints changed");
                    }
                    known = current;
                }
                Err(error) => {
                    // Keep the last known endpoints: a DNS hiccup must not drop traffic.
                    tracing::warn!(target = %name, %error, "DNS resolution failed");
                }
            }
            let wait = if known.is_empty() {
                Duration::from_millis(500).min(refresh)
            } else {
                refresh
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.wait() => return,
            }
        }
    });
    Ok(channel)
}

/// The layers under every client: a shedding concurrency limit over a deadline over
/// the balanced channel.
type ClientLayers =
    tower::load_shed::LoadShed<tower::limit::ConcurrencyLimit<tower::timeout::Timeout<Channel>>>;

/// The service every Beehive gRPC client is built on: a balanced channel with a
/// deadline and a shedding concurrency limit, whose errors are turned into statuses.
///
/// A named service with a boxed, `Send` response future (rather than `MapErr` with a
/// function pointer): futures that await calls on it stay provably `Send`, so tonic
/// clients over it work inside axum handlers and spawned tasks. One allocation per
/// call, negligible next to the RPC.
#[derive(Clone)]
pub struct ClientChannel {
    inner: ClientLayers,
}

type ClientFuture = Pin<
    Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, tower::BoxError>> + Send>,
>;

impl tower::Service<http::Request<tonic::body::Body>> for ClientChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tower::BoxError;
    type Future = ClientFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx).map_err(client_error)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let started = std::time::Instant::now();
        let future = tower::Service::call(&mut self.inner, request);
        Box::pin(async move {
            let result = future.await.map_err(client_error);
            let code = match &result {
                Ok(response) => response_code(response),
                Err(error) => error
                    .downcast_ref::<tonic::Status>()
                    .map_or(tonic::Code::Unavailable, tonic::Status::code),
            };
            record_call(CLIENT_DURATION, method, code, started);
            result
        })
    }
}

/// Histogram of the calls a process makes, by method and status code.
pub const CLIENT_DURATION: &str = "beehive_grpc_client_request_duration_seconds";
/// Histogram of the requests a process serves, by method and status code.
pub const SERVER_DURATION: &str = "beehive_grpc_server_request_duration_seconds";

/// The status of a response: `grpc-status` in the headers (a trailers-only response, what
/// tonic sends for an error returned by a handler), else OK (the status of a successful
/// call comes in the trailers).
fn response_code<B>(response: &http::Response<B>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

/// Records one call. Paths of methods that do not exist (answered `unimplemented`) share
/// one label value, so a client cannot grow the series without bound.
fn record_call(
    metric: &'static str,
    method: String,
    code: tonic::Code,
    started: std::time::Instant,
) {
    let method = if code == tonic::Code::Unimplemented {
        "unknown".to_owned()
    } else {
        method.trim_start_matches('/').to_owned()
    };
    metrics::histogram!(metric, "method" => method, "code" => format!("{code:?}"))
        .record(started.elapsed().as_secs_f64());
}

/// Builds [`ClientChannel`]s.
pub struct ClientStack;

impl ClientStack {
    /// Wraps a channel with the client layers configured in `settings`.
    pub fn wrap(channel: Channel, settings: &Settings) -> ClientChannel {
        let inner = tower::ServiceBuilder::new()
            .load_shed()
            .concurrency_limit(settings.grpc_concurrency)
            .timeout(settings.grpc_timeout)
            .service(channel);
        ClientChannel { inner }
    }

    /// A balanced, layered channel to `component`'s configured address.
    pub fn connect(
        component: crate::config::Component,
        settings: &Settings,
        shutdown: &Shutdown,
    ) -> Result<ClientChannel, AddrError> {
        let channel = balanced_channel(settings.component_addr(component), settings, shutdown)?;
        Ok(Self::wrap(channel, settings))
    }
}

/// Turns layer errors into statuses tonic passes through unchanged, so callers see
/// `unavailable` for a deadline or a full client, never `unknown`.
fn client_error(error: tower::BoxError) -> tower::BoxError {
    if error.is::<tower::timeout::error::Elapsed>() {
        return Box::new(tonic::Status::unavailable(
            "deadline exceeded calling a dependency",
        ));
    }
    if error.is::<tower::load_shed::error::Overloaded>() {
        return Box::new(tonic::Status::unavailable(
            "too many calls in flight to a dependency",
        ));
    }
    error
}

/// Retries idempotent calls that failed with `unavailable`, at most `max_attempts`
/// times, while a token budget shared by all calls of one client allows: retries may
/// add at most 20% to the load, so a struggling dependency is not buried.
#[derive(Clone)]
pub struct Retry {
    budget: Arc<tower::retry::budget::TpsBudget>,
    max_attempts: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            budget: Arc::new(tower::retry::budget::TpsBudget::new(
                Duration::from_secs(10),
                10,
                0.2,
            )),
            max_attempts: 3,
        }
    }
}

impl Retry {
    /// Runs `call` until it succeeds, fails with a non-retryable status, or retries run
    /// out. Only for idempotent calls (reads, or writes with an idempotency key).
    pub async fn idempotent<T, F, Fut>(&self, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        use tower::retry::budget::Budget;
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(value) => {
                    self.budget.deposit();
                    return Ok(value);
                }
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && attempt < self.max_attempts
                        && self.budget.withdraw() =>
                {
                    attempt += 1;
                    let backoff = Duration::from_millis(25 * 2u64.pow(attempt));
                    tracing::debug!(attempt, ?backoff, message = status.message(), "retrying");
                    tokio::time::sleep(backoff).await;
                }
                Err(status) => return Err(status),
            }
        }
    }
}

/// A server layer that answers `unavailable` once `limit` requests are in flight,
/// instead of queueing them.
#[derive(Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
}

impl LoadShedLayer {
    /// Allows `limit` concurrent requests.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
        }
    }
}

impl<S> tower::Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// See [`LoadShedLayer`].
#[derive(Clone)]
pub struct LoadShed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, B> tower::Service<http::Request<B>> for LoadShed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let started = std::time::Instant::now();
        let permit: Option<OwnedSemaphorePermit> = self.permits.clone().try_acquire_owned().ok();
        match permit {
            Some(permit) => {
                metrics::gauge!("beehive_grpc_in_flight").increment(1.0);
                let future = self.inner.call(request);
                Box::pin(async move {
                    let response = future.await;
                    drop(permit);
                    metrics::gauge!("beehive_grpc_in_flight").decrement(1.0);
                    let code = match &response {
                        Ok(r) => response_code(r),
                        Err(_) => tonic::Code::Internal,
                    };
                    record_call(SERVER_DURATION, method, code, started);
                    response
                })
            }
            None => {
                metrics::counter!("beehive_grpc_shed_total").increment(1);
                let status = tonic::Status::from(Error::Unavailable(
                    "server overloaded, retry later".to_owned(),
                ));
                record_call(SERVER_DURATION, method, status.code(), started);
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// The server builder every component uses.
pub fn server(
    settings: &Settings,
) -> tonic::transport::Server<tower::layer::util::Stack<LoadShedLayer, tower::layer::util::Identity>>
{
    tonic::transport::Server::builder()
        .timeout(settings.grpc_timeout)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(LoadShedLayer::new(settings.grpc_concurrency))
}

/// Binds a gRPC listener. Port 0 picks a free port; the real address is returned so
/// tests can point clients at it.
pub async fn bind(
    addr: SocketAddr,
) -> std::io::Result<(tokio_stream_shim::TcpIncoming, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((tokio_stream_shim::TcpIncoming::new(listener), local))
}

/// A `Stream` of accepted connections for `serve_with_incoming_shutdown`, without
/// pulling in tokio-stream for one adapter.
pub mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Accepted TCP connections, with `TCP_NODELAY` set.
    pub struct TcpIncoming {
        listener: tokio::net::TcpListener,
    }

    impl TcpIncoming {
        /// Wraps a bound listener.
        pub fn new(listener: tokio::net::TcpListener) -> Self {
            Self { listener }
        }
    }

    impl futures::Stream for TcpIncoming {
        type Item = std::io::Result<tokio::net::TcpStream>;

        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            match self.listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, _))) => {
                    let _ = stream.set_nodelay(true);
                    Poll::Ready(Some(Ok(stream)))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                Poll::Pending => Poll::Pending,
            }
        }
    }
}

/// A `grpc.health.v1` service reporting `service_name` as serving, plus its reporter
/// so a component can flip to not-serving during shutdown.
pub async fn health_service<S: tonic::server::NamedService>() -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_serving::<S>().await;
    (reporter, service)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count of one series of a rendered scrape, found by its labels.
    fn count_of(scrape: &str, family: &str, labels: &[&str]) -> Option<u64> {
        scrape
            .lines()
            .filter(|l| l.starts_with(&format!("{family}_count{{")))
            .find(|l| labels.iter().all(|label| l.contains(label)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
    }

    #[test]
    fn server_requests_are_timed_per_method_and_code() {
        use tower::{Layer as _, Service as _};
        let recorder = crate::telemetry::prometheus_builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            futures::executor::block_on(async {
                let inner = tower::service_fn(|req: http::Request<()>| async move {
                    let response = match req.uri().path() {
                        "/beehive.v1.AuthService/Fail" => {
                            tonic::Status::internal("boom").into_http()
                        }
                        "/nope/Nothing" => tonic::Status::unimplemented("").into_http(),
                        _ => http::Response::new(tonic::body::Body::empty()),
                    };
                    Ok::<_, std::convert::Infallible>(response)
                });
                let mut svc = LoadShedLayer::new(8).layer(inner);
                for path in [
                    "/beehive.v1.AuthService/Login",
                    "/beehive.v1.AuthService/Login",
                    "/beehive.v1.AuthService/Fail",
                    "/nope/Nothing",
                ] {
                    let request = http::Request::builder()
                        .uri(path)
                        .body(())
                        .expect("request");
                    svc.call(request).await.expect("infallible");
                }
            })
        });
        let scrape = handle.render();
        let count = |labels: &[&str]| count_of(&scrape, SERVER_DURATION, labels);
        assert_eq!(
            count(&["method=\"beehive.v1.AuthService/Login\"", "code=\"Ok\""]),
            Some(2),
            "{scrape}"
        );
        assert_eq!(
            count(&[
                "method=\"beehive.v1.AuthService/Fail\"",
                "code=\"Internal\""
            ]),
            Some(1)
        );
        assert_eq!(
            count(&["method=\"unknown\"", "code=\"Unimplemented\""]),
            Some(1)
        );
        assert!(
            !scrape.contains("nope/Nothing"),
            "unknown paths are not labels"
        );
        assert!(
            scrape.contains(&format!("{SERVER_DURATION}_bucket{{")),
            "a histogram, not a summary: {scrape}"
        );
        assert!(scrape.contains("le=\"0.001\"") && scrape.contains("le=\"300\""));
    }

    #[test]
    fn client_calls_are_timed_and_transport_failures_count_as_unavailable() {
        let recorder = crate::telemetry::prometheus_builder().build_recorder();
        let handle = recorder.handle();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // The local recorder is per thread: the call is polled on this one.
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                // Nothing listens there: the connection is refused.
                let channel = Endpoint::from_static("http://127.0.0.1:1")
                    .connect_timeout(Duration::from_millis(200))
                    .connect_lazy();
                let mut settings = Settings::local_defaults();
                settings.grpc_timeout = Duration::from_millis(500);
                let mut client = ClientStack::wrap(channel, &settings);
                let request = http::Request::builder()
                    .uri("http://127.0.0.1:1/beehive.v1.UserService/GetUser")
                    .body(tonic::body::Body::empty())
                    .expect("request");
                let ready =
                    futures::future::poll_fn(|cx| tower::Service::poll_ready(&mut client, cx))
                        .await;
                if ready.is_ok() {
                    let _ = tower::Service::call(&mut client, request).await;
                }
            })
        });
        let scrape = handle.render();
        assert_eq!(
            count_of(
                &scrape,
                CLIENT_DURATION,
                &[
                    "method=\"beehive.v1.UserService/GetUser\"",
                    "code=\"Unavailable\""
                ]
            ),
            Some(1),
            "{scrape}"
        );
    }

    #[tokio::test]
    async fn retry_stops_on_non_retryable_codes() {
        let retry = Retry::default();
        let mut calls = 0;
        let result: Result<(), _> = retry
            .idempotent(|| {
                calls += 1;
                async { Err(tonic::Status::not_found("nope")) }
            })
            .await;
        assert_eq!(result.expect_err("fails").code(), tonic::Code::NotFound);
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn retry_retries_unavailable_up_to_the_limit() {
        let retry = Retry::default();
        let mut calls = 0;
        let result: Result<(), _> = retry
            .idempotent(|| {
                calls += 1;
                async { Err(tonic::Status::unavailable("down")) }
            })
            .await;
        assert_eq!(result.expect_err("fails").code(), tonic::Code::Unavailable);
        assert_eq!(calls, 3);
    }

    #[test]
    fn invalid_addresses_are_rejected() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let settings = Settings::local_defaults();
            assert!(balanced_channel("not a url", &settings, &Shutdown::new()).is_err());
        });
    }
}
