//! Answers client frames through the services.
//!
//! Every reply is produced only after the service call returned: an `ack` therefore
//! means the message is committed (the message service answers after its
//! transaction). Failures become `error` frames with API.md's codes; the socket stays
//! open.

use axum::extract::ws::Utf8Bytes;
use beehive_common::Error;
use beehive_proto::v1 as pb;

use super::Hub;
use super::frame::{self, ClientFrame, Request, Target};
use super::registry::Conn;
use crate::rpc::rpc;

/// The frames answering one request, in order (empty when the frame has no reply).
pub(crate) async fn handle(hub: &Hub, conn: &Conn, request: Request) -> Vec<Utf8Bytes> {
    let id = request.id.as_ref();
    let user_id = conn.user_id.hyphenated().to_string();
    let result = match request.frame {
        ClientFrame::Ping => Ok(vec![frame::pong(id)]),
        ClientFrame::Send(send) => send_message(hub, conn, user_id, send)
            .await
            .map(|message| vec![frame::ack(id, &message)]),
        ClientFrame::Sync(sync) => sync_messages(hub, user_id, sync).await.map(|response| {
            let mut frames = Vec::with_capacity(response.messages.len() + 1);
            frames.extend(response.messages.iter().map(frame::message));
            frames.push(frame::sync_done(id, &response.cursors, response.has_more));
            frames
        }),
        ClientFrame::Delivered(mark) => mark_delivered(hub, user_id, mark)
            .await
            .map(|()| Vec::new()),
        ClientFrame::Read(mark) => mark_read(hub, user_id, mark).await.map(|()| Vec::new()),
        ClientFrame::Typing { conversation_id } => {
            let request = pb::NotifyTypingRequest {
                user_id,
                conversation_id,
            };
            // Typing is transient: not retried, a lost one is harmless.
            rpc!(hub.clients.message, notify_typing, request)
                .await
                .map(|_| Vec::new())
                .map_err(|s| Error::from_status(&s))
        }
    };
    result.unwrap_or_else(|error| vec![frame::error(id, &error)])
}

async fn send_message(
    hub: &Hub,
    conn: &Conn,
    user_id: String,
    send: frame::Send,
) -> Result<pb::Message, Error> {
    let target = match send.target {
        Target::Conversation(id) => pb::send_message_request::Target::ConversationId(id),
        Target::User(to) => {
            // DESIGN.md: the gateway checks friendship; the message service trusts it.
            let request = pb::AreFriendsRequest {
                user_id: user_id.clone(),
                other_user_id: to.clone(),
            };
            let friends = hub
                .retry
                .idempotent(|| rpc!(hub.clients.social, are_friends, request.clone()))
                .await
                .map_err(|s| Error::from_status(&s))?
                .friends;
            if !friends {
                return Err(Error::PermissionDenied(
                    "direct messages require friendship".to_owned(),
                ));
            }
            pb::send_message_request::Target::ToUserId(to)
        }
    };
    let request = pb::SendMessageRequest {
        sender_id: user_id,
        client_msg_id: send.client_msg_id,
        target: Some(target),
        msg_type: send.msg_type as i32,
        content: send.content,
        file_id: send.file_id,
        device_id: conn.device_id.to_string(),
    };
    // Retrying is safe: the service dedupes on (sender, client_msg_id).
    let response = hub
        .retry
        .idempotent(|| rpc!(hub.clients.message, send_message, request.clone()))
        .await
        .map_err(|s| Error::from_status(&s))?;
    response
        .message
        .ok_or_else(|| Error::internal("SendMessage returned no message"))
}

async fn sync_messages(
    hub: &Hub,
    user_id: String,
    sync: frame::Sync,
) -> Result<pb::SyncResponse, Error> {
    let request = pb::SyncRequest {
        user_id,
        cursors: sync.cursors,
        limit: sync.limit,
    };
    let mut response = hub
        .retry
        .idempotent(|| rpc!(hub.clients.message, sync, request.clone()))
        .await
        .map_err(|s| Error::from_status(&s))?;
    // Defensive: never send more than API.md's cap, whatever the service returned.
    if response.messages.len() > frame::SYNC_LIMIT as usize {
        response.messages.truncate(frame::SYNC_LIMIT as usize);
        response.has_more = true;
    }
    Ok(response)
}

async fn mark_delivered(hub: &Hub, user_id: String, mark: frame::Mark) -> Result<(), Error> {
    let request = pb::MarkRequest {
        user_id,
        conversation_id: mark.conversation_id,
        seq: mark.seq,
    };
    // Marks only move forward, so a retried one is harmless.
    hub.retry
        .idempotent(|| rpc!(hub.clients.message, mark_delivered, request.clone()))
        .await
        .map(|_| ())
        .map_err(|s| Error::from_status(&s))
}

async fn mark_read(hub: &Hub, user_id: String, mark: frame::Mark) -> Result<(), Error> {
    let request = pb::MarkRequest {
        user_id,
        conversation_id: mark.conversation_id,
        seq: mark.seq,
    };
    hub.retry
        .idempotent(|| rpc!(hub.clients.message, mark_read, request.clone()))
        .await
        .map(|_| ())
        .map_err(|s| Error::from_status(&s))
}
