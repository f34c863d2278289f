//! Bad input and liveness: error frames that leave the socket usable, the close for
//! clients that keep sending garbage, the message size limit, and the idle timeout.

mod common;

use std::time::Duration;

use common::{Cluster, Target, Ws};
use futures::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_frames_get_error_frames_and_the_socket_keeps_working() {
    let cluster = Cluster::start(1).await;
    let (alice, bob) = (cluster.user().await, cluster.user().await);
    cluster.befriend(&alice, &bob).await;
    let mut ws = Ws::connect(cluster.gw(0), &alice, "d").await;

    ws.send_text("this is not json").await;
    let reply = ws.expect_next("error").await;
    assert_eq!(reply["data"]["code"], "invalid_argument");
    assert!(reply.get("id").is_none());

    let cases = [
        json!({"type": "teleport", "id": "u1", "data": {}}),
        json!({"id": "u2", "data": {}}),
        json!({"type": "send", "id": "u3", "data": {"client_msg_id": "c"}}),
        json!({"type": "send", "id": "u4", "data": {"client_msg_id": "c", "to_user_id": "nope", "msg_type": "text", "content": "x"}}),
        json!({"type": "read", "id": "u5", "data": {"conversation_id": bob.id, "seq": "one"}}),
        json!({"type": "typing", "id": "u6", "data": []}),
        json!({"type": "send", "id": "u7", "data": {"client_msg_id": "c", "to_user_id": bob.id, "msg_type": "video", "content": "x"}}),
        json!({"type": "sync", "id": "u8", "data": {"cursors": {"x": 1}}}),
    ];
    for case in &cases {
        ws.send_text(case.to_string()).await;
        let reply = ws.expect_next("error").await;
        assert_eq!(reply["id"], case["id"], "{case} -> {reply}");
        assert_eq!(
            reply["data"]["code"], "invalid_argument",
            "{case} -> {reply}"
        );
        assert!(
            reply["data"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    let huge = "x".repeat(20 * 1024);
    ws.send_text(
        json!({"type": "send", "id": "big", "data": {"client_msg_id": "big", "to_user_id": bob.id, "msg_type": "text", "content": huge}})
            .to_string(),
    )
    .await;
    let reply = ws.expect_next("error").await;
    assert_eq!(reply["id"], "big");
    assert_eq!(reply["data"]["code"], "payload_too_large");

    ws.stream
        .send(Message::binary(vec![1, 2, 3]))
        .await
        .expect("send binary");
    ws.expect_next("error").await;

    // Still fully usable.
    let ack = ws
        .send_message(Target::User(&bob.id), "ok", "still works")
        .await;
    assert_eq!(ack["data"]["message"]["content"], "still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_than_ten_unparseable_frames_in_ten_seconds_close_with_1008() {
    let cluster = Cluster::start(1).await;
    let alice = cluster.user().await;
    let mut ws = Ws::connect(cluster.gw(0), &alice, "d").await;
    for _ in 0..10 {
        ws.send_text("{garbage").await;
        ws.expect_next("error").await;
    }
    // Ten is tolerated.
    ws.barrier().await;
    ws.send_text("{garbage").await;
    let close = ws.expect_close().await.expect("close frame");
    assert_eq!(u16::from(close.code), 1008);
    // Other clients are unaffected.
    let mut other = Ws::connect(cluster.gw(0), &alice, "e").await;
    other.barrier().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_over_one_mebibyte_close_the_socket_not_the_gateway() {
    let cluster = Cluster::start(1).await;
    let alice = cluster.user().await;
    let mut ws = Ws::connect(cluster.gw(0), &alice, "d").await;
    let frame = json!({"type": "ping", "data": {"pad": "x".repeat(1024 * 1024)}}).to_string();
    // The server may reset before the whole frame is written.
    let _ = ws.stream.send(Message::text(frame)).await;
    ws.expect_close().await;
    let mut other = Ws::connect(cluster.gw(0), &alice, "e").await;
    other.barrier().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_sockets_are_closed_and_active_ones_are_not() {
    let cluster = Cluster::start_with(1, |s| s.ws_idle_timeout = Duration::from_secs(1)).await;
    let alice = cluster.user().await;
    let mut silent = Ws::connect(cluster.gw(0), &alice, "silent").await;
    let mut chatty = Ws::connect(cluster.gw(0), &alice, "chatty").await;
    // The silent client does not even read, so it never answers the server's pings.
    // The chatty one sends a frame more often than the timeout.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        chatty.barrier().await;
    }
    // The server sent close 1000 and waited for the reply; this client, reading only
    // now, may first fail to answer a queued ping on the closed connection, which
    // surfaces as an abnormal close. Either way the server ended the socket.
    let close = silent.expect_close().await.expect("close frame");
    let code = u16::from(close.code);
    assert!(code == 1000 || code == 1006, "closed with {code}");
    chatty.barrier().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answering_server_pings_keeps_a_socket_open() {
    let cluster = Cluster::start_with(1, |s| s.ws_idle_timeout = Duration::from_secs(1)).await;
    let alice = cluster.user().await;
    let mut ws = Ws::connect(cluster.gw(0), &alice, "d").await;
    // Reading lets tungstenite answer the server's pings with pongs; no frame of our
    // own is sent for three idle timeouts.
    let read = async {
        loop {
            let _ = ws.next_event().await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), read).await;
    ws.barrier().await;
}
