//! What one search asks for, and the input rules every backend relies on: query
//! length, page size, and the caller's scope (conversations and the seq each one is
//! readable after). Pure: no index, no RPC.

use beehive_common::Error;

use crate::analysis::query_terms;
use crate::cursor::Cursor;

/// Longest query, in characters (API.md: 1-256).
pub const MAX_QUERY_CHARS: usize = 256;
/// Page size when the caller gives none.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page; larger requests are clamped.
pub const MAX_LIMIT: u32 = 100;

/// Ranking of hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Newest first (ties by message id, descending).
    Recent,
    /// Best score first, then newest first.
    Relevance,
}

/// One conversation the caller may search: messages with `seq > after_seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readable {
    pub conversation_id: String,
    pub after_seq: u64,
}

/// A validated search, in the terms a backend needs.
#[derive(Clone, Debug)]
pub struct SearchQuery {
    /// The query as given (trimmed): a backend that analyses text itself
    /// (elasticsearch) matches every word of it, taken literally.
    pub text: String,
    /// Words that must all match (already segmented and lower-cased).
    pub terms: Vec<String>,
    /// Where the caller may look; never empty when a backend is asked.
    pub scope: Vec<Readable>,
    pub sender_id: Option<String>,
    /// Inclusive bounds of created_at, microseconds since the epoch.
    pub from_micros: Option<i64>,
    pub to_micros: Option<i64>,
    pub order: Order,
    pub limit: usize,
    pub cursor: Option<Cursor>,
}

/// The words of `query`, or `invalid_argument` when the query is empty, blank or over
/// [`MAX_QUERY_CHARS`]. A query of only punctuation has no words: it matches nothing.
pub fn parse_terms(query: &str) -> Result<Vec<String>, Error> {
    let chars = query.chars().count();
    if chars == 0 || query.trim().is_empty() {
        return Err(Error::invalid("q", "q must not be empty"));
    }
    if chars > MAX_QUERY_CHARS {
        return Err(Error::invalid(
            "q",
            format!("q must be at most {MAX_QUERY_CHARS} characters"),
        ));
    }
    Ok(query_terms(query))
}

/// The page size for a requested `limit` (0: the default; clamped to [`MAX_LIMIT`]).
pub fn page_limit(limit: u32) -> usize {
    let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
    limit.min(MAX_LIMIT) as usize
}

/// The caller's memberships narrowed to `only` (a conversation filter): a conversation
/// the caller is not a member of yields an empty scope, never an error that would tell
/// it exists.
pub fn scope(memberships: Vec<Readable>, only: Option<&str>) -> Vec<Readable> {
    match only {
        Some(id) => memberships
            .into_iter()
            .filter(|m| m.conversation_id == id)
            .collect(),
        None => memberships,
    }
}

/// Checks that a cursor suits the order it is used with.
pub fn check_cursor(cursor: &Cursor, order: Order) -> Result<(), Error> {
    match (cursor, order) {
        (Cursor::After { .. }, Order::Recent) | (Cursor::Offset(_), Order::Relevance) => Ok(()),
        _ => Err(Error::invalid(
            "cursor",
            "cursor belongs to a search with another order",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(id: &str, after_seq: u64) -> Readable {
        Readable {
            conversation_id: id.into(),
            after_seq,
        }
    }

    #[test]
    fn queries_are_one_to_256_characters_and_never_a_syntax_error() {
        assert!(parse_terms("").is_err());
        assert!(parse_terms("   ").is_err());
        assert!(parse_terms(&"字".repeat(257)).is_err());
        assert!(
            !parse_terms(&"字".repeat(256))
                .expect("256 chars")
                .is_empty()
        );
        assert_eq!(
            parse_terms("AND OR NOT (\"x").expect("valid"),
            vec!["and", "or", "not", "x"]
        );
        assert!(parse_terms("*?:~").expect("valid").is_empty());
    }

    #[test]
    fn limits_default_and_clamp() {
        assert_eq!(page_limit(0), 20);
        assert_eq!(page_limit(7), 7);
        assert_eq!(page_limit(100), 100);
        assert_eq!(page_limit(10_000), 100);
    }

    #[test]
    fn a_conversation_filter_narrows_the_scope_and_cannot_widen_it() {
        let mine = vec![readable("a", 0), readable("b", 5)];
        assert_eq!(scope(mine.clone(), None), mine);
        assert_eq!(scope(mine.clone(), Some("b")), vec![readable("b", 5)]);
        assert!(scope(mine, Some("someone-elses")).is_empty());
    }

    #[test]
    fn cursors_are_bound_to_their_order() {
        let after = Cursor::After {
            micros: 1,
            id: "x".into(),
        };
        assert!(check_cursor(&after, Order::Recent).is_ok());
        assert!(check_cursor(&after, Order::Relevance).is_err());
        assert!(check_cursor(&Cursor::Offset(3), Order::Relevance).is_ok());
        assert!(check_cursor(&Cursor::Offset(3), Order::Recent).is_err());
    }
}
