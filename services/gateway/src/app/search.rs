//! Message search (API.md, Search): the input rules, then one call to the search
//! service, which scopes every hit to what the caller may read (its conversations,
//! and in each only messages after it joined; it asks the message service). Search
//! being down is `unavailable` here and nowhere else: sending never calls it.

use beehive_common::Error;
use beehive_proto::v1 as pb;

use super::limits::MAX_CURSOR_BYTES;
use super::validate::uuid_field;
use crate::clients::Clients;

/// API.md: `q` is 1-256 characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// API.md: search pages default to 20 hits.
pub const DEFAULT_SEARCH_LIMIT: u32 = 20;
/// API.md: at most 100 hits per page (larger values are clamped, as for lists).
pub const MAX_SEARCH_LIMIT: u32 = 100;
/// Longest `from`/`to` text accepted before parsing.
const MAX_TIME_BYTES: usize = 64;

/// A search as the transports decoded it, not yet validated.
#[derive(Debug, Default)]
pub struct SearchInput {
    pub q: Option<String>,
    pub conversation_id: Option<String>,
    pub sender_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub order: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The validated request for the search service.
pub fn request(user_id: &str, input: SearchInput) -> Result<pb::SearchMessagesRequest, Error> {
    let q = input
        .q
        .ok_or_else(|| Error::invalid("q", "q is required"))?;
    let chars = q.chars().count();
    if chars == 0 || q.trim().is_empty() {
        return Err(Error::invalid("q", "q must not be empty"));
    }
    if chars > MAX_QUERY_CHARS {
        return Err(Error::invalid(
            "q",
            format!("q must be at most {MAX_QUERY_CHARS} characters"),
        ));
    }
    let order = match input.order.as_deref() {
        None | Some("recent") => pb::SearchOrder::Recent,
        Some("relevance") => pb::SearchOrder::Relevance,
        Some(_) => {
            return Err(Error::invalid("order", "order must be recent or relevance"));
        }
    };
    let limit = input.limit.unwrap_or(DEFAULT_SEARCH_LIMIT);
    if limit == 0 {
        return Err(Error::invalid("limit", "limit must be at least 1"));
    }
    let cursor = input.cursor.unwrap_or_default();
    if cursor.len() > MAX_CURSOR_BYTES {
        return Err(Error::invalid("cursor", "cursor is not valid"));
    }
    let from = input.from.as_deref().map(|t| time("from", t)).transpose()?;
    let to = input.to.as_deref().map(|t| time("to", t)).transpose()?;
    Ok(pb::SearchMessagesRequest {
        user_id: user_id.to_owned(),
        query: q,
        conversation_id: input
            .conversation_id
            .map(|id| uuid_field("conversation_id", &id))
            .transpose()?,
        sender_id: input
            .sender_id
            .map(|id| uuid_field("sender_id", &id))
            .transpose()?,
        from,
        to,
        page: Some(pb::PageRequest {
            limit: limit.min(MAX_SEARCH_LIMIT),
            cursor,
        }),
        order: order as i32,
    })
}

/// An RFC 3339 time, or `invalid_argument` naming `field`.
fn time(field: &str, text: &str) -> Result<prost_types::Timestamp, Error> {
    let invalid = || Error::invalid(field, format!("{field} must be an RFC 3339 time"));
    if text.len() > MAX_TIME_BYTES {
        return Err(invalid());
    }
    let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| invalid())?;
    Ok(beehive_common::time::to_timestamp(
        time.with_timezone(&chrono::Utc),
    ))
}

/// One page of `user_id`'s messages matching `input`.
pub async fn messages(
    clients: &Clients,
    user_id: &str,
    input: SearchInput,
) -> Result<pb::SearchMessagesResponse, Error> {
    let request = request(user_id, input)?;
    clients.search_messages(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(q: &str) -> SearchInput {
        SearchInput {
            q: Some(q.to_owned()),
            ..SearchInput::default()
        }
    }

    fn field_of(result: Result<pb::SearchMessagesRequest, Error>) -> Option<String> {
        match result {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected invalid_argument, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_recent_and_twenty() {
        let request = request("u", input("消息")).expect("valid");
        assert_eq!(request.order, pb::SearchOrder::Recent as i32);
        assert_eq!(request.page.expect("page").limit, 20);
    }

    #[test]
    fn the_query_is_one_to_256_characters() {
        assert_eq!(
            field_of(request("u", SearchInput::default())).as_deref(),
            Some("q")
        );
        assert_eq!(field_of(request("u", input(""))).as_deref(), Some("q"));
        assert_eq!(field_of(request("u", input("  "))).as_deref(), Some("q"));
        assert_eq!(
            field_of(request("u", input(&"字".repeat(257)))).as_deref(),
            Some("q")
        );
        assert!(request("u", input(&"字".repeat(256))).is_ok());
        // Query syntax is not ours to parse: passed on as typed.
        assert_eq!(
            request("u", input("a AND (b")).expect("valid").query,
            "a AND (b"
        );
    }

    #[test]
    fn filters_are_checked_before_any_call() {
        let mut bad = input("x");
        bad.conversation_id = Some("nope".into());
        assert_eq!(
            field_of(request("u", bad)).as_deref(),
            Some("conversation_id")
        );
        let mut bad = input("x");
        bad.from = Some("yesterday".into());
        assert_eq!(field_of(request("u", bad)).as_deref(), Some("from"));
        let mut bad = input("x");
        bad.order = Some("oldest".into());
        assert_eq!(field_of(request("u", bad)).as_deref(), Some("order"));
        let mut bad = input("x");
        bad.limit = Some(0);
        assert_eq!(field_of(request("u", bad)).as_deref(), Some("limit"));
        let mut big = input("x");
        big.limit = Some(5000);
        big.to = Some("2026-01-02T03:04:05+08:00".into());
        let request = request("u", big).expect("valid");
        assert_eq!(request.page.expect("page").limit, 100);
        assert_eq!(request.to.expect("to").seconds, 1_767_294_245);
    }
}
