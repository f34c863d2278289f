//! The operator's client of the search component's reindex RPCs (`SearchService.Reindex`
//! and `GetReindex`, proto/beehive/v1/search.proto).
//!
//! A rebuild's state lives in the search pod that runs it (and, with the embedded index,
//! in that pod's volume), so every call about one request must reach the same pod. The
//! search Service is headless: [`pin`] resolves its name and picks one pod address the
//! same way every time (the lowest), and the reindex status records it, so later polls
//! ask that pod and a repeated Reindex lands where the first one did.

use std::net::SocketAddr;
use std::time::Duration;

use beehive_proto::v1::search_service_client::SearchServiceClient;
use beehive_proto::v1::{GetReindexRequest, ReindexRequest, ReindexResponse, ReindexState};
use k8s_openapi::jiff::Timestamp;
use tonic::transport::{Channel, Endpoint, Uri};

/// Longest wait for a connection to the search pod.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of each call (Reindex only starts the rebuild; it never waits for it).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call to the search component did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The address is not a URL with a host and a port.
    #[error("invalid search address {addr:?}: {message}")]
    Address {
        /// The address.
        addr: String,
        /// What is wrong with it.
        message: String,
    },
    /// DNS could not resolve the search Service.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// `host:port`.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The search Service has no ready pod.
    #[error("{host} resolves to no address (no ready search pod)")]
    NoAddress {
        /// `host:port`.
        host: String,
    },
    /// No connection could be made.
    #[error("cannot reach the search component at {addr}: {source}")]
    Connect {
        /// The pod address.
        addr: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The search component answered with an error.
    #[error("the search component at {addr} answered {code:?}: {message}")]
    Rpc {
        /// The pod address.
        addr: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
}

impl SearchError {
    /// The gRPC code of an answered call.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            SearchError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The search component's own message for an answered call, the whole text otherwise.
    pub fn reason(&self) -> String {
        match self {
            SearchError::Rpc { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// Where a rebuild is, as the search component reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteState {
    /// Rebuilding.
    Running,
    /// The new index is in use.
    Succeeded,
    /// The rebuild failed; the old index stays.
    Failed,
    /// A state this operator does not know (a newer search component).
    Unknown,
}

/// The search component's answer about one rebuild.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteReindex {
    /// The request id.
    pub request_id: String,
    /// Its state.
    pub state: RemoteState,
    /// Messages written into the new index so far.
    pub documents: u64,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// Why it failed.
    pub error: String,
}

fn timestamp(t: Option<prost_types::Timestamp>) -> Option<Timestamp> {
    let t = t?;
    Timestamp::new(t.seconds, t.nanos).ok()
}

impl From<ReindexResponse> for RemoteReindex {
    fn from(r: ReindexResponse) -> Self {
        let state = match ReindexState::try_from(r.state) {
            Ok(ReindexState::Running) => RemoteState::Running,
            Ok(ReindexState::Succeeded) => RemoteState::Succeeded,
            Ok(ReindexState::Failed) => RemoteState::Failed,
            Ok(ReindexState::Unspecified) | Err(_) => RemoteState::Unknown,
        };
        Self {
            request_id: r.request_id,
            state,
            documents: r.documents,
            started_at: timestamp(r.started_at),
            finished_at: timestamp(r.finished_at),
            error: r.error,
        }
    }
}

/// One pod behind `addr` (`http://host:port`): the lowest of the addresses its name
/// resolves to, so every reconcile (and every operator replica) picks the same pod while
/// the set of ready pods stays the same. An address that is already an IP is kept.
pub async fn pin(addr: &str) -> Result<String, SearchError> {
    let invalid = |message: &str| SearchError::Address {
        addr: addr.to_owned(),
        message: message.to_owned(),
    };
    let uri: Uri = addr.parse().map_err(|_| invalid("not a URL"))?;
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
    let scheme = uri.scheme_str().unwrap_or("http");
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    if bare_host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(format!("{scheme}://{host}:{port}"));
    }
    let target = format!("{host}:{port}");
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host(&target)
        .await
        .map_err(|source| SearchError::Resolve {
            host: target.clone(),
            source,
        })?
        .collect();
    addrs.sort();
    let first = addrs
        .first()
        .ok_or(SearchError::NoAddress { host: target })?;
    Ok(format!("{scheme}://{first}"))
}

async fn connect(endpoint: &str) -> Result<SearchServiceClient<Channel>, SearchError> {
    let channel = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| SearchError::Address {
            addr: endpoint.to_owned(),
            message: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .map_err(|source| SearchError::Connect {
            addr: endpoint.to_owned(),
            source,
        })?;
    Ok(SearchServiceClient::new(channel))
}

fn answered(endpoint: &str) -> impl FnOnce(tonic::Status) -> SearchError + '_ {
    move |status| SearchError::Rpc {
        addr: endpoint.to_owned(),
        code: status.code(),
        message: status.message().to_owned(),
    }
}

/// `Reindex`: starts the rebuild of `request_id` on the pod at `endpoint`, or answers the
/// state of the one that id already started there.
pub async fn reindex(endpoint: &str, request_id: &str) -> Result<RemoteReindex, SearchError> {
    let mut client = connect(endpoint).await?;
    let response = client
        .reindex(ReindexRequest {
            request_id: request_id.to_owned(),
        })
        .await
        .map_err(answered(endpoint))?;
    Ok(response.into_inner().into())
}

/// `GetReindex`: the state of the rebuild of `request_id` on the pod at `endpoint`.
pub async fn get_reindex(endpoint: &str, request_id: &str) -> Result<RemoteReindex, SearchError> {
    let mut client = connect(endpoint).await?;
    let response = client
        .get_reindex(GetReindexRequest {
            request_id: request_id.to_owned(),
        })
        .await
        .map_err(answered(endpoint))?;
    Ok(response.into_inner().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pin_keeps_ip_addresses_and_resolves_names_to_the_lowest() {
        assert_eq!(
            pin("http://10.0.0.7:50055").await.ok().as_deref(),
            Some("http://10.0.0.7:50055")
        );
        assert_eq!(
            pin("http://[::1]:50055").await.ok().as_deref(),
            Some("http://[::1]:50055")
        );
        let localhost = pin("http://localhost:50055")
            .await
            .expect("localhost resolves");
        assert!(
            localhost == "http://127.0.0.1:50055" || localhost == "http://[::1]:50055",
            "{localhost}"
        );
        for bad in ["not a url", "http://no-port-here", "/relative"] {
            assert!(
                matches!(pin(bad).await, Err(SearchError::Address { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn responses_map_to_remote_states() {
        let r = RemoteReindex::from(ReindexResponse {
            request_id: "r1".into(),
            state: ReindexState::Failed as i32,
            documents: 3,
            started_at: Some(prost_types::Timestamp {
                seconds: 1_767_225_600,
                nanos: 0,
            }),
            finished_at: None,
            error: "boom".into(),
        });
        assert_eq!(r.state, RemoteState::Failed);
        assert_eq!(r.started_at, Timestamp::new(1_767_225_600, 0).ok());
        assert_eq!(r.error, "boom");
        let unknown = RemoteReindex::from(ReindexResponse {
            state: 42,
            ..ReindexResponse::default()
        });
        assert_eq!(unknown.state, RemoteState::Unknown);
    }
}
