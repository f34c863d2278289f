//! Both transports apply the core's rules (`beehive_gateway::app`) and answer the same
//! mistake with the same error code. The rules themselves are unit-tested once in
//! `app/`; each test here drives one rule through REST and through a WebSocket.

mod common;

use common::{Cluster, User, Ws, rest};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The code of a REST error body, after checking the status.
fn rest_code(status: StatusCode, body: &Value, expected: StatusCode) -> String {
    assert_eq!(status, expected, "{body}");
    body["error"]["code"]
        .as_str()
        .expect("error code")
        .to_owned()
}

/// Sends `data` as a WebSocket `send` and returns the code of the `error` reply.
async fn ws_error_code(ws: &mut Ws, kind: &str, data: Value) -> String {
    let id = ws.request(kind, data).await;
    let reply = ws.expect_reply(&id).await;
    assert_eq!(reply["type"], "error", "{reply}");
    reply["data"]["code"]
        .as_str()
        .expect("error code")
        .to_owned()
}

async fn post_message(cluster: &Cluster, user: &User, data: Value) -> (StatusCode, Value) {
    rest(
        cluster.gw(0),
        user,
        Method::POST,
        "/api/v1/messages",
        Some(data),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_msg_id_over_64_characters_is_invalid_argument_on_both() {
    let cluster = Cluster::start(1).await;
    let (alice, bob) = (cluster.user().await, cluster.user().await);
    let group = cluster.group(&alice, std::slice::from_ref(&bob)).await;
    let mut ws = Ws::connect(cluster.gw(0), &alice, "d").await;
    let send = |client_msg_id: String| json!({"client_msg_id": client_msg_id, "conversation_id": group, "msg_type": "text", "content": "hi"});

    let too_long = "k".repeat(65);
    let (status, body) = post_message(&cluster, &alice, send(too_long.clone())).await;
    let over_rest = rest_code(status, &body, StatusCode::BAD_REQUEST);
    let over_ws = ws_error_code(&mut ws, "send", send(too_long)).await;
    assert_eq!(
        (over_rest.as_str(), over_ws.as_str()),
        ("invalid_argument", "invalid_argument")
    );

    // The limit counts characters, as the message service does: 64 four-byte
    // characters (256 bytes) are accepted by both.
    let (status, body) = post_message(&cluster, &alice, send("😀".repeat(64))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = ws.request("send", send("🙂".repeat(64))).await;
    let reply = ws.expect_reply(&id).await;
    assert_eq!(reply["type"], "ack", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn content_over_16_kib_is_payload_too_large_on_both() {
    let cluster = Cluster::start(1).await;
    let (alice, bob) = (cluster.user().await, cluster.user().await);
    let group = cluster.group(&alice, std::slice::from_ref(&bob)).await;
    let mut ws = Ws::connect(cluster.gw(0), &alice, "d").await;
    let big = "x".repeat(16 * 1024 + 1);
    let send = |client_msg_id: &str, to: Value| {
        let mut data = json!({"client_msg_id": client_msg_id, "msg_type": "text", "content": big});
        data.as_object_mut()
            .expect("object")
            .extend(to.as_object().expect("object").clone());
        data
    };

    let (status, body) = post_message(
        &cluster,
        &alice,
        send("r1", json!({"conversation_id": group})),
    )
    .await;
    let rest_group = rest_code(status, &body, StatusCode::PAYLOAD_TOO_LARGE);
    let ws_group = ws_error_code(
        &mut ws,
        "send",
        send("w1", json!({"conversation_id": group})),
    )
    .await;
    assert_eq!(
        (rest_group.as_str(), ws_group.as_str()),
        ("payload_too_large", "payload_too_large")
    );

    // Checked before anything else: a direct message to a non-friend gets the same
    // answer on both (REST used to say permission_denied here, WebSocket 413).
    let (status, body) =
        post_message(&cluster, &alice, send("r2", json!({"to_user_id": bob.id}))).await;
    let rest_direct = rest_code(status, &body, StatusCode::PAYLOAD_TOO_LARGE);
    let ws_direct = ws_error_code(&mut ws, "send", send("w2", json!({"to_user_id": bob.id}))).await;
    assert_eq!(rest_direct, ws_direct);
    assert!(cluster.history(&alice, &group).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_messages_to_non_friends_are_permission_denied_on_both() {
    let cluster = Cluster::start(1).await;
    let (alice, stranger, friend) = (
        cluster.user().await,
        cluster.user().await,
        cluster.user().await,
    );
    cluster.befriend(&alice, &friend).await;
    let mut ws = Ws::connect(cluster.gw(0), &alice, "d").await;
    let send = |id: &str, to: &User| json!({"client_msg_id": id, "to_user_id": to.id, "msg_type": "text", "content": "hi"});

    let (status, body) = post_message(&cluster, &alice, send("r1", &stranger)).await;
    let rest_code = rest_code(status, &body, StatusCode::FORBIDDEN);
    let ws_code = ws_error_code(&mut ws, "send", send("w1", &stranger)).await;
    assert_eq!(
        (rest_code.as_str(), ws_code.as_str()),
        ("permission_denied", "permission_denied")
    );

    let (status, body) = post_message(&cluster, &alice, send("r2", &friend)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = ws.request("send", send("w2", &friend)).await;
    assert_eq!(ws.expect_reply(&id).await["type"], "ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_target_is_required_on_both() {
    let cluster = Cluster::start(1).await;
    let (alice, bob) = (cluster.user().await, cluster.user().await);
    let group = cluster.group(&alice, std::slice::from_ref(&bob)).await;
    let mut ws = Ws::connect(cluster.gw(0), &alice, "d").await;
    let both = json!({"client_msg_id": "c", "conversation_id": group, "to_user_id": bob.id, "msg_type": "text", "content": "hi"});

    let (status, body) = post_message(&cluster, &alice, both.clone()).await;
    let rest_code = rest_code(status, &body, StatusCode::BAD_REQUEST);
    let ws_code = ws_error_code(&mut ws, "send", both).await;
    assert_eq!(
        (rest_code.as_str(), ws_code.as_str()),
        ("invalid_argument", "invalid_argument")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_of_a_non_friend_is_hidden_on_both() {
    let cluster = Cluster::start(1).await;
    let (alice, friend, stranger) = (
        cluster.user().await,
        cluster.user().await,
        cluster.user().await,
    );
    cluster.befriend(&alice, &friend).await;
    // Both others are online: only the friend may be seen as such.
    let _friend_socket = Ws::connect(cluster.gw(0), &friend, "phone").await;
    let _stranger_socket = Ws::connect(cluster.gw(0), &stranger, "phone").await;
    let mut ws = Ws::connect(cluster.gw(0), &alice, "d").await;
    let summary = |list: &Value| -> Vec<(String, bool, u64, bool)> {
        list.as_array()
            .expect("presence list")
            .iter()
            .map(|p| {
                (
                    p["user_id"].as_str().expect("user_id").to_owned(),
                    p["online"].as_bool().expect("online"),
                    p["devices"].as_u64().expect("devices"),
                    p["last_seen"].is_null(),
                )
            })
            .collect()
    };
    let expected = vec![
        (stranger.id.clone(), false, 0),
        (friend.id.clone(), true, 1),
    ];

    let path = format!("/api/v1/presence?user_ids={},{}", stranger.id, friend.id);
    let (status, body) = rest(cluster.gw(0), &alice, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let over_rest = summary(&body["presence"]);

    let id = ws
        .request(
            "get_presence",
            json!({"user_ids": [stranger.id, friend.id]}),
        )
        .await;
    let reply = ws.expect_reply(&id).await;
    assert_eq!(reply["type"], "presence_list", "{reply}");
    let over_ws = summary(&reply["data"]["presence"]);

    // `last_seen` of an online friend may or may not be set; compare what the rule
    // decides: who is visible, online and with how many devices.
    let visible = |list: Vec<(String, bool, u64, bool)>| -> Vec<(String, bool, u64)> {
        list.into_iter()
            .map(|(id, online, devices, _)| (id, online, devices))
            .collect()
    };
    assert_eq!(over_rest, over_ws);
    assert_eq!(visible(over_rest.clone()), expected);
    assert!(over_rest[0].3, "a hidden user's last_seen is null");

    // An empty list is the same mistake on both.
    let (status, body) = rest(
        cluster.gw(0),
        &alice,
        Method::GET,
        "/api/v1/presence?user_ids=",
        None,
    )
    .await;
    let rest_empty = rest_code(status, &body, StatusCode::BAD_REQUEST);
    let ws_empty = ws_error_code(&mut ws, "get_presence", json!({"user_ids": []})).await;
    assert_eq!(
        (rest_empty.as_str(), ws_empty.as_str()),
        ("invalid_argument", "invalid_argument")
    );
}
