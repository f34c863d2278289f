//! The shutdown signal threaded through every task.
//!
//! One `Shutdown` is created per process; servers stop accepting when it fires and
//! finish in-flight work, background loops leave at their next await point.

use tokio_util::sync::CancellationToken;

/// A cloneable, cancel-once signal. Cloning shares the signal.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal; every waiter wakes up. Idempotent.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once the signal fires (immediately if it already has).
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// An owned future of [`Shutdown::wait`], for APIs that take `impl Future + 'static`
    /// such as `serve_with_shutdown`.
    pub fn wait_owned(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// A signal that fires with this one but can also be fired on its own (for one
    /// component of `serve all`).
    pub fn child(&self) -> Self {
        Self {
            token: self.token.child_token(),
        }
    }
}

/// Fires `shutdown` on SIGTERM or SIGINT (Ctrl-C). Runs until one arrives or the
/// signal fires for another reason.
pub async fn trigger_on_signals(shutdown: Shutdown) {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
        () = shutdown.wait() => return,
    }
    shutdown.trigger();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn child_fires_with_parent_but_not_the_other_way() {
        let parent = Shutdown::new();
        let child = parent.child();
        child.trigger();
        assert!(!parent.is_triggered());
        let second = parent.child();
        parent.trigger();
        second.wait().await;
        assert!(second.is_triggered());
    }
}
