//! The REST API's Friends, Conversations/groups, Messages and Presence tables
//! (API.md) over HTTP against every real service (user, auth, social, message,
//! presence) started in-process, over real PostgreSQL, Redis and RabbitMQ.

mod common;

use beehive_common::Component;
use beehive_proto::v1 as pb;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The shared harness's cluster, one gateway, with accounts registered over REST.
struct Cluster {
    inner: common::Cluster,
    http: reqwest::Client,
}

type Account = common::User;

async fn start() -> Cluster {
    Cluster {
        inner: common::Cluster::start(1).await,
        http: reqwest::Client::new(),
    }
}

impl Cluster {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.inner.gw(0), path)
    }

    /// The presence service's address (tests register connections there directly).
    fn presence_addr(&self) -> &str {
        self.inner.settings.component_addr(Component::Presence)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        who: &Account,
    ) -> (StatusCode, Value) {
        common::rest(self.inner.gw(0), who, method, path, body).await
    }

    async fn get(&self, path: &str, who: &Account) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None, who).await
    }

    async fn post(&self, path: &str, body: Value, who: &Account) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body), who)
            .await
    }

    async fn register(&self, prefix: &str) -> Account {
        let name = format!(
            "{prefix}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let response = self
            .http
            .post(self.url("/api/v1/auth/register"))
            .json(&json!({"username": name, "password": "correct horse battery"}))
            .send()
            .await
            .expect("register");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        Account {
            id: body["user"]["id"].as_str().expect("id").to_owned(),
            username: name,
            token: body["access_token"].as_str().expect("token").to_owned(),
            session_id: String::new(),
        }
    }

    async fn befriend(&self, a: &Account, b: &Account) {
        let (status, body) = self
            .post("/api/v1/friends/requests", json!({"to_user_id": b.id}), a)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["request"]["id"].as_str().expect("request id");
        let (status, body) = self
            .post(
                &format!("/api/v1/friends/requests/{id}/accept"),
                json!({}),
                b,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .expect("array")
        .iter()
        .filter_map(|v| v[key].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn friend_requests_and_friendships() {
    let c = start().await;
    let ann = c.register("ann").await;
    let bob = c.register("bob").await;
    let carol = c.register("carol").await;

    let (status, body) = c
        .post(
            "/api/v1/friends/requests",
            json!({"to_user_id": bob.id, "message": "hi bob"}),
            &ann,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let request = &body["request"];
    assert_eq!(request["from_user_id"], ann.id.as_str());
    assert_eq!(request["to_user_id"], bob.id.as_str());
    assert_eq!(request["message"], "hi bob");
    assert_eq!(request["status"], "pending");
    assert!(
        request["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let request_id = request["id"].as_str().expect("id").to_owned();

    // A second pending request to the same user within 24 h.
    let (status, body) = c
        .post(
            "/api/v1/friends/requests",
            json!({"to_user_id": bob.id}),
            &ann,
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "already_exists");
    let (status, body) = c
        .post(
            "/api/v1/friends/requests",
            json!({"to_user_id": ann.id}),
            &ann,
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");
    let (status, body) = c
        .post("/api/v1/friends/requests", json!({"to_user_id": 42}), &ann)
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");

    let (status, incoming) = c
        .get("/api/v1/friends/requests?direction=incoming", &bob)
        .await;
    assert_eq!(status, StatusCode::OK, "{incoming}");
    assert_eq!(ids(&incoming["requests"], "id"), vec![request_id.clone()]);
    assert!(incoming["next_cursor"].is_null());
    let (_, outgoing) = c
        .get("/api/v1/friends/requests?direction=outgoing", &ann)
        .await;
    assert_eq!(ids(&outgoing["requests"], "id"), vec![request_id.clone()]);
    let (status, body) = c
        .get("/api/v1/friends/requests?direction=sideways", &ann)
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");

    // Only the addressee accepts.
    let (status, _) = c
        .post(
            &format!("/api/v1/friends/requests/{request_id}/accept"),
            json!({}),
            &carol,
        )
        .await;
    assert!(status.is_client_error(), "{status}");
    let (status, body) = c
        .post(
            &format!("/api/v1/friends/requests/{request_id}/accept"),
            json!({}),
            &bob,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["friend"]["id"], ann.id.as_str());
    assert!(
        !body["friend"]
            .as_object()
            .expect("user")
            .contains_key("email"),
        "{body}"
    );

    let (_, friends) = c.get("/api/v1/friends", &ann).await;
    assert_eq!(ids(&friends["friends"], "id"), vec![bob.id.clone()]);
    let (_, friends) = c.get("/api/v1/friends", &bob).await;
    assert_eq!(ids(&friends["friends"], "id"), vec![ann.id.clone()]);
    let (status, body) = c
        .post(
            "/api/v1/friends/requests",
            json!({"to_user_id": bob.id}),
            &ann,
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "already_exists");

    // Reject.
    let (_, body) = c
        .post(
            "/api/v1/friends/requests",
            json!({"to_user_id": ann.id}),
            &carol,
        )
        .await;
    let carol_request = body["request"]["id"].as_str().expect("id").to_owned();
    let response = c
        .http
        .post(c.url(&format!("/api/v1/friends/requests/{carol_request}/reject")))
        .bearer_auth(&ann.token)
        .send()
        .await
        .expect("reject");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (_, incoming) = c.get("/api/v1/friends/requests", &ann).await;
    assert!(ids(&incoming["requests"], "id").is_empty(), "{incoming}");

    // Unfriend, both directions.
    let (status, _) = c
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/friends/{}", bob.id),
            None,
            &ann,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, friends) = c.get("/api/v1/friends", &bob).await;
    assert!(ids(&friends["friends"], "id").is_empty());
}

#[tokio::test]
async fn direct_messages_history_and_read_state() {
    let c = start().await;
    let ann = c.register("ann").await;
    let bob = c.register("bob").await;

    let send = |client_msg_id: &str, content: &str| json!({"client_msg_id": client_msg_id, "to_user_id": bob.id, "msg_type": "text", "content": content});
    let (status, body) = c.post("/api/v1/messages", send("m0", "hi"), &ann).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "permission_denied");

    c.befriend(&ann, &bob).await;
    let (status, body) = c.post("/api/v1/messages", send("m1", "hello"), &ann).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let first = body["message"].clone();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["msg_type"], "text");
    assert_eq!(first["sender_id"], ann.id.as_str());
    assert_eq!(first["client_msg_id"], "m1");
    assert!(first["file_id"].is_null());
    let conversation_id = first["conversation_id"].as_str().expect("id").to_owned();

    // Idempotent on client_msg_id.
    let (status, body) = c.post("/api/v1/messages", send("m1", "hello"), &ann).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["message"]["id"], first["id"]);
    for i in 2..=4 {
        let (status, body) = c
            .post(
                "/api/v1/messages",
                json!({"client_msg_id": format!("m{i}"), "conversation_id": conversation_id,
                       "msg_type": "text", "content": format!("n{i}")}),
                &ann,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["message"]["seq"], i);
    }

    // Bad sends.
    for (payload, what) in [
        (
            json!({"client_msg_id": "x", "to_user_id": bob.id, "msg_type": "video", "content": "?"}),
            "unknown type",
        ),
        (
            json!({"client_msg_id": "x", "to_user_id": bob.id, "msg_type": "image", "content": "?"}),
            "image without file",
        ),
        (
            json!({"client_msg_id": "x", "to_user_id": bob.id, "conversation_id": conversation_id,
                   "msg_type": "text", "content": "?"}),
            "two targets",
        ),
        (
            json!({"client_msg_id": "x", "msg_type": "text", "content": "?"}),
            "no target",
        ),
        (
            json!({"client_msg_id": "", "to_user_id": bob.id, "msg_type": "text", "content": "?"}),
            "empty client_msg_id",
        ),
    ] {
        let (status, body) = c.post("/api/v1/messages", payload, &ann).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");
        let _ = what;
    }

    // Bob's view: the conversation with 4 unread.
    let (status, list) = c.get("/api/v1/conversations", &bob).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let conv = list["conversations"]
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["id"] == conversation_id.as_str())
        .expect("listed")
        .clone();
    assert_eq!(conv["kind"], "direct");
    assert_eq!(conv["last_seq"], 4);
    assert_eq!(conv["unread_count"], 4);
    assert_eq!(conv["read_seq"], 0);
    assert_eq!(conv["last_message"]["seq"], 4);
    let mut members: Vec<String> = conv["member_ids"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    members.sort();
    let mut expected = vec![ann.id.clone(), bob.id.clone()];
    expected.sort();
    assert_eq!(members, expected);
    // The sender has read its own messages.
    let (_, own) = c
        .get(&format!("/api/v1/conversations/{conversation_id}"), &ann)
        .await;
    assert_eq!(own["conversation"]["unread_count"], 0);

    // History anchors.
    let seqs = |body: &Value| -> Vec<u64> {
        body["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["seq"].as_u64())
            .collect()
    };
    let history = format!("/api/v1/conversations/{conversation_id}/messages");
    let (_, all) = c.get(&history, &bob).await;
    assert_eq!(seqs(&all), vec![1, 2, 3, 4]);
    let (_, after) = c.get(&format!("{history}?after_seq=1&limit=2"), &bob).await;
    assert_eq!(seqs(&after), vec![2, 3]);
    let (_, before) = c
        .get(&format!("{history}?before_seq=4&limit=2"), &bob)
        .await;
    assert_eq!(seqs(&before), vec![2, 3]);
    let (_, latest) = c.get(&format!("{history}?limit=1"), &bob).await;
    assert_eq!(seqs(&latest), vec![4]);
    let (status, body) = c
        .get(&format!("{history}?after_seq=1&before_seq=3"), &bob)
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");
    let (status, body) = c.get(&format!("{history}?after_seq=abc"), &bob).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");

    // Read up to 3, never down.
    let read = format!("/api/v1/conversations/{conversation_id}/read");
    let (status, _) = c.post(&read, json!({"seq": 3}), &bob).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = c.post(&read, json!({"seq": 1}), &bob).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, conv) = c
        .get(&format!("/api/v1/conversations/{conversation_id}"), &bob)
        .await;
    assert_eq!(conv["conversation"]["read_seq"], 3);
    assert_eq!(conv["conversation"]["unread_count"], 1);
    let (status, body) = c.post(&read, json!({"seq": "three"}), &bob).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");

    let (status, receipts) = c
        .get(
            &format!("/api/v1/conversations/{conversation_id}/receipts"),
            &ann,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{receipts}");
    let receipts = receipts["receipts"].as_array().expect("receipts");
    assert_eq!(receipts.len(), 2);
    let bobs = receipts
        .iter()
        .find(|r| r["user_id"] == bob.id.as_str())
        .expect("bob's receipt");
    assert_eq!(bobs["read_seq"], 3);

    // Strangers see nothing of it.
    let eve = c.register("eve").await;
    for path in [
        format!("/api/v1/conversations/{conversation_id}"),
        format!("/api/v1/conversations/{conversation_id}/messages"),
        format!("/api/v1/conversations/{conversation_id}/receipts"),
    ] {
        let (status, body) = c.get(&path, &eve).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
}

#[tokio::test]
async fn groups_and_membership() {
    let c = start().await;
    let owner = c.register("owner").await;
    let m1 = c.register("m1").await;
    let m2 = c.register("m2").await;
    let late = c.register("late").await;
    let outsider = c.register("out").await;

    let (status, body) = c
        .post(
            "/api/v1/groups",
            json!({"name": "team", "member_ids": [m1.id, m2.id]}),
            &owner,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let group = &body["conversation"];
    assert_eq!(group["kind"], "group");
    assert_eq!(group["name"], "team");
    assert_eq!(group["owner_id"], owner.id.as_str());
    assert_eq!(group["member_ids"].as_array().expect("members").len(), 3);
    let id = group["id"].as_str().expect("id").to_owned();
    let (status, body) = c
        .post(
            "/api/v1/groups",
            json!({"name": "x", "member_ids": "nope"}),
            &owner,
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");

    let (status, body) = c
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/groups/{id}"),
            Some(json!({"name": "renamed"})),
            &m1,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["conversation"]["name"], "renamed");

    let (status, body) = c
        .post(
            "/api/v1/messages",
            json!({"client_msg_id": "g1", "conversation_id": id, "msg_type": "text", "content": "hey"}),
            &m2,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, body) = c
        .post(
            &format!("/api/v1/groups/{id}/members"),
            json!({"user_ids": [late.id]}),
            &m1,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["conversation"]["member_ids"]
            .as_array()
            .expect("m")
            .len(),
        4
    );
    let (status, body) = c
        .post(
            &format!("/api/v1/groups/{id}/members"),
            json!({"user_ids": []}),
            &m1,
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");

    // Outsiders: 404 on the conversation, no sending.
    let (status, body) = c
        .get(&format!("/api/v1/conversations/{id}"), &outsider)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, _) = c
        .post(
            "/api/v1/messages",
            json!({"client_msg_id": "o1", "conversation_id": id, "msg_type": "text", "content": "hi"}),
            &outsider,
        )
        .await;
    assert!(
        status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
        "{status}"
    );

    // A member removes only itself; the owner removes anyone.
    let (status, body) = c
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/groups/{id}/members/{}", m2.id),
            None,
            &m1,
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "permission_denied");
    let (status, _) = c
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/groups/{id}/members/{}", m1.id),
            None,
            &m1,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = c
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/groups/{id}/members/{}", m2.id),
            None,
            &owner,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, body) = c.get(&format!("/api/v1/conversations/{id}"), &owner).await;
    let mut members: Vec<String> = body["conversation"]["member_ids"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    members.sort();
    let mut expected = vec![owner.id.clone(), late.id.clone()];
    expected.sort();
    assert_eq!(members, expected);
    let (status, _) = c.get(&format!("/api/v1/conversations/{id}"), &m1).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a member who left sees nothing"
    );
}

#[tokio::test]
async fn presence_is_visible_to_friends_and_conversation_peers_only() {
    let c = start().await;
    let ann = c.register("ann").await;
    let friend = c.register("friend").await;
    let peer = c.register("peer").await;
    let stranger = c.register("stranger").await;
    c.befriend(&ann, &friend).await;
    let (status, body) = c
        .post(
            "/api/v1/groups",
            json!({"name": "g", "member_ids": [peer.id]}),
            &ann,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Everyone but ann has a connected device, registered as a gateway would.
    let channel = tonic::transport::Channel::from_shared(c.presence_addr().to_owned())
        .expect("uri")
        .connect()
        .await
        .expect("presence reachable");
    let mut presence = pb::presence_service_client::PresenceServiceClient::new(channel);
    for user in [&friend, &peer, &stranger] {
        presence
            .register_connection(pb::RegisterConnectionRequest {
                instance_id: "test-gateway".into(),
                connection: Some(pb::Connection {
                    user_id: user.id.clone(),
                    device_id: "phone".into(),
                    connection_id: uuid::Uuid::new_v4().to_string(),
                    session_id: uuid::Uuid::new_v4().to_string(),
                }),
            })
            .await
            .expect("register connection");
    }

    let (status, body) = c
        .get(
            &format!(
                "/api/v1/presence?user_ids={},{},{},{}",
                friend.id, peer.id, stranger.id, ann.id
            ),
            &ann,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list = body["presence"].as_array().expect("presence");
    assert_eq!(
        ids(&body["presence"], "user_id"),
        vec![
            friend.id.clone(),
            peer.id.clone(),
            stranger.id.clone(),
            ann.id.clone()
        ],
        "in the order asked"
    );
    assert_eq!(list[0]["online"], true);
    assert_eq!(list[0]["devices"], 1);
    assert_eq!(
        list[1]["online"], true,
        "a shared conversation makes it visible"
    );
    assert_eq!(list[1]["devices"], 1);
    assert_eq!(list[2]["online"], false, "strangers look offline");
    assert_eq!(list[2]["devices"], 0);
    assert!(list[2]["last_seen"].is_null());
    assert_eq!(list[3]["online"], false, "ann has no device");

    let (status, body) = c.get("/api/v1/presence?user_ids=", &ann).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");
}
