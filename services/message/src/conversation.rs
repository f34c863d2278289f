//! The rules of conversations and messages, as plain functions without I/O: input
//! limits, who may do what to a group, which slice of history a member may see, how a
//! sync call is cut into per-conversation windows, and list cursors.

use std::collections::HashMap;

use beehive_common::Error;
use beehive_common::id::parse_id;
use beehive_common::id::parse_unique_ids;
use beehive_proto::v1::MessageType;
use uuid::Uuid;

/// API.md: group size <= 2000 members (the owner included).
pub const MAX_GROUP_MEMBERS: usize = 2000;
/// Longest group name, in characters.
pub const MAX_GROUP_NAME_CHARS: usize = 64;
/// Longest avatar reference (a URL or file id), in characters.
pub const MAX_AVATAR_CHARS: usize = 1024;
pub use beehive_common::limits::{MAX_CLIENT_MSG_ID_CHARS, MAX_CONTENT_BYTES};
/// Longest device id, in bytes.
pub const MAX_DEVICE_ID_BYTES: usize = 128;
/// Default page size of list calls.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page of list calls.
pub const MAX_LIMIT: u32 = 200;
/// Most messages one sync call returns (API.md).
pub const MAX_SYNC_LIMIT: u32 = 1000;
/// Most cursors a sync request may carry: one per conversation of a very busy user.
pub const MAX_SYNC_CURSORS: usize = 20_000;
/// Most candidates one FilterConversationPeers call may check.
pub const MAX_PEER_CANDIDATES: usize = 5_000;
/// Longest list cursor accepted, in bytes.
const MAX_CURSOR_BYTES: usize = 128;

/// Parses a list of ids, rejecting more than `max` and dropping duplicates while
/// keeping the first-seen order (member order decides ownership handover).
pub fn parse_ids(field: &str, values: &[String], max: usize) -> Result<Vec<Uuid>, Error> {
    if values.len() > max {
        return Err(Error::invalid(
            field,
            format!("{field} may hold at most {max} ids"),
        ));
    }
    parse_unique_ids(field, values)
}

/// A group name: 1-64 characters after trimming.
pub fn group_name(name: &str) -> Result<String, Error> {
    let trimmed = name.trim();
    let chars = trimmed.chars().count();
    if chars == 0 {
        return Err(Error::invalid("name", "name must not be empty"));
    }
    if chars > MAX_GROUP_NAME_CHARS {
        return Err(Error::invalid(
            "name",
            format!("name must be at most {MAX_GROUP_NAME_CHARS} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(Error::invalid(
            "name",
            "name must not contain control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

/// An avatar reference: at most 1024 characters, may be empty (removes it).
pub fn avatar(avatar: &str) -> Result<String, Error> {
    if avatar.chars().any(char::is_control) {
        return Err(Error::invalid(
            "avatar",
            "avatar must not contain control characters",
        ));
    }
    if avatar.chars().count() > MAX_AVATAR_CHARS {
        return Err(Error::invalid(
            "avatar",
            format!("avatar must be at most {MAX_AVATAR_CHARS} characters"),
        ));
    }
    Ok(avatar.trim().to_owned())
}

/// The members of a new group: the owner first, then the others in request order
/// without duplicates, at most [`MAX_GROUP_MEMBERS`] in all.
pub fn new_group_members(owner: Uuid, others: &[Uuid]) -> Result<Vec<Uuid>, Error> {
    let mut members = Vec::with_capacity(others.len() + 1);
    members.push(owner);
    for id in others {
        if !members.contains(id) {
            members.push(*id);
        }
    }
    if members.len() > MAX_GROUP_MEMBERS {
        return Err(Error::invalid(
            "member_ids",
            format!("a group has at most {MAX_GROUP_MEMBERS} members"),
        ));
    }
    Ok(members)
}

/// A validated message to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    pub sender_id: Uuid,
    pub client_msg_id: String,
    pub msg_type: MessageType,
    pub content: String,
    pub file_id: Option<Uuid>,
    pub device_id: String,
}

/// Validates the parts of a send that do not depend on stored state.
pub fn new_message(
    sender_id: Uuid,
    client_msg_id: String,
    msg_type: i32,
    content: String,
    file_id: Option<&str>,
    device_id: String,
) -> Result<NewMessage, Error> {
    beehive_common::limits::check_client_msg_id(&client_msg_id)?;
    let msg_type = match MessageType::try_from(msg_type) {
        Ok(MessageType::Unspecified) | Err(_) => {
            return Err(Error::invalid(
                "msg_type",
                "msg_type must be text, image, voice or file",
            ));
        }
        Ok(t) => t,
    };
    if content.len() > MAX_CONTENT_BYTES {
        return Err(Error::PayloadTooLarge(format!(
            "content must be at most {MAX_CONTENT_BYTES} bytes"
        )));
    }
    // PostgreSQL text cannot hold NUL; refuse it here rather than fail in the database.
    if content.contains('\0') {
        return Err(Error::invalid(
            "content",
            "content must not contain NUL characters",
        ));
    }
    let file_id = match file_id {
        Some(f) if !f.is_empty() => Some(parse_id("file_id", f)?),
        _ => None,
    };
    if msg_type == MessageType::Text {
        if content.is_empty() {
            return Err(Error::invalid("content", "content must not be empty"));
        }
    } else if file_id.is_none() {
        return Err(Error::invalid(
            "file_id",
            "messages other than text need a file_id",
        ));
    }
    if device_id.len() > MAX_DEVICE_ID_BYTES || device_id.contains('\0') {
        return Err(Error::invalid(
            "device_id",
            format!("device_id must be at most {MAX_DEVICE_ID_BYTES} bytes, without NUL"),
        ));
    }
    Ok(NewMessage {
        sender_id,
        client_msg_id,
        msg_type,
        content,
        file_id,
        device_id,
    })
}

/// The unordered pair of a direct conversation, smaller id first.
pub fn direct_pair(a: Uuid, b: Uuid) -> Result<(Uuid, Uuid), Error> {
    if a == b {
        return Err(Error::invalid(
            "to_user_id",
            "cannot send a direct message to yourself",
        ));
    }
    Ok(if a < b { (a, b) } else { (b, a) })
}

/// Page size of list calls: 0 means the default, above the maximum is clamped.
pub fn page_limit(limit: u32) -> u32 {
    match limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

/// Which part of a conversation's history a ListMessages call wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// The first messages after this seq.
    After(u64),
    /// The last messages before this seq.
    Before(u64),
    /// The newest messages.
    Latest,
}

/// A history query as the store runs it: seqs in `(after, before)`, either the first
/// or the last `limit` of them, returned ascending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryWindow {
    /// Exclusive lower bound.
    pub after: i64,
    /// Exclusive upper bound.
    pub before: i64,
    pub limit: i64,
    /// Take from the newest end instead of the oldest.
    pub newest_first: bool,
}

/// The window for `anchor`, never reaching at or below `join_seq`: a member added later
/// sees only messages sent after it joined.
pub fn history_window(anchor: Anchor, join_seq: u64, limit: u32) -> HistoryWindow {
    let limit = i64::from(page_limit(limit));
    let floor = to_i64(join_seq);
    match anchor {
        Anchor::After(after) => HistoryWindow {
            after: to_i64(after).max(floor),
            before: i64::MAX,
            limit,
            newest_first: false,
        },
        Anchor::Before(before) => HistoryWindow {
            after: floor,
            before: to_i64(before),
            limit,
            newest_first: true,
        },
        Anchor::Latest => HistoryWindow {
            after: floor,
            before: i64::MAX,
            limit,
            newest_first: true,
        },
    }
}

/// Seqs from clients are u64; the database holds i64. Anything above i64::MAX is far
/// beyond every real seq, so saturating keeps the meaning ("after everything").
pub fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Database seqs are never negative; a negative one would be a bug, shown as 0.
pub fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// One conversation of the syncing user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncMembership {
    pub conversation_id: Uuid,
    pub join_seq: u64,
    pub read_seq: u64,
    pub last_seq: u64,
}

/// The messages one sync call fetches from one conversation: seqs `after+1 ..= after+take`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncWindow {
    pub conversation_id: Uuid,
    pub after: u64,
    pub take: u64,
}

/// What a sync call fetches and answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncPlan {
    /// Non-empty windows, in the order their messages are returned.
    pub windows: Vec<SyncWindow>,
    /// The cursor of every conversation of the user after this call.
    pub cursors: HashMap<Uuid, u64>,
    pub has_more: bool,
}

/// Cuts a sync into windows. A conversation starts after the client's cursor, or after
/// the member's read_seq when the client sent none, and never at or below the join seq.
/// Seqs are gap-free, so `last_seq - start` is exactly the number of missing messages
/// and the plan is exact without counting rows. Conversations are served in the order
/// given (the caller passes the most recently active first) until `limit` is used.
pub fn plan_sync(
    memberships: &[SyncMembership],
    cursors: &HashMap<Uuid, u64>,
    limit: u32,
) -> SyncPlan {
    let mut budget = u64::from(match limit {
        0 => MAX_SYNC_LIMIT,
        n => n.min(MAX_SYNC_LIMIT),
    });
    let mut plan = SyncPlan {
        windows: Vec::new(),
        cursors: HashMap::with_capacity(memberships.len()),
        has_more: false,
    };
    for m in memberships {
        let requested = cursors
            .get(&m.conversation_id)
            .copied()
            .unwrap_or(m.read_seq);
        let start = requested.max(m.join_seq).min(m.last_seq.max(m.join_seq));
        let missing = m.last_seq.saturating_sub(start);
        let take = missing.min(budget);
        budget -= take;
        if take > 0 {
            plan.windows.push(SyncWindow {
                conversation_id: m.conversation_id,
                after: start,
                take,
            });
        }
        if take < missing {
            plan.has_more = true;
        }
        plan.cursors.insert(m.conversation_id, start + take);
    }
    plan
}

/// Most message bytes one sync answer carries, so a response stays well inside gRPC's
/// default 4 MiB message limit even at 1000 messages of 16 KiB.
pub const MAX_SYNC_BYTES: usize = 3 * 1024 * 1024;

/// What a message costs in a sync answer besides its content, counted against
/// [`MAX_SYNC_BYTES`]: three UUIDs as text (id, conversation, sender, 36 bytes each),
/// a client_msg_id (up to 64), seq, type, timestamp and protobuf field tags. Without it,
/// a thousand empty messages would count as zero bytes.
pub const MESSAGE_OVERHEAD_BYTES: usize = 200;

/// Default page of the history stream (ListHistory).
pub const DEFAULT_HISTORY_LIMIT: u32 = 500;
/// Largest page of the history stream.
pub const MAX_HISTORY_LIMIT: u32 = 1000;

/// The page size of a history request: 0 is the default, above the maximum is clamped.
pub fn history_limit(limit: u32) -> u32 {
    if limit == 0 {
        DEFAULT_HISTORY_LIMIT
    } else {
        limit.min(MAX_HISTORY_LIMIT)
    }
}

/// How many of a history page's messages (content sizes in order) fit in `max_bytes`
/// as [`sync_size`] counts them, always at least one of a non-empty page.
pub fn history_cut(content_sizes: &[usize], max_bytes: usize) -> usize {
    let mut total = 0usize;
    for (index, size) in content_sizes.iter().enumerate() {
        total = total.saturating_add(sync_size(*size));
        if total > max_bytes && index > 0 {
            return index;
        }
    }
    content_sizes.len()
}

/// A message's size as [`cut_sync`] counts it.
pub fn sync_size(content_bytes: usize) -> usize {
    content_bytes + MESSAGE_OVERHEAD_BYTES
}

/// Cuts a sync answer after the first messages whose sizes (in answer order) add up
/// to `max_bytes` (always keeping at least one), lowering the cursors of the
/// conversations cut short. `messages` holds (conversation, seq, size) in answer
/// order; returns how many to keep and whether anything was cut.
pub fn cut_sync(
    messages: &[(Uuid, u64, usize)],
    cursors: &mut HashMap<Uuid, u64>,
    max_bytes: usize,
) -> (usize, bool) {
    let mut total = 0usize;
    let mut keep = messages.len();
    for (index, (_, _, size)) in messages.iter().enumerate() {
        total = total.saturating_add(*size);
        if total > max_bytes && index > 0 {
            keep = index;
            break;
        }
    }
    if keep == messages.len() {
        return (keep, false);
    }
    for (conversation, seq, _) in &messages[keep..] {
        if let Some(cursor) = cursors.get_mut(conversation) {
            // Messages of a conversation are contiguous and ascending: the first cut
            // one decides.
            *cursor = (*cursor).min(seq.saturating_sub(1));
        }
    }
    (keep, true)
}

/// Whether `actor` may remove `member` from a group owned by `owner`: the owner
/// removes anyone, everybody else only itself.
pub fn may_remove(actor: Uuid, owner: Option<Uuid>, member: Uuid) -> bool {
    actor == member || owner == Some(actor)
}

/// A position in the conversation list: the sort time (microseconds since the epoch)
/// and the id of the last conversation returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListCursor {
    pub sort_at_micros: i64,
    pub id: Uuid,
}

impl ListCursor {
    /// The opaque cursor string.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.sort_at_micros, self.id.simple())
    }

    /// Parses [`ListCursor::encode`]; anything else is `invalid_argument`.
    pub fn decode(text: &str) -> Result<Option<Self>, Error> {
        if text.is_empty() {
            return Ok(None);
        }
        let invalid = || Error::invalid("cursor", "cursor is not valid");
        if text.len() > MAX_CURSOR_BYTES {
            return Err(invalid());
        }
        let (micros, id) = text.split_once('.').ok_or_else(invalid)?;
        let sort_at_micros = micros.parse::<i64>().map_err(|_| invalid())?;
        let id = Uuid::try_parse(id).map_err(|_| invalid())?;
        Ok(Some(Self { sort_at_micros, id }))
    }
}

/// Sends per SendMessages call (the sender's largest statement batch as well).
pub const MAX_SEND_BATCH: usize = 256;

/// The relay partition of a conversation. Fixed forever: rows of one conversation must
/// always land in the same partition, or two relays could publish them out of order.
pub const OUTBOX_PARTITIONS: u16 = 16;

/// `hash(conversation_id) mod OUTBOX_PARTITIONS`. UUIDv7 ids start with a timestamp,
/// so the random low bits decide.
pub fn outbox_partition(conversation_id: Uuid) -> i16 {
    let low = conversation_id.as_u128() as u64;
    let mixed = low.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    (mixed % u64::from(OUTBOX_PARTITIONS)) as i16
}

#[cfg(test)]
mod tests {

    #[test]
    fn history_pages_are_bounded_by_count_and_bytes() {
        assert_eq!(history_limit(0), DEFAULT_HISTORY_LIMIT);
        assert_eq!(history_limit(7), 7);
        assert_eq!(history_limit(u32::MAX), MAX_HISTORY_LIMIT);
        assert_eq!(history_cut(&[], 1000), 0);
        // One oversized message still goes out alone.
        assert_eq!(history_cut(&[5000, 10], 1000), 1);
        assert_eq!(history_cut(&[100, 100, 100], 3 * sync_size(100)), 3);
        assert_eq!(history_cut(&[100, 100, 100], 2 * sync_size(100) + 1), 2);
    }

    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn ids_are_validated_and_deduplicated_in_order() {
        assert!(parse_id("x", "").is_err());
        assert!(parse_id("x", "not-a-uuid").is_err());
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let ids =
            parse_ids("ids", &[b.to_string(), a.to_string(), b.to_string()], 10).expect("valid");
        assert_eq!(ids, vec![b, a]);
        assert!(parse_ids("ids", &vec![a.to_string(); 3], 2).is_err());
    }

    #[test]
    fn group_names_are_one_to_64_characters() {
        assert!(group_name("").is_err());
        assert!(group_name("   ").is_err());
        assert_eq!(group_name(" team ").expect("ok"), "team");
        assert!(group_name(&"é".repeat(64)).is_ok());
        assert!(group_name(&"é".repeat(65)).is_err());
        assert!(group_name("a\u{0}b").is_err());
    }

    #[test]
    fn group_members_put_the_owner_first_and_cap_the_size() {
        let owner = id(1);
        let members = new_group_members(owner, &[id(3), owner, id(2), id(3)]).expect("ok");
        assert_eq!(members, vec![owner, id(3), id(2)]);
        let many: Vec<Uuid> = (2..=2000).map(id).collect();
        assert_eq!(new_group_members(owner, &many).expect("2000").len(), 2000);
        let too_many: Vec<Uuid> = (2..=2001).map(id).collect();
        assert!(new_group_members(owner, &too_many).is_err());
    }

    #[test]
    fn messages_are_validated() {
        let sender = id(1);
        let ok = |t: MessageType, content: &str, file: Option<&str>| {
            new_message(
                sender,
                "c1".into(),
                t as i32,
                content.into(),
                file,
                "dev".into(),
            )
        };
        assert!(ok(MessageType::Text, "hi", None).is_ok());
        assert!(ok(MessageType::Text, "", None).is_err());
        assert!(ok(MessageType::Unspecified, "hi", None).is_err());
        assert!(new_message(sender, "c".into(), 99, "hi".into(), None, String::new()).is_err());
        let file = Uuid::now_v7().to_string();
        assert_eq!(
            ok(MessageType::Image, "", None)
                .expect_err("needs file")
                .code(),
            beehive_common::ErrorCode::InvalidArgument
        );
        assert!(ok(MessageType::Image, "", Some(&file)).is_ok());
        assert!(ok(MessageType::File, "", Some("nope")).is_err());
        let at_limit = "x".repeat(MAX_CONTENT_BYTES);
        assert!(ok(MessageType::Text, &at_limit, None).is_ok());
        let over = "x".repeat(MAX_CONTENT_BYTES + 1);
        assert_eq!(
            ok(MessageType::Text, &over, None).expect_err("big").code(),
            beehive_common::ErrorCode::PayloadTooLarge
        );
        assert!(ok(MessageType::Text, "a\0b", None).is_err());
        assert!(ok(MessageType::Text, "line\nbreak\ttab", None).is_ok());
        assert!(new_message(sender, "a\nb".into(), 1, "hi".into(), None, String::new()).is_err());
        assert!(new_message(sender, "c".into(), 1, "hi".into(), None, "d\0".into()).is_err());
        assert!(avatar("x\0").is_err());
        let long_id = "i".repeat(65);
        assert!(new_message(sender, long_id, 1, "hi".into(), None, String::new()).is_err());
        assert!(new_message(sender, String::new(), 1, "hi".into(), None, String::new()).is_err());
    }

    #[test]
    fn direct_pairs_are_unordered() {
        assert_eq!(direct_pair(id(2), id(1)).expect("ok"), (id(1), id(2)));
        assert_eq!(direct_pair(id(1), id(2)).expect("ok"), (id(1), id(2)));
        assert!(direct_pair(id(1), id(1)).is_err());
    }

    #[test]
    fn history_windows_never_reach_below_the_join_seq() {
        assert_eq!(
            history_window(Anchor::After(3), 10, 0),
            HistoryWindow {
                after: 10,
                before: i64::MAX,
                limit: 50,
                newest_first: false
            }
        );
        assert_eq!(
            history_window(Anchor::After(30), 10, 500),
            HistoryWindow {
                after: 30,
                before: i64::MAX,
                limit: 200,
                newest_first: false
            }
        );
        let before = history_window(Anchor::Before(20), 5, 10);
        assert_eq!(
            (before.after, before.before, before.newest_first),
            (5, 20, true)
        );
        let latest = history_window(Anchor::Latest, 0, 7);
        assert_eq!(
            (latest.after, latest.limit, latest.newest_first),
            (0, 7, true)
        );
        assert_eq!(
            history_window(Anchor::After(u64::MAX), 0, 1).after,
            i64::MAX
        );
    }

    #[test]
    fn sync_plans_respect_cursors_join_seq_and_the_cap() {
        let a = SyncMembership {
            conversation_id: id(1),
            join_seq: 0,
            read_seq: 4,
            last_seq: 10,
        };
        let b = SyncMembership {
            conversation_id: id(2),
            join_seq: 20,
            read_seq: 20,
            last_seq: 25,
        };
        let c = SyncMembership {
            conversation_id: id(3),
            join_seq: 0,
            read_seq: 7,
            last_seq: 7,
        };
        // No cursors: from read_seq.
        let plan = plan_sync(&[a, b, c], &HashMap::new(), 0);
        assert_eq!(
            plan.windows,
            vec![
                SyncWindow {
                    conversation_id: id(1),
                    after: 4,
                    take: 6
                },
                SyncWindow {
                    conversation_id: id(2),
                    after: 20,
                    take: 5
                }
            ]
        );
        assert!(!plan.has_more);
        assert_eq!(plan.cursors[&id(1)], 10);
        assert_eq!(plan.cursors[&id(2)], 25);
        assert_eq!(plan.cursors[&id(3)], 7);

        // A cursor below the join seq is raised; one above last_seq is lowered.
        let cursors = HashMap::from([(id(1), 0), (id(2), 3), (id(3), 99)]);
        let plan = plan_sync(&[a, b, c], &cursors, 8);
        assert_eq!(
            plan.windows,
            vec![SyncWindow {
                conversation_id: id(1),
                after: 0,
                take: 8
            }]
        );
        assert!(plan.has_more);
        assert_eq!(plan.cursors[&id(1)], 8);
        assert_eq!(plan.cursors[&id(2)], 20);
        assert_eq!(plan.cursors[&id(3)], 7);

        // The cap is 1000 whatever is asked.
        let huge = SyncMembership {
            conversation_id: id(9),
            join_seq: 0,
            read_seq: 0,
            last_seq: 5000,
        };
        let plan = plan_sync(&[huge], &HashMap::new(), 100_000);
        assert_eq!(plan.windows[0].take, 1000);
        assert!(plan.has_more);
    }

    #[test]
    fn sync_answers_are_cut_by_size_with_consistent_cursors() {
        let (a, b) = (id(1), id(2));
        let messages = [(a, 5, 100), (a, 6, 100), (b, 1, 100), (b, 2, 100)];
        let mut cursors = HashMap::from([(a, 6), (b, 2)]);
        assert_eq!(cut_sync(&messages, &mut cursors, 1000), (4, false));
        assert_eq!(cut_sync(&messages, &mut cursors, 250), (2, true));
        assert_eq!(cursors, HashMap::from([(a, 6), (b, 0)]));
        let mut cursors = HashMap::from([(a, 6), (b, 2)]);
        assert_eq!(cut_sync(&messages, &mut cursors, 150), (1, true));
        assert_eq!(cursors, HashMap::from([(a, 5), (b, 0)]));
        // One message bigger than the cap still goes out, alone.
        let mut cursors = HashMap::from([(a, 6), (b, 2)]);
        assert_eq!(cut_sync(&messages, &mut cursors, 10), (1, true));
    }

    #[test]
    fn only_the_owner_removes_others() {
        let (owner, m, other) = (id(1), id(2), id(3));
        assert!(may_remove(owner, Some(owner), m));
        assert!(may_remove(m, Some(owner), m));
        assert!(!may_remove(m, Some(owner), other));
        assert!(may_remove(owner, Some(owner), owner));
    }

    #[test]
    fn list_cursors_round_trip_and_reject_garbage() {
        let cursor = ListCursor {
            sort_at_micros: 1_700_000_000_123_456,
            id: Uuid::now_v7(),
        };
        assert_eq!(
            ListCursor::decode(&cursor.encode()).expect("ok"),
            Some(cursor)
        );
        assert_eq!(ListCursor::decode("").expect("ok"), None);
        assert!(ListCursor::decode("x.y").is_err());
        assert!(ListCursor::decode("12").is_err());
        assert!(ListCursor::decode(&"1".repeat(200)).is_err());
    }

    #[test]
    fn partitions_spread_and_are_stable() {
        let mut seen = [0u32; OUTBOX_PARTITIONS as usize];
        for _ in 0..1600 {
            let p = outbox_partition(Uuid::now_v7());
            assert!((0..OUTBOX_PARTITIONS as i16).contains(&p));
            seen[p as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 30), "{seen:?}");
        let fixed = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(outbox_partition(fixed), outbox_partition(fixed));
    }
}
