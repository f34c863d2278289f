//! The auth service against real PostgreSQL and Redis, with the real user service:
//! both started in-process with `bind` on loopback listeners and driven over gRPC as
//! the gateway drives them.

use std::time::Duration;

use beehive_auth::keys::{KeyRing, kid_for};
use beehive_auth::token::{Tokens, now_secs};
use beehive_common::{Component, Error, ErrorCode, Settings, Shutdown};
use beehive_proto::v1 as pb;
use beehive_proto::v1::auth_service_client::AuthServiceClient;
use beehive_proto::v1::revoke_sessions_request::Target;
use beehive_testkit::{TestEnv, serve};
use futures::StreamExt as _;
use tonic::transport::Channel;

const PASSWORD: &str = "correct horse battery";

struct Harness {
    env: TestEnv,
    auth: AuthServiceClient<Channel>,
    shutdown: Shutdown,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn new_env() -> TestEnv {
    let mut env = TestEnv::new(&[&beehive_auth::MIGRATOR, &beehive_user::MIGRATOR]).await;
    // Email codes are the user service's tests' business; here an email is just a login.
    env.settings.email_verification = false;
    env
}

/// Starts the user service and returns settings pointing auth at it.
async fn start_user(env: &TestEnv, shutdown: &Shutdown) -> Settings {
    let ctx = serve::context(&env.settings, shutdown);
    let bound = beehive_user::bind(&ctx, serve::loopback().await)
        .await
        .expect("bind user");
    let mut settings = env.settings.clone();
    settings.set_component_addr(
        Component::User,
        format!("http://{}", serve::run(bound).await),
    );
    settings
}

/// Starts one auth instance with `settings`; returns a client to it.
async fn start_auth(settings: &Settings, shutdown: &Shutdown) -> AuthServiceClient<Channel> {
    let ctx = serve::context(settings, shutdown);
    let bound = beehive_auth::bind(&ctx, serve::loopback().await)
        .await
        .expect("bind auth");
    let addr = serve::run(bound).await;
    AuthServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect auth")
}

async fn start() -> Harness {
    let env = new_env().await;
    let shutdown = Shutdown::new();
    let settings = start_user(&env, &shutdown).await;
    let auth = start_auth(&settings, &shutdown).await;
    Harness {
        env,
        auth,
        shutdown,
    }
}

async fn register(auth: &mut AuthServiceClient<Channel>, username: &str) -> pb::TokenResponse {
    auth.register(pb::AuthRegisterRequest {
        username: username.to_owned(),
        password: PASSWORD.to_owned(),
        email: Some(format!("{username}@example.com")),
        client: Some(pb::ClientInfo {
            ip: "192.0.2.1".into(),
            user_agent: "tests".into(),
        }),
        ..Default::default()
    })
    .await
    .expect("register")
    .into_inner()
}

async fn login(
    auth: &mut AuthServiceClient<Channel>,
    login: &str,
    password: &str,
) -> Result<pb::TokenResponse, tonic::Status> {
    auth.login(pb::LoginRequest {
        login: login.to_owned(),
        password: password.to_owned(),
        client: None,
    })
    .await
    .map(tonic::Response::into_inner)
}

async fn refresh(
    auth: &mut AuthServiceClient<Channel>,
    token: &str,
) -> Result<pb::TokenResponse, tonic::Status> {
    auth.refresh(pb::RefreshRequest {
        refresh_token: token.to_owned(),
        client: None,
    })
    .await
    .map(tonic::Response::into_inner)
}

async fn validate(
    auth: &mut AuthServiceClient<Channel>,
    token: &str,
) -> Result<pb::ValidateTokenResponse, tonic::Status> {
    auth.validate_token(pb::ValidateTokenRequest {
        access_token: token.to_owned(),
    })
    .await
    .map(tonic::Response::into_inner)
}

/// Follows the revocation channel like a gateway does.
struct Subscriber {
    pubsub: redis::aio::PubSub,
}

impl Subscriber {
    async fn new(settings: &Settings) -> Self {
        let client = redis::Client::open(settings.redis_url.expose()).expect("redis url");
        let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
        pubsub
            .subscribe(settings.prefixed("auth:revocations"))
            .await
            .expect("subscribe");
        Self { pubsub }
    }

    /// The next `n` messages, parsed. The timeout only keeps a broken build from
    /// hanging; nothing here measures time.
    async fn next(&mut self, n: usize) -> Vec<serde_json::Value> {
        let mut stream = self.pubsub.on_message();
        let mut out = Vec::new();
        while out.len() < n {
            let message = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("revocation published")
                .expect("stream open");
            let payload: String = message.get_payload().expect("payload");
            out.push(serde_json::from_str(&payload).expect("json payload"));
        }
        out
    }
}

async fn redis_conn(settings: &Settings) -> redis::aio::MultiplexedConnection {
    redis::Client::open(settings.redis_url.expose())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

fn code_of(status: tonic::Status) -> ErrorCode {
    Error::from_status(&status).code()
}

#[tokio::test]
async fn register_and_login_issue_verifiable_tokens() {
    let mut h = start().await;
    let registered = register(&mut h.auth, "alice").await;
    let user = registered.user.clone().expect("user");
    assert_eq!(user.username, "alice");
    assert_eq!(user.email.as_deref(), Some("alice@example.com"));
    assert_eq!(registered.expires_in, 900);
    assert!(
        registered.refresh_token.len() >= 43,
        "256-bit refresh token"
    );
    let checked = validate(&mut h.auth, &registered.access_token)
        .await
        .expect("valid");
    assert_eq!(checked.user_id, user.id);
    assert_eq!(checked.session_id, registered.session_id);
    let stored: (String, String) =
        sqlx::query_as("SELECT ip, user_agent FROM auth.sessions WHERE id = $1::uuid")
            .bind(&registered.session_id)
            .fetch_one(&h.env.pool)
            .await
            .expect("session row");
    assert_eq!(stored, ("192.0.2.1".to_owned(), "tests".to_owned()));
    // Only the hash of the refresh token is stored.
    let raw: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM auth.refresh_tokens WHERE token_hash = convert_to($1, 'UTF8')",
    )
    .bind(&registered.refresh_token)
    .fetch_one(&h.env.pool)
    .await
    .expect("count");
    assert_eq!(raw, 0);

    let mut sessions = vec![registered.session_id.clone()];
    for name in ["alice", "ALICE", "alice@example.com", user.id.as_str()] {
        let issued = login(&mut h.auth, name, PASSWORD).await.expect(name);
        assert_eq!(issued.user.expect("user").id, user.id, "{name}");
        validate(&mut h.auth, &issued.access_token)
            .await
            .expect("valid");
        sessions.push(issued.session_id);
    }
    sessions.sort();
    sessions.dedup();
    assert_eq!(sessions.len(), 5, "one session per login");

    let wrong = login(&mut h.auth, "alice", "wrong password")
        .await
        .expect_err("wrong password");
    let unknown = login(&mut h.auth, "nobody", PASSWORD)
        .await
        .expect_err("unknown user");
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        (wrong.code(), wrong.message()),
        (unknown.code(), unknown.message()),
        "the same error whether or not the user exists"
    );

    let taken = h
        .auth
        .register(pb::AuthRegisterRequest {
            username: "Alice".into(),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await
        .expect_err("taken");
    assert_eq!(code_of(taken), ErrorCode::AlreadyExists);
    let invalid = h
        .auth
        .register(pb::AuthRegisterRequest {
            username: "bob".into(),
            password: "short".into(),
            ..Default::default()
        })
        .await
        .expect_err("short password");
    assert_eq!(code_of(invalid), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_session() {
    let mut h = start().await;
    let mut subscriber = Subscriber::new(&h.env.settings).await;
    let first = register(&mut h.auth, "bob").await;

    let second = refresh(&mut h.auth, &first.refresh_token)
        .await
        .expect("rotate");
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.session_id, first.session_id);
    assert!(second.user.is_none(), "Refresh carries no user");
    validate(&mut h.auth, &second.access_token)
        .await
        .expect("new access token valid");
    let third = refresh(&mut h.auth, &second.refresh_token)
        .await
        .expect("rotate again");

    // The first token was rotated: presenting it again revokes the whole session.
    let reuse = refresh(&mut h.auth, &first.refresh_token)
        .await
        .expect_err("reuse");
    assert_eq!(code_of(reuse), ErrorCode::Unauthenticated);
    let messages = subscriber.next(1).await;
    assert_eq!(
        messages[0],
        serde_json::json!({
            "session_id": first.session_id,
            "user_id": first.user.as_ref().expect("user").id,
            "reason": "session_revoked",
        })
    );
    for token in [
        &first.access_token,
        &second.access_token,
        &third.access_token,
    ] {
        let status = validate(&mut h.auth, token).await.expect_err("revoked");
        assert_eq!(code_of(status), ErrorCode::Unauthenticated);
    }
    let status = refresh(&mut h.auth, &third.refresh_token)
        .await
        .expect_err("the newest refresh token died with the session");
    assert_eq!(code_of(status), ErrorCode::Unauthenticated);

    let listed = h
        .auth
        .list_revoked_sessions(pb::ListRevokedSessionsRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.sessions.len(), 1);
    assert_eq!(listed.sessions[0].session_id, first.session_id);
    assert_eq!(
        listed.sessions[0].reason,
        pb::RevocationReason::SessionRevoked as i32
    );
    assert!(listed.sessions[0].revoked_at.is_some());

    for junk in ["", "short", &"x".repeat(43), &"y".repeat(10_000)] {
        let status = refresh(&mut h.auth, junk).await.expect_err("junk");
        assert_eq!(code_of(status), ErrorCode::Unauthenticated);
    }
}

#[tokio::test]
async fn logout_revokes_the_session_everywhere() {
    let mut h = start().await;
    let mut subscriber = Subscriber::new(&h.env.settings).await;
    let carol = register(&mut h.auth, "carol").await;
    let other = login(&mut h.auth, "carol", PASSWORD).await.expect("login");
    let dave = register(&mut h.auth, "dave").await;
    let carol_id = carol.user.as_ref().expect("user").id.clone();
    let dave_id = dave.user.as_ref().expect("user").id.clone();

    // Someone else's session cannot be logged out.
    let status = h
        .auth
        .logout(pb::LogoutRequest {
            session_id: carol.session_id.clone(),
            user_id: dave_id,
        })
        .await
        .expect_err("not the owner");
    assert_eq!(code_of(status), ErrorCode::NotFound);
    validate(&mut h.auth, &carol.access_token)
        .await
        .expect("still valid");

    let logout = pb::LogoutRequest {
        session_id: carol.session_id.clone(),
        user_id: carol_id.clone(),
    };
    h.auth.logout(logout.clone()).await.expect("logout");
    let messages = subscriber.next(1).await;
    assert_eq!(
        messages[0],
        serde_json::json!({"session_id": carol.session_id, "user_id": carol_id, "reason": "logout"})
    );
    let mut redis = redis_conn(&h.env.settings).await;
    let key = h
        .env
        .settings
        .prefixed(&format!("auth:revoked:{}", carol.session_id));
    let (reason, ttl): (Option<String>, i64) = redis::pipe()
        .get(&key)
        .ttl(&key)
        .query_async(&mut redis)
        .await
        .expect("redis");
    assert_eq!(reason.as_deref(), Some("logout"));
    assert!(
        (1..=900).contains(&ttl),
        "cached for the access-token TTL: {ttl}"
    );

    let status = validate(&mut h.auth, &carol.access_token)
        .await
        .expect_err("revoked");
    assert_eq!(code_of(status), ErrorCode::Unauthenticated);
    let status = refresh(&mut h.auth, &carol.refresh_token)
        .await
        .expect_err("refresh of a logged-out session");
    assert_eq!(code_of(status), ErrorCode::Unauthenticated);
    validate(&mut h.auth, &other.access_token)
        .await
        .expect("the other session lives");
    h.auth
        .logout(logout)
        .await
        .expect("logging out twice is fine");

    let listed = h
        .auth
        .list_revoked_sessions(pb::ListRevokedSessionsRequest {})
        .await
        .expect("list")
        .into_inner();
    let reasons: Vec<(String, i32)> = listed
        .sessions
        .iter()
        .map(|s| (s.session_id.clone(), s.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![(
            carol.session_id.clone(),
            pb::RevocationReason::Logout as i32
        )]
    );
}

#[tokio::test]
async fn password_change_revokes_every_other_session() {
    let mut h = start().await;
    let mut subscriber = Subscriber::new(&h.env.settings).await;
    let mine = register(&mut h.auth, "erin").await;
    let user_id = mine.user.as_ref().expect("user").id.clone();
    let laptop = login(&mut h.auth, "erin", PASSWORD).await.expect("login");
    let phone = login(&mut h.auth, "erin", PASSWORD).await.expect("login");
    let bystander = register(&mut h.auth, "frank").await;

    let change = |old: &str| pb::AuthChangePasswordRequest {
        user_id: user_id.clone(),
        session_id: mine.session_id.clone(),
        old_password: old.to_owned(),
        new_password: "a brand new password".to_owned(),
    };
    let status = h
        .auth
        .change_password(change("wrong old password"))
        .await
        .expect_err("wrong old password");
    assert_eq!(code_of(status), ErrorCode::Unauthenticated);
    validate(&mut h.auth, &laptop.access_token)
        .await
        .expect("nothing revoked on failure");

    let answer = h
        .auth
        .change_password(change(PASSWORD))
        .await
        .expect("change")
        .into_inner();
    assert_eq!(answer.revoked_sessions, 2);
    let mut messages = subscriber.next(2).await;
    messages.sort_by_key(|m| m["session_id"].as_str().map(str::to_owned));
    let mut expected = vec![
        serde_json::json!({"session_id": laptop.session_id, "user_id": user_id, "reason": "password_changed"}),
        serde_json::json!({"session_id": phone.session_id, "user_id": user_id, "reason": "password_changed"}),
    ];
    expected.sort_by_key(|m| m["session_id"].as_str().map(str::to_owned));
    assert_eq!(messages, expected);

    validate(&mut h.auth, &mine.access_token)
        .await
        .expect("the caller's session stays valid");
    refresh(&mut h.auth, &mine.refresh_token)
        .await
        .expect("and can still refresh");
    for other in [&laptop, &phone] {
        let status = validate(&mut h.auth, &other.access_token)
            .await
            .expect_err("revoked");
        assert_eq!(code_of(status), ErrorCode::Unauthenticated);
    }
    validate(&mut h.auth, &bystander.access_token)
        .await
        .expect("other users untouched");
    login(&mut h.auth, "erin", "a brand new password")
        .await
        .expect("new password");
    let status = login(&mut h.auth, "erin", PASSWORD)
        .await
        .expect_err("old password");
    assert_eq!(code_of(status), ErrorCode::Unauthenticated);
}

#[tokio::test]
async fn revoke_sessions_for_administration() {
    let mut h = start().await;
    let a = register(&mut h.auth, "grace").await;
    let b = login(&mut h.auth, "grace", PASSWORD).await.expect("login");
    let c = login(&mut h.auth, "grace", PASSWORD).await.expect("login");
    let user_id = a.user.as_ref().expect("user").id.clone();

    let status = h
        .auth
        .revoke_sessions(pb::RevokeSessionsRequest {
            target: Some(Target::SessionId(a.session_id.clone())),
            reason: pb::RevocationReason::Unspecified as i32,
            except_session_id: String::new(),
        })
        .await
        .expect_err("unspecified reason");
    assert_eq!(code_of(status), ErrorCode::InvalidArgument);

    let one = h
        .auth
        .revoke_sessions(pb::RevokeSessionsRequest {
            target: Some(Target::SessionId(a.session_id.clone())),
            reason: pb::RevocationReason::SessionRevoked as i32,
            except_session_id: String::new(),
        })
        .await
        .expect("revoke one")
        .into_inner();
    assert_eq!(one.revoked_sessions, 1);
    let rest = h
        .auth
        .revoke_sessions(pb::RevokeSessionsRequest {
            target: Some(Target::UserId(user_id)),
            reason: pb::RevocationReason::SessionRevoked as i32,
            except_session_id: c.session_id.clone(),
        })
        .await
        .expect("revoke the user's others")
        .into_inner();
    assert_eq!(rest.revoked_sessions, 1, "a was already revoked, c is kept");
    assert!(validate(&mut h.auth, &a.access_token).await.is_err());
    assert!(validate(&mut h.auth, &b.access_token).await.is_err());
    validate(&mut h.auth, &c.access_token).await.expect("kept");
}

#[tokio::test]
async fn expired_and_foreign_access_tokens_are_rejected() {
    let mut h = start().await;
    let issued = register(&mut h.auth, "heidi").await;
    let user_id: uuid::Uuid = issued.user.as_ref().expect("user").id.parse().expect("id");
    let session_id: uuid::Uuid = issued.session_id.parse().expect("sid");

    // Sign with the installation's own key (read from the database) so only the
    // expiry differs from a valid token.
    let der: Vec<u8> = sqlx::query_scalar("SELECT private_key FROM auth.signing_keys WHERE active")
        .fetch_one(&h.env.pool)
        .await
        .expect("key row");
    let key =
        <ed25519_dalek::SigningKey as ed25519_dalek::pkcs8::DecodePrivateKey>::from_pkcs8_der(&der)
            .expect("pkcs8");
    let tokens = Tokens::new(
        KeyRing::new(&key, chrono::Utc::now(), Vec::new()).expect("ring"),
        Duration::from_secs(900),
    );
    let fresh = tokens.issue(user_id, session_id).expect("issue");
    validate(&mut h.auth, &fresh.token)
        .await
        .expect("same key, fresh: valid");
    let expired = tokens
        .issue_at(user_id, session_id, now_secs() - 901)
        .expect("issue");
    let status = validate(&mut h.auth, &expired.token)
        .await
        .expect_err("expired");
    assert_eq!(code_of(status), ErrorCode::Unauthenticated);

    // A token for a session that does not exist is rejected too.
    let orphan = tokens.issue(user_id, uuid::Uuid::now_v7()).expect("issue");
    assert!(validate(&mut h.auth, &orphan.token).await.is_err());

    // So is a token signed by a key the installation does not know.
    let stranger = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let foreign = Tokens::new(
        KeyRing::new(&stranger, chrono::Utc::now(), Vec::new()).expect("ring"),
        Duration::from_secs(900),
    )
    .issue(user_id, session_id)
    .expect("issue");
    assert!(validate(&mut h.auth, &foreign.token).await.is_err());
    assert!(validate(&mut h.auth, "garbage").await.is_err());
}

#[tokio::test]
async fn concurrent_first_starts_agree_on_one_signing_key() {
    let env = new_env().await;
    let shutdown = Shutdown::new();
    let settings = start_user(&env, &shutdown).await;
    let (mut one, mut two) = tokio::join!(
        start_auth(&settings, &shutdown),
        start_auth(&settings, &shutdown)
    );
    let keys_one = one
        .list_signing_keys(pb::ListSigningKeysRequest {})
        .await
        .expect("keys")
        .into_inner();
    let keys_two = two
        .list_signing_keys(pb::ListSigningKeysRequest {})
        .await
        .expect("keys")
        .into_inner();
    assert_eq!(keys_one.active_kid, keys_two.active_kid);
    assert_eq!(keys_one.keys.len(), 1);
    let key = &keys_one.keys[0];
    assert_eq!(key.kid, keys_one.active_kid);
    assert_eq!(key.algorithm, "EdDSA");
    let public: [u8; 32] = key.public_key.as_slice().try_into().expect("32 bytes");
    assert_eq!(kid_for(&public), key.kid, "kid is the JWK thumbprint");
    let active: i64 = sqlx::query_scalar("SELECT count(*) FROM auth.signing_keys WHERE active")
        .fetch_one(&env.pool)
        .await
        .expect("count");
    assert_eq!(active, 1);

    // A token minted by one instance is valid on the other.
    let issued = register(&mut one, "ivan").await;
    validate(&mut two, &issued.access_token)
        .await
        .expect("valid on the other instance");
    let header = issued.access_token.split('.').next().expect("header");
    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(header["kid"], keys_one.active_kid.as_str());
    assert_eq!(header["alg"], "EdDSA");

    // A restart reuses the stored key instead of generating another.
    let mut three = start_auth(&settings, &shutdown).await;
    let keys_three = three
        .list_signing_keys(pb::ListSigningKeysRequest {})
        .await
        .expect("keys")
        .into_inner();
    assert_eq!(keys_three.active_kid, keys_one.active_kid);
    shutdown.trigger();
}

#[tokio::test]
async fn many_concurrent_key_loads_end_with_one_key() {
    let env = new_env().await;
    // Separate pools, as separate processes would have.
    let mut pools = Vec::new();
    for _ in 0..8 {
        pools.push(
            beehive_common::infra::connect_postgres(&env.settings.database_url, 2)
                .await
                .expect("pool"),
        );
    }
    let rings = futures::future::join_all(pools.into_iter().map(|pool| async move {
        beehive_auth::keys::load(&beehive_auth::store::Store::new(pool), None).await
    }))
    .await;
    let kids: Vec<String> = rings
        .into_iter()
        .map(|r| r.expect("load").active().kid.clone())
        .collect();
    assert!(kids.iter().all(|k| *k == kids[0]), "{kids:?}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM auth.signing_keys")
        .fetch_one(&env.pool)
        .await
        .expect("count");
    assert_eq!(stored, 1, "losers' candidates are not stored");
}

#[tokio::test]
async fn a_key_file_overrides_the_generated_key() {
    let env = new_env().await;
    let shutdown = Shutdown::new();
    let mut settings = start_user(&env, &shutdown).await;
    // A generated key first, so tokens signed before the switch stay verifiable.
    let mut before = start_auth(&settings, &shutdown).await;
    let old = register(&mut before, "judy").await;

    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_pem(
        &key,
        ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF,
    )
    .expect("pem");
    let path = std::env::temp_dir().join(format!("beehive-auth-{}.pem", env.database()));
    std::fs::write(&path, pem.as_bytes()).expect("write key");
    settings.jwt_secret_file = Some(path.clone());
    let mut after = start_auth(&settings, &shutdown).await;
    let keys = after
        .list_signing_keys(pb::ListSigningKeysRequest {})
        .await
        .expect("keys")
        .into_inner();
    let public = key.verifying_key().to_bytes();
    assert_eq!(keys.active_kid, kid_for(&public));
    assert_eq!(keys.keys[0].public_key, public.to_vec());
    assert_eq!(keys.keys.len(), 2, "the generated key is still listed");
    validate(&mut after, &old.access_token)
        .await
        .expect("tokens of the old key still verify");
    let new = login(&mut after, "judy", PASSWORD).await.expect("login");
    validate(&mut after, &new.access_token)
        .await
        .expect("signed with the file key");
    let _ = std::fs::remove_file(path);
    shutdown.trigger();
}

#[tokio::test]
async fn a_missing_user_service_is_unavailable_not_internal() {
    let env = new_env().await;
    let shutdown = Shutdown::new();
    // A port nobody listens on: bind one and close it.
    let closed = {
        let listener = serve::loopback().await;
        listener.local_addr().expect("addr")
    };
    let mut settings = env.settings.clone();
    settings.set_component_addr(Component::User, format!("http://{closed}"));
    settings.grpc_timeout = Duration::from_millis(500);
    let mut auth = start_auth(&settings, &shutdown).await;
    let status = login(&mut auth, "anyone", PASSWORD)
        .await
        .expect_err("no user service");
    assert_eq!(code_of(status), ErrorCode::Unavailable);
    let status = auth
        .register(pb::AuthRegisterRequest {
            username: "anyone".into(),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await
        .expect_err("no user service");
    assert_eq!(code_of(status), ErrorCode::Unavailable);
    shutdown.trigger();
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_cannot_both_win() {
    let mut h = start().await;
    let issued = register(&mut h.auth, "kate").await;
    let attempts = (0..2).map(|_| {
        let mut auth = h.auth.clone();
        let token = issued.refresh_token.clone();
        async move { refresh(&mut auth, &token).await }
    });
    let results = futures::future::join_all(attempts).await;
    // The row lock serialises them: the second sees a rotated token, which is reuse.
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for tokens in results.iter().flatten() {
        let status = validate(&mut h.auth, &tokens.access_token)
            .await
            .expect_err("the session was revoked by the reuse");
        assert_eq!(code_of(status), ErrorCode::Unauthenticated);
    }
    let state: Option<String> =
        sqlx::query_scalar("SELECT revoked_reason FROM auth.sessions WHERE id = $1::uuid")
            .bind(&issued.session_id)
            .fetch_one(&h.env.pool)
            .await
            .expect("session");
    assert_eq!(state.as_deref(), Some("session_revoked"));
}
