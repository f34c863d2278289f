//! One socket's task: reads client frames, answers them, writes queued live frames,
//! pings, enforces the idle timeout and closes with the right code.
//!
//! The task is the only per-connection task, and its future is what an idle socket
//! costs besides tungstenite's buffers, so everything that needs a large future (a
//! gRPC call, a sync) runs boxed and only while it is in flight.

use std::collections::VecDeque;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::SinkExt;
use tokio::time::Instant;

use super::dispatch;
use crate::hub::registry::{CloseReason, Conn, Taken};
use crate::hub::{Hub, Registration};
use crate::wire::frame::{self, Rejection};

/// Close codes of API.md and RFC 6455.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_POLICY: u16 = 1008;
/// API.md: after `reconnect`, the draining gateway closes with 1012 (service restart).
const CLOSE_SERVICE_RESTART: u16 = 1012;
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
const CLOSE_KICKED: u16 = 4001;
/// How long a closing handshake may take before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed or the connection broke.
    Gone,
    /// The server closed it (kick, slow client, idle, shutdown, bad frames).
    Closed,
}

/// How a write ended.
enum Write {
    Done,
    /// A close was requested meanwhile; the loop handles it.
    Interrupted,
    /// The connection is broken or made no progress for too long.
    Dead,
}

/// Counts unparseable frames in a sliding window; allocates only once a client
/// misbehaves (an empty `VecDeque` holds no buffer).
#[derive(Default)]
struct Strikes(VecDeque<Instant>);

impl Strikes {
    /// Records one; returns true when the limit is exceeded.
    fn strike(&mut self, max: usize, window: Duration) -> bool {
        let now = Instant::now();
        let times = &mut self.0;
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            times.pop_front();
        }
        times.push_back(now);
        times.len() > max
    }
}

/// Serves one upgraded socket until it closes; dropping `registration` at the end
/// deregisters it.
pub(crate) async fn run(registration: Registration, mut socket: WebSocket) {
    metrics::gauge!("beehive_ws_open_sockets").increment(1.0);
    let (hub, conn) = (registration.hub(), registration.conn());
    let end = serve(hub, conn, &mut socket).await;
    drop(socket);
    metrics::gauge!("beehive_ws_open_sockets").decrement(1.0);
    tracing::debug!(connection_id = %conn.id, user_id = %conn.user_id, ?end, "socket closed");
    drop(registration);
}

/// What the loop does after handling one wake-up.
enum Step {
    Continue,
    Stop(End),
}

impl From<Write> for Step {
    fn from(write: Write) -> Self {
        match write {
            Write::Done | Write::Interrupted => Step::Continue,
            Write::Dead => Step::Stop(End::Gone),
        }
    }
}

/// What woke the loop up.
enum Woke {
    Outbox,
    Incoming(Option<Result<Message, axum::Error>>),
    Timer,
}

/// The socket loop. Only what an idle socket waits on lives in this future (the
/// select, the ping timer, the strike window); handling a wake-up runs in boxed
/// futures that exist only while they run, which keeps idle sockets small.
async fn serve(hub: &Hub, conn: &Conn, socket: &mut WebSocket) -> End {
    let config = &hub.config;
    let mut last_activity = Instant::now();
    let timer = tokio::time::sleep_until(last_activity + config.ping_interval);
    tokio::pin!(timer);
    let mut strikes = Strikes::default();
    loop {
        let step = match conn.outbox.take() {
            Taken::Close(reason) => {
                Box::pin(close_for(socket, conn, reason)).await;
                return End::Closed;
            }
            Taken::Frames(frames) if !frames.is_empty() => {
                let messages = frames.into_iter().map(Message::Text);
                Box::pin(write(socket, conn, messages, config.write_stall_timeout))
                    .await
                    .into()
            }
            Taken::Frames(_) => Step::Continue,
        };
        if let Step::Stop(end) = step {
            return end;
        }
        let woke = tokio::select! {
            () = conn.outbox.ready() => Woke::Outbox,
            incoming = socket.recv() => Woke::Incoming(incoming),
            () = &mut timer => Woke::Timer,
        };
        let step = match woke {
            Woke::Outbox => Step::Continue,
            Woke::Incoming(incoming) => {
                last_activity = Instant::now();
                Box::pin(on_incoming(hub, conn, socket, incoming, &mut strikes)).await
            }
            Woke::Timer => {
                let now = Instant::now();
                let idle_deadline = last_activity + config.idle_timeout;
                if now >= idle_deadline {
                    Box::pin(close(socket, None, CLOSE_NORMAL, "idle timeout")).await;
                    return End::Closed;
                }
                timer
                    .as_mut()
                    .reset((now + config.ping_interval).min(idle_deadline));
                let ping = std::iter::once(Message::Ping(bytes::Bytes::new()));
                Box::pin(write(socket, conn, ping, config.write_stall_timeout))
                    .await
                    .into()
            }
        };
        if let Step::Stop(end) = step {
            return end;
        }
    }
}

/// Closes for a reason the outbox reported.
async fn close_for(socket: &mut WebSocket, conn: &Conn, reason: CloseReason) {
    let (kicked, code, text) = match reason {
        CloseReason::Kicked(r) => (Some(frame::kicked(r)), CLOSE_KICKED, "kicked"),
        CloseReason::Overflow => {
            metrics::counter!("beehive_ws_slow_disconnects_total").increment(1);
            tracing::info!(connection_id = %conn.id, user_id = %conn.user_id, "socket too slow for its live traffic; closing");
            (None, CLOSE_TRY_AGAIN_LATER, "too slow")
        }
        CloseReason::Shutdown => (None, CLOSE_SERVICE_RESTART, "gateway shutting down"),
    };
    close(socket, kicked, code, text).await;
}

/// Handles one message from the client: answers it, or counts it as garbage.
async fn on_incoming(
    hub: &Hub,
    conn: &Conn,
    socket: &mut WebSocket,
    incoming: Option<Result<Message, axum::Error>>,
    strikes: &mut Strikes,
) -> Step {
    let config = &hub.config;
    let message = match incoming {
        Some(Ok(message)) => message,
        // Includes a message over the size limit: tungstenite has already failed the
        // connection at that point.
        Some(Err(_)) | None => return Step::Stop(End::Gone),
    };
    let replies = match message {
        Message::Text(text) => match frame::parse(&text) {
            Ok(request) => {
                drop(text);
                dispatch::handle(hub, conn, request).await
            }
            Err(Rejection::Unparseable(error)) => {
                if strikes.strike(config.max_unparseable, config.unparseable_window) {
                    close(socket, None, CLOSE_POLICY, "too many unparseable frames").await;
                    return Step::Stop(End::Closed);
                }
                vec![frame::error(None, &error)]
            }
            Err(Rejection::Invalid { id, error }) => vec![frame::error(id.as_ref(), &error)],
        },
        Message::Binary(_) => {
            if strikes.strike(config.max_unparseable, config.unparseable_window) {
                close(socket, None, CLOSE_POLICY, "too many unparseable frames").await;
                return Step::Stop(End::Closed);
            }
            let error = beehive_common::Error::bad_request("frames must be JSON text messages");
            vec![frame::error(None, &error)]
        }
        Message::Close(_) => return Step::Stop(End::Gone),
        // tungstenite answers pings itself; both count as activity.
        Message::Ping(_) | Message::Pong(_) => return Step::Continue,
    };
    if replies.is_empty() {
        return Step::Continue;
    }
    let messages = replies.into_iter().map(Message::Text);
    write(socket, conn, messages, config.write_stall_timeout)
        .await
        .into()
}

/// Writes `messages` and flushes once. Gives up when a kick or slow-client close is
/// requested meanwhile (they must not wait behind a stuck write; a shutdown close
/// waits, its queue is flushed first) or
/// when one frame makes no progress for `stall`: a slow reader that keeps reading is
/// waited for however long a large `sync` takes, a reader that stopped is not.
async fn write(
    socket: &mut WebSocket,
    conn: &Conn,
    messages: impl IntoIterator<Item = Message>,
    stall: Duration,
) -> Write {
    let io = async {
        for message in messages {
            // `timeout` only arms its timer when the write actually has to wait.
            tokio::time::timeout(stall, socket.feed(message))
                .await
                .map_err(|_| ())?
                .map_err(|_| ())?;
        }
        tokio::time::timeout(stall, socket.flush())
            .await
            .map_err(|_| ())?
            .map_err(|_| ())
    };
    tokio::select! {
        result = io => match result {
            Ok(()) => Write::Done,
            Err(()) => Write::Dead,
        },
        _ = conn.outbox.interrupted() => Write::Interrupted,
    }
}

/// Sends an optional last frame and a close frame, then waits briefly for the
/// client's close reply so the close frame is not lost to a TCP reset.
async fn close(socket: &mut WebSocket, last: Option<Utf8Bytes>, code: u16, reason: &'static str) {
    let handshake = async {
        if let Some(frame) = last {
            socket.feed(Message::Text(frame)).await?;
        }
        socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            })))
            .await?;
        while let Some(Ok(_)) = socket.recv().await {}
        Ok::<(), axum::Error>(())
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, handshake).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strikes_count_within_the_window_only() {
        let mut strikes = Strikes::default();
        for _ in 0..10 {
            assert!(!strikes.strike(10, Duration::from_secs(10)));
        }
        assert!(strikes.strike(10, Duration::from_secs(10)));
        let mut strikes = Strikes::default();
        for _ in 0..20 {
            assert!(!strikes.strike(10, Duration::ZERO));
        }
    }
}

#[cfg(test)]
mod size_budget {
    use super::*;

    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(Registration, WebSocket) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// The socket task's future is allocated for every idle socket (the RSS target is
    /// about 4 KiB per idle connection, tungstenite's read buffer included). A change
    /// that keeps a large future inline in the loop shows up here.
    #[test]
    fn an_idle_socket_task_stays_small() {
        let size = future_size(run);
        let socket = std::mem::size_of::<WebSocket>();
        assert!(
            size <= socket + 1024,
            "the socket task future grew to {size} bytes (WebSocket itself: {socket})"
        );
    }
}
