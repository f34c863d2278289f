//! `GET /api/v1/search/messages` when the search component is down: 503
//! `unavailable` with API.md's error body, while sending keeps working. (Searching
//! itself is tested end to end in services/beehive/tests/e2e_search.rs.)

mod common;

use beehive_common::Component;
use common::{Cluster, rest};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_down_is_unavailable_and_never_affects_sending() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let cluster = Cluster::start_with(1, |settings| {
        settings.set_component_addr(Component::Search, format!("http://127.0.0.1:{closed}"));
    })
    .await;
    let alice = cluster.user().await;
    let bob = cluster.user().await;
    let group = cluster.group(&alice, std::slice::from_ref(&bob)).await;

    let (status, body) = rest(
        cluster.gw(0),
        &alice,
        Method::GET,
        "/api/v1/search/messages?q=hello",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(body["error"]["message"].is_string());

    let (status, body) = rest(
        cluster.gw(0),
        &alice,
        Method::POST,
        "/api/v1/messages",
        Some(json!({"client_msg_id": "c1", "conversation_id": group, "msg_type": "text", "content": "hello"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Input errors are answered before search is asked.
    let (status, body) = rest(
        cluster.gw(0),
        &alice,
        Method::GET,
        "/api/v1/search/messages",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_argument");
}
