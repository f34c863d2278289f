//! The gateway's WebSocket frame decoder (`wire::frame::parse`) on arbitrary text: it
//! must never panic, every accepted frame must satisfy the limits and canonical forms
//! the rest of the gateway relies on, and every rejection must encode into a valid
//! `error` frame with a client error code and a bounded message.

#![no_main]

use beehive_gateway::app::limits::{MAX_CLIENT_MSG_ID_CHARS, MAX_CONTENT_BYTES, SYNC_LIMIT};
use beehive_gateway::app::messages::Target;
use beehive_gateway::wire::frame::{self, ClientFrame, Rejection};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// 36 chars, lowercase hex, hyphens at 8-13-18-23: what `uuid_field` produces.
fn canonical_uuid(id: &str) {
    let b = id.as_bytes();
    let canonical = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        });
    assert!(canonical, "not a canonical UUID: {id:?}");
}

fn json(frame: &str) -> Value {
    serde_json::from_str(frame)
        .unwrap_or_else(|e| panic!("server frame is not JSON ({e}): {frame}"))
}

fn check_error_frame(text: &str) {
    let v = json(text);
    assert_eq!(v["type"], "error", "{v}");
    let code = v["data"]["code"].as_str().expect("error code");
    assert!(
        matches!(code, "invalid_argument" | "payload_too_large"),
        "a frame the client got wrong is a client error, got {code}"
    );
    let message = v["data"]["message"].as_str().expect("error message");
    assert!(
        message.len() <= 512,
        "unbounded error message ({} bytes)",
        message.len()
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match frame::parse(text) {
        Ok(request) => {
            match &request.frame {
                ClientFrame::Send(send) => {
                    let n = send.client_msg_id.chars().count();
                    assert!(
                        (1..=MAX_CLIENT_MSG_ID_CHARS).contains(&n),
                        "client_msg_id of {n} characters"
                    );
                    assert!(!send.client_msg_id.chars().any(char::is_control));
                    assert!(send.content.len() <= MAX_CONTENT_BYTES);
                    match &send.target {
                        Target::Conversation(id) | Target::User(id) => canonical_uuid(id),
                    }
                    if let Some(file) = &send.file_id {
                        canonical_uuid(file);
                    }
                }
                ClientFrame::Sync(sync) => {
                    assert!(
                        (1..=SYNC_LIMIT).contains(&sync.limit),
                        "sync limit {}",
                        sync.limit
                    );
                    for key in sync.cursors.keys() {
                        canonical_uuid(key);
                    }
                }
                ClientFrame::Delivered(mark) | ClientFrame::Read(mark) => {
                    canonical_uuid(&mark.conversation_id)
                }
                ClientFrame::Typing { conversation_id } => canonical_uuid(conversation_id),
                ClientFrame::GetPresence { .. } => {}
                ClientFrame::Ping => {}
            }
            // Replies echo the client's id: whatever it was, the reply is valid JSON
            // carrying the same id.
            let pong = json(frame::pong(request.id.as_ref()).as_str());
            assert_eq!(pong["type"], "pong");
            let sent: Value = serde_json::from_str(text).expect("accepted frames are JSON");
            assert_eq!(pong.get("id"), sent.get("id").filter(|v| !v.is_null()));
        }
        Err(Rejection::Unparseable(error)) => {
            check_error_frame(frame::error(None, &error).as_str())
        }
        Err(Rejection::Invalid { id, error }) => {
            check_error_frame(frame::error(id.as_ref(), &error).as_str())
        }
    }
});
