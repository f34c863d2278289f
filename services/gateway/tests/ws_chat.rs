//! Chat over WebSocket across two gateway instances: delivery to every device,
//! authentication, permissions, idempotent sends, typing, receipts and kicks.

mod common;

use common::{Cluster, Target, TokenVia, Ws};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

fn messages(frames: &[Value]) -> Vec<&Value> {
    frames.iter().filter(|f| f["type"] == "message").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_chat_both_ways_with_multi_device_delivery() {
    let cluster = Cluster::start(2).await;
    let (alice, bob) = (cluster.user().await, cluster.user().await);
    cluster.befriend(&alice, &bob).await;
    let mut a1 = Ws::connect(cluster.gw(0), &alice, "a-phone").await;
    let mut a2 = Ws::connect(cluster.gw(1), &alice, "a-laptop").await;
    let mut b1 = Ws::connect(cluster.gw(1), &bob, "b-phone").await;
    let mut b2 = Ws::connect(cluster.gw(1), &bob, "b-laptop").await;

    let ack = a1
        .send_message(Target::User(&bob.id), "hello-1", "hello bob")
        .await;
    let sent = &ack["data"]["message"];
    assert_eq!(ack["data"]["client_msg_id"], "hello-1");
    assert_eq!(sent["seq"], 1);
    assert_eq!(sent["sender_id"], alice.id.as_str());
    assert_eq!(sent["content"], "hello bob");
    assert_eq!(sent["msg_type"], "text");
    let conversation = sent["conversation_id"].as_str().expect("id").to_owned();
    for ws in [&mut b1, &mut b2, &mut a2] {
        let got = ws.expect_message("hello bob").await;
        assert_eq!(&got, sent, "every device sees the stored message");
    }

    let ack = b1
        .send_message(Target::Conversation(&conversation), "reply-1", "hi alice")
        .await;
    assert_eq!(ack["data"]["message"]["seq"], 2);
    for ws in [&mut a1, &mut a2, &mut b2] {
        let got = ws.expect_message("hi alice").await;
        assert_eq!(got["seq"], 2);
        assert_eq!(got["sender_id"], bob.id.as_str());
    }

    // A round trip after everything arrived: no device got a message twice, and the
    // sending devices got only their acks.
    let ack = a1
        .send_message(Target::Conversation(&conversation), "marker", "marker")
        .await;
    assert_eq!(ack["data"]["message"]["seq"], 3);
    for ws in [&mut b1, &mut b2, &mut a2] {
        let got = ws.expect("message").await;
        assert_eq!(
            got["data"]["message"]["content"], "marker",
            "a duplicate or stray message arrived before the marker: {got}"
        );
    }
    let leftovers = a1.barrier().await;
    assert!(
        messages(&leftovers).is_empty(),
        "the sending device got its own message: {leftovers:?}"
    );
    let leftovers = b1.barrier().await;
    assert!(messages(&leftovers).is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_token_transport_works_and_bad_tokens_get_401() {
    let cluster = Cluster::start(1).await;
    let alice = cluster.user().await;
    let addr = cluster.gw(0);
    for via in [TokenVia::Header, TokenVia::Subprotocol, TokenVia::Query] {
        let mut ws = Ws::connect_via(addr, &alice.token, Some("d"), via)
            .await
            .unwrap_or_else(|e| panic!("{via:?}: {e}"));
        match via {
            TokenVia::Subprotocol => assert_eq!(ws.protocol.as_deref(), Some("beehive.v1")),
            _ => assert_eq!(ws.protocol, None, "no protocol offered, none selected"),
        }
        let id = ws.request("ping", json!({})).await;
        let pong = ws.expect_reply(&id).await;
        assert_eq!(pong["type"], "pong", "{via:?}");
    }

    let refused = |result: Result<Ws, tungstenite::Error>| match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("upgrade was accepted"),
    };
    for via in [TokenVia::Header, TokenVia::Subprotocol, TokenVia::Query] {
        assert_eq!(
            refused(Ws::connect_via(addr, "not.a.jwt", None, via).await),
            401
        );
    }
    // No token at all.
    let request = common::request(addr, "", None, TokenVia::Query);
    let result = tokio_tungstenite::connect_async(request).await;
    match result {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    // A revoked session's token.
    cluster.logout(&alice).await;
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        match Ws::connect_via(addr, &alice.token, None, TokenVia::Header).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401);
                break;
            }
            Err(other) => panic!("unexpected error {other}"),
            // The revocation may take a moment to reach the gateway.
            Ok(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "revoked token still accepted"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_friends_and_non_members_are_refused() {
    let cluster = Cluster::start(1).await;
    let (alice, stranger, owner) = (
        cluster.user().await,
        cluster.user().await,
        cluster.user().await,
    );
    let group = cluster.group(&owner, std::slice::from_ref(&stranger)).await;
    let mut ws = Ws::connect(cluster.gw(0), &alice, "d").await;

    let id = ws
        .request(
            "send",
            json!({"client_msg_id": "x1", "to_user_id": stranger.id, "msg_type": "text", "content": "hi"}),
        )
        .await;
    let reply = ws.expect_reply(&id).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["data"]["code"], "permission_denied");

    let id = ws
        .request(
            "send",
            json!({"client_msg_id": "x2", "conversation_id": group, "msg_type": "text", "content": "hi"}),
        )
        .await;
    let reply = ws.expect_reply(&id).await;
    assert_eq!(reply["type"], "error", "{reply}");
    let code = reply["data"]["code"].as_str().expect("code");
    assert!(
        code == "permission_denied" || code == "not_found",
        "non-member send got {reply}"
    );
    // Nothing was stored, and the socket still works.
    assert!(cluster.history(&owner, &group).await.is_empty());
    ws.barrier().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_client_msg_id_twice_stores_one_message() {
    let cluster = Cluster::start(2).await;
    let (alice, bob) = (cluster.user().await, cluster.user().await);
    cluster.befriend(&alice, &bob).await;
    let mut a = Ws::connect(cluster.gw(0), &alice, "a").await;
    let mut b = Ws::connect(cluster.gw(1), &bob, "b").await;
    let first = a.send_message(Target::User(&bob.id), "same", "once").await;
    let second = a.send_message(Target::User(&bob.id), "same", "once").await;
    assert_eq!(first["data"]["message"], second["data"]["message"]);
    let conversation = first["data"]["message"]["conversation_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let history = cluster.history(&bob, &conversation).await;
    assert_eq!(history.len(), 1, "{history:?}");
    b.expect_message("once").await;
    a.send_message(Target::Conversation(&conversation), "next", "next")
        .await;
    let got = b.expect("message").await;
    assert_eq!(
        got["data"]["message"]["content"], "next",
        "duplicate push: {got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typing_and_receipts_reach_the_other_member() {
    let cluster = Cluster::start(2).await;
    let (alice, bob) = (cluster.user().await, cluster.user().await);
    cluster.befriend(&alice, &bob).await;
    let mut a = Ws::connect(cluster.gw(0), &alice, "a").await;
    let mut b = Ws::connect(cluster.gw(1), &bob, "b").await;
    let ack = a.send_message(Target::User(&bob.id), "m1", "read me").await;
    let conversation = ack["data"]["message"]["conversation_id"]
        .as_str()
        .expect("id")
        .to_owned();
    b.expect_message("read me").await;

    a.request("typing", json!({"conversation_id": conversation}))
        .await;
    let typing = b.expect("typing").await;
    assert_eq!(
        typing["data"],
        json!({"conversation_id": conversation, "user_id": alice.id})
    );

    b.request(
        "delivered",
        json!({"conversation_id": conversation, "seq": 1}),
    )
    .await;
    let receipt = a.expect("receipt").await;
    assert_eq!(receipt["data"]["conversation_id"], conversation.as_str());
    assert_eq!(receipt["data"]["user_id"], bob.id.as_str());
    assert_eq!(receipt["data"]["delivered_seq"], 1);

    b.request("read", json!({"conversation_id": conversation, "seq": 1}))
        .await;
    loop {
        let receipt = a.expect("receipt").await;
        if receipt["data"]["read_seq"] == 1 {
            break;
        }
    }
    // Errors of reply-less frames still reach the client.
    let id = b
        .request(
            "read",
            json!({"conversation_id": uuid::Uuid::now_v7().to_string(), "seq": 1}),
        )
        .await;
    let reply = b.expect_reply(&id).await;
    assert_eq!(reply["type"], "error", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_kicks_exactly_that_sessions_sockets() {
    let cluster = Cluster::start(2).await;
    let alice = cluster.user().await;
    let other_session = cluster.login(&alice).await;
    let mut s1_phone = Ws::connect(cluster.gw(0), &alice, "phone").await;
    let mut s1_laptop = Ws::connect(cluster.gw(1), &alice, "laptop").await;
    let mut s2 = Ws::connect(cluster.gw(1), &other_session, "tablet").await;

    cluster.logout(&alice).await;
    for ws in [&mut s1_phone, &mut s1_laptop] {
        let kicked = ws.expect("kicked").await;
        assert_eq!(kicked["data"]["reason"], "logout");
        let close = ws.expect_close().await.expect("a close frame");
        assert_eq!(u16::from(close.code), 4001);
    }
    // The other session is untouched.
    let leftovers = s2.barrier().await;
    assert!(
        leftovers.iter().all(|f| f["type"] != "kicked"),
        "{leftovers:?}"
    );
}
