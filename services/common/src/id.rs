//! Ids in requests: every Beehive id is a UUID carried as text, and a malformed one is
//! the caller's mistake, reported as `invalid_argument` against the field that held it.

use std::collections::HashSet;

use uuid::Uuid;

use crate::Error;

/// Longest id text looked at. Every textual UUID form (hyphenated, simple, braced,
/// URN) is shorter; longer input is refused before any parsing work.
pub const MAX_ID_BYTES: usize = 64;

/// Parses the id in request field `field`: `"{field} is required"` when it is empty,
/// `"{field} is not a valid id"` when it is not a UUID.
pub fn parse_id(field: &str, value: &str) -> Result<Uuid, Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, format!("{field} is required")));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(invalid_id(field));
    }
    Uuid::try_parse(value).map_err(|_| invalid_id(field))
}

/// Parses an optional id (empty means none), e.g. a `viewer_id`.
pub fn parse_optional_id(field: &str, value: &str) -> Result<Option<Uuid>, Error> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse_id(field, value).map(Some)
    }
}

/// Parses a list of ids from field `field`, dropping repeats and keeping the
/// first-seen order (callers where order matters, like group member order, rely on
/// it). The caller bounds the list's length first, with its own limit.
pub fn parse_unique_ids(field: &str, values: &[String]) -> Result<Vec<Uuid>, Error> {
    let mut seen = HashSet::with_capacity(values.len());
    let mut out = Vec::with_capacity(values.len());
    for value in values {
        let id = parse_id(field, value)?;
        if seen.insert(id) {
            out.push(id);
        }
    }
    Ok(out)
}

fn invalid_id(field: &str) -> Error {
    Error::invalid(field, format!("{field} is not a valid id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(error: Error) -> String {
        error.to_string()
    }

    #[test]
    fn errors_name_the_field() {
        assert!(message(parse_id("user_id", "").unwrap_err()).contains("user_id is required"));
        assert!(
            message(parse_id("user_id", "nope").unwrap_err()).contains("user_id is not a valid id")
        );
        let long = "a".repeat(MAX_ID_BYTES + 1);
        assert!(message(parse_id("peer", &long).unwrap_err()).contains("peer is not a valid id"));
    }

    #[test]
    fn ids_parse_and_repeats_drop_in_order() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        assert_eq!(parse_id("id", &a.to_string()).ok(), Some(a));
        assert_eq!(parse_optional_id("id", "").ok(), Some(None));
        let ids = [b.to_string(), a.to_string(), b.to_string()];
        assert_eq!(parse_unique_ids("ids", &ids).ok(), Some(vec![b, a]));
    }
}
