//! A fake Kubernetes API server over HTTP on loopback, for measuring the real operator binary
//! without a cluster (hack/mock-run.sh): the same in-memory store as the reconcile tests,
//! plus watch requests that stay open and never send events.
//!
//! Usage: mock_apiserver <kubeconfig-path> [clusters]
//! Seeds `clusters` BeehiveClusters (default 10, the dev example's spec) in namespaces
//! bench-0..N, writes a kubeconfig pointing at itself and serves until killed.

#[path = "../tests/support/mod.rs"]
mod support;

use std::convert::Infallible;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{Response, StatusCode};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let kubeconfig = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: mock_apiserver <kubeconfig> [clusters]"))?;
    let clusters: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(10);
    let fake = support::FakeApi::new();
    for i in 0..clusters {
        fake.seed(
            &format!("/apis/beehive.dev/v1alpha1/namespaces/bench-{i}/beehiveclusters"),
            json!({"apiVersion": "beehive.dev/v1alpha1", "kind": "BeehiveCluster",
                   "metadata": {"name": "dev", "namespace": format!("bench-{i}")},
                   "spec": {"image": {"repository": "beehive", "tag": "dev"},
                            "gateway": {"service": {"type": "NodePort", "nodePort": 30080}}}}),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\nusers:\n- name: fake\n  user:\n    token: fake\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\n"
        ),
    )?;
    eprintln!(
        "mock API server on http://{addr} with {clusters} BeehiveClusters; kubeconfig {kubeconfig}"
    );
    let app = Router::new().fallback(move |req: Request| {
        let fake = fake.clone();
        async move {
            let (parts, body) = req.into_parts();
            let uri = parts.uri.to_string();
            if parts.method == "GET" && uri.contains("watch=true") {
                // An open watch streaming the store's changes, as JSON lines.
                let (path, query) = uri.split_once('?').unwrap_or((uri.as_str(), ""));
                let Some(p) = support::parse_path(path) else {
                    return Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Body::empty())
                        .unwrap_or_default();
                };
                let selector = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("labelSelector="))
                    .map(|v| {
                        v.replace("%3D", "=")
                            .replace("%2C", ",")
                            .replace("%2F", "/")
                    })
                    .unwrap_or_default();
                let rx = fake.subscribe();
                let stream = futures::stream::unfold(rx, move |mut rx| {
                    let (p_coll, gv, plural, all, selector) = (
                        p.collection.clone(),
                        p.group_version.clone(),
                        p.plural.clone(),
                        p.namespace.is_none(),
                        selector.clone(),
                    );
                    async move {
                        loop {
                            let (coll, kind, obj) = match rx.recv().await {
                                Ok(c) => c,
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                    continue;
                                }
                                Err(_) => return None,
                            };
                            let same = coll == p_coll
                                || (all
                                    && coll.starts_with(&format!("{gv}/namespaces/"))
                                    && coll.ends_with(&format!("/{plural}")));
                            if same && support::matches_selector(&obj, &selector) {
                                let mut line =
                                    serde_json::to_vec(&json!({"type": kind, "object": obj}))
                                        .unwrap_or_default();
                                line.push(b'\n');
                                return Some((Ok::<_, Infallible>(Bytes::from(line)), rx));
                            }
                        }
                    }
                });
                return Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(Body::from_stream(stream))
                    .unwrap_or_default();
            }
            let bytes = axum::body::to_bytes(body, 16 << 20)
                .await
                .unwrap_or_default();
            let (code, resp) = fake.handle(parts.method.as_str(), &uri, &bytes);
            Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(resp))
                .unwrap_or_default()
        }
    });
    axum::serve(listener, app).await?;
    Ok(())
}
