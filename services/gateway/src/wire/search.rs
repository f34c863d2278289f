//! The JSON of `GET /search/messages`.

use beehive_proto::v1 as pb;
use serde::Serialize;
use utoipa::ToSchema;

use super::model::Message;

/// One hit: the message and its highlight.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHit {
    pub message: Message,
    /// The content HTML-escaped, matched terms wrapped in `<em>`…`</em>`; for content
    /// over 200 characters a fragment around the first match, `…` where it was cut.
    pub highlight: String,
}

/// `{hits, next_cursor}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    pub hits: Vec<SearchHit>,
    /// Cursor of the next page; null at the end.
    pub next_cursor: Option<String>,
}

impl From<pb::SearchMessagesResponse> for SearchResponse {
    fn from(r: pb::SearchMessagesResponse) -> Self {
        Self {
            hits: r
                .hits
                .into_iter()
                .filter_map(|h| {
                    h.message.map(|m| SearchHit {
                        message: Message::from(m),
                        highlight: h.highlight,
                    })
                })
                .collect(),
            next_cursor: r.page.map(|p| p.next_cursor).filter(|c| !c.is_empty()),
        }
    }
}
