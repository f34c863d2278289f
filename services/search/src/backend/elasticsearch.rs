//! The elasticsearch backend (the `elasticsearch` crate, 8.x servers).
//!
//! On start it asks the cluster for its plugins (`GET /_nodes/plugins`): when every
//! node has `analysis-ik`, content is indexed with `ik_max_word` and searched with
//! `ik_smart`; otherwise the built-in `cjk` analyzer (bigrams) serves both. It puts an
//! index template (`<prefix>-messages` over `<prefix>-messages-*`, strict mapping),
//! and makes sure the alias `<prefix>-messages` points at an index (creating
//! `<prefix>-messages-000001` the first time). Reads and writes go through the alias.
//!
//! Writes are `_bulk` requests; each item's outcome is checked: 2xx (and `not_found`
//! for a delete) is done, 429 and 5xx items are retried with backoff and fail the batch
//! if they keep failing (the broker redelivers it), any other item error is a poison
//! document reported back ([`Applied::rejected`]) and dead-lettered by the indexer.
//!
//! Queries have the embedded backend's meaning: every word must match (`match` with
//! `operator: and`, which never parses query syntax), the caller's scope is a filter
//! of `(conversation, seq > join seq)`, newest first with `search_after` cursors or by
//! score with offsets. A rebuild creates `<prefix>-messages-<millis>`, fills it, and
//! swaps the alias in one `_aliases` call before deleting the old index.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use beehive_proto::v1 as pb;
use elasticsearch::auth::Credentials;
use elasticsearch::http::headers::{CONTENT_TYPE, HeaderValue};
use elasticsearch::http::request::JsonBody;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{StatusCode, Url};
use elasticsearch::indices::{
    IndicesCreateParts, IndicesDeleteParts, IndicesExistsAliasParts, IndicesGetAliasParts,
    IndicesPutIndexTemplateParts, IndicesRefreshParts,
};
use elasticsearch::nodes::NodesInfoParts;
use elasticsearch::{BulkParts, CountParts, Elasticsearch, SearchParts};
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use super::{Applied, Backend, BackendError, Change, Page, Rebuild, last_per_id};
use crate::config::ElasticsearchConfig;
use crate::cursor::{Cursor, MAX_OFFSET};
use crate::query::{Order, SearchQuery};

/// Deadline of every request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of a bulk item that failed with a retriable status.
const BULK_ATTEMPTS: u32 = 4;
const BULK_BACKOFF: Duration = Duration::from_millis(200);
/// ES's default `index.max_result_window`: `from + size` may not exceed it.
const MAX_RESULT_WINDOW: usize = 10_000;
/// Largest response body read (a page of 101 messages of 16 KiB is ~2 MiB).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// The IK plugin's name in `_nodes/plugins`.
const IK_PLUGIN: &str = "analysis-ik";
const NDJSON: &str = "application/x-ndjson";

/// How content is analysed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Analyzer {
    /// The IK plugin: `ik_max_word` to index, `ik_smart` to search.
    Ik,
    /// The built-in `cjk` analyzer (CJK bigrams, lower-cased words).
    Cjk,
}

/// The names one installation uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The index template and the alias.
    pub alias: String,
    /// Indices the template applies to.
    pub pattern: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        let alias = format!("{}-messages", prefix.to_ascii_lowercase());
        Self {
            pattern: format!("{alias}-*"),
            alias,
        }
    }

    /// The index created with the alias the first time.
    pub fn first_index(&self) -> String {
        format!("{}-000001", self.alias)
    }

    /// The index a rebuild fills.
    pub fn rebuild_index(&self, millis: i64) -> String {
        format!("{}-{millis}", self.alias)
    }
}

fn es_error(context: &str, error: impl std::fmt::Display) -> BackendError {
    BackendError::Elasticsearch(format!("{context}: {error}"))
}

/// The index template: strict mapping, content analysed per `analyzer`.
pub fn index_template(names: &Names, analyzer: Analyzer) -> Value {
    let content = match analyzer {
        Analyzer::Ik => json!({
            "type": "text",
            "analyzer": "ik_max_word",
            "search_analyzer": "ik_smart"
        }),
        Analyzer::Cjk => json!({"type": "text", "analyzer": "cjk"}),
    };
    let stored_only = |kind: &str| json!({"type": kind, "index": false, "doc_values": false});
    json!({
        "index_patterns": [names.pattern],
        "priority": 100,
        "template": {
            "settings": {"index": {"refresh_interval": "1s"}},
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "id": {"type": "keyword"},
                    "conversation_id": {"type": "keyword"},
                    "seq": {"type": "long"},
                    "sender_id": {"type": "keyword"},
                    "created_at": {"type": "long"},
                    "content": content,
                    "client_msg_id": stored_only("keyword"),
                    "msg_type": stored_only("integer"),
                    "file_id": stored_only("keyword"),
                }
            }
        },
        "_meta": {
            "managed_by": "beehive-search",
            "analyzer": match analyzer { Analyzer::Ik => "ik", Analyzer::Cjk => "cjk" }
        }
    })
}

/// Whether every node of a `GET /_nodes/plugins` answer has the IK plugin.
pub fn has_ik(nodes: &Value) -> bool {
    let Some(nodes) = nodes.get("nodes").and_then(Value::as_object) else {
        return false;
    };
    !nodes.is_empty()
        && nodes.values().all(|node| {
            node.get("plugins")
                .and_then(Value::as_array)
                .is_some_and(|plugins| {
                    plugins
                        .iter()
                        .any(|p| p.get("name").and_then(Value::as_str) == Some(IK_PLUGIN))
                })
        })
}

/// A message as a document.
pub fn document(message: &pb::Message) -> Value {
    let mut doc = json!({
        "id": message.id,
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "sender_id": message.sender_id,
        "created_at": super::embedded::micros(message.created_at.as_ref()),
        "content": message.content,
        "client_msg_id": message.client_msg_id,
        "msg_type": message.msg_type,
    });
    if let (Some(file_id), Some(map)) = (&message.file_id, doc.as_object_mut()) {
        map.insert("file_id".into(), json!(file_id));
    }
    doc
}

/// A document back as a message; `None` when it is not one of ours.
pub fn message(source: &Value) -> Option<pb::Message> {
    let text = |key: &str| source.get(key).and_then(Value::as_str).map(str::to_owned);
    let micros = source.get("created_at").and_then(Value::as_i64)?;
    Some(pb::Message {
        id: text("id")?,
        conversation_id: text("conversation_id")?,
        seq: source.get("seq").and_then(Value::as_u64)?,
        sender_id: text("sender_id")?,
        client_msg_id: text("client_msg_id").unwrap_or_default(),
        msg_type: source
            .get("msg_type")
            .and_then(Value::as_i64)
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or_default(),
        content: text("content").unwrap_or_default(),
        file_id: text("file_id"),
        created_at: Some(prost_types::Timestamp {
            seconds: micros.div_euclid(1_000_000),
            nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).unwrap_or_default(),
        }),
    })
}

/// The `_bulk` lines of `changes` (the last change of each id), and for each
/// operation the position of its change in the input.
pub fn bulk_lines(changes: &[Change]) -> (Vec<Value>, Vec<usize>) {
    let mut lines = Vec::with_capacity(changes.len() * 2);
    let mut positions = Vec::with_capacity(changes.len());
    for (position, change) in last_per_id(changes) {
        match change.message() {
            Some(message) => {
                lines.push(json!({"index": {"_id": message.id}}));
                lines.push(document(message));
            }
            None => lines.push(json!({"delete": {"_id": change.id()}})),
        }
        positions.push(position);
    }
    (lines, positions)
}

/// What became of one bulk item.
#[derive(Debug, PartialEq, Eq)]
pub enum ItemOutcome {
    Done,
    /// Worth another try (429, 5xx).
    Retry(String),
    /// Refused for good (a poison document).
    Poison(String),
}

/// The outcome of each item of a `_bulk` answer, in request order.
pub fn bulk_outcomes(answer: &Value, expected: usize) -> Result<Vec<ItemOutcome>, BackendError> {
    let items = answer
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| es_error("bulk", "answer without items"))?;
    if items.len() != expected {
        return Err(es_error(
            "bulk",
            format!("{} items answered for {expected} sent", items.len()),
        ));
    }
    Ok(items
        .iter()
        .map(|item| {
            let Some((action, result)) = item.as_object().and_then(|o| o.iter().next()) else {
                return ItemOutcome::Retry("malformed bulk item".into());
            };
            let status = result.get("status").and_then(Value::as_u64).unwrap_or(0);
            let reason = || {
                let error = result.get("error");
                let kind = error
                    .and_then(|e| e.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("error");
                let why = error
                    .and_then(|e| e.get("reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                format!("{status} {kind}: {why}")
            };
            match status {
                200..=299 => ItemOutcome::Done,
                404 if action == "delete" => ItemOutcome::Done,
                429 | 500..=599 | 0 => ItemOutcome::Retry(reason()),
                _ => ItemOutcome::Poison(reason()),
            }
        })
        .collect())
}

/// The search request of `query` against the index's documents.
pub fn search_body(query: &SearchQuery) -> Value {
    let mut whole: Vec<&str> = Vec::new();
    let mut should: Vec<Value> = Vec::new();
    for readable in &query.scope {
        if readable.after_seq == 0 {
            whole.push(&readable.conversation_id);
        } else {
            should.push(json!({"bool": {"filter": [
                {"term": {"conversation_id": readable.conversation_id}},
                {"range": {"seq": {"gt": readable.after_seq}}}
            ]}}));
        }
    }
    if !whole.is_empty() {
        should.insert(0, json!({"terms": {"conversation_id": whole}}));
    }
    let mut filter = vec![json!({"bool": {"should": should, "minimum_should_match": 1}})];
    if let Some(sender) = &query.sender_id {
        filter.push(json!({"term": {"sender_id": sender}}));
    }
    if query.from_micros.is_some() || query.to_micros.is_some() {
        let mut range = Map::new();
        if let Some(from) = query.from_micros {
            range.insert("gte".into(), json!(from));
        }
        if let Some(to) = query.to_micros {
            range.insert("lte".into(), json!(to));
        }
        filter.push(json!({"range": {"created_at": range}}));
    }
    let mut body = json!({
        "size": query.limit + 1,
        "track_total_hits": false,
        "query": {"bool": {
            "must": [{"match": {"content": {"query": query.text, "operator": "and"}}}],
            "filter": filter
        }},
    });
    let recent = json!([{"created_at": "desc"}, {"id": "desc"}]);
    match query.order {
        Order::Recent => {
            body["sort"] = recent;
            if let Some(Cursor::After { micros, id }) = &query.cursor {
                body["search_after"] = json!([micros, id]);
            }
        }
        Order::Relevance => {
            body["sort"] = json!([{"_score": "desc"}, {"created_at": "desc"}, {"id": "desc"}]);
            let offset = match &query.cursor {
                Some(Cursor::Offset(offset)) => *offset as usize,
                _ => 0,
            };
            body["from"] = json!(offset);
            body["size"] = json!((query.limit + 1).min(MAX_RESULT_WINDOW.saturating_sub(offset)));
        }
    }
    body
}

/// The page of a search answer to `query`.
pub fn search_page(query: &SearchQuery, answer: &Value) -> Result<Page, BackendError> {
    let hits = answer
        .pointer("/hits/hits")
        .and_then(Value::as_array)
        .ok_or_else(|| es_error("search", "answer without hits"))?;
    let more = hits.len() > query.limit;
    let kept = &hits[..hits.len().min(query.limit)];
    let messages = kept
        .iter()
        .map(|hit| {
            hit.get("_source")
                .and_then(message)
                .ok_or_else(|| es_error("search", "a hit is not a message document"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let next = match query.order {
        Order::Recent if more => kept.last().and_then(|hit| {
            let sort = hit.get("sort")?.as_array()?;
            Some(Cursor::After {
                micros: sort.first()?.as_i64()?,
                id: sort.get(1)?.as_str()?.to_owned(),
            })
        }),
        Order::Relevance if more => {
            let offset = match &query.cursor {
                Some(Cursor::Offset(offset)) => *offset as usize,
                _ => 0,
            };
            let next = offset + query.limit;
            (next <= MAX_OFFSET as usize && next < MAX_RESULT_WINDOW)
                .then(|| Cursor::Offset(u32::try_from(next).unwrap_or(MAX_OFFSET)))
        }
        _ => None,
    };
    Ok(Page {
        hits: messages,
        next,
    })
}

/// The transport's URL without credentials, and the credentials.
fn split_credentials(url: &str) -> Result<(Url, Option<Credentials>), BackendError> {
    let mut url = Url::parse(url).map_err(|e| {
        BackendError::Elasticsearch(format!("BEEHIVE_ELASTICSEARCH_URL is not a URL: {e}"))
    })?;
    let decode = |s: &str| {
        percent_decode(s).map_err(|_| {
            BackendError::Elasticsearch(
                "BEEHIVE_ELASTICSEARCH_URL has credentials that are not UTF-8".into(),
            )
        })
    };
    let credentials = if url.username().is_empty() {
        None
    } else {
        Some(Credentials::Basic(
            decode(url.username())?,
            decode(url.password().unwrap_or(""))?,
        ))
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url, credentials))
}

fn percent_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
}

/// The elasticsearch backend.
#[derive(Clone)]
pub struct ElasticsearchIndex {
    inner: Arc<Inner>,
}

struct Inner {
    client: Elasticsearch,
    names: Names,
    analyzer: Analyzer,
    /// The index being rebuilt; held across each write so a history page and a live
    /// change of one id never interleave.
    building: Mutex<Option<Building>>,
}

struct Building {
    index: String,
    /// Ids a live edit or delete touched during the rebuild.
    touched: HashSet<String>,
}

impl ElasticsearchIndex {
    /// Connects, detects IK, puts the index template and makes sure the alias exists.
    pub async fn connect(config: &ElasticsearchConfig) -> Result<Self, BackendError> {
        let (url, credentials) = split_credentials(config.url.expose())?;
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(REQUEST_TIMEOUT)
            .enable_meta_header(false);
        if let Some(credentials) = credentials {
            builder = builder.auth(credentials);
        }
        let transport = builder
            .build()
            .map_err(|e| es_error("building the client", e))?;
        let inner = Inner {
            client: Elasticsearch::new(transport),
            names: Names::new(&config.prefix),
            analyzer: Analyzer::Cjk,
            building: Mutex::new(None),
        };
        let plugins = inner
            .json(
                "GET /_nodes/plugins",
                inner
                    .client
                    .nodes()
                    .info(NodesInfoParts::Metric(&["plugins"]))
                    .send()
                    .await,
            )
            .await?;
        let analyzer = if has_ik(&plugins) {
            Analyzer::Ik
        } else {
            Analyzer::Cjk
        };
        let inner = Inner { analyzer, ..inner };
        inner
            .json(
                "PUT /_index_template",
                inner
                    .client
                    .indices()
                    .put_index_template(IndicesPutIndexTemplateParts::Name(&inner.names.alias))
                    .body(index_template(&inner.names, analyzer))
                    .send()
                    .await,
            )
            .await?;
        if inner.alias_indices().await?.is_empty() {
            inner.create_first_index().await?;
        }
        tracing::info!(
            url = %config.url,
            alias = %inner.names.alias,
            analyzer = ?analyzer,
            "elasticsearch search index ready"
        );
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The analyzer chosen at start.
    pub fn analyzer(&self) -> Analyzer {
        self.inner.analyzer
    }
}

impl Inner {
    /// The JSON body of a successful answer, or the error (status and ES's reason).
    async fn json(
        &self,
        what: &str,
        sent: Result<elasticsearch::http::response::Response, elasticsearch::Error>,
    ) -> Result<Value, BackendError> {
        let response = sent.map_err(|e| es_error(what, e))?;
        let status = response.status_code();
        if response
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(es_error(what, "answer too large"));
        }
        let bytes = response.bytes().await.map_err(|e| es_error(what, e))?;
        if bytes.len() > MAX_RESPONSE_BYTES {
            return Err(es_error(what, format!("answer of {} bytes", bytes.len())));
        }
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| es_error(what, e))?
        };
        if status.is_success() {
            Ok(body)
        } else {
            let kind = body
                .pointer("/error/type")
                .and_then(Value::as_str)
                .unwrap_or("");
            let reason = body
                .pointer("/error/reason")
                .and_then(Value::as_str)
                .unwrap_or("");
            Err(BackendError::Elasticsearch(format!(
                "{what}: {} {kind}: {reason}",
                status.as_u16()
            )))
        }
    }

    /// The indices behind the alias (none when it does not exist).
    async fn alias_indices(&self) -> Result<Vec<String>, BackendError> {
        let sent = self
            .client
            .indices()
            .get_alias(IndicesGetAliasParts::Name(&[&self.names.alias]))
            .send()
            .await;
        if let Ok(response) = &sent
            && response.status_code() == StatusCode::NOT_FOUND
        {
            return Ok(Vec::new());
        }
        let body = self.json("GET /_alias", sent).await?;
        Ok(body
            .as_object()
            .map(|indices| indices.keys().cloned().collect())
            .unwrap_or_default())
    }

    async fn create_first_index(&self) -> Result<(), BackendError> {
        let index = self.names.first_index();
        let mut aliases = Map::new();
        aliases.insert(self.names.alias.clone(), json!({}));
        let created = self
            .json(
                "PUT /<index>",
                self.client
                    .indices()
                    .create(IndicesCreateParts::Index(&index))
                    .body(json!({"aliases": aliases}))
                    .send()
                    .await,
            )
            .await;
        match created {
            Ok(_) => {
                tracing::info!(%index, alias = %self.names.alias, "elasticsearch index created");
                Ok(())
            }
            // Another replica created it first.
            Err(BackendError::Elasticsearch(m)) if m.contains("resource_already_exists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends `lines` to `target`'s `_bulk`, retrying retriable items; returns the
    /// outcome of each operation (never `Retry`: those fail the call).
    async fn bulk(
        &self,
        target: &str,
        lines: Vec<Value>,
    ) -> Result<Vec<ItemOutcome>, BackendError> {
        // Operations as (action line, optional source line).
        let mut operations: Vec<(Value, Option<Value>)> = Vec::new();
        let mut iter = lines.into_iter().peekable();
        while let Some(action) = iter.next() {
            let source = if action.get("delete").is_some() {
                None
            } else {
                iter.next()
            };
            operations.push((action, source));
        }
        let mut outcomes: Vec<Option<ItemOutcome>> = operations.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..operations.len()).collect();
        let mut backoff = BULK_BACKOFF;
        for attempt in 1..=BULK_ATTEMPTS {
            let mut body: Vec<JsonBody<Value>> = Vec::with_capacity(pending.len() * 2);
            for &i in &pending {
                let (action, source) = &operations[i];
                body.push(JsonBody::new(action.clone()));
                if let Some(source) = source {
                    body.push(JsonBody::new(source.clone()));
                }
            }
            let answer = self
                .json(
                    "POST /_bulk",
                    self.client
                        .bulk(BulkParts::Index(target))
                        .header(CONTENT_TYPE, HeaderValue::from_static(NDJSON))
                        .body(body)
                        .send()
                        .await,
                )
                .await?;
            let results = bulk_outcomes(&answer, pending.len())?;
            let mut retry = Vec::new();
            let mut last_reason = String::new();
            for (i, outcome) in pending.iter().zip(results) {
                match outcome {
                    ItemOutcome::Retry(reason) => {
                        last_reason = reason;
                        retry.push(*i);
                    }
                    other => outcomes[*i] = Some(other),
                }
            }
            if retry.is_empty() {
                break;
            }
            if attempt == BULK_ATTEMPTS {
                return Err(es_error(
                    "bulk",
                    format!(
                        "{} items still failing after {attempt} attempts (last: {last_reason})",
                        retry.len()
                    ),
                ));
            }
            tracing::warn!(items = retry.len(), attempt, reason = %last_reason, "retrying elasticsearch bulk items");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            pending = retry;
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(ItemOutcome::Done))
            .collect())
    }

    async fn apply(&self, changes: Vec<Change>) -> Result<Applied, BackendError> {
        if changes.is_empty() {
            return Ok(Applied::default());
        }
        let (lines, positions) = bulk_lines(&changes);
        let mut building = self.building.lock().await;
        let outcomes = self.bulk(&self.names.alias, lines.clone()).await?;
        let rejected: Vec<(usize, String)> = positions
            .iter()
            .zip(&outcomes)
            .filter_map(|(position, outcome)| match outcome {
                ItemOutcome::Poison(reason) => Some((*position, reason.clone())),
                _ => None,
            })
            .collect();
        if let Some(building) = building.as_mut() {
            let outcomes = self.bulk(&building.index, lines).await?;
            for (outcome, position) in outcomes.iter().zip(&positions) {
                if let ItemOutcome::Poison(reason) = outcome {
                    tracing::error!(message_id = changes[*position].id(), %reason, index = %building.index, "the index being rebuilt refused a document");
                }
            }
            for change in changes.iter().filter(|c| c.overrides_history()) {
                building.touched.insert(change.id().to_owned());
            }
        }
        Ok(Applied { rejected })
    }

    async fn search(&self, query: &SearchQuery) -> Result<Page, BackendError> {
        if query.terms.is_empty() || query.scope.is_empty() {
            return Ok(Page::default());
        }
        let body = search_body(query);
        if body["size"] == json!(0) {
            return Ok(Page::default());
        }
        let answer = self
            .json(
                "POST /_search",
                self.client
                    .search(SearchParts::Index(&[&self.names.alias]))
                    .body(body)
                    .send()
                    .await,
            )
            .await?;
        search_page(query, &answer)
    }

    async fn begin_rebuild(self: &Arc<Self>) -> Result<ElasticsearchRebuild, BackendError> {
        let mut building = self.building.lock().await;
        if building.is_some() {
            return Err(BackendError::RebuildRunning);
        }
        let index = self
            .names
            .rebuild_index(chrono::Utc::now().timestamp_millis());
        self.json(
            "PUT /<rebuild index>",
            self.client
                .indices()
                .create(IndicesCreateParts::Index(&index))
                .body(json!({}))
                .send()
                .await,
        )
        .await?;
        tracing::info!(%index, "elasticsearch rebuild started");
        *building = Some(Building {
            index: index.clone(),
            touched: HashSet::new(),
        });
        Ok(ElasticsearchRebuild {
            inner: self.clone(),
            index,
        })
    }

    async fn add_history(
        &self,
        index: &str,
        messages: Vec<pb::Message>,
    ) -> Result<u64, BackendError> {
        let building = self.building.lock().await;
        let touched = match building.as_ref() {
            Some(b) if b.index == index => &b.touched,
            _ => return Err(es_error("rebuild", "the rebuild was abandoned")),
        };
        let changes: Vec<Change> = messages
            .into_iter()
            .filter(|m| !touched.contains(&m.id))
            .map(Change::Put)
            .collect();
        if changes.is_empty() {
            return Ok(0);
        }
        let (lines, positions) = bulk_lines(&changes);
        let outcomes = self.bulk(index, lines).await?;
        let mut written = 0;
        for (position, outcome) in positions.iter().zip(outcomes) {
            match outcome {
                ItemOutcome::Poison(reason) => {
                    metrics::counter!("beehive_search_reindex_rejected_total").increment(1);
                    tracing::error!(message_id = changes[*position].id(), %reason, %index, "the rebuilt index refused a message from history; it stays unsearchable");
                }
                _ => written += 1,
            }
        }
        Ok(written)
    }

    async fn finish(&self, index: &str) -> Result<u64, BackendError> {
        let mut building = self.building.lock().await;
        if building.as_ref().map(|b| b.index.as_str()) != Some(index) {
            return Err(es_error("rebuild", "the rebuild was abandoned"));
        }
        self.json(
            "POST /<index>/_refresh",
            self.client
                .indices()
                .refresh(IndicesRefreshParts::Index(&[index]))
                .send()
                .await,
        )
        .await?;
        let old = self.alias_indices().await?;
        let mut actions: Vec<Value> = old
            .iter()
            .map(|o| json!({"remove": {"index": o, "alias": self.names.alias}}))
            .collect();
        actions.push(json!({"add": {"index": index, "alias": self.names.alias}}));
        self.json(
            "POST /_aliases",
            self.client
                .indices()
                .update_aliases()
                .body(json!({"actions": actions}))
                .send()
                .await,
        )
        .await?;
        *building = None;
        drop(building);
        let count = self
            .json(
                "GET /<index>/_count",
                self.client.count(CountParts::Index(&[index])).send().await,
            )
            .await?
            .get("count")
            .and_then(Value::as_u64)
            .unwrap_or_default();
        for old in old.iter().filter(|o| o.as_str() != index) {
            if let Err(error) = self.delete_index(old).await {
                tracing::warn!(%error, index = %old, "cannot delete the replaced elasticsearch index");
            }
        }
        tracing::info!(%index, documents = count, "elasticsearch index rebuilt and swapped in");
        Ok(count)
    }

    async fn delete_index(&self, index: &str) -> Result<(), BackendError> {
        self.json(
            "DELETE /<index>",
            self.client
                .indices()
                .delete(IndicesDeleteParts::Index(&[index]))
                .send()
                .await,
        )
        .await
        .map(|_| ())
    }

    async fn abort(&self, index: &str) {
        let mut building = self.building.lock().await;
        if building.as_ref().map(|b| b.index.as_str()) == Some(index) {
            *building = None;
        }
        drop(building);
        if let Err(error) = self.delete_index(index).await {
            tracing::warn!(%error, %index, "cannot delete an abandoned rebuild index");
        }
    }
}

/// A rebuild into a new elasticsearch index.
struct ElasticsearchRebuild {
    inner: Arc<Inner>,
    index: String,
}

impl Rebuild for ElasticsearchRebuild {
    fn add(&mut self, messages: Vec<pb::Message>) -> BoxFuture<'_, Result<u64, BackendError>> {
        Box::pin(async move { self.inner.add_history(&self.index, messages).await })
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<u64, BackendError>> {
        Box::pin(async move {
            let finished = self.inner.finish(&self.index).await;
            if finished.is_err() {
                self.inner.abort(&self.index).await;
            }
            finished
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.inner.abort(&self.index).await })
    }
}

impl Backend for ElasticsearchIndex {
    fn name(&self) -> &'static str {
        "elasticsearch"
    }

    fn apply(&self, changes: Vec<Change>) -> BoxFuture<'_, Result<Applied, BackendError>> {
        Box::pin(self.inner.apply(changes))
    }

    fn search(&self, query: SearchQuery) -> BoxFuture<'_, Result<Page, BackendError>> {
        Box::pin(async move { self.inner.search(&query).await })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let response = self
                .inner
                .client
                .indices()
                .exists_alias(IndicesExistsAliasParts::Name(&[&self.inner.names.alias]))
                .send()
                .await
                .map_err(|e| es_error("HEAD /_alias", e))?;
            if response.status_code().is_success() {
                Ok(())
            } else {
                Err(es_error(
                    "HEAD /_alias",
                    format!("alias missing ({})", response.status_code().as_u16()),
                ))
            }
        })
    }

    fn begin_rebuild(&self) -> BoxFuture<'_, Result<Box<dyn Rebuild>, BackendError>> {
        Box::pin(async move {
            let rebuild = self.inner.begin_rebuild().await?;
            Ok(Box::new(rebuild) as Box<dyn Rebuild>)
        })
    }
}
