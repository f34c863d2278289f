//! Access-token costs (what every gateway request pays) and login costs (dominated by
//! argon2id).
//!
//! `cargo bench -p beehive-auth --bench token`. The `login` group starts the user and
//! auth services in-process against the local PostgreSQL and Redis (as the
//! integration tests do) and measures one full Login over gRPC.

use std::hint::black_box;
use std::time::Duration;

use beehive_auth::keys::KeyRing;
use beehive_auth::token::Tokens;
use beehive_common::{Component, Shutdown};
use beehive_proto::v1 as pb;
use beehive_proto::v1::auth_service_client::AuthServiceClient;
use beehive_testkit::serve;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use uuid::Uuid;

fn tokens() -> Tokens {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let ring = KeyRing::new(&key, chrono::Utc::now(), Vec::new()).expect("ring");
    Tokens::new(ring, Duration::from_secs(900))
}

fn access_tokens(c: &mut Criterion) {
    let tokens = tokens();
    let token = tokens
        .issue(Uuid::now_v7(), Uuid::now_v7())
        .expect("issue")
        .token;
    let mut group = c.benchmark_group("access_token");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify", |b| {
        b.iter(|| tokens.verify(black_box(&token)).expect("valid"))
    });
    group.bench_function("issue", |b| {
        b.iter(|| {
            tokens
                .issue(black_box(Uuid::nil()), black_box(Uuid::nil()))
                .expect("issue")
        })
    });
    group.finish();
}

fn argon2(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let passwords = beehive_user::password::Passwords::owasp().expect("hasher");
    let hash = runtime
        .block_on(passwords.hash("correct horse battery".into()))
        .expect("hash");
    let mut group = c.benchmark_group("argon2id");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_owasp", |b| {
        b.iter(|| {
            runtime
                .block_on(passwords.verify("correct horse battery".into(), Some(hash.clone())))
                .expect("verify")
        })
    });
    group.finish();
}

fn login(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let shutdown = Shutdown::new();
    let (env, mut client) = runtime.block_on(async {
        let mut env =
            beehive_testkit::TestEnv::new(&[&beehive_auth::MIGRATOR, &beehive_user::MIGRATOR])
                .await;
        env.settings.email_verification = false;
        let user = beehive_user::bind(
            &serve::context(&env.settings, &shutdown),
            serve::loopback().await,
        )
        .await
        .expect("user");
        let user_addr = serve::run(user).await;
        env.settings
            .set_component_addr(Component::User, format!("http://{user_addr}"));
        let auth = beehive_auth::bind(
            &serve::context(&env.settings, &shutdown),
            serve::loopback().await,
        )
        .await
        .expect("auth");
        let addr = serve::run(auth).await;
        let mut client = AuthServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        client
            .register(pb::AuthRegisterRequest {
                username: "bench".into(),
                password: "correct horse battery".into(),
                ..Default::default()
            })
            .await
            .expect("register");
        (env, client)
    });
    let mut group = c.benchmark_group("login");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    group.bench_function("grpc_login_sequential", |b| {
        b.iter(|| {
            runtime
                .block_on(client.login(pb::LoginRequest {
                    login: "bench".into(),
                    password: "correct horse battery".into(),
                    client: None,
                }))
                .expect("login")
        })
    });
    // Logins in flight together: how the hashing semaphore uses both cores.
    group.throughput(Throughput::Elements(8));
    group.bench_function("grpc_login_8_concurrent", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let calls = (0..8).map(|_| {
                    let mut client = client.clone();
                    async move {
                        client
                            .login(pb::LoginRequest {
                                login: "bench".into(),
                                password: "correct horse battery".into(),
                                client: None,
                            })
                            .await
                            .expect("login")
                    }
                });
                futures::future::join_all(calls).await
            })
        })
    });
    group.finish();
    shutdown.trigger();
    drop(env);
}

criterion_group!(benches, access_tokens, argon2, login);
criterion_main!(benches);
