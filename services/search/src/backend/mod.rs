//! The index behind one trait: `embedded` (tantivy + jieba, in this process,
//! [`embedded`]) and `elasticsearch` ([`elasticsearch`]).
//!
//! Changes are applied by message id, so applying one twice is harmless. A rebuild
//! ([`Backend::begin_rebuild`]) fills a new index from history while the old one keeps
//! answering; every change applied meanwhile goes into both, and an edit or delete
//! applied to the new index wins over the history page that may still carry the old
//! version (the history was read earlier), so nothing applied during a rebuild is lost
//! by the swap.

pub mod elasticsearch;
pub mod embedded;

use std::collections::HashMap;

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

/// One change to the index, keyed by message id.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A new message (`message` event).
    Put(pb::Message),
    /// A message as it is after an edit (`message_edited` event).
    Edit(pb::Message),
    /// A deleted message (`message_deleted` event).
    Delete { id: String },
}

impl Change {
    /// The message id the change is about.
    pub fn id(&self) -> &str {
        match self {
            Self::Put(m) | Self::Edit(m) => &m.id,
            Self::Delete { id } => id,
        }
    }

    /// The message to store, `None` for a delete.
    pub fn message(&self) -> Option<&pb::Message> {
        match self {
            Self::Put(m) | Self::Edit(m) => Some(m),
            Self::Delete { .. } => None,
        }
    }

    /// Whether a rebuild must prefer this change over the history it reads (an edit or
    /// delete changed what the history may still show; a put carries what the history
    /// has).
    pub fn overrides_history(&self) -> bool {
        !matches!(self, Self::Put(_))
    }
}

/// The last change of each id, in order of first appearance: one document operation
/// per id, so a batch never depends on the order of operations inside one request.
pub fn last_per_id(changes: &[Change]) -> Vec<(usize, &Change)> {
    let mut slot: HashMap<&str, usize> = HashMap::with_capacity(changes.len());
    let mut out: Vec<(usize, &Change)> = Vec::with_capacity(changes.len());
    for (index, change) in changes.iter().enumerate() {
        match slot.get(change.id()) {
            Some(&at) => out[at] = (index, change),
            None => {
                slot.insert(change.id(), out.len());
                out.push((index, change));
            }
        }
    }
    out
}

/// What became of a batch of changes that the backend accepted as a whole.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Positions (in the input) of changes the index refused for good (a poison
    /// document), with the index's reason. Everything else is applied.
    pub rejected: Vec<(usize, String)>,
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
    #[error("a rebuild of the index is already running")]
    RebuildRunning,
    #[error("elasticsearch: {0}")]
    Elasticsearch(String),
}

/// A search index.
pub trait Backend: Send + Sync + 'static {
    /// Its name in logs and metrics.
    fn name(&self) -> &'static str;

    /// Applies `changes` (the last change of an id wins); returns once they are
    /// durable, so the caller may acknowledge their source, except those listed as
    /// rejected.
    fn apply(&self, changes: Vec<Change>) -> BoxFuture<'_, Result<Applied, BackendError>>;

    /// One page of the messages matching `query`.
    fn search(&self, query: SearchQuery) -> BoxFuture<'_, Result<Page, BackendError>>;

    /// Whether the index can answer (readiness).
    fn check(&self) -> BoxFuture<'_, Result<(), BackendError>>;

    /// Starts filling a new, empty index; from now until it finishes or is aborted,
    /// [`Backend::apply`] writes into both. At most one rebuild at a time
    /// ([`BackendError::RebuildRunning`]).
    fn begin_rebuild(&self) -> BoxFuture<'_, Result<Box<dyn Rebuild>, BackendError>>;
}

/// A rebuild in progress.
pub trait Rebuild: Send {
    /// Adds messages read from history (an id that a live edit or delete touched
    /// since the rebuild began keeps the live version). Returns how many were written.
    fn add(&mut self, messages: Vec<pb::Message>) -> BoxFuture<'_, Result<u64, BackendError>>;

    /// Makes the new index durable and swaps it in for queries and writes; the old
    /// one is removed. Returns the documents in the new index.
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<u64, BackendError>>;

    /// Drops the new index; the old one stays.
    fn abort(self: Box<Self>) -> BoxFuture<'static, ()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(id: &str, content: &str) -> Change {
        Change::Put(pb::Message {
            id: id.into(),
            content: content.into(),
            ..pb::Message::default()
        })
    }

    #[test]
    fn the_last_change_of_an_id_wins_in_first_appearance_order() {
        let changes = vec![
            put("a", "1"),
            put("b", "1"),
            Change::Delete { id: "a".into() },
            put("c", "1"),
            put("b", "2"),
        ];
        let last: Vec<(usize, &str)> = last_per_id(&changes)
            .into_iter()
            .map(|(i, c)| (i, c.id()))
            .collect();
        assert_eq!(last, vec![(2, "a"), (4, "b"), (3, "c")]);
        assert!(!changes[0].overrides_history());
        assert!(changes[2].overrides_history());
        assert!(Change::Edit(pb::Message::default()).overrides_history());
    }
}
