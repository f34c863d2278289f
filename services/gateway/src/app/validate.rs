//! Shape checks of client input that every use case shares: ids, id lists, paging.
//! They run before any RPC, so input that cannot succeed costs none.

use beehive_common::Error;
use beehive_proto::v1 as pb;

use super::limits::{DEFAULT_PAGE_LIMIT, MAX_CURSOR_BYTES, MAX_ID_BYTES, MAX_PAGE_LIMIT};

/// Rejects strings that cannot be ids: empty, or longer than [`MAX_ID_BYTES`] (API.md:
/// ids are opaque; the services parse them). `invalid_argument` naming `field`.
pub fn check_id(field: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(Error::invalid(field, format!("{field} is not a valid id")));
    }
    Ok(())
}

/// A canonical (lowercase, hyphenated) UUID, or `invalid_argument` naming `field`.
pub fn uuid_field(field: &str, value: &str) -> Result<String, Error> {
    uuid::Uuid::parse_str(value)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| Error::invalid(field, format!("{field} must be a UUID")))
}

/// Splits `a,b,c` into ids, at least one and at most `max` of them.
pub fn id_list(field: &str, text: &str, max: usize) -> Result<Vec<String>, Error> {
    let ids: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    check_id_count(field, &ids, max)?;
    Ok(ids)
}

/// At least one and at most `max` ids, each one plausible.
pub fn check_id_count(field: &str, ids: &[String], max: usize) -> Result<(), Error> {
    if ids.is_empty() {
        return Err(Error::invalid(
            field,
            format!("{field} must list at least one id"),
        ));
    }
    if ids.len() > max {
        return Err(Error::invalid(
            field,
            format!("{field} lists more than {max} ids"),
        ));
    }
    ids.iter().try_for_each(|id| check_id(field, id))
}

/// Paging of API.md: `limit` (default 50, max 200; larger values are clamped, as the
/// services do) and an opaque cursor.
pub fn page(limit: Option<u32>, cursor: Option<String>) -> Result<pb::PageRequest, Error> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT).min(MAX_PAGE_LIMIT);
    if limit == 0 {
        return Err(Error::invalid("limit", "limit must be at least 1"));
    }
    let cursor = cursor.unwrap_or_default();
    if cursor.len() > MAX_CURSOR_BYTES {
        return Err(Error::invalid("cursor", "cursor is too long"));
    }
    Ok(pb::PageRequest { limit, cursor })
}

/// An empty cursor (the services' "no more") becomes `None`.
pub fn next_cursor(next: Option<pb::PageResponse>) -> Option<String> {
    next.map(|p| p.next_cursor).filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists_are_bounded() {
        assert_eq!(id_list("ids", "a, b,,c", 3).expect("ok").len(), 3);
        assert!(id_list("ids", "a,b,c,d", 3).is_err());
        assert!(id_list("ids", " , ", 3).is_err());
        assert!(id_list("ids", &"x".repeat(MAX_ID_BYTES + 1), 3).is_err());
    }

    #[test]
    fn paging_defaults_and_bounds() {
        assert_eq!(page(None, None).expect("ok").limit, 50);
        assert!(page(Some(0), None).is_err());
        assert_eq!(page(Some(500), None).expect("clamped").limit, 200);
        assert_eq!(page(Some(200), Some("c".into())).expect("ok").cursor, "c");
        assert!(page(None, Some("c".repeat(MAX_CURSOR_BYTES + 1))).is_err());
    }

    #[test]
    fn uuids_are_canonicalised() {
        assert_eq!(
            uuid_field("id", "0190F4A2-7C3E-7000-8000-000000000002").expect("uuid"),
            "0190f4a2-7c3e-7000-8000-000000000002"
        );
        assert!(uuid_field("id", "nope").is_err());
    }
}
