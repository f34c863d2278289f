//! The gRPC surface of the search service: decode the request into a
//! [`SearchQuery`], call [`SearchService`], encode the hits. No rules here beyond the
//! shape of the input.

use beehive_common::Error;
use beehive_common::id::parse_id;
use beehive_common::time::{from_timestamp, to_timestamp};
use beehive_proto::v1::search_service_server::SearchService as SearchRpc;
use beehive_proto::v1::{
    GetReindexRequest, PageResponse, ReindexRequest, ReindexResponse, ReindexState, SearchHit,
    SearchMessagesRequest, SearchMessagesResponse, SearchOrder,
};
use tonic::{Request, Response, Status};

use crate::cursor::{Cursor, MAX_CURSOR_BYTES};
use crate::query::{self, Order, SearchQuery};
use crate::reindex::{self, Reindexer};
use crate::service::{self, SearchService};

/// The tonic implementation of `beehive.v1.SearchService`.
#[derive(Clone)]
pub struct SearchApi {
    service: SearchService,
    reindexer: Reindexer,
}

impl SearchApi {
    pub fn new(service: SearchService, reindexer: Reindexer) -> Self {
        Self { service, reindexer }
    }
}

fn reindex_response(status: reindex::Status) -> ReindexResponse {
    ReindexResponse {
        request_id: status.request_id,
        state: match status.state {
            reindex::State::Running => ReindexState::Running,
            reindex::State::Succeeded => ReindexState::Succeeded,
            reindex::State::Failed => ReindexState::Failed,
        } as i32,
        documents: status.documents,
        started_at: Some(to_timestamp(status.started_at)),
        finished_at: status.finished_at.map(to_timestamp),
        error: status.error,
    }
}

fn decode(r: SearchMessagesRequest) -> Result<service::Request, Error> {
    let user = parse_id("user_id", &r.user_id)?;
    let terms = query::parse_terms(&r.query)?;
    let conversation_id = r
        .conversation_id
        .as_deref()
        .map(|id| parse_id("conversation_id", id).map(|u| u.to_string()))
        .transpose()?;
    let sender_id = r
        .sender_id
        .as_deref()
        .map(|id| parse_id("sender_id", id).map(|u| u.to_string()))
        .transpose()?;
    let time = |field: &str, ts: Option<&prost_types::Timestamp>| -> Result<Option<i64>, Error> {
        ts.map(|ts| {
            from_timestamp(ts)
                .map(|t| t.timestamp_micros())
                .ok_or_else(|| Error::invalid(field, format!("{field} is not a valid time")))
        })
        .transpose()
    };
    let order = match SearchOrder::try_from(r.order) {
        Ok(SearchOrder::Recent | SearchOrder::Unspecified) => Order::Recent,
        Ok(SearchOrder::Relevance) => Order::Relevance,
        Err(_) => return Err(Error::invalid("order", "order must be recent or relevance")),
    };
    let page = r.page.unwrap_or_default();
    let cursor = if page.cursor.is_empty() {
        None
    } else {
        if page.cursor.len() > MAX_CURSOR_BYTES {
            return Err(Error::invalid("cursor", "cursor is too long"));
        }
        let cursor =
            Cursor::decode(&page.cursor).map_err(|e| Error::invalid("cursor", e.to_string()))?;
        query::check_cursor(&cursor, order)?;
        Some(cursor)
    };
    Ok(service::Request {
        user_id: user.to_string(),
        conversation_id,
        query: SearchQuery {
            text: r.query.trim().to_owned(),
            terms,
            scope: Vec::new(),
            sender_id,
            from_micros: time("from", r.from.as_ref())?,
            to_micros: time("to", r.to.as_ref())?,
            order,
            limit: query::page_limit(page.limit),
            cursor,
        },
    })
}

#[tonic::async_trait]
impl SearchRpc for SearchApi {
    async fn search_messages(
        &self,
        request: Request<SearchMessagesRequest>,
    ) -> Result<Response<SearchMessagesResponse>, Status> {
        let result = async {
            let request = decode(request.into_inner())?;
            let (hits, next) = self.service.search(request).await?;
            Ok::<_, Error>(SearchMessagesResponse {
                hits: hits
                    .into_iter()
                    .map(|hit| SearchHit {
                        message: Some(hit.message),
                        highlight: hit.highlight,
                    })
                    .collect(),
                page: Some(PageResponse {
                    next_cursor: next.unwrap_or_default(),
                }),
            })
        }
        .await;
        result.map(Response::new).map_err(Status::from)
    }

    async fn reindex(
        &self,
        request: Request<ReindexRequest>,
    ) -> Result<Response<ReindexResponse>, Status> {
        let status = self.reindexer.start(&request.into_inner().request_id)?;
        Ok(Response::new(reindex_response(status)))
    }

    async fn get_reindex(
        &self,
        request: Request<GetReindexRequest>,
    ) -> Result<Response<ReindexResponse>, Status> {
        let status = self.reindexer.get(&request.into_inner().request_id)?;
        Ok(Response::new(reindex_response(status)))
    }
}
