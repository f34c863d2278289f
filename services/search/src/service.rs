//! The search use case: resolve what the caller may read (the message service's
//! memberships), ask the backend, and highlight the hits.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use beehive_common::Error;
use beehive_common::grpc::{ClientChannel, Retry};
use beehive_proto::v1 as pb;
use beehive_proto::v1::message_service_client::MessageServiceClient;

use crate::analysis::WordTokenizer;
use crate::backend::{Backend, Page};
use crate::highlight::highlight;
use crate::query::{Readable, SearchQuery};

/// One hit: the message and its highlight.
#[derive(Debug)]
pub struct Hit {
    pub message: pb::Message,
    pub highlight: String,
}

/// A search's input before the caller's scope is known.
#[derive(Debug)]
pub struct Request {
    pub user_id: String,
    pub conversation_id: Option<String>,
    pub query: SearchQuery,
}

/// The search service's use cases.
#[derive(Clone)]
pub struct SearchService {
    backend: Arc<dyn Backend>,
    messages: MessageServiceClient<ClientChannel>,
    retry: Retry,
}

impl SearchService {
    pub fn new(backend: Arc<dyn Backend>, messages: MessageServiceClient<ClientChannel>) -> Self {
        Self {
            backend,
            messages,
            retry: Retry::default(),
        }
    }

    /// One page of `request.user_id`'s messages matching the query.
    pub async fn search(&self, request: Request) -> Result<(Vec<Hit>, Option<String>), Error> {
        let started = Instant::now();
        let mut query = request.query;
        if query.terms.is_empty() {
            return Ok((Vec::new(), None));
        }
        let memberships = self.memberships(&request.user_id).await?;
        query.scope = crate::query::scope(memberships, request.conversation_id.as_deref());
        if query.scope.is_empty() {
            return Ok((Vec::new(), None));
        }
        let terms: HashSet<String> = query.terms.iter().cloned().collect();
        let order = query.order;
        let Page { hits, next } = self.backend.search(query).await.map_err(|error| {
            tracing::error!(%error, backend = self.backend.name(), "search failed");
            Error::Unavailable("search is unavailable".to_owned())
        })?;
        let mut tokenizer = WordTokenizer::for_index();
        let hits: Vec<Hit> = hits
            .into_iter()
            .map(|message| {
                let words = tokenizer.words(&message.content);
                Hit {
                    highlight: highlight(&message.content, &words, &terms),
                    message,
                }
            })
            .collect();
        let elapsed = started.elapsed().as_secs_f64();
        metrics::histogram!("beehive_search_query_seconds").record(elapsed);
        tracing::debug!(hits = hits.len(), ?order, elapsed, "search answered");
        Ok((hits, next.map(|c| c.encode())))
    }

    async fn memberships(&self, user_id: &str) -> Result<Vec<Readable>, Error> {
        let request = pb::ListMembershipsRequest {
            user_id: user_id.to_owned(),
        };
        let messages = self.messages.clone();
        let response = self
            .retry
            .idempotent(move || {
                let mut messages = messages.clone();
                let request = request.clone();
                async move { messages.list_memberships(request).await }
            })
            .await
            .map_err(|status| Error::from_status(&status))?;
        Ok(response
            .into_inner()
            .memberships
            .into_iter()
            .map(|m| Readable {
                conversation_id: m.conversation_id,
                after_seq: m.join_seq,
            })
            .collect())
    }
}
