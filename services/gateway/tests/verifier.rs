//! The token verifier against real Redis and a small in-test auth service that serves
//! a generated Ed25519 key (ListSigningKeys) and a revoked-session list
//! (ListRevokedSessions); tokens are signed here with that key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use beehive_common::grpc::ClientStack;
use beehive_common::{Component, ErrorCode, Settings, Shutdown};
use beehive_gateway::auth::TokenVerifier;
use beehive_proto::v1 as pb;
use beehive_proto::v1::auth_service_client::AuthServiceClient;
use beehive_proto::v1::auth_service_server::{AuthService, AuthServiceServer};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use tonic::{Request, Response, Status};

/// One signing key: its kid and what jsonwebtoken signs with.
struct Key {
    kid: String,
    signing: SigningKey,
}

impl Key {
    fn generate(kid: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            signing: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    fn sign(&self, sub: &str, sid: &str, exp: i64) -> String {
        let der = self.signing.to_pkcs8_der().expect("pkcs8");
        let key = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "sub": sub, "sid": sid, "jti": uuid::Uuid::new_v4().to_string(),
            "iat": now, "exp": exp,
        });
        jsonwebtoken::encode(&header, &claims, &key).expect("sign")
    }

    fn public(&self) -> pb::SigningKey {
        pb::SigningKey {
            kid: self.kid.clone(),
            algorithm: "EdDSA".into(),
            public_key: self.signing.verifying_key().to_bytes().to_vec(),
            created_at: None,
        }
    }
}

/// What the fake auth serves; tests change it while running.
#[derive(Default)]
struct World {
    keys: Vec<pb::SigningKey>,
    revoked: Vec<pb::RevokedSession>,
    key_calls: usize,
}

#[derive(Clone, Default)]
struct FakeAuth(Arc<Mutex<World>>);

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not part of this fake"))
}

#[tonic::async_trait]
impl AuthService for FakeAuth {
    async fn register(
        &self,
        _: Request<pb::AuthRegisterRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        unimplemented()
    }
    async fn login(
        &self,
        _: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        unimplemented()
    }
    async fn refresh(
        &self,
        _: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        unimplemented()
    }
    async fn logout(
        &self,
        _: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        unimplemented()
    }
    async fn change_password(
        &self,
        _: Request<pb::AuthChangePasswordRequest>,
    ) -> Result<Response<pb::AuthChangePasswordResponse>, Status> {
        unimplemented()
    }
    async fn revoke_sessions(
        &self,
        _: Request<pb::RevokeSessionsRequest>,
    ) -> Result<Response<pb::RevokeSessionsResponse>, Status> {
        unimplemented()
    }
    async fn list_signing_keys(
        &self,
        _: Request<pb::ListSigningKeysRequest>,
    ) -> Result<Response<pb::ListSigningKeysResponse>, Status> {
        let mut world = self.0.lock().expect("lock");
        world.key_calls += 1;
        Ok(Response::new(pb::ListSigningKeysResponse {
            active_kid: world.keys.last().map(|k| k.kid.clone()).unwrap_or_default(),
            keys: world.keys.clone(),
        }))
    }
    async fn list_revoked_sessions(
        &self,
        _: Request<pb::ListRevokedSessionsRequest>,
    ) -> Result<Response<pb::ListRevokedSessionsResponse>, Status> {
        let world = self.0.lock().expect("lock");
        Ok(Response::new(pb::ListRevokedSessionsResponse {
            sessions: world.revoked.clone(),
        }))
    }
    async fn validate_token(
        &self,
        _: Request<pb::ValidateTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        unimplemented()
    }
}

struct Harness {
    settings: Settings,
    /// The ACL user the verifier connects as, so its connections can be killed alone.
    redis_user: Option<String>,
    fake: FakeAuth,
    verifier: Arc<TokenVerifier>,
    shutdown: Shutdown,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(user) = self.redis_user.take() {
            // Best effort, from a plain thread: Drop cannot await.
            let url = test_settings().redis_url.expose().to_owned();
            let _ = std::thread::spawn(move || {
                if let Ok(client) = redis::Client::open(url)
                    && let Ok(mut conn) = client.get_connection()
                {
                    let _: redis::RedisResult<i64> =
                        redis::cmd("ACL").arg("DELUSER").arg(user).query(&mut conn);
                }
            })
            .join();
        }
    }
}

/// Creates an ACL user with full rights named after the installation and returns the
/// Redis URL that logs in as it.
async fn own_redis_user(settings: &Settings) -> (String, String) {
    let user = settings.installation.clone();
    let mut conn = redis().await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(">test-password")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async(&mut conn)
        .await
        .expect("acl setuser");
    let url = settings.redis_url.expose().replacen(
        "redis://",
        &format!("redis://{user}:test-password@"),
        1,
    );
    (user, url)
}

fn test_settings() -> Settings {
    let mut map = std::collections::BTreeMap::new();
    let id = uuid::Uuid::new_v4().simple().to_string();
    map.insert("BEEHIVE_INSTALLATION".to_owned(), format!("t{}", &id[..12]));
    map.insert("BEEHIVE_ACCESS_TOKEN_TTL".to_owned(), "15m".to_owned());
    if let Ok(url) = std::env::var("BEEHIVE_TEST_REDIS_URL") {
        map.insert("BEEHIVE_REDIS_URL".to_owned(), url);
    }
    Settings::from_map(&map).expect("settings").0
}

async fn start(fake: FakeAuth) -> Harness {
    start_with(fake, false).await
}

async fn start_with(fake: FakeAuth, own_user: bool) -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let server_shutdown = shutdown.clone();
    let service = AuthServiceServer::new(fake.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                beehive_common::grpc::tokio_stream_shim::TcpIncoming::new(listener),
                server_shutdown.wait_owned(),
            )
            .await
            .expect("fake auth serves");
    });
    let mut settings = test_settings();
    let mut redis_user = None;
    if own_user {
        let (user, url) = own_redis_user(&settings).await;
        redis_user = Some(user);
        settings.redis_url = beehive_common::config::SecretUrl::new(url);
    }
    settings.set_component_addr(Component::Auth, format!("http://{addr}"));
    let channel = ClientStack::connect(Component::Auth, &settings, &shutdown).expect("channel");
    let client = AuthServiceClient::new(channel);
    let verifier = TokenVerifier::start(&settings, client, &shutdown).expect("verifier");
    wait_until(|| verifier.is_ready(), "verifier ready").await;
    Harness {
        settings,
        redis_user,
        fake,
        verifier,
        shutdown,
    }
}

async fn wait_until(mut condition: impl FnMut() -> bool, what: &str) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn in_15_min() -> i64 {
    chrono::Utc::now().timestamp() + 900
}

async fn redis() -> redis::aio::MultiplexedConnection {
    let settings = test_settings();
    redis::Client::open(settings.redis_url.expose())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis reachable; run scripts/infra.sh")
}

#[tokio::test]
async fn valid_tokens_verify_locally_and_bad_ones_do_not() {
    let key = Key::generate("k1");
    let fake = FakeAuth::default();
    fake.0.lock().expect("lock").keys.push(key.public());
    let h = start(fake).await;

    let token = key.sign("user-1", "session-1", in_15_min());
    let claims = h.verifier.verify(&token).expect("valid token");
    assert_eq!(claims.user_id, "user-1");
    assert_eq!(claims.session_id, "session-1");

    let calls_before = h.fake.0.lock().expect("lock").key_calls;
    for _ in 0..20 {
        h.verifier.verify(&token).expect("still valid");
    }
    assert_eq!(
        h.fake.0.lock().expect("lock").key_calls,
        calls_before,
        "verification is local: no RPC per token"
    );

    let expired = key.sign("user-1", "session-1", chrono::Utc::now().timestamp() - 1);
    let error = h.verifier.verify(&expired).expect_err("expired");
    assert_eq!(error.code(), ErrorCode::Unauthenticated);

    // A token signed by a key auth never published.
    let forged = Key {
        kid: "k1".into(),
        signing: SigningKey::generate(&mut rand::rngs::OsRng),
    }
    .sign("user-1", "session-1", in_15_min());
    assert_eq!(
        h.verifier.verify(&forged).expect_err("forged").code(),
        ErrorCode::Unauthenticated
    );

    // Tampered payload, garbage, oversized.
    let mut parts: Vec<&str> = token.split('.').collect();
    let other = key.sign("user-2", "session-1", in_15_min());
    let other_payload = other.split('.').nth(1).expect("payload");
    parts[1] = other_payload;
    let tampered = parts.join(".");
    assert!(h.verifier.verify(&tampered).is_err());
    assert!(h.verifier.verify("not a token").is_err());
    assert!(h.verifier.verify(&"a".repeat(10_000)).is_err());
}

#[tokio::test]
async fn an_unknown_kid_triggers_one_refetch() {
    let old = Key::generate("old");
    let fake = FakeAuth::default();
    fake.0.lock().expect("lock").keys.push(old.public());
    let h = start(fake).await;

    // Auth rotates: the new key exists only on auth so far.
    let new = Key::generate("new");
    h.fake.0.lock().expect("lock").keys.push(new.public());
    let token = new.sign("user-1", "session-1", in_15_min());
    assert_eq!(
        h.verifier
            .verify(&token)
            .expect_err("sync path never calls auth")
            .code(),
        ErrorCode::Unauthenticated
    );
    let claims = h.verifier.verify_fresh(&token).await.expect("refetched");
    assert_eq!(claims.user_id, "user-1");

    // Made-up kids do not hammer auth: the refetch is rate-limited.
    let calls = h.fake.0.lock().expect("lock").key_calls;
    for i in 0..10 {
        let bogus = Key::generate(&format!("bogus-{i}")).sign("u", "s", in_15_min());
        assert!(h.verifier.verify_fresh(&bogus).await.is_err());
    }
    assert_eq!(h.fake.0.lock().expect("lock").key_calls, calls);
}

#[tokio::test]
async fn sessions_revoked_before_start_are_denied() {
    let key = Key::generate("k1");
    let fake = FakeAuth::default();
    {
        let mut world = fake.0.lock().expect("lock");
        world.keys.push(key.public());
        world.revoked.push(pb::RevokedSession {
            session_id: "gone".into(),
            user_id: "user-1".into(),
            reason: pb::RevocationReason::Logout as i32,
            revoked_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        });
    }
    let h = start(fake).await;
    let token = key.sign("user-1", "gone", in_15_min());
    assert_eq!(
        h.verifier.verify(&token).expect_err("revoked").code(),
        ErrorCode::Unauthenticated
    );
    let ok = key.sign("user-1", "alive", in_15_min());
    assert!(h.verifier.verify(&ok).is_ok());
}

#[tokio::test]
async fn revocations_published_on_redis_deny_at_once_and_are_broadcast() {
    let key = Key::generate("k1");
    let fake = FakeAuth::default();
    fake.0.lock().expect("lock").keys.push(key.public());
    let h = start(fake).await;
    let mut revocations = h.verifier.subscribe();

    let token = key.sign("user-1", "session-9", in_15_min());
    assert!(h.verifier.verify(&token).is_ok());

    let channel = h.settings.prefixed("auth:revocations");
    let mut conn = redis().await;
    // The subscription is up once the verifier is ready, but publish until it is seen
    // in case the SUBSCRIBE is still in flight.
    let payload = serde_json::json!({
        "session_id": "session-9", "user_id": "user-1", "reason": "password_changed"
    })
    .to_string();
    let received = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&payload)
                .query_async(&mut conn)
                .await
                .expect("publish");
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_millis(200), revocations.recv()).await
            {
                return r;
            }
        }
    })
    .await
    .expect("revocation broadcast");
    assert_eq!(received.session_id, "session-9");
    assert_eq!(received.user_id, "user-1");
    assert_eq!(received.reason, pb::RevocationReason::PasswordChanged);
    assert_eq!(
        h.verifier.verify(&token).expect_err("revoked").code(),
        ErrorCode::Unauthenticated
    );
    // Other sessions of the same user are unaffected.
    assert!(
        h.verifier
            .verify(&key.sign("user-1", "session-10", in_15_min()))
            .is_ok()
    );

    // Garbage on the channel is ignored, the subscription keeps working.
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .expect("publish");
    let payload = serde_json::json!({
        "session_id": "session-11", "user_id": "user-2", "reason": "logout"
    })
    .to_string();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(&payload)
        .query_async(&mut conn)
        .await
        .expect("publish");
    let next = tokio::time::timeout(Duration::from_secs(5), revocations.recv())
        .await
        .expect("in time")
        .expect("broadcast");
    assert_eq!(next.session_id, "session-11");
    assert_eq!(next.reason, pb::RevocationReason::Logout);
}

#[tokio::test]
async fn a_lost_subscription_reconnects_and_reloads_the_deny_set() {
    let key = Key::generate("k1");
    let fake = FakeAuth::default();
    fake.0.lock().expect("lock").keys.push(key.public());
    let h = start_with(fake, true).await;
    let token = key.sign("user-1", "while-away", in_15_min());
    assert!(h.verifier.verify(&token).is_ok());

    // A revocation the gateway never hears about on Redis (published while the
    // subscription was down): only auth's list has it.
    h.fake
        .0
        .lock()
        .expect("lock")
        .revoked
        .push(pb::RevokedSession {
            session_id: "while-away".into(),
            user_id: "user-1".into(),
            reason: pb::RevocationReason::SessionRevoked as i32,
            revoked_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        });
    assert!(h.verifier.verify(&token).is_ok(), "not known yet");

    let mut revocations = h.verifier.subscribe();
    // Kill the verifier's connections (it connects as this test's own Redis user),
    // as a Redis restart would.
    let mut conn = redis().await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg(h.redis_user.as_deref().expect("a Redis user of its own"))
        .query_async(&mut conn)
        .await
        .expect("client kill");
    assert!(killed >= 1, "the verifier's subscription was killed");

    let r = tokio::time::timeout(Duration::from_secs(10), revocations.recv())
        .await
        .expect("reloaded after reconnecting")
        .expect("broadcast");
    assert_eq!(r.session_id, "while-away");
    assert!(h.verifier.verify(&token).is_err());
}
