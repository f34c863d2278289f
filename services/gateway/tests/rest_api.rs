//! The REST API's Auth and Users tables (API.md) driven over HTTP against the real
//! user and auth services, started in-process with the gateway on loopback listeners,
//! over real PostgreSQL and Redis.

use std::net::SocketAddr;
use std::time::Duration;

use beehive_common::{Component, Settings, Shutdown};
use beehive_testkit::TestEnv;
use beehive_testkit::logs::{captured, logged_code};
use beehive_testkit::serve::{context, loopback};
use reqwest::StatusCode;
use serde_json::{Value, json};

// ---------------------------------------------------------------- harness

struct Gateway {
    _env: TestEnv,
    base: String,
    http: reqwest::Client,
    shutdown: Shutdown,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let l = loopback().await;
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

async fn start() -> Gateway {
    start_with(|_| {}).await
}

async fn start_with(configure: impl FnOnce(&mut Settings)) -> Gateway {
    captured();
    let env = TestEnv::new(&[&beehive_user::MIGRATOR, &beehive_auth::MIGRATOR]).await;
    let mut settings = env.settings.clone();
    configure(&mut settings);
    let (user_l, user_addr) = listener().await;
    let (auth_l, auth_addr) = listener().await;
    let (gw_l, gw_addr) = listener().await;
    settings.set_component_addr(Component::User, format!("http://{user_addr}"));
    settings.set_component_addr(Component::Auth, format!("http://{auth_addr}"));
    let shutdown = Shutdown::new();
    let ctx = context(&settings, &shutdown);
    let user = beehive_user::bind(&ctx, user_l).await.expect("user binds");
    let auth = beehive_auth::bind(&ctx, auth_l).await.expect("auth binds");
    let gateway = beehive_gateway::bind(&ctx, gw_l)
        .await
        .expect("gateway binds");
    for bound in [user, auth, gateway] {
        tokio::spawn(bound.serve);
    }
    let gw = Gateway {
        _env: env,
        base: format!("http://{gw_addr}"),
        http: reqwest::Client::new(),
        shutdown,
    };
    // Ready once the verifier has auth's keys and deny list.
    for _ in 0..500 {
        if let Ok(r) = gw.http.get(gw.url("/readyz")).send().await
            && r.status() == StatusCode::OK
        {
            return gw;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gateway never became ready");
}

/// A registered user with its tokens.
#[derive(Clone, Debug)]
struct Account {
    id: String,
    username: String,
    password: String,
    access: String,
    refresh: String,
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn post(&self, path: &str, body: Value, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.expect("request")).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.expect("request")).await
    }

    async fn register(&self, username: &str) -> Account {
        let password = "correct horse battery".to_owned();
        let (status, body) = self
            .post(
                "/api/v1/auth/register",
                json!({"username": username, "password": password}),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Account {
            id: body["user"]["id"].as_str().expect("id").to_owned(),
            username: username.to_owned(),
            password,
            access: body["access_token"].as_str().expect("access").to_owned(),
            refresh: body["refresh_token"].as_str().expect("refresh").to_owned(),
        }
    }

    async fn login(&self, login: &str, password: &str) -> (StatusCode, Value) {
        self.post(
            "/api/v1/auth/login",
            json!({"login": login, "password": password}),
            None,
        )
        .await
    }

    /// Polls `GET /users/me` until it answers `expected` (revocations propagate
    /// asynchronously; API.md promises 500 ms, the poll allows far more so a slow CI
    /// machine does not flake, and asserts the outcome, not the time).
    async fn wait_me_status(&self, token: &str, expected: StatusCode) {
        for _ in 0..250 {
            let (status, _) = self.get("/api/v1/users/me", Some(token)).await;
            if status == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("GET /users/me never answered {expected}");
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
    };
    (status, body)
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error message present: {body}"
    );
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn register_login_and_profiles() {
    let gw = start().await;
    let name = unique("ann");
    let (status, body) = gw
        .post(
            "/api/v1/auth/register",
            json!({"username": name, "password": "correct horse battery", "nickname": "Ann"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let user = &body["user"];
    assert_eq!(user["username"], name.as_str());
    assert_eq!(user["nickname"], "Ann");
    assert!(user["id"].as_str().is_some_and(|id| id.len() == 36));
    assert!(user["email"].is_null(), "own user, no email: {user}");
    let created = user["created_at"].as_str().expect("created_at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok() && created.ends_with('Z'),
        "RFC 3339 UTC: {created}"
    );
    assert!(body["access_token"].as_str().is_some_and(|t| t.len() > 20));
    assert!(
        body["refresh_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert!(body["expires_in"].as_u64().is_some_and(|s| s > 0));
    let ann_token = body["access_token"].as_str().expect("token").to_owned();
    let ann_id = user["id"].as_str().expect("id").to_owned();

    // Login by username, by user id; wrong credentials share one message.
    let (status, body) = gw.login(&name, "correct horse battery").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["id"], ann_id.as_str());
    let (status, _) = gw.login(&ann_id, "correct horse battery").await;
    assert_eq!(status, StatusCode::OK);
    let (status, wrong_password) = gw.login(&name, "wrong password!").await;
    assert_error(
        status,
        &wrong_password,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    let (status, no_user) = gw.login(&unique("nobody"), "wrong password!").await;
    assert_error(
        status,
        &no_user,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    assert_eq!(
        wrong_password["error"]["message"],
        no_user["error"]["message"]
    );

    // Own profile, update.
    let (status, me) = gw.get("/api/v1/users/me", Some(&ann_token)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["user"]["id"], ann_id.as_str());
    let response = gw
        .http
        .patch(gw.url("/api/v1/users/me"))
        .bearer_auth(&ann_token)
        .json(&json!({"nickname": "Annie", "description": "hi"}))
        .send()
        .await
        .expect("patch");
    let (status, patched) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["user"]["nickname"], "Annie");
    assert_eq!(patched["user"]["description"], "hi");
    assert_eq!(patched["user"]["username"], name.as_str());

    // Another user sees public fields only.
    let bob = gw.register(&unique("bob")).await;
    let (status, seen) = gw
        .get(&format!("/api/v1/users/{ann_id}"), Some(&bob.access))
        .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["user"]["nickname"], "Annie");
    assert!(
        !seen["user"]
            .as_object()
            .expect("user")
            .contains_key("email"),
        "no email of others: {seen}"
    );
    assert!(!seen.to_string().contains("password"));
    let (status, body) = gw
        .get(
            &format!("/api/v1/users/{}", uuid::Uuid::now_v7()),
            Some(&bob.access),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    // Batch and search.
    let (status, batch) = gw
        .get(
            &format!("/api/v1/users?ids={ann_id},{}", bob.id),
            Some(&bob.access),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    let ids: Vec<&str> = batch["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["id"].as_str())
        .collect();
    assert_eq!(ids, vec![ann_id.as_str(), bob.id.as_str()]);
    let (status, body) = gw.get("/api/v1/users?ids=", Some(&bob.access)).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");
    let too_many = vec![ann_id.as_str(); 201].join(",");
    let (status, body) = gw
        .get(&format!("/api/v1/users?ids={too_many}"), Some(&bob.access))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");

    let prefix = &name[..name.len() - 3];
    let (status, found) = gw
        .get(
            &format!("/api/v1/users/search?q={prefix}"),
            Some(&bob.access),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert!(
        found["users"]
            .as_array()
            .expect("users")
            .iter()
            .any(|u| u["id"] == ann_id.as_str()),
        "{found}"
    );
    let (status, body) = gw.get("/api/v1/users/search?q=", Some(&bob.access)).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");

    // A taken username, ignoring case.
    let (status, body) = gw
        .post(
            "/api/v1/auth/register",
            json!({"username": name.to_uppercase(), "password": "correct horse battery"}),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "already_exists");
    // Rule violations are the service's invalid_argument.
    let (status, body) = gw
        .post(
            "/api/v1/auth/register",
            json!({"username": "x", "password": "short"}),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");
}

#[tokio::test]
async fn registration_with_email_requires_the_emailed_code() {
    let gw = start().await;
    let email = format!("{}@example.com", unique("mail"));
    let (status, body) = gw
        .post("/api/v1/auth/send-code", json!({"email": email}), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let code = logged_code(&email);
    // A second code for the same email within 60 s is refused, with Retry-After.
    let response = gw
        .http
        .post(gw.url("/api/v1/auth/send-code"))
        .json(&json!({"email": email}))
        .send()
        .await
        .expect("send-code");
    assert!(response.headers().contains_key("retry-after"));
    let (status, body) = read(response).await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(logged_code(&email), code, "no second code was sent");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let name = unique("eve");
    let (status, body) = gw
        .post(
            "/api/v1/auth/register",
            json!({"username": name, "password": "correct horse battery", "email": email, "code": wrong}),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");
    let (status, body) = gw
        .post(
            "/api/v1/auth/register",
            json!({"username": name, "password": "correct horse battery", "email": email}),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");
    let (status, body) = gw
        .post(
            "/api/v1/auth/register",
            json!({"username": name, "password": "correct horse battery", "email": email, "code": code}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["user"]["email"], email.as_str());
    let token = body["access_token"].as_str().expect("token").to_owned();
    let (_, me) = gw.get("/api/v1/users/me", Some(&token)).await;
    assert_eq!(me["user"]["email"], email.as_str());
    // Login by email.
    let (status, _) = gw.login(&email, "correct horse battery").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_session() {
    let gw = start().await;
    let ann = gw.register(&unique("ann")).await;

    let (status, first) = gw
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": ann.refresh}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let rotated = first["refresh_token"].as_str().expect("refresh").to_owned();
    let access = first["access_token"].as_str().expect("access").to_owned();
    assert_ne!(rotated, ann.refresh);
    assert!(first["expires_in"].as_u64().is_some_and(|s| s > 0));
    assert!(first.get("user").is_none(), "refresh carries no user");
    let (status, _) = gw.get("/api/v1/users/me", Some(&access)).await;
    assert_eq!(status, StatusCode::OK);

    // The old refresh token is dead, and presenting it revokes the whole session.
    let (status, body) = gw
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": ann.refresh}),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthenticated");
    gw.wait_me_status(&access, StatusCode::UNAUTHORIZED).await;
    gw.wait_me_status(&ann.access, StatusCode::UNAUTHORIZED)
        .await;
    let (status, body) = gw
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": rotated}),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthenticated");

    // Garbage refresh tokens.
    let (status, body) = gw
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": "nonsense"}),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn logout_revokes_the_session_everywhere() {
    let gw = start().await;
    let ann = gw.register(&unique("ann")).await;
    let (_, other) = gw.login(&ann.username, &ann.password).await;
    let other_access = other["access_token"].as_str().expect("token").to_owned();

    // Logout needs the access token.
    let (status, body) = gw.post("/api/v1/auth/logout", json!({}), None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthenticated");
    // Without any body at all.
    let response = gw
        .http
        .post(gw.url("/api/v1/auth/logout"))
        .bearer_auth(&ann.access)
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    gw.wait_me_status(&ann.access, StatusCode::UNAUTHORIZED)
        .await;
    let (status, body) = gw
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": ann.refresh}),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthenticated");
    // The other session (another login) is untouched; it logs out with a body.
    let (status, _) = gw.get("/api/v1/users/me", Some(&other_access)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = gw
        .post(
            "/api/v1/auth/logout",
            json!({"refresh_token": other["refresh_token"]}),
            Some(&other_access),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    gw.wait_me_status(&other_access, StatusCode::UNAUTHORIZED)
        .await;
}

#[tokio::test]
async fn changing_the_password_revokes_other_sessions_only() {
    let gw = start().await;
    let ann = gw.register(&unique("ann")).await;
    let (_, second) = gw.login(&ann.username, &ann.password).await;
    let second_access = second["access_token"].as_str().expect("token").to_owned();

    let (status, body) = gw
        .post(
            "/api/v1/users/me/password",
            json!({"old_password": "not it at all", "new_password": "a brand new secret"}),
            Some(&ann.access),
        )
        .await;
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED,
        "wrong old password refused: {status} {body}"
    );
    let (status, body) = gw
        .post(
            "/api/v1/users/me/password",
            json!({"old_password": ann.password, "new_password": "a brand new secret"}),
            Some(&ann.access),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    gw.wait_me_status(&second_access, StatusCode::UNAUTHORIZED)
        .await;
    let (status, _) = gw.get("/api/v1/users/me", Some(&ann.access)).await;
    assert_eq!(status, StatusCode::OK, "the caller's session stays valid");
    let (status, _) = gw.login(&ann.username, &ann.password).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = gw.login(&ann.username, "a brand new secret").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn undecodable_requests_follow_the_error_rules() {
    let gw = start().await;
    let ann = gw.register(&unique("ann")).await;
    let register = gw.url("/api/v1/auth/register");
    let send = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = gw.http.post(register.clone()).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        async move { read(request.send().await.expect("send")).await }
    };
    for (body, content_type, what) in [
        (
            "{\"username\": ",
            Some("application/json"),
            "malformed JSON",
        ),
        (
            "{\"username\": 5, \"password\": \"correct horse battery\"}",
            Some("application/json"),
            "wrong type",
        ),
        (
            "{\"username\": \"abcdef\"}",
            Some("application/json"),
            "missing field",
        ),
        ("[]", Some("application/json"), "not an object"),
        (
            "{\"username\": \"abcdef\", \"password\": \"correct horse battery\"}",
            Some("text/plain"),
            "wrong content type",
        ),
        (
            "{\"username\": \"abcdef\", \"password\": \"correct horse battery\"}",
            None,
            "missing content type",
        ),
        ("", Some("application/json"), "empty body"),
    ] {
        let (status, body) = send(body, content_type).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert_eq!(body["error"]["code"], "invalid_argument", "{what}: {body}");
    }

    // Over 1 MiB: 413, with and without a Content-Length.
    let big = format!(
        "{{\"username\": \"{}\", \"password\": \"x\"}}",
        "a".repeat(2 << 20)
    );
    let response = gw
        .http
        .post(register.clone())
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .expect("send");
    let (status, body) = read(response).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let stream = futures::stream::iter(
        big.into_bytes()
            .chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let response = gw
        .http
        .patch(gw.url("/api/v1/users/me"))
        .bearer_auth(&ann.access)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("send chunked");
    let (status, body) = read(response).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    // Unknown paths and wrong methods.
    let (status, body) = gw.get("/api/v1/nope", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = gw.get("/totally/elsewhere", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let response = gw
        .http
        .delete(gw.url("/api/v1/auth/login"))
        .send()
        .await
        .expect("delete");
    let allow = response
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert!(allow.contains("POST"), "Allow: {allow}");
    assert!(body["error"]["code"].is_string(), "{body}");
    let response = gw
        .http
        .put(gw.url("/api/v1/users/me"))
        .send()
        .await
        .expect("put");
    let allow = response
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        allow.contains("GET") && allow.contains("PATCH"),
        "Allow: {allow}"
    );

    // Without configured CORS origins, OPTIONS is just another wrong method.
    let response = gw
        .http
        .request(reqwest::Method::OPTIONS, gw.url("/api/v1/users/me"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("options");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );

    // Missing or bad credentials.
    let (status, body) = gw.get("/api/v1/users/me", None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthenticated");
    let (status, body) = gw.get("/api/v1/users/me", Some("a.b.c")).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthenticated");
    let response = gw
        .http
        .get(gw.url("/api/v1/users/me"))
        .header("authorization", format!("Basic {}", ann.access))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn access_tokens_expire() {
    let gw = start_with(|s| {
        s.access_token_ttl = Duration::from_secs(1);
    })
    .await;
    let ann = gw.register(&unique("ann")).await;
    let (status, _) = gw.get("/api/v1/users/me", Some(&ann.access)).await;
    assert_eq!(status, StatusCode::OK);
    // `exp` is whole seconds: after 2.1 s the token is expired whatever the rounding.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = gw.get("/api/v1/users/me", Some(&ann.access)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthenticated");
    // The refresh token still works and gives a fresh access token.
    let (status, body) = gw
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": ann.refresh}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fresh = body["access_token"].as_str().expect("token");
    let (status, _) = gw.get("/api/v1/users/me", Some(fresh)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn per_ip_rate_limits_answer_429_with_retry_after() {
    let gw = start_with(|s| {
        s.rate_limits = true;
        s.trusted_proxies = vec!["127.0.0.1".parse().expect("net")];
    })
    .await;
    let login = |ip: &'static str| {
        let request = gw
            .http
            .post(gw.url("/api/v1/auth/login"))
            .header("x-forwarded-for", ip)
            .json(&json!({"login": "nobody_here", "password": "whatever123"}));
        async move { request.send().await.expect("login") }
    };
    for i in 0..30 {
        let response = login("203.0.113.10").await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {i} is within 30/min"
        );
    }
    let response = login("203.0.113.10").await;
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let (status, body) = read(response).await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Another client behind the same trusted proxy has its own budget.
    assert_eq!(
        login("203.0.113.11").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Register: 20/min, counted even for undecodable bodies.
    for _ in 0..20 {
        let response = gw
            .http
            .post(gw.url("/api/v1/auth/register"))
            .header("x-forwarded-for", "203.0.113.20")
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .expect("register");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
    let response = gw
        .http
        .post(gw.url("/api/v1/auth/register"))
        .header("x-forwarded-for", "203.0.113.20")
        .json(&json!({"username": unique("late"), "password": "correct horse battery"}))
        .send()
        .await
        .expect("register");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));

    // Send-code: 10/min per IP (distinct emails, so the per-email limit is not hit).
    for i in 0..10 {
        let response = gw
            .http
            .post(gw.url("/api/v1/auth/send-code"))
            .header("x-forwarded-for", "203.0.113.30")
            .json(&json!({"email": format!("{}-{i}@example.com", unique("rl"))}))
            .send()
            .await
            .expect("send-code");
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "code {i}");
    }
    let response = gw
        .http
        .post(gw.url("/api/v1/auth/send-code"))
        .header("x-forwarded-for", "203.0.113.30")
        .json(&json!({"email": format!("{}@example.com", unique("rl"))}))
        .send()
        .await
        .expect("send-code");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn untrusted_peers_cannot_spoof_their_ip() {
    let gw = start_with(|s| {
        s.rate_limits = true;
    })
    .await;
    // Loopback is not a trusted proxy here: X-Forwarded-For is ignored, so rotating
    // it does not escape the limit.
    let mut limited = false;
    for i in 0..31 {
        let response = gw
            .http
            .post(gw.url("/api/v1/auth/login"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&json!({"login": "nobody_here", "password": "whatever123"}))
            .send()
            .await
            .expect("login");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            assert_eq!(i, 30, "the 31st attempt is the first refused");
        }
    }
    assert!(limited);
}

#[tokio::test]
async fn jwks_verifies_access_tokens_with_a_standard_library() {
    let gw = start().await;
    let ann = gw.register(&unique("ann")).await;
    let response = gw
        .http
        .get(gw.url("/api/v1/auth/jwks.json"))
        .send()
        .await
        .expect("jwks");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text).expect("a JWK Set");
    let raw: Value = serde_json::from_str(&text).expect("json");
    for key in raw["keys"].as_array().expect("keys") {
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()));
        let x = key["x"].as_str().expect("x");
        assert!(!x.contains('=') && !x.contains('+') && !x.contains('/'));
    }
    let header = jsonwebtoken::decode_header(&ann.access).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let kid = header.kid.expect("kid");
    let jwk = set.find(&kid).expect("the token's key is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("decoding key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Value>(&ann.access, &key, &validation).expect("verifies");
    assert_eq!(data.claims["sub"], ann.id.as_str());
    for claim in ["sid", "jti", "iat", "exp"] {
        assert!(data.claims.get(claim).is_some(), "claim {claim}");
    }
}

#[tokio::test]
async fn openapi_lists_every_served_route() {
    let gw = start().await;
    let ann = gw.register(&unique("ann")).await;
    let (status, doc) = gw.get("/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "patch", "put", "delete", "head", "options"] {
            if item.get(method).is_some() {
                documented.push((method.to_owned(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut served: Vec<(String, String)> = beehive_gateway::rest::SERVED_ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    served.sort();
    assert_eq!(documented, served, "the document and the router agree");

    // And every documented operation is really routed (never the router's own
    // 404/405): call each with an authenticated, empty JSON body.
    for (method, path) in &documented {
        let concrete = path.replace("{id}", &ann.id);
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("m");
        let mut request = gw
            .http
            .request(method.clone(), gw.url(&concrete))
            .bearer_auth(&ann.access);
        if method != reqwest::Method::GET {
            request = request.json(&json!({}));
        }
        let response = request.send().await.expect("call");
        let status = response.status();
        let (_, body) = read(response).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !(status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such endpoint"),
            "{method} {path} is not routed"
        );
    }
}

#[tokio::test]
async fn request_ids_health_and_cors() {
    let gw = start_with(|s| {
        s.cors_origins = vec!["https://app.example".to_owned()];
    })
    .await;
    let response = gw
        .http
        .get(gw.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("healthz");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = gw.http.get(gw.url("/readyz")).send().await.expect("readyz");
    assert_eq!(response.status(), StatusCode::OK);
    let generated = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    // Errors carry it too.
    let response = gw
        .http
        .get(gw.url("/api/v1/nope"))
        .send()
        .await
        .expect("404");
    assert!(response.headers().contains_key("x-request-id"));

    let preflight = gw
        .http
        .request(reqwest::Method::OPTIONS, gw.url("/api/v1/users/me"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PATCH")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let foreign = gw
        .http
        .get(gw.url("/api/v1/auth/jwks.json"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("get");
    assert!(
        !foreign
            .headers()
            .contains_key("access-control-allow-origin")
    );
}
