//! Sending messages: the rules of `POST /messages` and the WebSocket `send`, written
//! once.
//!
//! [`validate_send`] checks everything that does not need a service (limits, ids,
//! types); [`send`] checks friendship for direct messages and stores the message.
//! Every reply is produced only after the message service returned, which answers
//! after its transaction: a returned message is durably stored.

use beehive_common::Error;
use beehive_proto::v1 as pb;

use super::limits::{MAX_CONTENT_BYTES, check_client_msg_id};
use super::social;
use super::validate::uuid_field;
use crate::clients::Clients;

/// A send as a client wrote it, whichever transport carried it.
#[derive(Debug, Clone, Default)]
pub struct SendInput {
    pub client_msg_id: String,
    pub conversation_id: Option<String>,
    pub to_user_id: Option<String>,
    pub msg_type: String,
    pub content: String,
    pub file_id: Option<String>,
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A conversation the sender is a member of (canonical UUID).
    Conversation(String),
    /// A friend, directly (canonical UUID): creates or reuses the direct conversation.
    User(String),
}

/// A send that passed [`validate_send`].
#[derive(Debug, Clone)]
pub struct SendMessage {
    pub client_msg_id: String,
    pub target: Target,
    pub msg_type: pb::MessageType,
    pub content: String,
    /// Canonical UUID; `None` when absent or empty (the message service reads an
    /// empty `file_id` as none, and so does the gateway).
    pub file_id: Option<String>,
}

/// The message type names of API.md, in one table for parsing and rendering.
const MSG_TYPES: [(pb::MessageType, &str); 4] = [
    (pb::MessageType::Text, "text"),
    (pb::MessageType::Image, "image"),
    (pb::MessageType::Voice, "voice"),
    (pb::MessageType::File, "file"),
];

/// Parses API.md's message type names.
pub fn parse_msg_type(name: &str) -> Option<pb::MessageType> {
    MSG_TYPES.iter().find(|(_, n)| *n == name).map(|(t, _)| *t)
}

/// `text|image|voice|file` of a message type. Unspecified never leaves the message
/// service; text is the safe reading of anything unknown.
pub fn msg_type_name(value: i32) -> &'static str {
    MSG_TYPES
        .iter()
        .find(|(t, _)| *t as i32 == value)
        .map_or("text", |(_, n)| *n)
}

/// API.md's content limit; `payload_too_large` (413), the message service's code for
/// the same mistake.
pub fn check_content(content: &str) -> Result<(), Error> {
    if content.len() > MAX_CONTENT_BYTES {
        return Err(Error::PayloadTooLarge(format!(
            "content must be at most {MAX_CONTENT_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Checks a send without calling any service.
pub fn validate_send(input: SendInput) -> Result<SendMessage, Error> {
    check_client_msg_id(&input.client_msg_id)?;
    let target = match (input.conversation_id, input.to_user_id) {
        (Some(c), None) => Target::Conversation(uuid_field("conversation_id", &c)?),
        (None, Some(u)) => Target::User(uuid_field("to_user_id", &u)?),
        _ => {
            return Err(Error::bad_request(
                "exactly one of conversation_id and to_user_id is required",
            ));
        }
    };
    let msg_type = parse_msg_type(&input.msg_type).ok_or_else(|| {
        Error::invalid(
            "msg_type",
            "msg_type must be one of text, image, voice, file",
        )
    })?;
    check_content(&input.content)?;
    let file_id = input
        .file_id
        .filter(|f| !f.is_empty())
        .map(|f| uuid_field("file_id", &f))
        .transpose()?;
    if msg_type != pb::MessageType::Text && file_id.is_none() {
        return Err(Error::invalid(
            "file_id",
            "file_id is required for messages other than text",
        ));
    }
    Ok(SendMessage {
        client_msg_id: input.client_msg_id,
        target,
        msg_type,
        content: input.content,
        file_id,
    })
}

/// Sends `message` from `sender_id`'s device `device_id` (empty: no device, e.g. REST,
/// so every socket of the sender gets the `message` frame). Direct messages require
/// friendship (`permission_denied`): the gateway checks it, the message service trusts
/// it (DESIGN.md).
pub async fn send(
    clients: &Clients,
    sender_id: &str,
    device_id: &str,
    message: SendMessage,
) -> Result<pb::Message, Error> {
    let target = match message.target {
        Target::Conversation(id) => pb::send_message_request::Target::ConversationId(id),
        Target::User(to) => {
            social::require_friends(clients, sender_id, &to).await?;
            pb::send_message_request::Target::ToUserId(to)
        }
    };
    let request = pb::SendMessageRequest {
        sender_id: sender_id.to_owned(),
        client_msg_id: message.client_msg_id,
        target: Some(target),
        msg_type: message.msg_type as i32,
        content: message.content,
        file_id: message.file_id,
        device_id: device_id.to_owned(),
    };
    clients
        .send_message(request)
        .await?
        .message
        .ok_or_else(|| Error::internal("SendMessage returned no message"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::limits::MAX_CLIENT_MSG_ID_CHARS;
    use beehive_common::ErrorCode;

    const CONV: &str = "0190f4a2-7c3e-7000-8000-000000000001";
    const USER: &str = "0190F4A2-7C3E-7000-8000-000000000002";
    const FILE: &str = "0190f4a2-7c3e-7000-8000-000000000003";

    fn to_conversation() -> SendInput {
        SendInput {
            client_msg_id: "c1".into(),
            conversation_id: Some(CONV.into()),
            msg_type: "text".into(),
            content: "hi".into(),
            ..SendInput::default()
        }
    }

    fn code(input: SendInput) -> ErrorCode {
        match validate_send(input) {
            Err(error) => error.code(),
            Ok(send) => panic!("expected a rejection, got {send:?}"),
        }
    }

    #[test]
    fn a_valid_send_is_canonicalised() {
        let send = validate_send(SendInput {
            conversation_id: None,
            to_user_id: Some(USER.into()),
            ..to_conversation()
        })
        .expect("valid");
        assert_eq!(send.target, Target::User(USER.to_lowercase()));
        assert_eq!(send.msg_type, pb::MessageType::Text);
        assert_eq!(send.file_id, None);
    }

    #[test]
    fn client_msg_id_is_1_to_64_characters_without_control_characters() {
        let with = |id: String| SendInput {
            client_msg_id: id,
            ..to_conversation()
        };
        assert!(validate_send(with("k".repeat(MAX_CLIENT_MSG_ID_CHARS))).is_ok());
        // Counted in characters, not bytes: 64 four-byte characters pass.
        assert!(validate_send(with("😀".repeat(MAX_CLIENT_MSG_ID_CHARS))).is_ok());
        for bad in [
            String::new(),
            "k".repeat(MAX_CLIENT_MSG_ID_CHARS + 1),
            "a\nb".to_owned(),
        ] {
            assert_eq!(code(with(bad)), ErrorCode::InvalidArgument);
        }
    }

    #[test]
    fn content_over_16_kib_is_payload_too_large() {
        let with = |content: String| SendInput {
            content,
            ..to_conversation()
        };
        assert!(validate_send(with("x".repeat(MAX_CONTENT_BYTES))).is_ok());
        assert_eq!(
            code(with("x".repeat(MAX_CONTENT_BYTES + 1))),
            ErrorCode::PayloadTooLarge
        );
    }

    #[test]
    fn exactly_one_target_is_required_and_must_be_a_uuid() {
        assert_eq!(
            code(SendInput {
                to_user_id: Some(USER.into()),
                ..to_conversation()
            }),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code(SendInput {
                conversation_id: None,
                ..to_conversation()
            }),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code(SendInput {
                conversation_id: Some("nope".into()),
                ..to_conversation()
            }),
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn files_need_a_file_id_and_empty_means_none() {
        let image = |file_id: Option<&str>| SendInput {
            msg_type: "image".into(),
            file_id: file_id.map(str::to_owned),
            ..to_conversation()
        };
        assert_eq!(code(image(None)), ErrorCode::InvalidArgument);
        assert_eq!(code(image(Some(""))), ErrorCode::InvalidArgument);
        assert_eq!(code(image(Some("not-a-uuid"))), ErrorCode::InvalidArgument);
        assert_eq!(
            validate_send(image(Some(FILE))).expect("valid").file_id,
            Some(FILE.to_owned())
        );
        let text = SendInput {
            file_id: Some(String::new()),
            ..to_conversation()
        };
        assert_eq!(validate_send(text).expect("valid").file_id, None);
        assert_eq!(
            code(SendInput {
                msg_type: "video".into(),
                ..to_conversation()
            }),
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn message_types_round_trip() {
        for name in ["text", "image", "voice", "file"] {
            let t = parse_msg_type(name).expect("known");
            assert_eq!(msg_type_name(t as i32), name);
        }
        assert_eq!(parse_msg_type("video"), None);
        assert_eq!(msg_type_name(99), "text");
    }
}
