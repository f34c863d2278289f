//! The rules of friend requests and friendships, as plain types and functions so they
//! can be unit-tested without a database: id and input validation, the request
//! lifecycle (pending, accepted, rejected, expired), paging limits and cursors.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use beehive_common::id::parse_unique_ids;
use beehive_common::{Error, Result};
use beehive_proto::v1::{FriendRequestStatus, RequestDirection};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Longest friend request message, in characters (API.md).
pub const MAX_MESSAGE_CHARS: usize = 256;

/// A second pending request to the same user is refused while the first is younger
/// than this, so a user cannot be flooded with requests from one sender.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// A pending request older than this is expired: not listed, cannot be accepted, and
/// does not block a new request.
pub const REQUEST_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Page size when the caller asks for 0 (common.proto).
pub const DEFAULT_PAGE: u32 = 50;

/// Largest page a caller can get; bigger requests are clamped (common.proto).
pub const MAX_PAGE: u32 = 200;

/// Most candidates one FilterFriends call may check; bounds the query size.
pub const MAX_CANDIDATES: usize = 5000;

/// Longest cursor accepted, so garbage cursors are refused before any decoding work.
const MAX_CURSOR_LEN: usize = 128;

/// Checks a friend request's message length.
pub fn validate_message(message: &str) -> Result<()> {
    if message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(Error::invalid(
            "message",
            format!("message must be at most {MAX_MESSAGE_CHARS} characters"),
        ));
    }
    Ok(())
}

/// The effective page size for a requested `limit`.
pub fn page_limit(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

/// Which side of a request the listing is for. The proto's UNSPECIFIED value is
/// refused, as for every enum of the API.
pub fn parse_direction(value: i32) -> Result<RequestDirection> {
    match RequestDirection::try_from(value) {
        Ok(RequestDirection::Incoming) => Ok(RequestDirection::Incoming),
        Ok(RequestDirection::Outgoing) => Ok(RequestDirection::Outgoing),
        _ => Err(Error::invalid(
            "direction",
            "direction must be incoming or outgoing",
        )),
    }
}

/// A request's lifecycle state as stored (`social.friend_requests.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredStatus {
    /// Waiting for the addressee (expired once older than [`REQUEST_LIFETIME`]).
    Pending = 1,
    /// The addressee accepted; the two are friends.
    Accepted = 2,
    /// The addressee declined.
    Rejected = 3,
    /// Superseded by a newer request to the same user.
    Expired = 4,
}

impl StoredStatus {
    /// The database value.
    pub const fn code(self) -> i16 {
        self as i16
    }

    /// Parses the database value; `None` for values the schema's CHECK excludes.
    pub fn from_code(code: i16) -> Option<Self> {
        match code {
            1 => Some(Self::Pending),
            2 => Some(Self::Accepted),
            3 => Some(Self::Rejected),
            4 => Some(Self::Expired),
            _ => None,
        }
    }
}

/// The status clients see: a pending request past [`REQUEST_LIFETIME`] is expired even
/// though no sweep has rewritten its row.
pub fn effective_status(
    stored: StoredStatus,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> FriendRequestStatus {
    match stored {
        StoredStatus::Pending if is_expired(created_at, now) => FriendRequestStatus::Expired,
        StoredStatus::Pending => FriendRequestStatus::Pending,
        StoredStatus::Accepted => FriendRequestStatus::Accepted,
        StoredStatus::Rejected => FriendRequestStatus::Rejected,
        StoredStatus::Expired => FriendRequestStatus::Expired,
    }
}

/// Whether a request created at `created_at` has outlived [`REQUEST_LIFETIME`].
pub fn is_expired(created_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    age(created_at, now) >= REQUEST_LIFETIME
}

/// Whether a pending request created at `created_at` still blocks a new one.
pub fn blocks_duplicate(created_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    age(created_at, now) < DUPLICATE_WINDOW
}

fn age(created_at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - created_at).to_std().unwrap_or(Duration::ZERO)
}

/// The advisory lock key of an unordered user pair: every change to the relationship
/// of two users (request, accept, reject, delete) runs under it, so "no duplicate
/// pending request" and "accept the opposite request instead" hold under concurrency.
pub fn pair_lock_key(a: Uuid, b: Uuid) -> i64 {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let mixed = low.as_u128() ^ high.as_u128().rotate_left(61);
    let folded = (mixed as u64) ^ ((mixed >> 64) as u64);
    folded as i64
}

/// Position in a friend request listing (newest first): the last row's creation time
/// and id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestCursor {
    /// Creation time of the last request of the previous page.
    pub created_at: DateTime<Utc>,
    /// Its id, which breaks ties between requests created in the same microsecond.
    pub id: Uuid,
}

impl RequestCursor {
    /// The opaque text form.
    pub fn encode(&self) -> String {
        let raw = format!("r{}:{}", self.created_at.timestamp_micros(), self.id);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Parses [`RequestCursor::encode`] output; an empty cursor is the first page.
    pub fn decode(cursor: &str) -> Result<Option<Self>> {
        if cursor.is_empty() {
            return Ok(None);
        }
        let raw = decode_raw(cursor)?;
        let parsed = raw
            .strip_prefix('r')
            .and_then(|rest| rest.split_once(':'))
            .and_then(|(micros, id)| {
                let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
                let id = Uuid::parse_str(id).ok()?;
                Some(Self { created_at, id })
            });
        parsed.map(Some).ok_or_else(bad_cursor)
    }
}

/// Position in a friend listing (ordered by friend id): the last friend id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FriendCursor(pub Uuid);

impl FriendCursor {
    /// The opaque text form.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("f{}", self.0))
    }

    /// Parses [`FriendCursor::encode`] output; an empty cursor is the first page.
    pub fn decode(cursor: &str) -> Result<Option<Self>> {
        if cursor.is_empty() {
            return Ok(None);
        }
        let raw = decode_raw(cursor)?;
        raw.strip_prefix('f')
            .and_then(|id| Uuid::parse_str(id).ok())
            .map(|id| Some(Self(id)))
            .ok_or_else(bad_cursor)
    }
}

fn decode_raw(cursor: &str) -> Result<String> {
    if cursor.len() > MAX_CURSOR_LEN {
        return Err(bad_cursor());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad_cursor())?;
    String::from_utf8(bytes).map_err(|_| bad_cursor())
}

fn bad_cursor() -> Error {
    Error::invalid("cursor", "cursor is not one this server issued")
}

/// Parses, deduplicates (keeping first occurrences) and bounds FilterFriends
/// candidates.
pub fn parse_candidates(candidates: &[String]) -> Result<Vec<Uuid>> {
    if candidates.len() > MAX_CANDIDATES {
        return Err(Error::invalid(
            "candidate_ids",
            format!("at most {MAX_CANDIDATES} candidate ids per call"),
        ));
    }
    parse_unique_ids("candidate_ids", candidates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn candidates_must_be_uuids() {
        let id = "0196f7e4-6f43-7d2a-9c55-3b1f3c2a9e10".to_owned();
        assert_eq!(
            parse_candidates(&[id.clone(), id]).map(|c| c.len()).ok(),
            Some(1)
        );
        for bad in ["", "42", "not-a-uuid", &"a".repeat(10_000)] {
            let error = parse_candidates(&[bad.to_owned()]).expect_err(bad);
            assert_eq!(error.code(), beehive_common::ErrorCode::InvalidArgument);
        }
    }

    #[test]
    fn message_limit_counts_characters_not_bytes() {
        assert!(validate_message(&"蜂".repeat(256)).is_ok());
        assert!(validate_message(&"a".repeat(257)).is_err());
        assert!(validate_message("").is_ok());
    }

    #[test]
    fn page_limits_default_and_clamp() {
        assert_eq!(page_limit(0), 50);
        assert_eq!(page_limit(7), 7);
        assert_eq!(page_limit(10_000), 200);
    }

    #[test]
    fn unspecified_direction_is_refused() {
        assert!(parse_direction(0).is_err());
        assert!(parse_direction(99).is_err());
        assert_eq!(
            parse_direction(RequestDirection::Outgoing as i32).expect("valid"),
            RequestDirection::Outgoing
        );
    }

    #[test]
    fn pending_requests_expire_after_seven_days() {
        let now = Utc::now();
        let fresh = now - TimeDelta::days(6);
        let old = now - TimeDelta::days(7);
        assert_eq!(
            effective_status(StoredStatus::Pending, fresh, now),
            FriendRequestStatus::Pending
        );
        assert_eq!(
            effective_status(StoredStatus::Pending, old, now),
            FriendRequestStatus::Expired
        );
        // A decided request keeps its outcome however old it is.
        assert_eq!(
            effective_status(StoredStatus::Accepted, old, now),
            FriendRequestStatus::Accepted
        );
    }

    #[test]
    fn duplicates_are_blocked_for_a_day() {
        let now = Utc::now();
        assert!(blocks_duplicate(now - TimeDelta::hours(23), now));
        assert!(!blocks_duplicate(now - TimeDelta::hours(24), now));
        // Clock skew that puts creation in the future still blocks.
        assert!(blocks_duplicate(now + TimeDelta::seconds(5), now));
    }

    #[test]
    fn pair_lock_ignores_order_and_separates_pairs() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let c = Uuid::now_v7();
        assert_eq!(pair_lock_key(a, b), pair_lock_key(b, a));
        assert_ne!(pair_lock_key(a, b), pair_lock_key(a, c));
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = RequestCursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time"),
            id: Uuid::now_v7(),
        };
        assert_eq!(
            RequestCursor::decode(&cursor.encode()).expect("valid"),
            Some(cursor)
        );
        let friend = FriendCursor(Uuid::now_v7());
        assert_eq!(
            FriendCursor::decode(&friend.encode()).expect("valid"),
            Some(friend)
        );
        assert_eq!(RequestCursor::decode("").expect("empty"), None);
        for bad in ["!!", "Zm9v", &friend.encode(), &"A".repeat(500)] {
            assert!(RequestCursor::decode(bad).is_err(), "{bad}");
        }
        assert!(FriendCursor::decode(&cursor.encode()).is_err());
    }

    #[test]
    fn candidates_are_deduplicated_and_bounded() {
        let a = Uuid::now_v7().to_string();
        let b = Uuid::now_v7().to_string();
        let parsed = parse_candidates(&[a.clone(), b.clone(), a.clone()]).expect("valid");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].to_string(), a);
        assert!(parse_candidates(&["x".to_owned()]).is_err());
        assert!(parse_candidates(&vec![a; MAX_CANDIDATES + 1]).is_err());
    }
}
