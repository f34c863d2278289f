//! REST request parsing: arbitrary method, path, query, headers and body through the
//! gateway's own extractors (`ApiJson`, `OptionalApiJson`, `ApiQuery`, `ApiPath`), its
//! validators (`app::validate::check_id`, `id_list`, `page`, the core's send rules
//! `app::messages::validate_send`), request-id
//! middleware, body limit and 404/405 fallbacks, and the trusted-proxy client IP.
//! Handlers stop where the real ones would make a gRPC call, so no network is needed.
//!
//! Invariants: no panic; only 200 or a client error (400, 404, 405, 413) comes back,
//! every error with API.md's body `{"error": {"code", "message"}}`; every response
//! carries a request id; the client IP is the peer or one of the forwarded addresses.

#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post};
use beehive_common::Error;
use beehive_common::config::IpNet;
use beehive_gateway::http::{self as gw, ApiJson, ApiPath, ApiQuery, OptionalApiJson};
use beehive_gateway::app::{self, validate};
use beehive_gateway::rest::{auth, conversations, friends, presence, users};
use beehive_gateway::wire::model::SendRequest;
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower::ServiceExt;

fn router() -> Router {
    Router::new()
        .route("/api/v1/auth/register", post(|ApiJson(_): ApiJson<auth::RegisterRequest>| async { Ok::<_, Error>("ok") }))
        .route("/api/v1/auth/login", post(|ApiJson(_): ApiJson<auth::LoginRequest>| async { Ok::<_, Error>("ok") }))
        .route("/api/v1/auth/send-code", post(|ApiJson(_): ApiJson<auth::SendCodeRequest>| async { Ok::<_, Error>("ok") }))
        .route("/api/v1/auth/refresh", post(|ApiJson(_): ApiJson<auth::RefreshRequest>| async { Ok::<_, Error>("ok") }))
        .route("/api/v1/auth/logout", post(|OptionalApiJson(_): OptionalApiJson<auth::LogoutRequest>| async { Ok::<_, Error>("ok") }))
        .route("/api/v1/users/me", patch(|ApiJson(_): ApiJson<users::UpdateProfileRequest>| async { Ok::<_, Error>("ok") }))
        .route("/api/v1/users/me/password", post(|ApiJson(_): ApiJson<users::ChangePasswordRequest>| async { Ok::<_, Error>("ok") }))
        .route("/api/v1/users", get(|ApiQuery(q): ApiQuery<users::BatchQuery>| async move {
            validate::id_list("ids", q.ids.as_deref().unwrap_or(""), 200)?;
            Ok::<_, Error>("ok")
        }))
        .route("/api/v1/users/search", get(|ApiQuery(q): ApiQuery<users::SearchQuery>| async move {
            validate::page(q.limit, q.cursor)?;
            Ok::<_, Error>("ok")
        }))
        .route("/api/v1/users/{id}", get(|ApiPath(id): ApiPath<String>| async move {
            validate::check_id("id", &id)?;
            Ok::<_, Error>("ok")
        }))
        .route("/api/v1/friends/requests", post(|ApiJson(b): ApiJson<friends::SendRequest>| async move {
            validate::check_id("to_user_id", &b.to_user_id)?;
            Ok::<_, Error>("ok")
        }).get(|ApiQuery(q): ApiQuery<friends::RequestsQuery>| async move {
            validate::page(q.limit, q.cursor)?;
            Ok::<_, Error>("ok")
        }))
        .route("/api/v1/friends/requests/{id}/accept", post(|ApiPath(id): ApiPath<String>| async move {
            validate::check_id("id", &id)?;
            Ok::<_, Error>("ok")
        }))
        .route("/api/v1/friends/{user_id}", delete(|ApiPath(id): ApiPath<String>| async move {
            validate::check_id("user_id", &id)?;
            Ok::<_, Error>("ok")
        }))
        .route("/api/v1/groups", post(|ApiJson(_): ApiJson<conversations::CreateGroupRequest>| async { Ok::<_, Error>("ok") }))
        .route("/api/v1/groups/{id}", patch(|ApiPath(id): ApiPath<String>, ApiJson(_): ApiJson<conversations::UpdateGroupRequest>| async move {
            validate::check_id("id", &id)?;
            Ok::<_, Error>("ok")
        }))
        .route("/api/v1/groups/{id}/members", post(|ApiPath(id): ApiPath<String>, ApiJson(b): ApiJson<conversations::AddMembersRequest>| async move {
            validate::check_id("id", &id)?;
            for user in &b.user_ids {
                validate::check_id("user_ids", user)?;
            }
            Ok::<_, Error>("ok")
        }))
        .route("/api/v1/groups/{id}/members/{user_id}", delete(|ApiPath((id, user)): ApiPath<(String, String)>| async move {
            validate::check_id("id", &id)?;
            validate::check_id("user_id", &user)?;
            Ok::<_, Error>("ok")
        }))
        .route("/api/v1/conversations", get(|ApiQuery(q): ApiQuery<conversations::PageQuery>| async move {
            validate::page(q.limit, q.cursor)?;
            Ok::<_, Error>("ok")
        }))
        .route("/api/v1/conversations/{id}/messages", get(|ApiPath(id): ApiPath<String>, ApiQuery(_): ApiQuery<conversations::HistoryQuery>| async move {
            validate::check_id("id", &id)?;
            Ok::<_, Error>("ok")
        }))
        .route("/api/v1/conversations/{id}/read", post(|ApiPath(id): ApiPath<String>, ApiJson(_): ApiJson<conversations::ReadRequest>| async move {
            validate::check_id("id", &id)?;
            Ok::<_, Error>("ok")
        }))
        .route("/api/v1/messages", post(|ApiJson(b): ApiJson<SendRequest>| async move {
            app::messages::validate_send(b.into())?;
            Ok::<_, Error>("ok")
        }))
        .route("/api/v1/presence", get(|ApiQuery(q): ApiQuery<presence::PresenceQuery>| async move {
            validate::id_list("user_ids", q.user_ids.as_deref().unwrap_or(""), 200)?;
            Ok::<_, Error>("ok")
        }))
        .fallback(gw::not_found)
        .method_not_allowed_fallback(gw::method_not_allowed)
        .layer(DefaultBodyLimit::max(app::limits::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(gw::request_context))
}

const ROUTES: &[&str] = &[
    "/api/v1/auth/register",
    "/api/v1/auth/login",
    "/api/v1/auth/send-code",
    "/api/v1/auth/refresh",
    "/api/v1/auth/logout",
    "/api/v1/users/me",
    "/api/v1/users/me/password",
    "/api/v1/users",
    "/api/v1/users/search",
    "/api/v1/users/",
    "/api/v1/friends/requests",
    "/api/v1/friends/requests/",
    "/api/v1/friends/",
    "/api/v1/groups",
    "/api/v1/groups/",
    "/api/v1/conversations",
    "/api/v1/conversations/",
    "/api/v1/messages",
    "/api/v1/presence",
    "/",
];

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    route: u8,
    /// Appended to the route: ids, further segments, junk.
    tail: String,
    query: Option<String>,
    content_type: Option<String>,
    request_id: Option<Vec<u8>>,
    forwarded_for: Vec<String>,
    peer: [u8; 4],
    body: Vec<u8>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn app() -> Router {
    static APP: OnceLock<Router> = OnceLock::new();
    APP.get_or_init(router).clone()
}

fn check_client_ip(input: &Input) {
    let peer = IpAddr::from(input.peer);
    let trusted: Vec<IpNet> = ["127.0.0.0/8", "10.0.0.0/8"]
        .iter()
        .filter_map(|t| t.parse().ok())
        .collect();
    let mut headers = HeaderMap::new();
    for value in &input.forwarded_for {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.append("x-forwarded-for", v);
        }
    }
    let ip = gw::client_ip(peer, &headers, &trusted);
    if ip != peer && !(peer.to_canonical() == ip) {
        let listed = input
            .forwarded_for
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .any(|a| a == ip || a.to_canonical() == ip);
        assert!(
            listed,
            "client ip {ip} is neither the peer {peer} nor forwarded"
        );
    }
}

fuzz_target!(|input: Input| {
    check_client_ip(&input);
    let method = match input.method % 8 {
        0 => Method::GET,
        1 => Method::POST,
        2 => Method::PATCH,
        3 => Method::DELETE,
        4 => Method::PUT,
        5 => Method::HEAD,
        6 => Method::OPTIONS,
        _ => Method::from_bytes(b"BREW").expect("token"),
    };
    let route = ROUTES[input.route as usize % ROUTES.len()];
    let mut uri = format!("{route}{}", input.tail);
    if let Some(q) = &input.query {
        uri.push('?');
        uri.push_str(q);
    }
    let Ok(uri) = http::Uri::try_from(uri) else {
        return; // hyper refuses such a request line before any of our code runs
    };
    let mut request = Request::builder().method(method.clone()).uri(uri);
    if let Some(ct) = &input.content_type
        && let Ok(v) = HeaderValue::from_str(ct)
    {
        request = request.header("content-type", v);
    }
    let mut sane_request_id = None;
    if let Some(id) = &input.request_id
        && let Ok(v) = HeaderValue::from_bytes(id)
    {
        if !id.is_empty() && id.len() <= 128 && id.iter().all(u8::is_ascii_graphic) {
            sane_request_id = Some(v.clone());
        }
        request = request.header("x-request-id", v);
    }
    let Ok(mut request) = request.body(Body::from(input.body.clone())) else {
        return;
    };
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(SocketAddr::from((
            input.peer, 4242,
        ))));

    let (status, headers, body) = runtime().block_on(async {
        let response = app().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, headers, body)
    });
    let id = headers
        .get("x-request-id")
        .expect("every response has a request id");
    if let Some(sane) = sane_request_id {
        assert_eq!(id, &sane, "a sane client request id is echoed");
    }
    match status.as_u16() {
        200 => {}
        400 | 404 | 405 | 413 => {
            if method == Method::HEAD {
                return;
            }
            let v: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{status} body is not JSON ({e}): {body:?}"));
            assert!(v["error"]["code"].is_string(), "{status}: {v}");
            assert!(v["error"]["message"].is_string(), "{status}: {v}");
            if status == 400 {
                assert_eq!(v["error"]["code"], "invalid_argument", "{v}");
            }
        }
        other => panic!(
            "{method} {route}{:?} answered {other}: {body:?}",
            input.tail
        ),
    }
});
