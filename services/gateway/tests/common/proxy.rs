//! A TCP proxy in front of the real RabbitMQ, so one test can cut one gateway's
//! broker connections (what a broker restart or a network drop looks like to it)
//! without disturbing the broker that other tests share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::AbortHandle;

/// The proxy; dropping it stops accepting.
pub struct Proxy {
    pub addr: SocketAddr,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    refusing: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Where the test broker listens (from `BEEHIVE_TEST_AMQP_URL`, else the default).
pub fn broker_addr() -> String {
    let url = std::env::var("BEEHIVE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = host.split('/').next().unwrap_or(host);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5672")
    }
}

impl Proxy {
    /// Starts a proxy to the test broker.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listener");
        let addr = listener.local_addr().expect("addr");
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let refusing = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let target = broker_addr();
        let accept = {
            let links = links.clone();
            let refusing = refusing.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if refusing.load(Ordering::Acquire) {
                        drop(inbound);
                        continue;
                    }
                    accepted.fetch_add(1, Ordering::AcqRel);
                    let target = target.clone();
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    links.lock().await.push(link.abort_handle());
                }
            })
        };
        Self {
            addr,
            links,
            refusing,
            accepted,
            accept,
        }
    }

    /// An AMQP URL that goes through the proxy.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Drops every open connection and refuses new ones until [`Proxy::resume`].
    pub async fn cut(&self) {
        self.refusing.store(true, Ordering::Release);
        for link in self.links.lock().await.drain(..) {
            link.abort();
        }
    }

    /// Connections proxied so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Acquire)
    }

    /// Accepts connections again.
    pub fn resume(&self) {
        self.refusing.store(false, Ordering::Release);
    }
}
