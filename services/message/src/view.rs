//! How stored rows look on the wire (beehive.v1 types), shared by the gRPC surface and
//! the outbox relay so a message reads the same in an answer and in a live frame.

use beehive_common::time::to_timestamp as timestamp;
use beehive_proto::v1::{Conversation, ConversationKind, Message, MessageType, Receipt};
use uuid::Uuid;

use crate::conversation::to_u64;
use crate::store::{ConversationRow, ConversationView, KIND_GROUP, MessageRow, ReceiptRow};

fn kind(kind: i16) -> ConversationKind {
    if kind == KIND_GROUP {
        ConversationKind::Group
    } else {
        ConversationKind::Direct
    }
}

fn message_type(value: i16) -> MessageType {
    MessageType::try_from(i32::from(value)).unwrap_or(MessageType::Unspecified)
}

/// A message.
pub fn message(row: &MessageRow) -> Message {
    Message {
        id: row.id.to_string(),
        conversation_id: row.conversation_id.to_string(),
        seq: to_u64(row.seq),
        sender_id: row.sender_id.to_string(),
        client_msg_id: row.client_msg_id.clone(),
        msg_type: message_type(row.msg_type) as i32,
        content: row.content.clone(),
        file_id: row.file_id.map(|f| f.to_string()),
        created_at: Some(timestamp(row.created_at)),
    }
}

/// A receipt.
pub fn receipt(row: &ReceiptRow) -> Receipt {
    Receipt {
        conversation_id: row.conversation_id.to_string(),
        user_id: row.user_id.to_string(),
        delivered_seq: to_u64(row.delivered_seq),
        read_seq: to_u64(row.read_seq),
    }
}

/// A conversation as the member of `view` sees it.
pub fn conversation(view: &ConversationView) -> Conversation {
    let mut out = shared_conversation(&view.row.conversation, &view.member_ids);
    let read_seq = to_u64(view.row.read_seq);
    out.read_seq = read_seq;
    out.unread_count = out.last_seq.saturating_sub(read_seq);
    out.last_message = view.last_message.as_ref().map(message);
    out
}

/// The parts of a conversation that are the same for every member: what a
/// `conversation_updated` event carries to all of them at once. The per-member fields
/// (read_seq, unread_count) are zero and last_message is absent (a member that joined
/// after it may not see it); a client merges the event into what it has, or asks
/// GetConversation for its own view.
pub fn shared_conversation(row: &ConversationRow, member_ids: &[Uuid]) -> Conversation {
    Conversation {
        id: row.id.to_string(),
        kind: kind(row.kind) as i32,
        name: row.name.clone(),
        avatar: row.avatar.clone(),
        owner_id: row.owner_id.map(|o| o.to_string()),
        member_ids: member_ids.iter().map(Uuid::to_string).collect(),
        last_seq: to_u64(row.last_seq),
        last_message: None,
        unread_count: 0,
        read_seq: 0,
        updated_at: Some(timestamp(row.updated_at)),
    }
}
