//! The embedded backend: a tantivy index in a directory (the search pod's volume),
//! content analysed by [`WordTokenizer`] (jieba for CJK, lower-cased words otherwise).
//!
//! One document per message, keyed by message id: indexing deletes the id's earlier
//! document before adding, so a redelivered event never makes a duplicate. A batch is
//! one commit; the reader reloads right after it, so what a commit returned is
//! searchable. tantivy's work is blocking and runs on the blocking pool.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use beehive_proto::v1 as pb;
use futures::future::BoxFuture;
use tantivy::collector::TopDocs;
use tantivy::collector::sort_key::{SortBySimilarityScore, SortByStaticFastValue, SortByString};
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery, TermSetQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, Searcher, TantivyDocument,
    Term,
};

use super::{Backend, BackendError, Page};
use crate::analysis::{INDEX_TOKENIZER, WordTokenizer};
use crate::cursor::{Cursor, MAX_OFFSET};
use crate::query::{Order as HitOrder, SearchQuery};

/// Memory of the index writer (tantivy splits it among its threads).
const WRITER_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// The index's fields.
#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    conversation_id: Field,
    seq: Field,
    sender_id: Field,
    created_at: Field,
    content: Field,
    client_msg_id: Field,
    msg_type: Field,
    file_id: Field,
}

const CREATED_AT: &str = "created_at";
const ID: &str = "id";

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let content = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(INDEX_TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqs),
        )
        .set_stored();
    let fields = Fields {
        id: b.add_text_field(ID, STRING | STORED | FAST),
        conversation_id: b.add_text_field("conversation_id", STRING | STORED),
        seq: b.add_u64_field("seq", INDEXED | STORED | FAST),
        sender_id: b.add_text_field("sender_id", STRING | STORED),
        created_at: b.add_i64_field(CREATED_AT, INDEXED | STORED | FAST),
        content: b.add_text_field("content", content),
        client_msg_id: b.add_text_field("client_msg_id", STORED),
        msg_type: b.add_i64_field("msg_type", STORED),
        file_id: b.add_text_field("file_id", STORED),
    };
    (b.build(), fields)
}

fn index_error(error: impl std::fmt::Display) -> BackendError {
    BackendError::Index(error.to_string())
}

/// The tantivy index of one directory.
#[derive(Clone)]
pub struct EmbeddedIndex {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    fields: Fields,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
}

impl EmbeddedIndex {
    /// Opens the index in `dir`, creating the directory and the index when absent.
    pub fn open(dir: &Path) -> Result<Self, BackendError> {
        std::fs::create_dir_all(dir).map_err(|source| BackendError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let (schema, fields) = schema();
        let directory = MmapDirectory::open(dir).map_err(index_error)?;
        let index = Index::open_or_create(directory, schema).map_err(index_error)?;
        index.tokenizers().register(
            INDEX_TOKENIZER,
            TextAnalyzer::builder(WordTokenizer::for_index()).build(),
        );
        let writer = index
            .writer_with_num_threads(1, WRITER_MEMORY_BYTES)
            .map_err(index_error)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(index_error)?;
        tracing::info!(dir = %dir.display(), "embedded search index open");
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                fields,
                writer: Mutex::new(writer),
                reader,
            }),
        })
    }

    /// Documents in the index (tests and metrics).
    pub fn count(&self) -> u64 {
        self.inner.reader.searcher().num_docs()
    }
}

impl Inner {
    fn index_blocking(&self, messages: Vec<pb::Message>) -> Result<(), BackendError> {
        // The last version of each id in the batch wins.
        let mut latest: HashMap<String, pb::Message> = HashMap::with_capacity(messages.len());
        for message in messages {
            latest.insert(message.id.clone(), message);
        }
        let f = self.fields;
        let mut writer = self
            .writer
            .lock()
            .map_err(|_| BackendError::Index("index writer poisoned".to_owned()))?;
        for message in latest.values() {
            writer.delete_term(Term::from_field_text(f.id, &message.id));
            let mut doc = TantivyDocument::default();
            doc.add_text(f.id, &message.id);
            doc.add_text(f.conversation_id, &message.conversation_id);
            doc.add_u64(f.seq, message.seq);
            doc.add_text(f.sender_id, &message.sender_id);
            doc.add_i64(f.created_at, micros(message.created_at.as_ref()));
            doc.add_text(f.content, &message.content);
            doc.add_text(f.client_msg_id, &message.client_msg_id);
            doc.add_i64(f.msg_type, i64::from(message.msg_type));
            if let Some(file_id) = &message.file_id {
                doc.add_text(f.file_id, file_id);
            }
            writer.add_document(doc).map_err(index_error)?;
        }
        writer.commit().map_err(index_error)?;
        drop(writer);
        self.reader.reload().map_err(index_error)?;
        Ok(())
    }

    fn search_blocking(&self, query: &SearchQuery) -> Result<Page, BackendError> {
        if query.terms.is_empty() || query.scope.is_empty() {
            return Ok(Page::default());
        }
        let searcher = self.reader.searcher();
        let filter = self.filter(query);
        let want = query.limit + 1;
        let (addresses, next): (Vec<DocAddress>, Option<Cursor>) = match query.order {
            HitOrder::Recent => {
                let collector = TopDocs::with_limit(want).order_by((
                    (
                        SortByStaticFastValue::<i64>::for_field(CREATED_AT),
                        Order::Desc,
                    ),
                    (SortByString::for_field(ID), Order::Desc),
                ));
                let mut found = searcher.search(&filter, &collector).map_err(index_error)?;
                let more = found.len() > query.limit;
                found.truncate(query.limit);
                let next = match (more, found.last()) {
                    (true, Some(((Some(micros), Some(id)), _))) => Some(Cursor::After {
                        micros: *micros,
                        id: id.clone(),
                    }),
                    _ => None,
                };
                (found.into_iter().map(|(_, a)| a).collect(), next)
            }
            HitOrder::Relevance => {
                let offset = match &query.cursor {
                    Some(Cursor::Offset(offset)) => *offset as usize,
                    _ => 0,
                };
                let collector = TopDocs::with_limit(want).and_offset(offset).order_by((
                    (SortBySimilarityScore, Order::Desc),
                    (
                        (
                            SortByStaticFastValue::<i64>::for_field(CREATED_AT),
                            Order::Desc,
                        ),
                        (SortByString::for_field(ID), Order::Desc),
                    ),
                ));
                let mut found = searcher.search(&filter, &collector).map_err(index_error)?;
                let more = found.len() > query.limit;
                found.truncate(query.limit);
                let next_offset = offset + query.limit;
                let next = (more && next_offset <= MAX_OFFSET as usize)
                    .then(|| Cursor::Offset(u32::try_from(next_offset).unwrap_or(MAX_OFFSET)));
                (found.into_iter().map(|(_, a)| a).collect(), next)
            }
        };
        let hits = addresses
            .into_iter()
            .map(|address| self.message(&searcher, address))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page { hits, next })
    }

    /// Every word, the caller's scope, the filters and the cursor, as one query.
    fn filter(&self, query: &SearchQuery) -> BooleanQuery {
        let f = self.fields;
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for term in &query.terms {
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.content, term),
                    IndexRecordOption::WithFreqs,
                )),
            ));
        }
        // Scope: conversations readable from their start in one term set, the others
        // each with their seq bound.
        let mut scope: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut whole: Vec<Term> = Vec::new();
        for readable in &query.scope {
            let conversation = Term::from_field_text(f.conversation_id, &readable.conversation_id);
            if readable.after_seq == 0 {
                whole.push(conversation);
            } else {
                scope.push((
                    Occur::Should,
                    Box::new(BooleanQuery::new(vec![
                        (
                            Occur::Must,
                            Box::new(TermQuery::new(conversation, IndexRecordOption::Basic)),
                        ),
                        (
                            Occur::Must,
                            Box::new(RangeQuery::new(
                                Bound::Excluded(Term::from_field_u64(f.seq, readable.after_seq)),
                                Bound::Unbounded,
                            )),
                        ),
                    ])),
                ));
            }
        }
        if !whole.is_empty() {
            scope.push((Occur::Should, Box::new(TermSetQuery::new(whole))));
        }
        must.push((Occur::Must, Box::new(BooleanQuery::new(scope))));
        if let Some(sender) = &query.sender_id {
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.sender_id, sender),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if query.from_micros.is_some() || query.to_micros.is_some() {
            let bound = |value: Option<i64>| match value {
                Some(v) => Bound::Included(Term::from_field_i64(f.created_at, v)),
                None => Bound::Unbounded,
            };
            must.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    bound(query.from_micros),
                    bound(query.to_micros),
                )),
            ));
        }
        if let Some(Cursor::After { micros, id }) = &query.cursor {
            // Strictly after the cursor in (created_at desc, id desc) order.
            let older = RangeQuery::new(
                Bound::Unbounded,
                Bound::Excluded(Term::from_field_i64(f.created_at, *micros)),
            );
            let same_time_lower_id = BooleanQuery::new(vec![
                (
                    Occur::Must,
                    Box::new(TermQuery::new(
                        Term::from_field_i64(f.created_at, *micros),
                        IndexRecordOption::Basic,
                    )),
                ),
                (
                    Occur::Must,
                    Box::new(RangeQuery::new(
                        Bound::Unbounded,
                        Bound::Excluded(Term::from_field_text(f.id, id)),
                    )),
                ),
            ]);
            must.push((
                Occur::Must,
                Box::new(BooleanQuery::new(vec![
                    (Occur::Should, Box::new(older)),
                    (Occur::Should, Box::new(same_time_lower_id)),
                ])),
            ));
        }
        BooleanQuery::new(must)
    }

    fn message(
        &self,
        searcher: &Searcher,
        address: DocAddress,
    ) -> Result<pb::Message, BackendError> {
        let f = self.fields;
        let doc: TantivyDocument = searcher.doc(address).map_err(index_error)?;
        let text = |field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let created_at = doc
            .get_first(f.created_at)
            .and_then(|v| v.as_i64())
            .unwrap_or_default();
        let file_id = doc
            .get_first(f.file_id)
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        Ok(pb::Message {
            id: text(f.id),
            conversation_id: text(f.conversation_id),
            seq: doc
                .get_first(f.seq)
                .and_then(|v| v.as_u64())
                .unwrap_or_default(),
            sender_id: text(f.sender_id),
            client_msg_id: text(f.client_msg_id),
            msg_type: doc
                .get_first(f.msg_type)
                .and_then(|v| v.as_i64())
                .and_then(|v| i32::try_from(v).ok())
                .unwrap_or_default(),
            content: text(f.content),
            file_id,
            created_at: Some(timestamp(created_at)),
        })
    }
}

/// Microseconds since the epoch of a proto timestamp (0 when absent).
pub fn micros(ts: Option<&prost_types::Timestamp>) -> i64 {
    ts.map_or(0, |t| {
        t.seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(t.nanos / 1_000))
    })
}

fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).unwrap_or_default(),
    }
}

impl Backend for EmbeddedIndex {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn index(&self, messages: Vec<pb::Message>) -> BoxFuture<'_, Result<(), BackendError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || inner.index_blocking(messages))
                .await
                .map_err(|e| BackendError::Task(e.to_string()))?
        })
    }

    fn search(&self, query: SearchQuery) -> BoxFuture<'_, Result<Page, BackendError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || inner.search_blocking(&query))
                .await
                .map_err(|e| BackendError::Task(e.to_string()))?
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        let dir = self.inner.dir.clone();
        Box::pin(async move {
            match tokio::fs::metadata(&dir).await {
                Ok(meta) if meta.is_dir() => Ok(()),
                Ok(_) => Err(BackendError::Index(format!(
                    "{} is not a directory",
                    dir.display()
                ))),
                Err(source) => Err(BackendError::Io {
                    path: dir.display().to_string(),
                    source,
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::query_terms;
    use crate::query::{Readable, page_limit};

    fn message(conversation: &str, seq: u64, micros_at: i64, content: &str) -> pb::Message {
        pb::Message {
            id: uuid::Uuid::now_v7().to_string(),
            conversation_id: conversation.into(),
            seq,
            sender_id: "sender".into(),
            client_msg_id: format!("c{seq}"),
            msg_type: 1,
            content: content.into(),
            file_id: None,
            created_at: Some(timestamp(micros_at)),
        }
    }

    fn query(words: &str, scope: &[(&str, u64)]) -> SearchQuery {
        SearchQuery {
            terms: query_terms(words),
            scope: scope
                .iter()
                .map(|(c, s)| Readable {
                    conversation_id: (*c).into(),
                    after_seq: *s,
                })
                .collect(),
            sender_id: None,
            from_micros: None,
            to_micros: None,
            order: HitOrder::Recent,
            limit: page_limit(0),
            cursor: None,
        }
    }

    fn contents(page: &Page) -> Vec<&str> {
        page.hits.iter().map(|m| m.content.as_str()).collect()
    }

    #[test]
    fn words_scope_and_join_seq_decide_what_matches() {
        let dir = tempdir();
        let index = EmbeddedIndex::open(&dir).expect("open");
        let inner = &index.inner;
        inner
            .index_blocking(vec![
                message("a", 1, 10, "我们的消息"),
                message("a", 2, 20, "消费记录"),
                message("a", 3, 30, "已添加为好友"),
                message("b", 1, 40, "别人的消息"),
            ])
            .expect("index");
        let page = inner
            .search_blocking(&query("消息", &[("a", 0)]))
            .expect("search");
        assert_eq!(contents(&page), vec!["我们的消息"]);
        let page = inner
            .search_blocking(&query("添加", &[("a", 0)]))
            .expect("search");
        assert_eq!(contents(&page), vec!["已添加为好友"]);
        // Joined at seq 1 of a: only later messages.
        let page = inner
            .search_blocking(&query("消息", &[("a", 1), ("b", 0)]))
            .expect("search");
        assert_eq!(contents(&page), vec!["别人的消息"]);
        let page = inner.search_blocking(&query("消息", &[])).expect("search");
        assert!(page.hits.is_empty());
    }

    #[test]
    fn reindexing_a_message_replaces_it() {
        let dir = tempdir();
        let index = EmbeddedIndex::open(&dir).expect("open");
        let m = message("a", 1, 10, "hello world");
        index
            .inner
            .index_blocking(vec![m.clone(), m.clone()])
            .expect("index");
        index.inner.index_blocking(vec![m.clone()]).expect("index");
        assert_eq!(index.count(), 1);
        let page = index
            .inner
            .search_blocking(&query("HELLO", &[("a", 0)]))
            .expect("search");
        assert_eq!(page.hits.len(), 1);
        assert_eq!(page.hits[0], m);
    }

    #[test]
    fn recent_pages_are_stable_across_ties_and_new_messages() {
        let dir = tempdir();
        let index = EmbeddedIndex::open(&dir).expect("open");
        // Five messages share one timestamp: ties are broken by id.
        let messages: Vec<pb::Message> = (1..=9)
            .map(|seq| {
                message(
                    "a",
                    seq,
                    if seq <= 5 { 100 } else { seq as i64 * 100 },
                    "ping",
                )
            })
            .collect();
        index.inner.index_blocking(messages.clone()).expect("index");
        let mut seen = Vec::new();
        let mut q = query("ping", &[("a", 0)]);
        q.limit = 2;
        loop {
            let page = index.inner.search_blocking(&q).expect("search");
            seen.extend(page.hits.iter().map(|m| m.id.clone()));
            // A newer message arriving mid-paging never shows up in later pages.
            index
                .inner
                .index_blocking(vec![message("a", 100 + seen.len() as u64, 10_000, "ping")])
                .expect("index");
            match page.next {
                Some(next) => q.cursor = Some(next),
                None => break,
            }
        }
        let mut expected: Vec<&pb::Message> = messages.iter().collect();
        expected.sort_by(|x, y| {
            micros(y.created_at.as_ref())
                .cmp(&micros(x.created_at.as_ref()))
                .then(y.id.cmp(&x.id))
        });
        let expected: Vec<String> = expected.iter().map(|m| m.id.clone()).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn relevance_ranks_by_score_and_pages_by_offset() {
        let dir = tempdir();
        let index = EmbeddedIndex::open(&dir).expect("open");
        index
            .inner
            .index_blocking(vec![
                message("a", 1, 10, "rust rust rust rust"),
                message(
                    "a",
                    2,
                    20,
                    "rust and a great many other words in this long message",
                ),
            ])
            .expect("index");
        let mut q = query("rust", &[("a", 0)]);
        q.order = HitOrder::Relevance;
        q.limit = 1;
        let first = index.inner.search_blocking(&q).expect("search");
        assert_eq!(contents(&first), vec!["rust rust rust rust"]);
        q.cursor = first.next;
        let second = index.inner.search_blocking(&q).expect("search");
        assert_eq!(second.hits.len(), 1);
        assert_eq!(second.hits[0].seq, 2);
        assert!(second.next.is_none());
    }

    #[test]
    fn sender_and_time_filters_apply() {
        let dir = tempdir();
        let index = EmbeddedIndex::open(&dir).expect("open");
        let mut other = message("a", 2, 200, "report");
        other.sender_id = "other".into();
        index
            .inner
            .index_blocking(vec![
                message("a", 1, 100, "report"),
                other,
                message("a", 3, 300, "report"),
            ])
            .expect("index");
        let mut q = query("report", &[("a", 0)]);
        q.sender_id = Some("other".into());
        assert_eq!(
            index.inner.search_blocking(&q).expect("search").hits.len(),
            1
        );
        q.sender_id = None;
        q.from_micros = Some(200);
        q.to_micros = Some(300);
        let seqs: Vec<u64> = index
            .inner
            .search_blocking(&q)
            .expect("search")
            .hits
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs, vec![3, 2]);
    }

    #[test]
    fn the_index_survives_a_reopen() {
        let dir = tempdir();
        {
            let index = EmbeddedIndex::open(&dir).expect("open");
            index
                .inner
                .index_blocking(vec![message("a", 1, 10, "persisted")])
                .expect("index");
        }
        let index = EmbeddedIndex::open(&dir).expect("reopen");
        assert_eq!(index.count(), 1);
    }

    /// A private index directory, removed when the test ends.
    struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tempdir() -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("beehive-search-unit-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}
