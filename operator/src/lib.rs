//! beehive-operator: reconciles `BeehiveCluster` objects into running Beehive installations.
//!
//! The reconciler is a pipeline (see [`reconcile`]): validate, build desired objects with pure
//! functions, apply them with server-side apply, delete what is no longer wanted, then status.

#![cfg_attr(test, allow(clippy::field_reassign_with_default))]

pub mod component;
pub mod crd;
pub mod crd_validation;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod search;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use beehive_common::shutdown::{Shutdown, trigger_on_signals};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use reconcile::build::{MANAGED_BY, labels};

/// Options of `beehive-operator run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Watch BeehiveClusters in this namespace only; every namespace when unset or empty.
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of the HTTP server with /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Elect a leader on a Lease, so several replicas can run.
    #[arg(long, env = "LEADER_ELECT", default_value_t = false)]
    pub leader_elect: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "beehive-operator")]
    pub lease_name: String,
    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Identity in the Lease and events (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: telemetry::LogFormat,
    /// Log filter, e.g. `info` or `info,kube=debug`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// BeehiveClusters reconciled at the same time.
    #[arg(long, env = "CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,
    /// gRPC address of the search component of every BeehiveCluster (for reindex requests)
    /// instead of its in-cluster Service, e.g. http://127.0.0.1:50055 for an operator run
    /// outside the cluster with `kubectl port-forward`.
    #[arg(long, env = "SEARCH_ADDR")]
    pub search_addr: Option<String>,
}

#[derive(Clone)]
struct HttpState {
    metrics: PrometheusHandle,
    ready: Arc<AtomicBool>,
}

async fn metrics_handler(State(s): State<HttpState>) -> String {
    s.metrics.run_upkeep();
    s.metrics.render()
}

async fn ready_handler(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// The admin HTTP router: /metrics, /healthz, /readyz.
fn router(metrics: PrometheusHandle, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(HttpState { metrics, ready })
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The objects the operator would apply for every BeehiveCluster in a YAML stream (other
/// documents are skipped), as a YAML stream. Pure: no cluster involved.
pub fn render(yaml: &str, default_namespace: &str) -> anyhow::Result<String> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).context("parsing YAML")?;
    let mut out = String::new();
    for doc in docs {
        if doc.get("kind").and_then(|k| k.as_str()) != Some("BeehiveCluster") {
            continue;
        }
        let mut cluster: crd::BeehiveCluster =
            serde_json::from_value(doc).context("reading a BeehiveCluster")?;
        cluster
            .metadata
            .namespace
            .get_or_insert_with(|| default_namespace.to_string());
        cluster.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
        let problems = reconcile::validate::validate(&cluster);
        if !problems.is_empty() {
            anyhow::bail!("invalid BeehiveCluster: {}", problems.join("; "));
        }
        let desired = reconcile::build::build_all(&cluster, &reconcile::build::Inputs::default())?;
        for obj in desired.objects {
            out.push_str("---\n");
            out.push_str(&serde_saphyr::to_string(&obj.object).context("serializing")?);
        }
    }
    Ok(out)
}

/// Runs the operator until SIGTERM/SIGINT or loss of leadership.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, &args.log_level).map_err(anyhow::Error::msg)?;
    // One signal for the whole process: a SIGTERM that arrives while waiting for the lease
    // and one that arrives while reconciling are the same event.
    let shutdown = Shutdown::new();
    tokio::spawn(trigger_on_signals(shutdown.clone()));
    let handle = metrics::install().context("installing the metrics recorder")?;
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    tracing::info!(addr = %args.metrics_addr, "serving /metrics, /healthz, /readyz");
    let app = router(handle, ready.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin HTTP server stopped");
        }
    });

    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let namespace = args.namespace.clone().filter(|n| !n.is_empty());
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "beehive-operator".into());

    // Fail fast with a clear message when the CRD is missing.
    let ar = reconcile::cluster_resource();
    let clusters: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    clusters
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => {
                anyhow::anyhow!(
                    "the BeehiveCluster CRD is not installed (kubectl apply --server-side -f crds/)"
                )
            }
            e => anyhow::Error::new(e).context("listing BeehiveClusters"),
        })?;
    ready.store(true, Ordering::Relaxed);

    let (leader_tx, mut leader_rx) = watch::channel(!args.leader_elect);
    if args.leader_elect {
        let cfg = leader::LeaseConfig {
            name: args.lease_name.clone(),
            namespace: args.lease_namespace.clone(),
            identity: identity.clone(),
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(4),
        };
        tokio::spawn(leader::run(client.clone(), cfg, leader_tx));
        tracing::info!(lease = %args.lease_name, identity = %identity, "waiting for leadership");
        tokio::select! {
            res = leader_rx.wait_for(|l| *l) => { res.context("leader election stopped")?; }
            () = shutdown.wait() => { return Ok(()); }
        }
    } else {
        metrics::leader(true);
    }

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "beehive-operator".into(),
            instance: Some(identity.clone()),
        },
    );
    let mut ctx = reconcile::Context::new(client.clone(), Some(recorder));
    // The chart sets POD_NAMESPACE from the downward API; without it (a local run) the
    // NetworkPolicy cannot name the operator's namespace and leaves it out.
    ctx.operator_namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty());
    if let Some(addr) = args.search_addr.clone().filter(|a| !a.is_empty()) {
        tracing::info!(%addr, "reindex requests go to this search address");
        ctx.search_address = reconcile::reindex::SearchAddress::Fixed(addr);
    }
    let ctx = Arc::new(ctx);
    let children =
        watcher::Config::default().labels(&format!("{}={MANAGED_BY}", labels::MANAGED_BY));
    let ns = namespace.as_deref();
    let mut lost = leader_rx.clone();
    let leadership_lost = async move {
        let _ = lost.wait_for(|l| !*l).await;
    };
    tracing::info!(
        namespace = ns.unwrap_or("<all>"),
        "starting the BeehiveCluster controller"
    );
    Controller::new_with(clusters, watcher::Config::default(), ar)
        .owns::<Deployment>(scoped(&client, ns), children.clone())
        .owns::<StatefulSet>(scoped(&client, ns), children.clone())
        .owns::<Job>(scoped(&client, ns), children.clone())
        .owns::<Service>(scoped(&client, ns), children)
        .with_config(controller::Config::default().concurrency(args.concurrency))
        .graceful_shutdown_on(async move {
            tokio::select! {
                () = shutdown.wait() => tracing::info!("shutting down"),
                () = leadership_lost => tracing::error!("leadership lost; stopping"),
            }
        })
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(cluster = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "controller event"),
            }
        })
        .await;
    if args.leader_elect && !*leader_rx.borrow() {
        anyhow::bail!("lost the leader Lease");
    }
    Ok(())
}
