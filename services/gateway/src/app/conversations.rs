//! Reading a conversation's messages by cursor and moving read state: the use cases
//! of the WebSocket `sync`, `delivered`, `read` and `typing` and of
//! `POST /conversations/{id}/read`.

use std::collections::HashMap;

use beehive_common::Error;
use beehive_proto::v1 as pb;

use super::limits::SYNC_LIMIT;
use super::validate::uuid_field;

use crate::clients::Clients;

/// A validated `sync`: canonical conversation ids and a limit within API.md's cap.
#[derive(Debug, Clone)]
pub struct SyncQuery {
    pub cursors: HashMap<String, u64>,
    pub limit: u32,
}

/// Validates a `sync`: canonical keys (so the service finds them) and a limit of
/// 1-[`SYNC_LIMIT`] (0 or none: the cap).
pub fn sync_query(cursors: HashMap<String, u64>, limit: Option<u32>) -> Result<SyncQuery, Error> {
    let mut canonical = HashMap::with_capacity(cursors.len());
    for (conversation, seq) in cursors {
        // A 1 MiB frame bounds the count.
        canonical.insert(uuid_field("cursors", &conversation)?, seq);
    }
    let limit = match limit {
        None | Some(0) => SYNC_LIMIT,
        Some(n) => n.min(SYNC_LIMIT),
    };
    Ok(SyncQuery {
        cursors: canonical,
        limit,
    })
}

/// Every message of `user_id`'s conversations after the cursors, at most the query's
/// limit (never more than API.md's cap, whatever the service returned).
pub async fn sync(
    clients: &Clients,
    user_id: &str,
    query: SyncQuery,
) -> Result<pb::SyncResponse, Error> {
    let mut response = clients
        .sync(pb::SyncRequest {
            user_id: user_id.to_owned(),
            cursors: query.cursors,
            limit: query.limit,
        })
        .await?;
    if response.messages.len() > SYNC_LIMIT as usize {
        response.messages.truncate(SYNC_LIMIT as usize);
        response.has_more = true;
    }
    Ok(response)
}

/// Which of a member's positions a mark moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// Delivered up to a seq (the WebSocket `delivered`).
    Delivered,
    /// Read up to a seq (the WebSocket `read`, `POST /conversations/{id}/read`).
    Read,
}

/// Moves `user_id`'s delivered or read position up to `seq` (never down); other
/// members get a `receipt` frame.
pub async fn mark(
    clients: &Clients,
    user_id: &str,
    kind: MarkKind,
    conversation_id: String,
    seq: u64,
) -> Result<(), Error> {
    let request = pb::MarkRequest {
        user_id: user_id.to_owned(),
        conversation_id,
        seq,
    };
    match kind {
        MarkKind::Delivered => clients.mark_delivered(request).await.map(|_| ()),
        MarkKind::Read => clients.mark_read(request).await.map(|_| ()),
    }
}

/// Tells the other online members that `user_id` is typing.
pub async fn typing(
    clients: &Clients,
    user_id: &str,
    conversation_id: String,
) -> Result<(), Error> {
    clients
        .notify_typing(pb::NotifyTypingRequest {
            user_id: user_id.to_owned(),
            conversation_id,
        })
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONV: &str = "0190F4A2-7C3E-7000-8000-000000000001";

    #[test]
    fn sync_defaults_caps_and_canonical_keys() {
        let query = sync_query(HashMap::new(), None).expect("valid");
        assert!(query.cursors.is_empty());
        assert_eq!(query.limit, SYNC_LIMIT);
        assert_eq!(
            sync_query(HashMap::new(), Some(0)).expect("valid").limit,
            SYNC_LIMIT
        );
        let query = sync_query([(CONV.to_owned(), 4)].into(), Some(5000)).expect("valid");
        assert_eq!(query.cursors.get(&CONV.to_lowercase()), Some(&4));
        assert_eq!(query.limit, SYNC_LIMIT);
        assert!(sync_query([("not-a-uuid".to_owned(), 1)].into(), None).is_err());
    }
}
