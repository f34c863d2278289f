//! The user service against real PostgreSQL: started in-process with `bind` on a
//! loopback listener and driven over gRPC as auth and the gateway drive it.

use beehive_common::{Error, ErrorCode, Shutdown};
use beehive_proto::v1 as pb;
use beehive_proto::v1::user_service_client::UserServiceClient;
use beehive_testkit::logs::{self, logged_code};
use beehive_testkit::{TestEnv, serve};
use tonic::transport::Channel;

struct Harness {
    env: TestEnv,
    client: UserServiceClient<Channel>,
    shutdown: Shutdown,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn start() -> Harness {
    logs::captured();
    let env = TestEnv::new(&[&beehive_user::MIGRATOR]).await;
    let shutdown = Shutdown::new();
    let ctx = serve::context(&env.settings, &shutdown);
    let bound = beehive_user::bind(&ctx, serve::loopback().await)
        .await
        .expect("bind");
    let addr = serve::run(bound).await;
    let client = UserServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    Harness {
        env,
        client,
        shutdown,
    }
}

fn registration(username: &str) -> pb::RegisterUserRequest {
    pb::RegisterUserRequest {
        username: username.to_owned(),
        password: "correct horse battery".to_owned(),
        ..Default::default()
    }
}

fn error_of(status: tonic::Status) -> Error {
    Error::from_status(&status)
}

fn field_of(status: tonic::Status) -> (ErrorCode, Option<String>) {
    match error_of(status) {
        Error::InvalidArgument { field, .. } => (ErrorCode::InvalidArgument, field),
        other => (other.code(), None),
    }
}

async fn register(client: &mut UserServiceClient<Channel>, username: &str) -> pb::User {
    client
        .register(registration(username))
        .await
        .expect("register")
        .into_inner()
        .user
        .expect("user")
}

#[tokio::test]
async fn registration_validates_every_field() {
    let mut h = start().await;
    let cases = [
        (registration("ab"), "username"),
        (registration("has space"), "username"),
        (registration(&"x".repeat(33)), "username"),
        (
            pb::RegisterUserRequest {
                password: "short".into(),
                ..registration("valid_name")
            },
            "password",
        ),
        (
            pb::RegisterUserRequest {
                password: "p".repeat(129),
                ..registration("valid_name")
            },
            "password",
        ),
        (
            pb::RegisterUserRequest {
                nickname: Some("n".repeat(65)),
                ..registration("valid_name")
            },
            "nickname",
        ),
        (
            pb::RegisterUserRequest {
                email: Some("not-an-email".into()),
                code: Some("123456".into()),
                ..registration("valid_name")
            },
            "email",
        ),
    ];
    for (request, field) in cases {
        let status = h.client.register(request).await.expect_err(field);
        assert_eq!(
            field_of(status),
            (ErrorCode::InvalidArgument, Some(field.to_owned()))
        );
    }

    let user = register(&mut h.client, "Valid.Name-1").await;
    let id: uuid::Uuid = user.id.parse().expect("uuid id");
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(user.username, "Valid.Name-1");
    assert_eq!(
        user.nickname, "Valid.Name-1",
        "nickname defaults to username"
    );
    assert_eq!(user.email, None);
    assert!(user.created_at.is_some());
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users.users WHERE id = $1")
        .bind(id)
        .fetch_one(&h.env.pool)
        .await
        .expect("row");
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "argon2id with OWASP parameters: {hash}"
    );
}

#[tokio::test]
async fn usernames_are_unique_ignoring_case() {
    let mut h = start().await;
    register(&mut h.client, "Alice").await;
    for taken in ["alice", "ALICE", "Alice"] {
        let status = h
            .client
            .register(registration(taken))
            .await
            .expect_err(taken);
        assert_eq!(error_of(status).code(), ErrorCode::AlreadyExists, "{taken}");
    }
    register(&mut h.client, "alice2").await;
}

#[tokio::test]
async fn email_codes_verify_registration_once() {
    let mut h = start().await;
    let email = "Carol@Example.com";
    let canonical = "carol@example.com";
    let with_email = |username: &str, code: Option<&str>| pb::RegisterUserRequest {
        email: Some(email.to_owned()),
        code: code.map(str::to_owned),
        ..registration(username)
    };

    // Without a code, or with a code never sent: invalid_argument on `code`.
    for code in [None, Some("123456")] {
        let status = h
            .client
            .register(with_email("carol", code))
            .await
            .expect_err("no valid code");
        assert_eq!(
            field_of(status),
            (ErrorCode::InvalidArgument, Some("code".to_owned()))
        );
    }

    let sent = h
        .client
        .send_verification_code(pb::SendVerificationCodeRequest {
            email: email.to_owned(),
        })
        .await
        .expect("send")
        .into_inner();
    assert_eq!(sent.expires_in, 300);
    let code = logged_code(canonical);
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let status = h
        .client
        .register(with_email("carol", Some(wrong)))
        .await
        .expect_err("wrong code");
    assert_eq!(
        field_of(status),
        (ErrorCode::InvalidArgument, Some("code".to_owned()))
    );

    // A failed insert (name taken) does not use the code up.
    register(&mut h.client, "taken_name").await;
    let status = h
        .client
        .register(with_email("TAKEN_NAME", Some(&code)))
        .await
        .expect_err("name taken");
    assert_eq!(error_of(status).code(), ErrorCode::AlreadyExists);

    let user = h
        .client
        .register(with_email("carol", Some(&code)))
        .await
        .expect("right code")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(user.email.as_deref(), Some(canonical));

    // Single use: the code is gone.
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM users.email_codes WHERE email = $1")
        .bind(canonical)
        .fetch_one(&h.env.pool)
        .await
        .expect("count");
    assert_eq!(left, 0);
    // And the address is now taken.
    let status = h
        .client
        .register(with_email("carol_again", Some(&code)))
        .await
        .expect_err("email taken");
    assert_eq!(error_of(status).code(), ErrorCode::AlreadyExists);
}

#[tokio::test]
async fn a_used_code_does_not_work_twice() {
    let mut h = start().await;
    let email = "dave@example.com";
    h.client
        .send_verification_code(pb::SendVerificationCodeRequest {
            email: email.to_owned(),
        })
        .await
        .expect("send");
    let code = logged_code(email);
    h.client
        .register(pb::RegisterUserRequest {
            email: Some(email.to_owned()),
            code: Some(code.clone()),
            ..registration("dave")
        })
        .await
        .expect("first use");
    // Free the address again (as if the account were deleted) to isolate the code.
    sqlx::query("UPDATE users.users SET email = NULL WHERE email = $1")
        .bind(email)
        .execute(&h.env.pool)
        .await
        .expect("free email");
    let status = h
        .client
        .register(pb::RegisterUserRequest {
            email: Some(email.to_owned()),
            code: Some(code),
            ..registration("dave2")
        })
        .await
        .expect_err("second use");
    assert_eq!(
        field_of(status),
        (ErrorCode::InvalidArgument, Some("code".to_owned()))
    );
}

#[tokio::test]
async fn codes_expire_and_resends_are_limited() {
    let mut h = start().await;
    let email = "erin@example.com";
    let send = |client: &mut UserServiceClient<Channel>| {
        let mut client = client.clone();
        async move {
            client
                .send_verification_code(pb::SendVerificationCodeRequest {
                    email: email.to_owned(),
                })
                .await
        }
    };
    send(&mut h.client).await.expect("first send");
    let code = logged_code(email);

    match error_of(send(&mut h.client).await.expect_err("resend too soon")) {
        Error::RateLimited {
            retry_after_secs, ..
        } => assert!((1..=60).contains(&retry_after_secs), "{retry_after_secs}"),
        other => panic!("expected rate_limited, got {:?}", other.code()),
    }

    // Expire the code: the right digits no longer work.
    sqlx::query(
        "UPDATE users.email_codes SET expires_at = now() - interval '1 second' WHERE email = $1",
    )
    .bind(email)
    .execute(&h.env.pool)
    .await
    .expect("expire");
    let status = h
        .client
        .register(pb::RegisterUserRequest {
            email: Some(email.to_owned()),
            code: Some(code),
            ..registration("erin")
        })
        .await
        .expect_err("expired");
    assert_eq!(
        field_of(status),
        (ErrorCode::InvalidArgument, Some("code".to_owned()))
    );

    // A minute after the last send, a new code may go out and works.
    sqlx::query(
        "UPDATE users.email_codes SET sent_at = now() - interval '61 seconds' WHERE email = $1",
    )
    .bind(email)
    .execute(&h.env.pool)
    .await
    .expect("age");
    send(&mut h.client).await.expect("send after a minute");
    let fresh = logged_code(email);
    h.client
        .register(pb::RegisterUserRequest {
            email: Some(email.to_owned()),
            code: Some(fresh),
            ..registration("erin")
        })
        .await
        .expect("fresh code works");
}

#[tokio::test]
async fn wrong_guesses_burn_the_code() {
    let mut h = start().await;
    let email = "frank@example.com";
    h.client
        .send_verification_code(pb::SendVerificationCodeRequest {
            email: email.to_owned(),
        })
        .await
        .expect("send");
    let code = logged_code(email);
    let wrong = if code == "999999" { "999998" } else { "999999" };
    for _ in 0..5 {
        h.client
            .register(pb::RegisterUserRequest {
                email: Some(email.to_owned()),
                code: Some(wrong.to_owned()),
                ..registration("frank")
            })
            .await
            .expect_err("wrong");
    }
    let status = h
        .client
        .register(pb::RegisterUserRequest {
            email: Some(email.to_owned()),
            code: Some(code),
            ..registration("frank")
        })
        .await
        .expect_err("code burnt after 5 wrong guesses");
    assert_eq!(error_of(status).code(), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn credentials_by_username_email_or_id_with_one_error() {
    let mut h = start().await;
    let email = "grace@example.com";
    h.client
        .send_verification_code(pb::SendVerificationCodeRequest {
            email: email.to_owned(),
        })
        .await
        .expect("send");
    let code = logged_code(email);
    let user = h
        .client
        .register(pb::RegisterUserRequest {
            email: Some(email.to_owned()),
            code: Some(code),
            ..registration("Grace")
        })
        .await
        .expect("register")
        .into_inner()
        .user
        .expect("user");

    for login in [
        "Grace".to_owned(),
        "grace".to_owned(),
        "GRACE@example.com".to_owned(),
        user.id.clone(),
    ] {
        let found = h
            .client
            .verify_credentials(pb::VerifyCredentialsRequest {
                login: login.clone(),
                password: "correct horse battery".into(),
            })
            .await
            .unwrap_or_else(|e| panic!("{login}: {e}"))
            .into_inner()
            .user
            .expect("user");
        assert_eq!(found.id, user.id, "{login}");
        assert_eq!(found.email.as_deref(), Some(email), "own email");
    }

    let mut failures = Vec::new();
    for (login, password) in [
        ("grace", "wrong password"),
        ("nobody", "correct horse battery"),
        ("nobody@example.com", "correct horse battery"),
        (
            "0190aaaa-0000-7000-8000-000000000000",
            "correct horse battery",
        ),
        ("", ""),
    ] {
        let status = h
            .client
            .verify_credentials(pb::VerifyCredentialsRequest {
                login: login.into(),
                password: password.into(),
            })
            .await
            .expect_err(login);
        failures.push((status.code(), status.message().to_owned()));
    }
    assert_eq!(failures[0].0, tonic::Code::Unauthenticated);
    assert!(
        failures.iter().all(|f| *f == failures[0]),
        "one error for every failure: {failures:?}"
    );
}

#[tokio::test]
async fn profiles_read_search_and_update() {
    let mut h = start().await;
    let alice = register(&mut h.client, "alice").await;
    let bob = register(&mut h.client, "bob").await;
    let alfred = register(&mut h.client, "Alfred").await;
    let _albert = register(&mut h.client, "albert").await;
    let zed = register(&mut h.client, "zed").await;
    sqlx::query("UPDATE users.users SET email = 'alice@example.com' WHERE id = $1::uuid")
        .bind(&alice.id)
        .execute(&h.env.pool)
        .await
        .expect("email");

    let get = |viewer: &str| pb::GetUserRequest {
        user_id: alice.id.clone(),
        viewer_id: viewer.to_owned(),
    };
    let own = h
        .client
        .get_user(get(&alice.id))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        own.user.expect("user").email.as_deref(),
        Some("alice@example.com")
    );
    for viewer in [bob.id.as_str(), ""] {
        let other = h
            .client
            .get_user(get(viewer))
            .await
            .expect("get")
            .into_inner();
        assert_eq!(
            other.user.expect("user").email,
            None,
            "never another's email"
        );
    }
    let missing = h
        .client
        .get_user(pb::GetUserRequest {
            user_id: uuid::Uuid::now_v7().to_string(),
            viewer_id: String::new(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(error_of(missing).code(), ErrorCode::NotFound);
    let bad = h
        .client
        .get_user(pb::GetUserRequest {
            user_id: "not-a-uuid".into(),
            viewer_id: String::new(),
        })
        .await
        .expect_err("bad id");
    assert_eq!(error_of(bad).code(), ErrorCode::InvalidArgument);

    let unknown = uuid::Uuid::now_v7().to_string();
    let batch = h
        .client
        .batch_get_users(pb::BatchGetUsersRequest {
            user_ids: vec![
                zed.id.clone(),
                unknown.clone(),
                alice.id.clone(),
                zed.id.clone(),
            ],
            viewer_id: alice.id.clone(),
        })
        .await
        .expect("batch")
        .into_inner();
    let ids: Vec<&str> = batch.users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, vec![zed.id.as_str(), alice.id.as_str()]);
    assert_eq!(batch.users[1].email.as_deref(), Some("alice@example.com"));
    assert_eq!(batch.users[0].email, None);

    // Nickname matches count too, ignoring case.
    h.client
        .update_profile(pb::UpdateProfileRequest {
            user_id: zed.id.clone(),
            nickname: Some("ALPHA Zed".into()),
            ..Default::default()
        })
        .await
        .expect("nickname");
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = h
            .client
            .search_users(pb::SearchUsersRequest {
                query: "AL".into(),
                page: Some(pb::PageRequest {
                    limit: 2,
                    cursor: cursor.clone(),
                }),
                viewer_id: String::new(),
            })
            .await
            .expect("search")
            .into_inner();
        assert!(page.users.len() <= 2);
        seen.extend(page.users.into_iter().map(|u| u.username));
        cursor = page.page.expect("page").next_cursor;
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(seen, vec!["albert", "Alfred", "alice", "zed"]);
    let literal = h
        .client
        .search_users(pb::SearchUsersRequest {
            query: "%".into(),
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    assert!(literal.users.is_empty(), "wildcards are literal");
    let _ = alfred;

    let updated = h
        .client
        .update_profile(pb::UpdateProfileRequest {
            user_id: bob.id.clone(),
            nickname: None,
            avatar: Some("https://cdn.example.com/bob.png".into()),
            description: Some("hello\nworld".into()),
        })
        .await
        .expect("update")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(updated.nickname, "bob", "unset fields stay");
    assert_eq!(updated.avatar, "https://cdn.example.com/bob.png");
    assert_eq!(updated.description, "hello\nworld");
    for (request, field) in [
        (
            pb::UpdateProfileRequest {
                user_id: bob.id.clone(),
                avatar: Some(format!("https://x/{}", "a".repeat(600))),
                ..Default::default()
            },
            "avatar",
        ),
        (
            pb::UpdateProfileRequest {
                user_id: bob.id.clone(),
                avatar: Some("javascript:alert(1)".into()),
                ..Default::default()
            },
            "avatar",
        ),
        (
            pb::UpdateProfileRequest {
                user_id: bob.id.clone(),
                description: Some("d".repeat(513)),
                ..Default::default()
            },
            "description",
        ),
        (
            pb::UpdateProfileRequest {
                user_id: bob.id.clone(),
                nickname: Some("n".repeat(65)),
                ..Default::default()
            },
            "nickname",
        ),
    ] {
        let status = h.client.update_profile(request).await.expect_err(field);
        assert_eq!(
            field_of(status),
            (ErrorCode::InvalidArgument, Some(field.to_owned()))
        );
    }
}

#[tokio::test]
async fn password_change_checks_the_old_password() {
    let mut h = start().await;
    let user = register(&mut h.client, "heidi").await;
    let change = |old: &str, new: &str| pb::ChangePasswordRequest {
        user_id: user.id.clone(),
        old_password: old.to_owned(),
        new_password: new.to_owned(),
    };
    let status = h
        .client
        .change_password(change("not the password", "new password 1"))
        .await
        .expect_err("wrong old");
    assert_eq!(error_of(status).code(), ErrorCode::Unauthenticated);
    let status = h
        .client
        .change_password(change("correct horse battery", "short"))
        .await
        .expect_err("short new");
    assert_eq!(
        field_of(status),
        (ErrorCode::InvalidArgument, Some("new_password".to_owned()))
    );
    h.client
        .change_password(change("correct horse battery", "new password 1"))
        .await
        .expect("change");
    let login = |password: &str| pb::VerifyCredentialsRequest {
        login: "heidi".into(),
        password: password.into(),
    };
    h.client
        .verify_credentials(login("new password 1"))
        .await
        .expect("new password works");
    let status = h
        .client
        .verify_credentials(login("correct horse battery"))
        .await
        .expect_err("old password no longer works");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn users_exist_answers_the_subset() {
    let mut h = start().await;
    let a = register(&mut h.client, "ivan").await;
    let b = register(&mut h.client, "judy").await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let answer = h
        .client
        .users_exist(pb::UsersExistRequest {
            user_ids: vec![
                a.id.to_uppercase(),
                unknown,
                b.id.clone(),
                "garbage".into(),
                a.id.clone(),
            ],
        })
        .await
        .expect("exist")
        .into_inner();
    assert_eq!(answer.existing_ids, vec![a.id.clone(), b.id.clone()]);
    let too_many = h
        .client
        .users_exist(pb::UsersExistRequest {
            user_ids: vec![a.id.clone(); 2_001],
        })
        .await
        .expect_err("over the limit");
    assert_eq!(error_of(too_many).code(), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn the_dev_sink_logs_one_line_with_email_and_code() {
    let mut h = start().await;
    let email = "oscar@example.com";
    h.client
        .send_verification_code(pb::SendVerificationCodeRequest {
            email: email.to_owned(),
        })
        .await
        .expect("send");
    let code = logged_code(email);
    let text = logs::captured().text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(email)).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(&code));
}

#[tokio::test]
async fn concurrent_registrations_and_sends_race_safely() {
    let h = start().await;
    // Same name in different case, at once: the unique index decides.
    let attempts = ["Mallory", "mallory", "MALLORY", "mAllory"].map(|name| {
        let mut client = h.client.clone();
        async move { client.register(registration(name)).await }
    });
    let results = futures::future::join_all(attempts).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "exactly one registration wins");
    for result in results {
        if let Err(status) = result {
            assert_eq!(error_of(status).code(), ErrorCode::AlreadyExists);
        }
    }

    // Several sends to one address at once: one code goes out, the rest wait.
    let sends = (0..4).map(|_| {
        let mut client = h.client.clone();
        async move {
            client
                .send_verification_code(pb::SendVerificationCodeRequest {
                    email: "peggy@example.com".into(),
                })
                .await
        }
    });
    let results = futures::future::join_all(sends).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for result in results {
        if let Err(status) = result {
            assert_eq!(error_of(status).code(), ErrorCode::RateLimited);
        }
    }
}
