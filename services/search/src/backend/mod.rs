//! The index behind one trait: `embedded` (tantivy + jieba, in this process) today;
//! `elasticsearch` is the other backend DESIGN.md names.

pub mod embedded;

use beehive_proto::v1 as pb;
use futures::future::BoxFuture;

use crate::cursor::Cursor;
use crate::query::SearchQuery;

/// One page of matching messages, in the query's order.
#[derive(Debug, Default)]
pub struct Page {
    pub hits: Vec<pb::Message>,
    /// Where the next page starts; `None` at the end.
    pub next: Option<Cursor>,
}

/// Why the index could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("search index: {0}")]
    Index(String),
    #[error("search index task failed: {0}")]
    Task(String),
    #[error("search index path {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A search index.
pub trait Backend: Send + Sync + 'static {
    /// Its name in logs and metrics.
    fn name(&self) -> &'static str;

    /// Adds or replaces (by message id) `messages`; returns once they are committed,
    /// so the caller may acknowledge their source.
    fn index(&self, messages: Vec<pb::Message>) -> BoxFuture<'_, Result<(), BackendError>>;

    /// One page of the messages matching `query`.
    fn search(&self, query: SearchQuery) -> BoxFuture<'_, Result<Page, BackendError>>;

    /// Whether the index can answer (readiness).
    fn check(&self) -> BoxFuture<'_, Result<(), BackendError>>;
}
