//! Reindexing: rebuild the index from the message service's history and swap it in.
//!
//! A rebuild is asked for with a request id, an idempotency key: the same id starts
//! at most one rebuild, and asking again answers its state. A different id while one
//! runs is refused (`failed_precondition`, naming the running one). The history is
//! read in pages of (conversation, seq) order ([`HISTORY_PAGE`] messages), never whole;
//! each page goes into the new index while the old one keeps answering queries and
//! every live change goes into both ([`crate::backend`]).
//!
//! The state of the latest rebuild is kept in memory and, when a state file is given
//! (the embedded index's directory), on disk, so a repeated request id after a restart
//! still starts nothing new and a rebuild cut short by a restart reads as failed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beehive_common::grpc::{ClientChannel, Retry};
use beehive_common::{Error, Shutdown};
use beehive_proto::v1 as pb;
use beehive_proto::v1::message_service_client::MessageServiceClient;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Rebuild};
use crate::config::SearchConfig;

/// Messages asked for per history page.
pub const HISTORY_PAGE: u32 = 1000;
/// Longest request id.
pub const MAX_REQUEST_ID_CHARS: usize = 128;
/// Largest state file read back.
const MAX_STATE_BYTES: u64 = 64 * 1024;

/// Where a rebuild is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Succeeded,
    Failed,
}

/// One rebuild's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub request_id: String,
    pub state: State,
    /// Documents written into the new index so far.
    pub documents: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: String,
}

/// Checks a request id: 1-128 characters of letters, digits, `-`, `_`, `.`, `:`.
pub fn check_request_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.chars().count() <= MAX_REQUEST_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "request_id",
            format!(
                "request_id must be 1-{MAX_REQUEST_ID_CHARS} characters of letters, digits, '-', '_', '.' and ':'"
            ),
        ))
    }
}

/// Why a rebuild was not started.
#[derive(Debug, thiserror::Error)]
pub enum ReindexError {
    #[error(transparent)]
    Invalid(#[from] Error),
    /// Another request id's rebuild is running (gRPC `FAILED_PRECONDITION`).
    #[error("a reindex is already running (request_id {0})")]
    Running(String),
}

impl From<ReindexError> for tonic::Status {
    fn from(error: ReindexError) -> Self {
        match error {
            ReindexError::Invalid(error) => error.into(),
            ReindexError::Running(_) => tonic::Status::failed_precondition(error.to_string()),
        }
    }
}

/// Whether a request for `id` starts a rebuild given the latest one: `Ok(true)` to
/// start, `Ok(false)` to answer the latest (same id), or the refusal while another
/// runs.
pub fn decide(latest: Option<&Status>, id: &str) -> Result<bool, ReindexError> {
    match latest {
        Some(status) if status.request_id == id => Ok(false),
        Some(status) if status.state == State::Running => {
            Err(ReindexError::Running(status.request_id.clone()))
        }
        _ => Ok(true),
    }
}

/// Starts rebuilds and remembers the latest.
#[derive(Clone)]
pub struct Reindexer {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    messages: MessageServiceClient<ClientChannel>,
    retry: Retry,
    latest: Mutex<Option<Status>>,
    state_file: Option<PathBuf>,
    shutdown: Shutdown,
    page_size: u32,
    pause: Duration,
}

impl Reindexer {
    /// A reindexer of `backend`, reading history from `messages`; the latest state is
    /// kept in `state_file` when given (a rebuild found running there was cut short).
    pub fn new(
        backend: Arc<dyn Backend>,
        messages: MessageServiceClient<ClientChannel>,
        state_file: Option<PathBuf>,
        shutdown: Shutdown,
        config: &SearchConfig,
    ) -> Self {
        let latest = state_file
            .as_deref()
            .and_then(read_state)
            .map(|mut status| {
                if status.state == State::Running {
                    status.state = State::Failed;
                    status.error =
                        "interrupted: the search service stopped during the rebuild".into();
                    status.finished_at = Some(Utc::now());
                }
                status
            });
        let reindexer = Self {
            inner: Arc::new(Inner {
                backend,
                messages,
                retry: Retry::default(),
                latest: Mutex::new(latest),
                state_file,
                shutdown,
                page_size: config.reindex_page_size.clamp(1, HISTORY_PAGE),
                pause: config.reindex_page_pause,
            }),
        };
        reindexer.persist();
        reindexer
    }

    fn latest(&self) -> Option<Status> {
        self.inner
            .latest
            .lock()
            .map(|l| l.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn update(&self, change: impl FnOnce(&mut Status)) {
        let mut guard = self
            .inner
            .latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(status) = guard.as_mut() {
            change(status);
        }
    }

    fn persist(&self) {
        let (Some(path), Some(status)) = (&self.inner.state_file, self.latest()) else {
            return;
        };
        let written = serde_json::to_vec(&status)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, path)
            });
        if let Err(error) = written {
            tracing::warn!(%error, path = %path.display(), "cannot record the reindex state");
        }
    }

    /// Starts a rebuild for `request_id`, or answers the one it already started.
    pub fn start(&self, request_id: &str) -> Result<Status, ReindexError> {
        check_request_id(request_id)?;
        let status = {
            let mut guard = self
                .inner
                .latest
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !decide(guard.as_ref(), request_id)?
                && let Some(status) = guard.as_ref()
            {
                return Ok(status.clone());
            }
            let status = Status {
                request_id: request_id.to_owned(),
                state: State::Running,
                documents: 0,
                started_at: Utc::now(),
                finished_at: None,
                error: String::new(),
            };
            *guard = Some(status.clone());
            status
        };
        self.persist();
        metrics::gauge!("beehive_search_reindex_running").set(1.0);
        tracing::info!(
            request_id,
            backend = self.inner.backend.name(),
            "reindex started"
        );
        let this = self.clone();
        tokio::spawn(async move { this.run().await });
        Ok(status)
    }

    /// The rebuild of `request_id` (empty: the latest).
    pub fn get(&self, request_id: &str) -> Result<Status, Error> {
        if !request_id.is_empty() {
            check_request_id(request_id)?;
        }
        match self.latest() {
            Some(status) if request_id.is_empty() || status.request_id == request_id => Ok(status),
            _ => Err(Error::NotFound(format!(
                "no reindex with request_id {request_id:?} is known here"
            ))),
        }
    }

    async fn run(self) {
        let result = match self.inner.backend.begin_rebuild().await {
            Ok(rebuild) => self.fill(rebuild).await,
            Err(error) => Err(error.to_string()),
        };
        let documents = result.as_ref().copied().unwrap_or_default();
        self.update(|status| {
            status.finished_at = Some(Utc::now());
            match &result {
                Ok(documents) => {
                    status.state = State::Succeeded;
                    status.documents = *documents;
                }
                Err(error) => {
                    status.state = State::Failed;
                    status.error = error.clone();
                }
            }
        });
        self.persist();
        metrics::gauge!("beehive_search_reindex_running").set(0.0);
        match result {
            Ok(_) => tracing::info!(documents, "reindex finished; the new index is in use"),
            Err(error) => {
                tracing::error!(%error, "reindex failed; the previous index stays in use")
            }
        }
    }

    /// Pages the whole history into `rebuild`, then swaps it in.
    async fn fill(&self, mut rebuild: Box<dyn Rebuild>) -> Result<u64, String> {
        let mut after: Option<pb::HistoryPosition> = None;
        loop {
            if self.inner.shutdown.is_triggered() {
                rebuild.abort().await;
                return Err("interrupted: the search service is stopping".into());
            }
            let page = match self.page(after.clone()).await {
                Ok(page) => page,
                Err(error) => {
                    rebuild.abort().await;
                    return Err(format!("reading the message history failed: {error}"));
                }
            };
            let read = page.messages.len() as u64;
            match rebuild.add(page.messages).await {
                Ok(written) => {
                    metrics::counter!("beehive_search_reindex_documents_total").increment(written);
                    self.update(|status| status.documents += written);
                    tracing::debug!(read, written, "reindex page written");
                }
                Err(error) => {
                    rebuild.abort().await;
                    return Err(error.to_string());
                }
            }
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
            if !self.inner.pause.is_zero() {
                tokio::time::sleep(self.inner.pause).await;
            }
        }
        rebuild.finish().await.map_err(|e| e.to_string())
    }

    async fn page(
        &self,
        after: Option<pb::HistoryPosition>,
    ) -> Result<pb::ListHistoryResponse, Error> {
        let request = pb::ListHistoryRequest {
            after,
            limit: self.inner.page_size,
        };
        let messages = self.inner.messages.clone();
        self.inner
            .retry
            .idempotent(move || {
                let mut messages = messages.clone();
                let request = request.clone();
                async move { messages.list_history(request).await }
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| Error::from_status(&status))
    }
}

fn read_state(path: &std::path::Path) -> Option<Status> {
    let size = std::fs::metadata(path).ok()?.len();
    if size > MAX_STATE_BYTES {
        tracing::warn!(path = %path.display(), size, "reindex state file too large; ignored");
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(status) => Some(status),
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "unreadable reindex state file; ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: &str, state: State) -> Status {
        Status {
            request_id: id.into(),
            state,
            documents: 0,
            started_at: Utc::now(),
            finished_at: None,
            error: String::new(),
        }
    }

    #[test]
    fn request_ids_are_checked() {
        assert!(check_request_id("reindex-2026-11-28T12:00:00Z").is_ok());
        assert!(check_request_id(&"a".repeat(128)).is_ok());
        for bad in ["", "a b", "x/y", &"a".repeat(129), "naïve"] {
            assert!(check_request_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_same_id_never_starts_twice_and_another_waits_for_the_running_one() {
        assert_eq!(decide(None, "a").ok(), Some(true));
        let running = status("a", State::Running);
        assert_eq!(decide(Some(&running), "a").ok(), Some(false));
        let refused = decide(Some(&running), "b").expect_err("refused");
        assert!(matches!(refused, ReindexError::Running(ref id) if id == "a"));
        assert_eq!(
            tonic::Status::from(refused).code(),
            tonic::Code::FailedPrecondition
        );
        for done in [State::Succeeded, State::Failed] {
            let finished = status("a", done);
            assert_eq!(decide(Some(&finished), "a").ok(), Some(false));
            assert_eq!(decide(Some(&finished), "b").ok(), Some(true));
        }
    }
}
