//! API.md's JSON objects shared by several resources, their OpenAPI schemas, and the
//! conversions from the gRPC types.

use beehive_common::Error;
use beehive_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::{kind_name, request_status_name};
use beehive_common::time::to_rfc3339 as timestamp;

use super::msg_type_name;
use crate::app::messages::SendInput;

/// API.md's `user`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub username: String,
    pub nickname: String,
    pub avatar: String,
    pub description: String,
    /// Only present on the caller's own user (null when it has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable)]
    pub email: Option<Option<String>>,
    /// RFC 3339, UTC.
    pub created_at: Option<String>,
}

impl User {
    /// Renders a user for `viewer_id`: the `email` key appears only on one's own user.
    pub fn from_pb(user: pb::User, viewer_id: &str) -> Self {
        let own = user.id == viewer_id;
        Self {
            created_at: timestamp(user.created_at.as_ref()),
            email: own.then_some(user.email),
            id: user.id,
            username: user.username,
            nickname: user.nickname,
            avatar: user.avatar,
            description: user.description,
        }
    }

    /// The user of a response that must carry one.
    pub fn required(user: Option<pb::User>, viewer_id: &str) -> Result<Self, Error> {
        user.map(|u| Self::from_pb(u, viewer_id))
            .ok_or_else(|| Error::internal("service answered without a user"))
    }
}

/// `{user}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    pub user: User,
}

/// `{users: [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsersResponse {
    pub users: Vec<User>,
    /// Present on searches: cursor of the next page, null at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable)]
    pub next_cursor: Option<Option<String>>,
}

/// API.md's `message`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    /// Position in the conversation: starts at 1, no gaps.
    pub seq: u64,
    pub sender_id: String,
    pub client_msg_id: String,
    /// `text`, `image`, `voice` or `file`.
    pub msg_type: &'static str,
    pub content: String,
    pub file_id: Option<String>,
    pub created_at: Option<String>,
}

impl From<pb::Message> for Message {
    fn from(m: pb::Message) -> Self {
        Self {
            created_at: timestamp(m.created_at.as_ref()),
            msg_type: msg_type_name(m.msg_type),
            id: m.id,
            conversation_id: m.conversation_id,
            seq: m.seq,
            sender_id: m.sender_id,
            client_msg_id: m.client_msg_id,
            content: m.content,
            file_id: m.file_id,
        }
    }
}

/// API.md's `conversation`, as the caller sees it (read state is the caller's).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Conversation {
    pub id: String,
    /// `direct` or `group`.
    pub kind: &'static str,
    pub name: String,
    pub avatar: String,
    /// Groups only.
    pub owner_id: Option<String>,
    pub member_ids: Vec<String>,
    pub last_seq: u64,
    pub last_message: Option<Message>,
    /// `last_seq - read_seq` for the caller.
    pub unread_count: u64,
    pub read_seq: u64,
    pub updated_at: Option<String>,
}

impl From<pb::Conversation> for Conversation {
    fn from(c: pb::Conversation) -> Self {
        Self {
            kind: kind_name(c.kind),
            updated_at: timestamp(c.updated_at.as_ref()),
            id: c.id,
            name: c.name,
            avatar: c.avatar,
            owner_id: c.owner_id,
            member_ids: c.member_ids,
            last_seq: c.last_seq,
            last_message: c.last_message.map(Message::from),
            unread_count: c.unread_count,
            read_seq: c.read_seq,
        }
    }
}

impl Conversation {
    /// The conversation of a response that must carry one.
    pub fn required(conversation: Option<pb::Conversation>) -> Result<Self, Error> {
        conversation
            .map(Self::from)
            .ok_or_else(|| Error::internal("message service answered without a conversation"))
    }
}

/// `{conversation}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationResponse {
    pub conversation: Conversation,
}

/// API.md's friend `request`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FriendRequest {
    pub id: String,
    pub from_user_id: String,
    pub to_user_id: String,
    pub message: String,
    /// `pending`, `accepted`, `rejected` or `expired`.
    pub status: &'static str,
    pub created_at: Option<String>,
}

impl From<pb::FriendRequest> for FriendRequest {
    fn from(r: pb::FriendRequest) -> Self {
        Self {
            status: request_status_name(r.status),
            created_at: timestamp(r.created_at.as_ref()),
            id: r.id,
            from_user_id: r.from_user_id,
            to_user_id: r.to_user_id,
            message: r.message,
        }
    }
}

// Also the data of the WebSocket `send` frame (one shape for both transports). Kept
// out of the doc comment, which is the OpenAPI description.
/// `POST /messages` body: exactly one of `conversation_id` and `to_user_id`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendRequest {
    /// The client's idempotency key: sending twice with the same one returns the first
    /// message and stores nothing new.
    pub client_msg_id: String,
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// A direct message to a friend: creates or reuses the direct conversation.
    #[serde(default)]
    pub to_user_id: Option<String>,
    /// `text`, `image`, `voice` or `file`; other than `text` requires `file_id`.
    pub msg_type: String,
    pub content: String,
    #[serde(default)]
    pub file_id: Option<String>,
}

impl From<SendRequest> for SendInput {
    fn from(r: SendRequest) -> Self {
        Self {
            client_msg_id: r.client_msg_id,
            conversation_id: r.conversation_id,
            to_user_id: r.to_user_id,
            msg_type: r.msg_type,
            content: r.content,
            file_id: r.file_id,
        }
    }
}

/// One user's presence.
#[derive(Debug, Serialize, ToSchema)]
pub struct Presence {
    pub user_id: String,
    pub online: bool,
    /// Connected devices.
    pub devices: u32,
    /// RFC 3339, UTC; null when unknown or not visible.
    pub last_seen: Option<String>,
}

impl From<pb::UserPresence> for Presence {
    fn from(p: pb::UserPresence) -> Self {
        Self {
            last_seen: timestamp(p.last_seen.as_ref()),
            user_id: p.user_id,
            online: p.online,
            devices: p.devices,
        }
    }
}

/// `{presence: [...]}`, in the order asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresenceResponse {
    pub presence: Vec<Presence>,
}

/// API.md's error body, for the OpenAPI document (the real one is
/// `beehive_common::error::ErrorBody`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

/// The inner object of [`ErrorResponse`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// invalid_argument, unauthenticated, permission_denied, not_found,
    /// already_exists, payload_too_large, rate_limited, unavailable, internal.
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb_user(id: &str, email: Option<&str>) -> pb::User {
        pb::User {
            id: id.into(),
            username: "ann".into(),
            nickname: "Ann".into(),
            avatar: String::new(),
            description: String::new(),
            email: email.map(str::to_owned),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_000,
            }),
        }
    }

    #[test]
    fn email_only_on_own_user() {
        let own =
            serde_json::to_value(User::from_pb(pb_user("u1", Some("a@b.c")), "u1")).expect("json");
        assert_eq!(own["email"], "a@b.c");
        assert_eq!(own["created_at"], "2023-11-14T22:13:20.123456Z");
        let own_none =
            serde_json::to_value(User::from_pb(pb_user("u1", None), "u1")).expect("json");
        assert!(own_none["email"].is_null());
        assert!(own_none.as_object().expect("object").contains_key("email"));
        let other =
            serde_json::to_value(User::from_pb(pb_user("u1", Some("a@b.c")), "u2")).expect("json");
        assert!(!other.as_object().expect("object").contains_key("email"));
    }
}
