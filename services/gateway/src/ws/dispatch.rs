//! Answers client frames through the core ([`crate::app`]), exactly as the REST
//! handlers do for the same use cases.
//!
//! Every reply is produced only after the service call returned: an `ack` therefore
//! means the message is committed (the message service answers after its
//! transaction). Failures become `error` frames with API.md's codes; the socket stays
//! open.

use axum::extract::ws::Utf8Bytes;

use crate::app;
use crate::app::conversations::MarkKind;
use crate::hub::Hub;
use crate::hub::registry::Conn;
use crate::wire::frame::{self, ClientFrame, Request};
use crate::wire::model::Presence;

/// Histogram of the handling of client frames by frame type, until the reply is ready.
pub(crate) const FRAME_DURATION: &str = "beehive_ws_frame_duration_seconds";
/// Histogram of `send` frames answered with `ack`: from the frame to the ack (the message
/// committed), the latency a sender sees.
pub(crate) const SEND_TO_ACK: &str = "beehive_send_to_ack_seconds";

/// The frame type's name on the wire.
fn frame_type(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Send(_) => "send",
        ClientFrame::Sync(_) => "sync",
        ClientFrame::Delivered(_) => "delivered",
        ClientFrame::Read(_) => "read",
        ClientFrame::Typing { .. } => "typing",
        ClientFrame::GetPresence { .. } => "get_presence",
        ClientFrame::Ping => "ping",
    }
}

/// The frames answering one request, in order (empty when the frame has no reply),
/// timed per frame type.
pub(crate) async fn handle(hub: &Hub, conn: &Conn, request: Request) -> Vec<Utf8Bytes> {
    let started = std::time::Instant::now();
    let kind = frame_type(&request.frame);
    let (frames, acked) = answer(hub, conn, request).await;
    let elapsed = started.elapsed().as_secs_f64();
    metrics::histogram!(FRAME_DURATION, "type" => kind).record(elapsed);
    if acked {
        metrics::histogram!(SEND_TO_ACK).record(elapsed);
    }
    frames
}

/// The reply frames, and whether the request was a `send` answered with `ack`.
async fn answer(hub: &Hub, conn: &Conn, request: Request) -> (Vec<Utf8Bytes>, bool) {
    let is_send = matches!(request.frame, ClientFrame::Send(_));
    let id = request.id.as_ref();
    let clients = &hub.clients;
    let user_id = conn.user_id.hyphenated().to_string();
    let result = match request.frame {
        ClientFrame::Ping => Ok(vec![frame::pong(id)]),
        ClientFrame::Send(send) => app::messages::send(clients, &user_id, &conn.device_id, send)
            .await
            .map(|message| vec![frame::ack(id, &message)]),
        ClientFrame::Sync(query) => app::conversations::sync(clients, &user_id, query)
            .await
            .map(|response| {
                let mut frames = Vec::with_capacity(response.messages.len() + 1);
                frames.extend(response.messages.iter().map(frame::message));
                frames.push(frame::sync_done(id, &response.cursors, response.has_more));
                frames
            }),
        ClientFrame::Delivered(mark) => {
            let (conversation_id, seq) = (mark.conversation_id, mark.seq);
            app::conversations::mark(clients, &user_id, MarkKind::Delivered, conversation_id, seq)
                .await
                .map(|()| Vec::new())
        }
        ClientFrame::Read(mark) => {
            let (conversation_id, seq) = (mark.conversation_id, mark.seq);
            app::conversations::mark(clients, &user_id, MarkKind::Read, conversation_id, seq)
                .await
                .map(|()| Vec::new())
        }
        ClientFrame::Typing { conversation_id } => {
            app::conversations::typing(clients, &user_id, conversation_id)
                .await
                .map(|()| Vec::new())
        }
        ClientFrame::GetPresence { user_ids } => app::presence::get(clients, &user_id, user_ids)
            .await
            .map(|presence| {
                let presence: Vec<Presence> = presence.into_iter().map(Presence::from).collect();
                vec![frame::presence_list(id, &presence)]
            }),
    };
    match result {
        Ok(frames) => (frames, is_send),
        Err(error) => (vec![frame::error(id, &error)], false),
    }
}
