//! `beehive search reindex`: asks the search component (at `BEEHIVE_SEARCH_ADDR`) to
//! rebuild its index from the message history, and optionally waits for the outcome.

use std::time::{Duration, Instant};

use beehive_common::config::{Component, Settings};
use beehive_proto::v1::search_service_client::SearchServiceClient;
use beehive_proto::v1::{GetReindexRequest, ReindexRequest, ReindexResponse, ReindexState};
use tonic::transport::{Channel, Endpoint};

/// How often `--wait` asks for the state.
const POLL: Duration = Duration::from_secs(1);
/// Deadline of each call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchCliError {
    #[error("search address {addr:?}: {message}")]
    Address { addr: String, message: String },
    #[error("cannot reach the search component at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the search component refused: {0}")]
    Refused(String),
    #[error("reindex {request_id} failed: {error}")]
    Failed { request_id: String, error: String },
    #[error("reindex {request_id} still running after {waited:?} ({documents} documents so far)")]
    Timeout {
        request_id: String,
        waited: Duration,
        documents: u64,
    },
}

fn refused(status: tonic::Status) -> SearchCliError {
    SearchCliError::Refused(format!("{:?}: {}", status.code(), status.message()))
}

/// One connection to the search component (one pod behind a headless Service, so
/// `--wait` keeps asking the replica that runs the rebuild).
async fn connect(settings: &Settings) -> Result<SearchServiceClient<Channel>, SearchCliError> {
    let addr = settings.component_addr(Component::Search).to_owned();
    let endpoint = Endpoint::from_shared(addr.clone())
        .map_err(|e| SearchCliError::Address {
            addr: addr.clone(),
            message: e.to_string(),
        })?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| SearchCliError::Connect { addr, source })?;
    Ok(SearchServiceClient::new(channel))
}

/// One line about a reindex state.
pub fn describe(r: &ReindexResponse) -> String {
    let state = match ReindexState::try_from(r.state) {
        Ok(ReindexState::Running) => "running",
        Ok(ReindexState::Succeeded) => "succeeded",
        Ok(ReindexState::Failed) => "failed",
        _ => "unknown",
    };
    let mut line = format!(
        "reindex {}: {state}, {} documents",
        r.request_id, r.documents
    );
    if !r.error.is_empty() {
        line.push_str(&format!(" ({})", r.error));
    }
    line
}

/// Starts (or finds, for a repeated `request_id`) a reindex; with `wait`, polls until
/// it ends or `timeout` passes. Fails when the rebuild failed.
pub async fn reindex(
    settings: &Settings,
    request_id: &str,
    wait: bool,
    timeout: Duration,
    mut progress: impl FnMut(&ReindexResponse),
) -> Result<ReindexResponse, SearchCliError> {
    let mut client = connect(settings).await?;
    let mut state = client
        .reindex(ReindexRequest {
            request_id: request_id.to_owned(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    progress(&state);
    let started = Instant::now();
    while wait && state.state == ReindexState::Running as i32 {
        if started.elapsed() > timeout {
            return Err(SearchCliError::Timeout {
                request_id: state.request_id,
                waited: timeout,
                documents: state.documents,
            });
        }
        tokio::time::sleep(POLL).await;
        state = client
            .get_reindex(GetReindexRequest {
                request_id: request_id.to_owned(),
            })
            .await
            .map_err(refused)?
            .into_inner();
        progress(&state);
    }
    if state.state == ReindexState::Failed as i32 {
        return Err(SearchCliError::Failed {
            request_id: state.request_id,
            error: state.error,
        });
    }
    Ok(state)
}
