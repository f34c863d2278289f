//! Starting components in-process the way `beehive serve` does: bound first on a
//! loopback port-0 listener, readiness checked, then served in the background.

use std::net::SocketAddr;

use beehive_common::component::{Bound, Context, Infra};
use beehive_common::{Settings, Shutdown};
use tokio::net::TcpListener;

/// A fresh loopback listener on a free port.
pub async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback listener")
}

/// A component context over `settings` (its own infrastructure connections) that
/// stops on `shutdown`.
pub fn context(settings: &Settings, shutdown: &Shutdown) -> Context {
    Context {
        settings: settings.clone(),
        infra: Infra::new(settings.clone()),
        shutdown: shutdown.clone(),
    }
}

/// Waits until `bound` is ready, serves it in the background and returns its address.
/// Panics naming the component when a readiness check fails.
pub async fn run(bound: Bound) -> SocketAddr {
    for check in &bound.readiness {
        if let Err(error) = check.run().await {
            panic!("{:?} is not ready: {error}", bound.component);
        }
    }
    let addr = bound.addr;
    tokio::spawn(bound.serve);
    addr
}
