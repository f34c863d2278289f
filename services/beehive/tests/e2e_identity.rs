//! End-to-end: the real `beehive serve all` binary, driven over HTTP as a client would,
//! against real PostgreSQL, Redis and RabbitMQ (API.md's Auth and Users tables).

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::Server;

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

async fn register(server: &Server, username: &str) -> Value {
    let reply = server
        .call(
            "POST",
            "/auth/register",
            Some(json!({"username": username, "password": "password-123", "nickname": "Nick"})),
            None,
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.body
}

#[tokio::test]
async fn identity_happy_path_and_token_lifecycle() {
    let server = Server::start(&[]).await;
    let name = unique("Alice");
    let alice = register(&server, &name).await;
    for key in ["access_token", "refresh_token", "expires_in"] {
        assert!(!alice[key].is_null(), "{key} missing: {alice}");
    }
    assert_eq!(alice["user"]["username"], name.as_str());
    let token = alice["access_token"].as_str().expect("token").to_owned();

    // Username uniqueness ignores case.
    let dup = server
        .call(
            "POST",
            "/auth/register",
            Some(json!({"username": name.to_uppercase(), "password": "password-123"})),
            None,
        )
        .await;
    assert_eq!((dup.status, dup.error_code()), (409, "already_exists"));

    // Login by username and by id; wrong credentials share one message.
    let login = server
        .call(
            "POST",
            "/auth/login",
            Some(json!({"login": name, "password": "password-123"})),
            None,
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let by_id = server
        .call(
            "POST",
            "/auth/login",
            Some(json!({"login": alice["user"]["id"], "password": "password-123"})),
            None,
        )
        .await;
    assert_eq!(by_id.status, 200, "{}", by_id.body);
    let wrong = server
        .call(
            "POST",
            "/auth/login",
            Some(json!({"login": name, "password": "nope-nope-nope"})),
            None,
        )
        .await;
    let missing = server
        .call(
            "POST",
            "/auth/login",
            Some(json!({"login": "nobody_here", "password": "nope-nope-nope"})),
            None,
        )
        .await;
    assert_eq!((wrong.status, missing.status), (401, 401));
    assert_eq!(
        wrong.body["error"]["message"],
        missing.body["error"]["message"]
    );

    // Profile read and update.
    let me = server.call("GET", "/users/me", None, Some(&token)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let patched = server
        .call(
            "PATCH",
            "/users/me",
            Some(json!({"nickname": "Ally", "description": "hi"})),
            Some(&token),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["user"]["nickname"], "Ally");

    // Other users see public fields only.
    let bob = register(&server, &unique("bob")).await;
    let bob_token = bob["access_token"].as_str().expect("token");
    let seen = server
        .call(
            "GET",
            &format!("/users/{}", alice["user"]["id"].as_str().expect("id")),
            None,
            Some(bob_token),
        )
        .await;
    assert_eq!(seen.status, 200);
    assert!(seen.body["user"]["email"].is_null(), "{}", seen.body);
    let batch = server
        .call(
            "GET",
            &format!(
                "/users?ids={},{}",
                alice["user"]["id"].as_str().expect("id"),
                bob["user"]["id"].as_str().expect("id")
            ),
            None,
            Some(bob_token),
        )
        .await;
    assert_eq!(
        batch.body["users"].as_array().map(Vec::len),
        Some(2),
        "{}",
        batch.body
    );
    let search = server
        .call(
            "GET",
            &format!("/users/search?q={}", &name[..7]),
            None,
            Some(bob_token),
        )
        .await;
    assert!(
        search.body["users"]
            .as_array()
            .is_some_and(|u| !u.is_empty()),
        "{}",
        search.body
    );
    // PostgreSQL cannot store NUL: that is the caller's input error, never a 500.
    let nul = server
        .call("GET", "/users/search?q=a%00b", None, Some(bob_token))
        .await;
    assert_eq!(
        (nul.status, nul.error_code()),
        (400, "invalid_argument"),
        "{}",
        nul.body
    );

    // Refresh rotates; replaying the old refresh token revokes the whole session.
    let first_refresh = alice["refresh_token"].as_str().expect("refresh");
    let rotated = server
        .call(
            "POST",
            "/auth/refresh",
            Some(json!({"refresh_token": first_refresh})),
            None,
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new_access = rotated.body["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let reuse = server
        .call(
            "POST",
            "/auth/refresh",
            Some(json!({"refresh_token": first_refresh})),
            None,
        )
        .await;
    assert_eq!((reuse.status, reuse.error_code()), (401, "unauthenticated"));
    let newest = rotated.body["refresh_token"].as_str().expect("refresh");
    let after_reuse = server
        .call(
            "POST",
            "/auth/refresh",
            Some(json!({"refresh_token": newest})),
            None,
        )
        .await;
    assert_eq!(
        after_reuse.status, 401,
        "the session's newest refresh token must die too"
    );
    assert_eq!(
        wait_for_401(&server, &new_access).await,
        401,
        "access tokens of a revoked session stop working"
    );

    // Logout revokes the session of the access token.
    let session = server
        .call(
            "POST",
            "/auth/login",
            Some(json!({"login": name, "password": "password-123"})),
            None,
        )
        .await;
    let session_token = session.body["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let logout = server
        .call(
            "POST",
            "/auth/logout",
            Some(json!({})),
            Some(&session_token),
        )
        .await;
    assert_eq!(logout.status, 204, "{}", logout.body);
    assert_eq!(wait_for_401(&server, &session_token).await, 401);

    // Password change keeps the caller's session, revokes the others.
    let keep = server
        .call(
            "POST",
            "/auth/login",
            Some(json!({"login": name, "password": "password-123"})),
            None,
        )
        .await;
    let other = server
        .call(
            "POST",
            "/auth/login",
            Some(json!({"login": name, "password": "password-123"})),
            None,
        )
        .await;
    let keep_token = keep.body["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let other_token = other.body["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let change = server
        .call(
            "POST",
            "/users/me/password",
            Some(json!({"old_password": "password-123", "new_password": "password-456"})),
            Some(&keep_token),
        )
        .await;
    assert_eq!(change.status, 204, "{}", change.body);
    assert_eq!(wait_for_401(&server, &other_token).await, 401);
    assert_eq!(
        server
            .call("GET", "/users/me", None, Some(&keep_token))
            .await
            .status,
        200
    );
    let old_pw = server
        .call(
            "POST",
            "/auth/login",
            Some(json!({"login": name, "password": "password-123"})),
            None,
        )
        .await;
    assert_eq!(old_pw.status, 401);

    // JWKS for third-party verifiers.
    let jwks = server.call("GET", "/auth/jwks.json", None, None).await;
    let key = &jwks.body["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("OKP"), Some("Ed25519")),
        "{}",
        jwks.body
    );
    assert!(key["kid"].is_string() && key["x"].is_string());
}

/// Revocation must be effective within 500 ms (API.md); poll a little past that.
async fn wait_for_401(server: &Server, token: &str) -> u16 {
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    loop {
        let status = server
            .call("GET", "/users/me", None, Some(token))
            .await
            .status;
        if status == 401 || std::time::Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn bad_input_gets_api_errors() {
    let server = Server::start(&[]).await;
    /// method, path, content type, body, expected status, expected code
    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Vec<u8>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/auth/login",
            Some("application/json"),
            b"{not json".to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/auth/login",
            Some("text/plain"),
            br#"{"login":"a","password":"b"}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/auth/login",
            None,
            br#"{"login":"a","password":"b"}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/auth/login",
            Some("application/json"),
            br#"{"login":"a"}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/auth/login",
            Some("application/json"),
            br#"{"login":1,"password":true}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/auth/register",
            Some("application/json"),
            br#"{"username":"x","password":"password-123"}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/auth/register",
            Some("application/json"),
            br#"{"username":"valid_name","password":"short"}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/auth/register",
            Some("application/json"),
            vec![b' '; 2 * 1024 * 1024],
            413,
            "payload_too_large",
        ),
        ("GET", "/no/such/path", None, Vec::new(), 404, "not_found"),
        ("GET", "/users/me", None, Vec::new(), 401, "unauthenticated"),
    ];
    for (method, path, content_type, body, status, code) in cases {
        let reply = server.raw(method, path, content_type, body).await;
        assert_eq!(
            (reply.status, reply.error_code()),
            (status, code),
            "{method} {path} {content_type:?}: {}",
            reply.body
        );
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let wrong_method = server.raw("DELETE", "/auth/login", None, Vec::new()).await;
    assert_eq!(wrong_method.status, 405, "{}", wrong_method.body);
    assert!(
        !wrong_method.error_code().is_empty(),
        "405 has the error body"
    );
    assert!(
        wrong_method.headers.contains_key("allow"),
        "405 carries Allow"
    );
    let garbage = server
        .call("GET", "/users/me", None, Some("not-a-jwt"))
        .await;
    assert_eq!(garbage.status, 401);
}

#[tokio::test]
async fn email_code_flow_uses_the_dev_sink() {
    let server = Server::start(&[]).await;
    let email = format!("{}@example.com", unique("carol"));
    let sent = server
        .call(
            "POST",
            "/auth/send-code",
            Some(json!({"email": email})),
            None,
        )
        .await;
    assert_eq!(sent.status, 204, "{}", sent.body);
    let again = server
        .call(
            "POST",
            "/auth/send-code",
            Some(json!({"email": email})),
            None,
        )
        .await;
    assert_eq!((again.status, again.error_code()), (429, "rate_limited"));
    assert!(again.headers.contains_key("retry-after"));

    let code = find_code(&server, &email).await;
    let username = unique("carol");
    let wrong_code = if code == "000000" { "111111" } else { "000000" };
    let bad = server
        .call("POST", "/auth/register", Some(json!({"username": username, "password": "password-123", "email": email, "code": wrong_code})), None)
        .await;
    assert_eq!((bad.status, bad.error_code()), (400, "invalid_argument"));
    let no_code = server
        .call(
            "POST",
            "/auth/register",
            Some(json!({"username": username, "password": "password-123", "email": email})),
            None,
        )
        .await;
    assert_eq!(no_code.status, 400);
    let ok = server
        .call("POST", "/auth/register", Some(json!({"username": username, "password": "password-123", "email": email, "code": code})), None)
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert_eq!(
        ok.body["user"]["email"],
        email.as_str(),
        "own email is shown"
    );
    let by_email = server
        .call(
            "POST",
            "/auth/login",
            Some(json!({"login": email, "password": "password-123"})),
            None,
        )
        .await;
    assert_eq!(by_email.status, 200);
}

async fn find_code(server: &Server, email: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = server.log_text();
        if let Some(line) = log.lines().rev().find(|l| l.contains(email)) {
            let digits: Vec<&str> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| s.len() == 6)
                .collect();
            if let Some(code) = digits.last() {
                return (*code).to_owned();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no code logged for {email}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn access_tokens_expire() {
    let server = Server::start(&[("BEEHIVE_ACCESS_TOKEN_TTL", "1s")]).await;
    let user = register(&server, &unique("dave")).await;
    let token = user["access_token"].as_str().expect("token");
    assert_eq!(user["expires_in"], 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let expired = server.call("GET", "/users/me", None, Some(token)).await;
    assert_eq!(
        (expired.status, expired.error_code()),
        (401, "unauthenticated")
    );
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let server = Server::start(&[("BEEHIVE_RATE_LIMITS", "on")]).await;
    let mut limited = None;
    for _ in 0..40 {
        let reply = server
            .call(
                "POST",
                "/auth/login",
                Some(json!({"login": "nobody", "password": "whatever-1"})),
                None,
            )
            .await;
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
        assert_eq!(reply.status, 401);
    }
    let limited = limited.expect("login is limited to 30/min per IP");
    assert_eq!(limited.error_code(), "rate_limited");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry));
}

#[tokio::test]
async fn operations_endpoints_and_graceful_shutdown() {
    let mut server = Server::start(&[]).await;
    let client = &server.client;
    for path in ["/healthz", "/readyz"] {
        let status = client
            .get(format!("{}{path}", server.http))
            .send()
            .await
            .expect("get")
            .status();
        assert_eq!(status, 200, "gateway {path}");
    }
    let metrics = client
        .get(format!("{}/metrics", server.admin))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("# TYPE"), "prometheus text: {metrics}");
    let openapi = server.call("GET", "/openapi.json", None, None).await;
    assert_eq!(openapi.status, 200);
    assert!(
        openapi.body["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with('3'))
    );
    for path in [
        "/auth/register",
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
        "/auth/send-code",
        "/users/me",
        "/users/{id}",
    ] {
        let full = format!("/api/v1{path}");
        assert!(
            openapi.body["paths"].get(&full).is_some(),
            "openapi lacks {full}"
        );
    }
    let status = server.terminate().expect("exit status");
    assert!(
        status.success(),
        "SIGTERM leads to a clean exit, got {status}"
    );
}
