//! End-to-end message search through the real `beehive serve all` binary: API.md's
//! Search examples over HTTP (Chinese words, HTML in content, filters, paging, the
//! join-seq scope, leaving, bad input). Indexing is asynchronous, so each new message
//! is awaited until it is searchable.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::Server;

const PATIENCE: Duration = Duration::from_secs(30);

struct User {
    id: String,
    token: String,
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Percent-encodes a query value.
fn enc(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn register(server: &Server, prefix: &str) -> User {
    let reply = server
        .call(
            "POST",
            "/auth/register",
            Some(json!({"username": unique(prefix), "password": "password-123"})),
            None,
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    User {
        id: reply.body["user"]["id"].as_str().expect("id").to_owned(),
        token: reply.body["access_token"]
            .as_str()
            .expect("token")
            .to_owned(),
    }
}

async fn send(server: &Server, who: &User, conversation: &str, content: &str) -> Value {
    let reply = server
        .call(
            "POST",
            "/messages",
            Some(json!({
                "client_msg_id": uuid::Uuid::new_v4().to_string(),
                "conversation_id": conversation,
                "msg_type": "text",
                "content": content,
            })),
            Some(&who.token),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.body["message"].clone()
}

async fn search(server: &Server, who: &User, query: &str) -> support::Reply {
    server
        .call(
            "GET",
            &format!("/search/messages?{query}"),
            None,
            Some(&who.token),
        )
        .await
}

fn contents(body: &Value) -> Vec<String> {
    body["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| {
            h["message"]["content"]
                .as_str()
                .expect("content")
                .to_owned()
        })
        .collect()
}

/// Waits until `message` shows up for `who` searching `word`.
async fn indexed(server: &Server, who: &User, word: &str, message: &Value) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        let reply = search(server, who, &format!("q={}", enc(word))).await;
        if reply.status == 200
            && reply.body["hits"]
                .as_array()
                .is_some_and(|hits| hits.iter().any(|h| h["message"]["id"] == message["id"]))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never became searchable", message["content"]);
}

#[tokio::test]
async fn search_finds_words_within_the_callers_scope() {
    let server = Server::start(&[]).await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;
    let dave = register(&server, "dave").await;
    let created = server
        .call(
            "POST",
            "/groups",
            Some(json!({"name": "团队", "member_ids": [bob.id]})),
            Some(&alice.token),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let group = created.body["conversation"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    send(&server, &alice, &group, "我们的消息").await;
    send(&server, &bob, &group, "消费记录").await;
    send(&server, &alice, &group, "已添加为好友").await;
    let html = send(&server, &bob, &group, "<script>alert('消息')</script>").await;
    indexed(&server, &alice, "消息", &html).await;

    // 消息 finds 我们的消息, never 消费; newest first; HTML escaped around <em>.
    let reply = search(&server, &alice, &format!("q={}", enc("消息"))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        contents(&reply.body),
        vec!["<script>alert('消息')</script>", "我们的消息"]
    );
    assert_eq!(
        reply.body["hits"][0]["highlight"],
        "&lt;script&gt;alert(&#39;<em>消息</em>&#39;)&lt;/script&gt;"
    );
    assert_eq!(reply.body["hits"][1]["highlight"], "我们的<em>消息</em>");
    assert!(reply.body["next_cursor"].is_null());
    assert_eq!(
        reply.body["hits"][1]["message"]["sender_id"],
        alice.id.as_str()
    );
    // 添加 finds 已添加为好友.
    let reply = search(&server, &bob, &format!("q={}", enc("添加"))).await;
    assert_eq!(contents(&reply.body), vec!["已添加为好友"]);
    assert_eq!(reply.body["hits"][0]["highlight"], "已<em>添加</em>为好友");

    // Filters.
    let reply = search(
        &server,
        &alice,
        &format!("q={}&sender_id={}", enc("消息"), bob.id),
    )
    .await;
    assert_eq!(
        contents(&reply.body),
        vec!["<script>alert('消息')</script>"]
    );
    let reply = search(
        &server,
        &alice,
        &format!("q={}&from={}", enc("消息"), enc("2999-01-01T00:00:00Z")),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(contents(&reply.body).is_empty());
    let reply = search(
        &server,
        &alice,
        &format!(
            "q={}&conversation_id={group}&to={}&order=relevance",
            enc("消息"),
            enc("2999-01-01T00:00:00+08:00")
        ),
    )
    .await;
    assert_eq!(contents(&reply.body).len(), 2);

    // Paging with opaque cursors.
    let first = search(&server, &alice, &format!("q={}&limit=1", enc("消息"))).await;
    assert_eq!(
        contents(&first.body),
        vec!["<script>alert('消息')</script>"]
    );
    let cursor = first.body["next_cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let second = search(
        &server,
        &alice,
        &format!("q={}&limit=1&cursor={}", enc("消息"), enc(&cursor)),
    )
    .await;
    assert_eq!(contents(&second.body), vec!["我们的消息"]);
    assert!(second.body["next_cursor"].is_null());

    // Carol joins later: only messages after her join. Dave never sees anything.
    let added = server
        .call(
            "POST",
            &format!("/groups/{group}/members"),
            Some(json!({"user_ids": [carol.id]})),
            Some(&alice.token),
        )
        .await;
    assert_eq!(added.status, 200, "{}", added.body);
    let later = send(&server, &alice, &group, "加入以后的消息").await;
    indexed(&server, &carol, "消息", &later).await;
    let reply = search(&server, &carol, &format!("q={}", enc("消息"))).await;
    assert_eq!(contents(&reply.body), vec!["加入以后的消息"]);
    let reply = search(
        &server,
        &dave,
        &format!("q={}&conversation_id={group}", enc("消息")),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(contents(&reply.body).is_empty());

    // Bob leaves: nothing of that conversation any more.
    let left = server
        .call(
            "DELETE",
            &format!("/groups/{group}/members/{}", bob.id),
            None,
            Some(&bob.token),
        )
        .await;
    assert_eq!(left.status, 204, "{}", left.body);
    let reply = search(&server, &bob, &format!("q={}", enc("消息"))).await;
    assert!(contents(&reply.body).is_empty());

    // Query syntax is literal; bad input is 400 invalid_argument; no token is 401.
    let reply = search(
        &server,
        &alice,
        &format!("q={}", enc("消息 AND (title:* \"")),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    for bad in [
        String::new(),
        "q=".to_owned(),
        format!("q={}", enc(&"字".repeat(257))),
        "q=x&limit=0".to_owned(),
        "q=x&limit=abc".to_owned(),
        "q=x&order=oldest".to_owned(),
        "q=x&from=yesterday".to_owned(),
        "q=x&sender_id=not-a-uuid".to_owned(),
        "q=x&cursor=garbage".to_owned(),
    ] {
        let reply = search(&server, &alice, &bad).await;
        assert_eq!(
            (reply.status, reply.error_code()),
            (400, "invalid_argument"),
            "{bad}: {}",
            reply.body
        );
    }
    let anonymous = server.call("GET", "/search/messages?q=x", None, None).await;
    assert_eq!(
        (anonymous.status, anonymous.error_code()),
        (401, "unauthenticated")
    );
}

/// `beehive search reindex --wait` against the running binary's search component:
/// the rebuild succeeds, everything stays searchable, and the same request id again
/// starts nothing new.
#[tokio::test]
async fn the_reindex_command_rebuilds_and_is_idempotent() {
    let server = Server::start(&[]).await;
    let erin = register(&server, "erin").await;
    let frank = register(&server, "frank").await;
    let created = server
        .call(
            "POST",
            "/groups",
            Some(json!({"name": "重建", "member_ids": [frank.id]})),
            Some(&erin.token),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let group = created.body["conversation"]["id"]
        .as_str()
        .expect("group id")
        .to_owned();
    send(&server, &erin, &group, "重建之前的消息 one").await;
    let last = send(&server, &frank, &group, "重建之前的消息 two").await;
    indexed(&server, &erin, "重建", &last).await;
    let search_addr = server.addresses["grpc"]["search"]
        .as_str()
        .expect("search address")
        .to_owned();
    let reindex = |id: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_beehive"))
            .args([
                "search",
                "reindex",
                "--wait",
                "--timeout",
                "60s",
                "--request-id",
                id,
            ])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("BEEHIVE_SEARCH_ADDR", format!("http://{search_addr}"))
            .env("BEEHIVE_LOG_LEVEL", "warn")
            .output()
            .expect("run beehive search reindex")
    };
    let first = reindex("e2e-1");
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout.contains("reindex e2e-1: succeeded, 2 documents"),
        "{stdout}"
    );
    let hits = search(&server, &erin, &format!("q={}", enc("重建"))).await;
    assert_eq!(
        hits.body["hits"].as_array().map(Vec::len),
        Some(2),
        "{}",
        hits.body
    );
    let again = reindex("e2e-1");
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("reindex e2e-1: succeeded, 2 documents")
    );
    let bad = reindex("not valid!");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("request_id"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
