//! The frame format of API.md: every frame is one JSON text message
//! `{"type": "...", "id"?: "...", "data": {...}}`.
//!
//! Parsing distinguishes frames that are not frames at all (not JSON, not an object,
//! no string `type`: these count towards closing a misbehaving client) from frames
//! that are well-formed but unusable (unknown type, missing or wrong fields, limits):
//! those only get an `error` reply carrying the client's `id`.

use std::collections::HashMap;

use axum::extract::ws::Utf8Bytes;
use beehive_common::Error;
use beehive_proto::v1 as pb;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::model::{Presence, SendRequest};
use super::views::{self, MessageView};
use crate::app::conversations::{SyncQuery, sync_query};
use crate::app::limits::MAX_FRAME_ID_BYTES;
use crate::app::messages::{SendMessage, validate_send};
use crate::app::validate::uuid_field;
/// Longest error message echoed to a client: serde messages may quote client input.
const MAX_ERROR_MESSAGE: usize = 200;

/// A client frame's `id`, echoed verbatim on the reply. Strings and numbers are
/// accepted (clients commonly use either); anything else is refused.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameId(Value);

impl FrameId {
    fn parse(value: Value) -> Result<Option<Self>, Error> {
        match value {
            Value::Null => Ok(None),
            Value::String(s) if s.len() <= MAX_FRAME_ID_BYTES => Ok(Some(Self(Value::String(s)))),
            Value::Number(n) => Ok(Some(Self(Value::Number(n)))),
            Value::String(_) => Err(Error::invalid(
                "id",
                format!("id is longer than {MAX_FRAME_ID_BYTES} bytes"),
            )),
            _ => Err(Error::invalid("id", "id must be a string")),
        }
    }
}

impl Serialize for FrameId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A usable client frame.
#[derive(Debug)]
pub struct Request {
    pub id: Option<FrameId>,
    pub frame: ClientFrame,
}

/// What a client asked for, validated by the core's rules (the same ones REST uses).
#[derive(Debug)]
pub enum ClientFrame {
    Send(SendMessage),
    Sync(SyncQuery),
    Delivered(Mark),
    Read(Mark),
    Typing {
        conversation_id: String,
    },
    /// `get_presence` `{user_ids}`: the presence of up to 200 users, as visible to the
    /// caller (an addition to API.md's frames: the WebSocket twin of `GET /presence`).
    GetPresence {
        user_ids: Vec<String>,
    },
    Ping,
}

/// A validated `delivered` or `read`.
#[derive(Debug)]
pub struct Mark {
    pub conversation_id: String,
    pub seq: u64,
}

/// Why a frame was not used.
#[derive(Debug)]
pub enum Rejection {
    /// Not a frame at all; counts towards the 1008 close.
    Unparseable(Error),
    /// A frame the server cannot use; the reply carries its `id`.
    Invalid { id: Option<FrameId>, error: Error },
}

#[derive(serde::Deserialize)]
struct SyncData {
    #[serde(default)]
    cursors: Option<HashMap<String, u64>>,
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(serde::Deserialize)]
struct MarkData {
    conversation_id: String,
    seq: u64,
}

#[derive(serde::Deserialize)]
struct TypingData {
    conversation_id: String,
}

#[derive(serde::Deserialize)]
struct GetPresenceData {
    user_ids: Vec<String>,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Request, Rejection> {
    let value: Value = serde_json::from_str(text)
        .map_err(|_| Rejection::Unparseable(Error::bad_request("frame is not valid JSON")))?;
    let Value::Object(mut object) = value else {
        return Err(Rejection::Unparseable(Error::bad_request(
            "frame must be a JSON object {\"type\", \"id\", \"data\"}",
        )));
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    let Some(Value::String(kind)) = object.remove("type") else {
        // Keep the id if it is usable so the client can match the error.
        let id = FrameId::parse(id).ok().flatten();
        return Err(Rejection::Invalid {
            id,
            error: Error::invalid("type", "frame has no string \"type\""),
        });
    };
    let id = FrameId::parse(id).map_err(|error| Rejection::Invalid { id: None, error })?;
    let data = object.remove("data").unwrap_or(Value::Null);
    let invalid = |error: Error| Rejection::Invalid {
        id: id.clone(),
        error,
    };
    let frame = match kind.as_str() {
        "send" => {
            let data: SendRequest = decode_with(data, &id)?;
            ClientFrame::Send(validate_send(data.into()).map_err(invalid)?)
        }
        "sync" => {
            let data: SyncData = if data.is_null() {
                SyncData {
                    cursors: None,
                    limit: None,
                }
            } else {
                decode_with(data, &id)?
            };
            let cursors = data.cursors.unwrap_or_default();
            ClientFrame::Sync(sync_query(cursors, data.limit).map_err(invalid)?)
        }
        "delivered" | "read" => {
            let data: MarkData = decode_with(data, &id)?;
            let mark = Mark {
                conversation_id: uuid_field("conversation_id", &data.conversation_id)
                    .map_err(invalid)?,
                seq: data.seq,
            };
            if kind == "read" {
                ClientFrame::Read(mark)
            } else {
                ClientFrame::Delivered(mark)
            }
        }
        "typing" => {
            let data: TypingData = decode_with(data, &id)?;
            ClientFrame::Typing {
                conversation_id: uuid_field("conversation_id", &data.conversation_id)
                    .map_err(invalid)?,
            }
        }
        "get_presence" => {
            let data: GetPresenceData = decode_with(data, &id)?;
            ClientFrame::GetPresence {
                user_ids: data.user_ids,
            }
        }
        "ping" => ClientFrame::Ping,
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(invalid(Error::invalid(
                "type",
                format!("unknown frame type {shown:?}"),
            )));
        }
    };
    Ok(Request { id, frame })
}

fn decode_with<T: DeserializeOwned>(data: Value, id: &Option<FrameId>) -> Result<T, Rejection> {
    if !data.is_object() {
        return Err(Rejection::Invalid {
            id: id.clone(),
            error: Error::invalid("data", "frame \"data\" must be an object"),
        });
    }
    serde_json::from_value(data).map_err(|e| Rejection::Invalid {
        id: id.clone(),
        error: Error::invalid("data", truncate(format!("invalid data: {e}"))),
    })
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_ERROR_MESSAGE {
        let mut end = MAX_ERROR_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// A server frame.
#[derive(Serialize)]
struct Out<'a, T> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a FrameId>,
    data: T,
}

/// Serialises a server frame once; the result is cheap to clone for every socket.
pub fn encode<T: Serialize>(kind: &'static str, id: Option<&FrameId>, data: T) -> Utf8Bytes {
    match serde_json::to_string(&Out { kind, id, data }) {
        Ok(text) => Utf8Bytes::from(text),
        Err(error) => {
            // Only a bug in a view can get here (all keys are strings).
            tracing::error!(%error, kind, "cannot serialise a frame");
            Utf8Bytes::from_static(
                r#"{"type":"error","data":{"code":"internal","message":"internal error"}}"#,
            )
        }
    }
}

/// An `error` frame.
pub fn error(id: Option<&FrameId>, error: &Error) -> Utf8Bytes {
    #[derive(Serialize)]
    struct Data<'a> {
        code: &'a str,
        message: &'a str,
    }
    if let Error::Internal(source) = error {
        tracing::error!(error = %source, "internal error answering a frame");
    }
    let message = error.public_message();
    encode(
        "error",
        id,
        Data {
            code: error.code().as_str(),
            message: &message,
        },
    )
}

/// A `message` frame.
pub fn message(message: &pb::Message) -> Utf8Bytes {
    #[derive(Serialize)]
    struct Data<'a> {
        message: MessageView<'a>,
    }
    encode(
        "message",
        None,
        Data {
            message: message.into(),
        },
    )
}

/// The `ack` of a `send`.
pub fn ack(id: Option<&FrameId>, message: &pb::Message) -> Utf8Bytes {
    #[derive(Serialize)]
    struct Data<'a> {
        client_msg_id: &'a str,
        message: MessageView<'a>,
    }
    encode(
        "ack",
        id,
        Data {
            client_msg_id: &message.client_msg_id,
            message: message.into(),
        },
    )
}

/// The `sync_done` closing a `sync`.
pub fn sync_done(
    id: Option<&FrameId>,
    cursors: &HashMap<String, u64>,
    has_more: bool,
) -> Utf8Bytes {
    #[derive(Serialize)]
    struct Data<'a> {
        cursors: &'a HashMap<String, u64>,
        has_more: bool,
    }
    encode("sync_done", id, Data { cursors, has_more })
}

/// The `presence_list` answering a `get_presence`: `{presence: [...]}`, the body of
/// `GET /presence`.
pub fn presence_list(id: Option<&FrameId>, presence: &[Presence]) -> Utf8Bytes {
    #[derive(Serialize)]
    struct Data<'a> {
        presence: &'a [Presence],
    }
    encode("presence_list", id, Data { presence })
}

/// The `pong` answering a `ping`.
pub fn pong(id: Option<&FrameId>) -> Utf8Bytes {
    encode("pong", id, serde_json::Map::new())
}

/// The `kicked` frame sent before closing with 4001.
pub fn kicked(reason: pb::RevocationReason) -> Utf8Bytes {
    #[derive(Serialize)]
    struct Data {
        reason: &'static str,
    }
    encode(
        "kicked",
        None,
        Data {
            reason: views::revocation_reason_name(reason),
        },
    )
}

/// The `reconnect` frame of a gateway that is shutting down: the client comes back, to
/// any gateway, after about `after`, then calls `sync` (API.md).
pub fn reconnect(after: std::time::Duration) -> Utf8Bytes {
    #[derive(Serialize)]
    struct Data {
        after_ms: u64,
    }
    let after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
    encode("reconnect", None, Data { after_ms })
}

/// The frame of a pushed event, or `None` for payloads that are not frames (kicks,
/// which close sockets instead, and empty events).
pub fn event(payload: &pb::event::Payload) -> Option<Utf8Bytes> {
    use pb::event::Payload;
    #[derive(Serialize)]
    struct Request<'a> {
        request: views::FriendRequestView<'a>,
    }
    #[derive(Serialize)]
    struct Conversation<'a> {
        conversation: views::ConversationView<'a>,
    }
    #[derive(Serialize)]
    struct Typing<'a> {
        conversation_id: &'a str,
        user_id: &'a str,
    }
    #[derive(Serialize)]
    struct Presence<'a> {
        user_id: &'a str,
        online: bool,
    }
    Some(match payload {
        Payload::Message(m) => message(m),
        Payload::Receipt(r) => encode("receipt", None, views::ReceiptView::from(r)),
        Payload::Typing(t) => encode(
            "typing",
            None,
            Typing {
                conversation_id: &t.conversation_id,
                user_id: &t.user_id,
            },
        ),
        Payload::Presence(p) => encode(
            "presence",
            None,
            Presence {
                user_id: &p.user_id,
                online: p.online,
            },
        ),
        Payload::FriendRequest(r) => encode("friend_request", None, Request { request: r.into() }),
        Payload::FriendAccepted(r) => {
            encode("friend_accepted", None, Request { request: r.into() })
        }
        Payload::ConversationUpdated(c) => encode(
            "conversation_updated",
            None,
            Conversation {
                conversation: c.into(),
            },
        ),
        Payload::Kick(_) => return None,
        // Consumed by the search index; clients get no frame for them yet.
        Payload::MessageEdited(_) | Payload::MessageDeleted(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::messages::Target;
    use beehive_common::ErrorCode;

    const CONV: &str = "0190f4a2-7c3e-7000-8000-000000000001";
    const USER: &str = "0190F4A2-7C3E-7000-8000-000000000002";

    fn invalid(text: &str) -> (Option<FrameId>, ErrorCode) {
        match parse(text) {
            Err(Rejection::Invalid { id, error }) => (id, error.code()),
            other => panic!("expected Invalid for {text}, got {other:?}"),
        }
    }

    #[test]
    fn send_to_user_is_parsed_and_ids_canonicalised() {
        let text = format!(
            r#"{{"type":"send","id":"r1","data":{{"client_msg_id":"c1","to_user_id":"{USER}","msg_type":"text","content":"hi"}}}}"#
        );
        let request = parse(&text).expect("valid");
        assert_eq!(request.id, Some(FrameId(Value::String("r1".into()))));
        let ClientFrame::Send(send) = request.frame else {
            panic!("not a send")
        };
        assert_eq!(send.target, Target::User(USER.to_lowercase()));
        assert_eq!(send.msg_type, pb::MessageType::Text);
        assert_eq!(send.content, "hi");
    }

    #[test]
    fn numeric_ids_are_echoed_as_numbers() {
        let request = parse(r#"{"type":"ping","id":7}"#).expect("valid");
        let frame = pong(request.id.as_ref());
        assert_eq!(frame.as_str(), r#"{"type":"pong","id":7,"data":{}}"#);
    }

    #[test]
    fn not_json_and_non_objects_are_unparseable() {
        for text in ["not json", "[1,2]", "\"send\"", "{", ""] {
            assert!(
                matches!(parse(text), Err(Rejection::Unparseable(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn unusable_frames_keep_their_id() {
        let (id, code) = invalid(r#"{"type":"launch","id":"x"}"#);
        assert_eq!(id, Some(FrameId(Value::String("x".into()))));
        assert_eq!(code, ErrorCode::InvalidArgument);
        let (id, _) = invalid(r#"{"id":"y","data":{}}"#);
        assert_eq!(id, Some(FrameId(Value::String("y".into()))));
        let (id, _) = invalid(r#"{"type":"send","id":"z","data":{"client_msg_id":"a"}}"#);
        assert_eq!(id, Some(FrameId(Value::String("z".into()))));
        let (_, _) = invalid(r#"{"type":"read","data":{"conversation_id":"nope","seq":1}}"#);
        let (_, _) = invalid(r#"{"type":"read","data":{"conversation_id":"x","seq":-1}}"#);
        let (_, _) = invalid(r#"{"type":"typing","data":"text"}"#);
    }

    /// The send and sync rules themselves are tested once, in `crate::app`; here only
    /// that the decoder applies them and keeps the frame's id on a rejection.
    #[test]
    fn core_rules_reject_with_the_frames_id() {
        let big = "x".repeat(crate::app::limits::MAX_CONTENT_BYTES + 1);
        let text = format!(
            r#"{{"type":"send","id":"s","data":{{"client_msg_id":"c","conversation_id":"{CONV}","msg_type":"text","content":"{big}"}}}}"#
        );
        assert_eq!(
            invalid(&text),
            (
                Some(FrameId(Value::String("s".into()))),
                ErrorCode::PayloadTooLarge
            )
        );
        invalid(r#"{"type":"sync","data":{"cursors":{"not-a-uuid":1}}}"#);
        let request = parse(r#"{"type":"sync"}"#).expect("valid");
        let ClientFrame::Sync(sync) = request.frame else {
            panic!("not a sync")
        };
        assert_eq!(sync.limit, crate::app::limits::SYNC_LIMIT);
    }

    #[test]
    fn get_presence_carries_the_ids() {
        let request = parse(r#"{"type":"get_presence","id":1,"data":{"user_ids":["a","b"]}}"#)
            .expect("valid");
        let ClientFrame::GetPresence { user_ids } = request.frame else {
            panic!("not get_presence")
        };
        assert_eq!(user_ids, vec!["a", "b"]);
        invalid(r#"{"type":"get_presence","data":{"user_ids":"a"}}"#);
    }

    #[test]
    fn long_ids_are_refused() {
        let text = format!(r#"{{"type":"ping","id":"{}"}}"#, "i".repeat(200));
        assert_eq!(invalid(&text), (None, ErrorCode::InvalidArgument));
    }

    #[test]
    fn error_messages_quoting_input_are_truncated() {
        let text = format!(
            r#"{{"type":"read","data":{{"conversation_id":"{CONV}","seq":"{}"}}}}"#,
            "9".repeat(5000)
        );
        let Err(Rejection::Invalid { error, .. }) = parse(&text) else {
            panic!("invalid")
        };
        assert!(error.public_message().len() <= MAX_ERROR_MESSAGE + 4);
    }

    #[test]
    fn event_frames_have_api_shapes() {
        let payload = pb::event::Payload::Typing(pb::TypingEvent {
            conversation_id: "c".into(),
            user_id: "u".into(),
        });
        let frame = event(&payload).expect("a frame");
        let json: Value = serde_json::from_str(&frame).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"type": "typing", "data": {"conversation_id": "c", "user_id": "u"}})
        );
        let kick = pb::event::Payload::Kick(pb::KickEvent::default());
        assert!(event(&kick).is_none());
        let frame = kicked(pb::RevocationReason::PasswordChanged);
        assert_eq!(
            frame.as_str(),
            r#"{"type":"kicked","data":{"reason":"password_changed"}}"#
        );
    }

    #[test]
    fn reconnect_frames_carry_the_delay_in_milliseconds() {
        let frame = reconnect(std::time::Duration::from_millis(2500));
        assert_eq!(
            frame.as_str(),
            r#"{"type":"reconnect","data":{"after_ms":2500}}"#
        );
    }

    #[test]
    fn error_frames_carry_code_and_id() {
        let id = FrameId(Value::String("q".into()));
        let frame = error(Some(&id), &Error::PermissionDenied("not friends".into()));
        assert_eq!(
            frame.as_str(),
            r#"{"type":"error","id":"q","data":{"code":"permission_denied","message":"not friends"}}"#
        );
    }
}
