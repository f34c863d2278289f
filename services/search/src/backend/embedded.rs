//! The embedded backend: a tantivy index in a directory (the search pod's volume),
//! content analysed by [`WordTokenizer`] (jieba for CJK, lower-cased words otherwise).
//!
//! One document per message, keyed by message id: indexing deletes the id's earlier
//! document before adding, so a redelivered event never makes a duplicate. A batch is
//! one commit; the reader reloads right after it, so what a commit returned is
//! searchable. tantivy's work is blocking and runs on the blocking pool.
//!
//! The directory holds generations (`gen-<id>/`, each a tantivy index) and the file
//! `current` naming the one in use. A rebuild writes a new generation while the
//! current one answers, then swaps `current` atomically; an index found unreadable at
//! start is replaced by an empty generation (logged as an error: run a reindex). An
//! index directory of the first release (the tantivy files directly in the directory)
//! is moved into a generation on start.

use std::collections::HashSet;
use std::io::Write as _;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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

use super::{Applied, Backend, BackendError, Change, Page, Rebuild, last_per_id};
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

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> BackendError + '_ {
    move |source| BackendError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Name of the file holding the current generation's directory name.
const CURRENT: &str = "current";
/// Prefix of generation directories.
const GENERATION_PREFIX: &str = "gen-";

/// The tantivy index kept in generations under one directory: `current` names the
/// generation that answers; a rebuild fills a new generation and swaps `current` to it
/// (write a temporary file, fsync, rename), then the old generation's directory is
/// removed once no query uses it any more.
#[derive(Clone)]
pub struct EmbeddedIndex {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// The generation answering queries, and the one being rebuilt.
    state: Mutex<State>,
    /// Serializes applying changes, rebuild starts and the swap, so no batch is
    /// applied to a generation that is being retired. Queries never take it.
    apply: Mutex<()>,
}

struct State {
    live: Arc<Generation>,
    building: Option<Arc<Generation>>,
}

/// One tantivy index directory.
struct Generation {
    name: String,
    dir: PathBuf,
    fields: Fields,
    writer: Mutex<Writer>,
    reader: IndexReader,
    /// Set when it stopped being current: its directory goes with its last user.
    retired: AtomicBool,
}

struct Writer {
    writer: Option<IndexWriter>,
    /// Ids a live edit or delete touched while this generation is being rebuilt: the
    /// history may still show their earlier version.
    touched: HashSet<String>,
}

impl Drop for Generation {
    fn drop(&mut self) {
        if !self.retired.load(Ordering::Acquire) {
            return;
        }
        let writer = match self.writer.get_mut() {
            Ok(w) => w.writer.take(),
            Err(poisoned) => poisoned.into_inner().writer.take(),
        };
        if let Some(writer) = writer {
            let _ = writer.wait_merging_threads();
        }
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => {
                tracing::info!(generation = %self.name, "retired search index generation removed")
            }
            Err(error) => {
                tracing::warn!(%error, dir = %self.dir.display(), "cannot remove a retired search index generation")
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, BackendError> {
    mutex
        .lock()
        .map_err(|_| BackendError::Index("search index lock poisoned".to_owned()))
}

impl Generation {
    /// Opens (or creates) the index in `root/name`.
    fn open(root: &Path, name: &str) -> Result<Self, BackendError> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let (schema, fields) = schema();
        let directory = MmapDirectory::open(&dir).map_err(index_error)?;
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
        Ok(Self {
            name: name.to_owned(),
            dir,
            fields,
            writer: Mutex::new(Writer {
                writer: Some(writer),
                touched: HashSet::new(),
            }),
            reader,
            retired: AtomicBool::new(false),
        })
    }

    fn document(&self, message: &pb::Message) -> TantivyDocument {
        let f = self.fields;
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
        doc
    }

    /// Applies the last change of each id and commits; `track` records edits and
    /// deletes (a generation being rebuilt). The reader reloads when `reload`.
    fn apply(&self, changes: &[Change], track: bool, reload: bool) -> Result<(), BackendError> {
        let f = self.fields;
        let mut guard = lock(&self.writer)?;
        let Writer { writer, touched } = &mut *guard;
        let writer = writer
            .as_mut()
            .ok_or_else(|| BackendError::Index("index writer closed".to_owned()))?;
        for (_, change) in last_per_id(changes) {
            writer.delete_term(Term::from_field_text(f.id, change.id()));
            if let Some(message) = change.message() {
                writer
                    .add_document(self.document(message))
                    .map_err(index_error)?;
            }
            if track && change.overrides_history() {
                touched.insert(change.id().to_owned());
            }
        }
        writer.commit().map_err(index_error)?;
        drop(guard);
        if reload {
            self.reader.reload().map_err(index_error)?;
        }
        Ok(())
    }

    /// Adds history messages that no live edit or delete touched; not committed yet.
    fn add_history(&self, messages: &[pb::Message]) -> Result<u64, BackendError> {
        let f = self.fields;
        let mut guard = lock(&self.writer)?;
        let Writer { writer, touched } = &mut *guard;
        let writer = writer
            .as_mut()
            .ok_or_else(|| BackendError::Index("index writer closed".to_owned()))?;
        let mut added = 0;
        for message in messages {
            if touched.contains(&message.id) {
                continue;
            }
            writer.delete_term(Term::from_field_text(f.id, &message.id));
            writer
                .add_document(self.document(message))
                .map_err(index_error)?;
            added += 1;
        }
        Ok(added)
    }

    fn commit(&self) -> Result<(), BackendError> {
        let mut guard = lock(&self.writer)?;
        if let Some(writer) = guard.writer.as_mut() {
            writer.commit().map_err(index_error)?;
        }
        guard.touched = HashSet::new();
        drop(guard);
        self.reader.reload().map_err(index_error)
    }

    fn count(&self) -> u64 {
        self.reader.searcher().num_docs()
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

/// A new generation's directory name: time-ordered and unique.
fn new_generation_name() -> String {
    format!("{GENERATION_PREFIX}{}", uuid::Uuid::now_v7().simple())
}

/// The generation `current` names, if the file is there and sane.
fn read_current(root: &Path) -> Result<Option<String>, BackendError> {
    let path = root.join(CURRENT);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let name = text.trim();
            let sane = name.starts_with(GENERATION_PREFIX)
                && name.len() <= 64
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            Ok(sane.then(|| name.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(&path)(e)),
    }
}

/// Points `current` at `name`: a temporary file, fsync, rename, fsync of the directory.
fn write_current(root: &Path, name: &str) -> Result<(), BackendError> {
    let tmp = root.join(format!("{CURRENT}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(name.as_bytes()).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
    }
    let path = root.join(CURRENT);
    std::fs::rename(&tmp, &path).map_err(io_error(&path))?;
    std::fs::File::open(root)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(root))
}

/// Moves an index of the first release (tantivy files directly in `root`) into a
/// generation; returns its name. Idempotent if interrupted.
fn adopt_flat_index(root: &Path) -> Result<Option<String>, BackendError> {
    let flat = root.join("meta.json").exists();
    if !flat {
        return Ok(None);
    }
    let name = format!("{GENERATION_PREFIX}adopted");
    let target = root.join(&name);
    std::fs::create_dir_all(&target).map_err(io_error(&target))?;
    for entry in std::fs::read_dir(root).map_err(io_error(root))? {
        let entry = entry.map_err(io_error(root))?;
        let file_name = entry.file_name();
        let text = file_name.to_string_lossy();
        if text.starts_with(GENERATION_PREFIX)
            || text.starts_with(CURRENT)
            || text.starts_with("reindex")
        {
            continue;
        }
        let to = target.join(&file_name);
        std::fs::rename(entry.path(), &to).map_err(io_error(&to))?;
    }
    tracing::info!(generation = %name, "search index of the first layout moved into a generation");
    Ok(Some(name))
}

/// Removes generation directories other than `keep` (left by an interrupted rebuild).
fn remove_stale_generations(root: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(GENERATION_PREFIX) && name != keep && entry.path().is_dir() {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::info!(generation = %name, "stale search index generation removed")
                }
                Err(error) => {
                    tracing::warn!(%error, generation = %name, "cannot remove a stale search index generation")
                }
            }
        }
    }
}

impl EmbeddedIndex {
    /// Opens the index under `dir`, creating the directory and an empty generation
    /// when absent. An unreadable generation is replaced by an empty one.
    pub fn open(dir: &Path) -> Result<Self, BackendError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let named = match read_current(dir)? {
            Some(name) if dir.join(&name).is_dir() => Some(name),
            Some(name) => {
                tracing::error!(generation = %name, dir = %dir.display(), "the current search index generation is missing; starting empty: run `beehive search reindex`");
                None
            }
            None => adopt_flat_index(dir)?,
        };
        let live = match named {
            Some(name) => match Generation::open(dir, &name) {
                Ok(generation) => Some(generation),
                Err(error) => {
                    tracing::error!(%error, generation = %name, dir = %dir.display(), "the search index cannot be opened; starting empty: run `beehive search reindex`");
                    None
                }
            },
            None => None,
        };
        let live = match live {
            Some(generation) => generation,
            None => Generation::open(dir, &new_generation_name())?,
        };
        write_current(dir, &live.name)?;
        remove_stale_generations(dir, &live.name);
        tracing::info!(dir = %dir.display(), generation = %live.name, documents = live.count(), "embedded search index open");
        Ok(Self {
            inner: Arc::new(Inner {
                root: dir.to_owned(),
                state: Mutex::new(State {
                    live: Arc::new(live),
                    building: None,
                }),
                apply: Mutex::new(()),
            }),
        })
    }

    /// Documents in the index answering queries (tests and metrics).
    pub fn count(&self) -> u64 {
        self.inner.live().map(|g| g.count()).unwrap_or_default()
    }

    /// The directory of the generation answering queries.
    pub fn current_dir(&self) -> Option<PathBuf> {
        self.inner.live().ok().map(|g| g.dir.clone())
    }
}

impl Inner {
    fn live(&self) -> Result<Arc<Generation>, BackendError> {
        Ok(lock(&self.state)?.live.clone())
    }

    fn apply_blocking(&self, changes: Vec<Change>) -> Result<Applied, BackendError> {
        let _serial = lock(&self.apply)?;
        let (live, building) = {
            let state = lock(&self.state)?;
            (state.live.clone(), state.building.clone())
        };
        live.apply(&changes, false, true)?;
        if let Some(building) = building {
            building.apply(&changes, true, false)?;
        }
        Ok(Applied::default())
    }

    fn begin_rebuild_blocking(self: &Arc<Self>) -> Result<EmbeddedRebuild, BackendError> {
        let _serial = lock(&self.apply)?;
        let mut state = lock(&self.state)?;
        if state.building.is_some() {
            return Err(BackendError::RebuildRunning);
        }
        let generation = Arc::new(Generation::open(&self.root, &new_generation_name())?);
        state.building = Some(generation.clone());
        tracing::info!(generation = %generation.name, "search index rebuild started");
        Ok(EmbeddedRebuild {
            inner: self.clone(),
            generation: Some(generation),
        })
    }

    fn finish_blocking(&self, generation: &Arc<Generation>) -> Result<u64, BackendError> {
        let _serial = lock(&self.apply)?;
        generation.commit()?;
        write_current(&self.root, &generation.name)?;
        let old = {
            let mut state = lock(&self.state)?;
            state.building = None;
            std::mem::replace(&mut state.live, generation.clone())
        };
        old.retired.store(true, Ordering::Release);
        let documents = generation.count();
        tracing::info!(generation = %generation.name, retired = %old.name, documents, "search index rebuilt and swapped in");
        Ok(documents)
    }

    fn abort_blocking(&self, generation: &Arc<Generation>) {
        if let Ok(_serial) = lock(&self.apply)
            && let Ok(mut state) = lock(&self.state)
            && state
                .building
                .as_ref()
                .is_some_and(|b| Arc::ptr_eq(b, generation))
        {
            state.building = None;
        }
        generation.retired.store(true, Ordering::Release);
        tracing::warn!(generation = %generation.name, "search index rebuild abandoned");
    }
}

/// A rebuild of the embedded index.
struct EmbeddedRebuild {
    inner: Arc<Inner>,
    /// `None` once finished or aborted.
    generation: Option<Arc<Generation>>,
}

impl Drop for EmbeddedRebuild {
    fn drop(&mut self) {
        // Dropped without finish or abort (a panic, a cancelled task): abandon it.
        if let Some(generation) = self.generation.take() {
            self.inner.abort_blocking(&generation);
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BackendError::Task(e.to_string()))?
}

impl Rebuild for EmbeddedRebuild {
    fn add(&mut self, messages: Vec<pb::Message>) -> BoxFuture<'_, Result<u64, BackendError>> {
        let generation = self.generation.clone();
        Box::pin(async move {
            let generation = generation
                .ok_or_else(|| BackendError::Index("rebuild already ended".to_owned()))?;
            blocking(move || generation.add_history(&messages)).await
        })
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, Result<u64, BackendError>> {
        let generation = self.generation.take();
        let inner = self.inner.clone();
        Box::pin(async move {
            let generation = generation
                .ok_or_else(|| BackendError::Index("rebuild already ended".to_owned()))?;
            blocking(move || {
                let finished = inner.finish_blocking(&generation);
                if finished.is_err() {
                    inner.abort_blocking(&generation);
                }
                finished
            })
            .await
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        let generation = self.generation.take();
        let inner = self.inner.clone();
        Box::pin(async move {
            if let Some(generation) = generation {
                let _ = blocking(move || {
                    inner.abort_blocking(&generation);
                    Ok(())
                })
                .await;
            }
        })
    }
}

impl Backend for EmbeddedIndex {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn apply(&self, changes: Vec<Change>) -> BoxFuture<'_, Result<Applied, BackendError>> {
        let inner = self.inner.clone();
        Box::pin(blocking(move || inner.apply_blocking(changes)))
    }

    fn search(&self, query: SearchQuery) -> BoxFuture<'_, Result<Page, BackendError>> {
        let inner = self.inner.clone();
        Box::pin(blocking(move || inner.live()?.search_blocking(&query)))
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        let dir = self.current_dir();
        Box::pin(async move {
            let dir =
                dir.ok_or_else(|| BackendError::Index("search index lock poisoned".to_owned()))?;
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

    fn begin_rebuild(&self) -> BoxFuture<'_, Result<Box<dyn Rebuild>, BackendError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let rebuild = blocking(move || inner.begin_rebuild_blocking()).await?;
            Ok(Box::new(rebuild) as Box<dyn Rebuild>)
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
            text: words.to_owned(),
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

    fn put(index: &EmbeddedIndex, messages: Vec<pb::Message>) -> Result<Applied, BackendError> {
        index
            .inner
            .apply_blocking(messages.into_iter().map(Change::Put).collect())
    }

    fn find(index: &EmbeddedIndex, query: &SearchQuery) -> Result<Page, BackendError> {
        index.inner.live()?.search_blocking(query)
    }

    fn contents(page: &Page) -> Vec<&str> {
        page.hits.iter().map(|m| m.content.as_str()).collect()
    }

    #[test]
    fn words_scope_and_join_seq_decide_what_matches() {
        let dir = tempdir();
        let index = EmbeddedIndex::open(&dir).expect("open");
        put(
            &index,
            vec![
                message("a", 1, 10, "我们的消息"),
                message("a", 2, 20, "消费记录"),
                message("a", 3, 30, "已添加为好友"),
                message("b", 1, 40, "别人的消息"),
            ],
        )
        .expect("index");
        let page = find(&index, &query("消息", &[("a", 0)])).expect("search");
        assert_eq!(contents(&page), vec!["我们的消息"]);
        let page = find(&index, &query("添加", &[("a", 0)])).expect("search");
        assert_eq!(contents(&page), vec!["已添加为好友"]);
        // Joined at seq 1 of a: only later messages.
        let page = find(&index, &query("消息", &[("a", 1), ("b", 0)])).expect("search");
        assert_eq!(contents(&page), vec!["别人的消息"]);
        let page = find(&index, &query("消息", &[])).expect("search");
        assert!(page.hits.is_empty());
    }

    #[test]
    fn reindexing_a_message_replaces_it() {
        let dir = tempdir();
        let index = EmbeddedIndex::open(&dir).expect("open");
        let m = message("a", 1, 10, "hello world");
        put(&index, vec![m.clone(), m.clone()]).expect("index");
        put(&index, vec![m.clone()]).expect("index");
        assert_eq!(index.count(), 1);
        let page = find(&index, &query("HELLO", &[("a", 0)])).expect("search");
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
        put(&index, messages.clone()).expect("index");
        let mut seen = Vec::new();
        let mut q = query("ping", &[("a", 0)]);
        q.limit = 2;
        loop {
            let page = find(&index, &q).expect("search");
            seen.extend(page.hits.iter().map(|m| m.id.clone()));
            // A newer message arriving mid-paging never shows up in later pages.
            put(
                &index,
                vec![message("a", 100 + seen.len() as u64, 10_000, "ping")],
            )
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
        put(
            &index,
            vec![
                message("a", 1, 10, "rust rust rust rust"),
                message(
                    "a",
                    2,
                    20,
                    "rust and a great many other words in this long message",
                ),
            ],
        )
        .expect("index");
        let mut q = query("rust", &[("a", 0)]);
        q.order = HitOrder::Relevance;
        q.limit = 1;
        let first = find(&index, &q).expect("search");
        assert_eq!(contents(&first), vec!["rust rust rust rust"]);
        q.cursor = first.next;
        let second = find(&index, &q).expect("search");
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
        put(
            &index,
            vec![
                message("a", 1, 100, "report"),
                other,
                message("a", 3, 300, "report"),
            ],
        )
        .expect("index");
        let mut q = query("report", &[("a", 0)]);
        q.sender_id = Some("other".into());
        assert_eq!(find(&index, &q).expect("search").hits.len(), 1);
        q.sender_id = None;
        q.from_micros = Some(200);
        q.to_micros = Some(300);
        let seqs: Vec<u64> = find(&index, &q)
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
            put(&index, vec![message("a", 1, 10, "persisted")]).expect("index");
        }
        let index = EmbeddedIndex::open(&dir).expect("reopen");
        assert_eq!(index.count(), 1);
    }

    fn generations(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(GENERATION_PREFIX))
            .collect();
        names.sort();
        names
    }

    fn ids(page: &Page) -> Vec<String> {
        page.hits.iter().map(|m| m.id.clone()).collect()
    }

    #[test]
    fn edits_and_deletes_apply_by_id() {
        let dir = tempdir();
        let index = EmbeddedIndex::open(&dir).expect("open");
        let a = message("a", 1, 10, "draft wording");
        let b = message("a", 2, 20, "draft other");
        put(&index, vec![a.clone(), b.clone()]).expect("index");
        let mut edited = a.clone();
        edited.content = "final wording".into();
        index
            .inner
            .apply_blocking(vec![
                Change::Edit(edited.clone()),
                Change::Delete { id: b.id.clone() },
                // Deleting what was never indexed is not an error.
                Change::Delete {
                    id: "0190a6f2-0000-7000-8000-000000000009".into(),
                },
            ])
            .expect("apply");
        assert!(
            find(&index, &query("draft", &[("a", 0)]))
                .expect("search")
                .hits
                .is_empty()
        );
        let page = find(&index, &query("final", &[("a", 0)])).expect("search");
        assert_eq!(page.hits, vec![edited]);
        assert_eq!(index.count(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rebuild_answers_from_the_old_index_until_the_swap_and_keeps_live_changes() {
        let dir = tempdir();
        let index = EmbeddedIndex::open(&dir).expect("open");
        let old_dir = index.current_dir().expect("current");
        // The old index has a message that the history no longer has (it is stale).
        let stale = message("a", 1, 10, "stale words");
        let kept = message("a", 2, 20, "history words");
        let doomed = message("a", 3, 30, "history doomed");
        let renamed = message("a", 4, 40, "history before");
        put(&index, vec![stale.clone(), kept.clone()]).expect("index");

        let mut rebuild = index.begin_rebuild().await.expect("begin");
        assert!(matches!(
            index.begin_rebuild().await.map(|_| ()),
            Err(BackendError::RebuildRunning)
        ));
        // Live changes during the rebuild: a new message, a delete and an edit of
        // messages whose history page is read before the changes and written after.
        let fresh = message("b", 1, 50, "history fresh");
        let mut after_edit = renamed.clone();
        after_edit.content = "history after".into();
        index
            .apply(vec![
                Change::Put(fresh.clone()),
                Change::Delete {
                    id: doomed.id.clone(),
                },
                Change::Edit(after_edit.clone()),
            ])
            .await
            .expect("live changes");
        let page_read_earlier = vec![kept.clone(), doomed.clone(), renamed.clone()];
        assert_eq!(rebuild.add(page_read_earlier).await.expect("add"), 1);
        // Queries still answer from the old index.
        let before = find(&index, &query("stale", &[("a", 0)])).expect("search");
        assert_eq!(ids(&before), vec![stale.id.clone()]);
        assert_eq!(generations(&dir).len(), 2);

        assert_eq!(rebuild.finish().await.expect("finish"), 3);
        let all = find(&index, &query("history", &[("a", 0), ("b", 0)])).expect("search");
        assert_eq!(
            ids(&all),
            vec![fresh.id.clone(), after_edit.id.clone(), kept.id.clone()]
        );
        assert_eq!(all.hits[1].content, "history after");
        assert!(
            find(&index, &query("stale", &[("a", 0)]))
                .expect("search")
                .hits
                .is_empty()
        );
        // The old generation is gone, `current` names the new one, and a reopen finds it.
        assert!(!old_dir.exists());
        assert_eq!(generations(&dir).len(), 1);
        drop(index);
        let reopened = EmbeddedIndex::open(&dir).expect("reopen");
        assert_eq!(reopened.count(), 3);
        // Changes after the swap go to the new index only.
        put(&reopened, vec![message("a", 5, 60, "history later")]).expect("index");
        assert_eq!(reopened.count(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_aborted_rebuild_leaves_the_old_index() {
        let dir = tempdir();
        let index = EmbeddedIndex::open(&dir).expect("open");
        put(&index, vec![message("a", 1, 10, "kept")]).expect("index");
        let mut rebuild = index.begin_rebuild().await.expect("begin");
        rebuild
            .add(vec![message("a", 2, 20, "never swapped")])
            .await
            .expect("add");
        rebuild.abort().await;
        assert_eq!(index.count(), 1);
        assert_eq!(generations(&dir).len(), 1);
        // A new rebuild may start.
        let rebuild = index.begin_rebuild().await.expect("begin again");
        drop(rebuild);
        assert_eq!(generations(&dir).len(), 1);
    }

    #[test]
    fn a_corrupt_or_missing_index_opens_empty_and_a_flat_one_is_adopted() {
        let dir = tempdir();
        {
            let index = EmbeddedIndex::open(&dir).expect("open");
            put(&index, vec![message("a", 1, 10, "x")]).expect("index");
        }
        let current = read_current(&dir).expect("read").expect("current");
        std::fs::write(dir.join(&current).join("meta.json"), b"{ not json").expect("corrupt");
        let index = EmbeddedIndex::open(&dir).expect("open corrupt");
        assert_eq!(index.count(), 0);
        assert_ne!(read_current(&dir).expect("read").expect("current"), current);
        assert_eq!(generations(&dir).len(), 1);
        drop(index);

        // The first release kept the tantivy files directly in the directory.
        let flat = tempdir();
        {
            let index = EmbeddedIndex::open(&flat).expect("open");
            put(
                &index,
                vec![message("a", 1, 10, "x"), message("a", 2, 20, "y")],
            )
            .expect("index");
        }
        let generation = read_current(&flat).expect("read").expect("current");
        for entry in std::fs::read_dir(flat.join(&generation))
            .expect("dir")
            .flatten()
        {
            std::fs::rename(entry.path(), flat.join(entry.file_name())).expect("flatten");
        }
        std::fs::remove_dir(flat.join(&generation)).expect("rmdir");
        std::fs::remove_file(flat.join(CURRENT)).expect("rm current");
        let adopted = EmbeddedIndex::open(&flat).expect("adopt");
        assert_eq!(adopted.count(), 2);
        assert!(!flat.join("meta.json").exists());
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
