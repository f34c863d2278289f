//! API.md's JSON shapes of the gRPC types that travel to clients in frames.
//!
//! The views borrow the protobuf values instead of copying them, because a pushed
//! event is serialised once and the result shared by every recipient socket.

use beehive_proto::v1 as pb;
use serde::Serialize;

use beehive_common::time::to_rfc3339 as timestamp;

use super::msg_type_name;

/// `direct|group` of a conversation kind.
pub fn kind_name(value: i32) -> &'static str {
    match pb::ConversationKind::try_from(value) {
        Ok(pb::ConversationKind::Group) => "group",
        _ => "direct",
    }
}

/// `pending|accepted|rejected|expired` of a friend request status.
pub fn request_status_name(value: i32) -> &'static str {
    match pb::FriendRequestStatus::try_from(value) {
        Ok(pb::FriendRequestStatus::Accepted) => "accepted",
        Ok(pb::FriendRequestStatus::Rejected) => "rejected",
        Ok(pb::FriendRequestStatus::Expired) => "expired",
        _ => "pending",
    }
}

/// `kicked.reason` of a revocation reason.
pub fn revocation_reason_name(reason: pb::RevocationReason) -> &'static str {
    match reason {
        pb::RevocationReason::Logout => "logout",
        pb::RevocationReason::PasswordChanged => "password_changed",
        _ => "session_revoked",
    }
}

/// API.md's `message` object.
#[derive(Debug, Serialize)]
pub struct MessageView<'a> {
    pub id: &'a str,
    pub conversation_id: &'a str,
    pub seq: u64,
    pub sender_id: &'a str,
    pub client_msg_id: &'a str,
    pub msg_type: &'static str,
    pub content: &'a str,
    pub file_id: Option<&'a str>,
    pub created_at: Option<String>,
}

impl<'a> From<&'a pb::Message> for MessageView<'a> {
    fn from(m: &'a pb::Message) -> Self {
        Self {
            id: &m.id,
            conversation_id: &m.conversation_id,
            seq: m.seq,
            sender_id: &m.sender_id,
            client_msg_id: &m.client_msg_id,
            msg_type: msg_type_name(m.msg_type),
            content: &m.content,
            file_id: m.file_id.as_deref(),
            created_at: timestamp(m.created_at.as_ref()),
        }
    }
}

/// API.md's `conversation` object (read state is the viewer's).
#[derive(Debug, Serialize)]
pub struct ConversationView<'a> {
    pub id: &'a str,
    pub kind: &'static str,
    pub name: &'a str,
    pub avatar: &'a str,
    pub owner_id: Option<&'a str>,
    pub member_ids: &'a [String],
    pub last_seq: u64,
    pub last_message: Option<MessageView<'a>>,
    pub unread_count: u64,
    pub read_seq: u64,
    pub updated_at: Option<String>,
}

impl<'a> From<&'a pb::Conversation> for ConversationView<'a> {
    fn from(c: &'a pb::Conversation) -> Self {
        Self {
            id: &c.id,
            kind: kind_name(c.kind),
            name: &c.name,
            avatar: &c.avatar,
            owner_id: c.owner_id.as_deref(),
            member_ids: &c.member_ids,
            last_seq: c.last_seq,
            last_message: c.last_message.as_ref().map(MessageView::from),
            unread_count: c.unread_count,
            read_seq: c.read_seq,
            updated_at: timestamp(c.updated_at.as_ref()),
        }
    }
}

/// API.md's friend `request` object.
#[derive(Debug, Serialize)]
pub struct FriendRequestView<'a> {
    pub id: &'a str,
    pub from_user_id: &'a str,
    pub to_user_id: &'a str,
    pub message: &'a str,
    pub status: &'static str,
    pub created_at: Option<String>,
}

impl<'a> From<&'a pb::FriendRequest> for FriendRequestView<'a> {
    fn from(r: &'a pb::FriendRequest) -> Self {
        Self {
            id: &r.id,
            from_user_id: &r.from_user_id,
            to_user_id: &r.to_user_id,
            message: &r.message,
            status: request_status_name(r.status),
            created_at: timestamp(r.created_at.as_ref()),
        }
    }
}

/// API.md's `receipt` frame data.
#[derive(Debug, Serialize)]
pub struct ReceiptView<'a> {
    pub conversation_id: &'a str,
    pub user_id: &'a str,
    pub delivered_seq: u64,
    pub read_seq: u64,
}

impl<'a> From<&'a pb::Receipt> for ReceiptView<'a> {
    fn from(r: &'a pb::Receipt) -> Self {
        Self {
            conversation_id: &r.conversation_id,
            user_id: &r.user_id,
            delivered_seq: r.delivered_seq,
            read_seq: r.read_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_renders_api_shape() {
        let m = pb::Message {
            id: "m1".into(),
            conversation_id: "c1".into(),
            seq: 3,
            sender_id: "u1".into(),
            client_msg_id: "k1".into(),
            msg_type: pb::MessageType::Image as i32,
            content: "hi".into(),
            file_id: Some("f1".into()),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_000,
            }),
        };
        let json = serde_json::to_value(MessageView::from(&m)).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "id": "m1", "conversation_id": "c1", "seq": 3, "sender_id": "u1",
                "client_msg_id": "k1", "msg_type": "image", "content": "hi",
                "file_id": "f1", "created_at": "2023-11-14T22:13:20.123456Z"
            })
        );
    }
}
