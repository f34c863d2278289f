//! The presence service against real Redis, RabbitMQ and (for friend lists) the
//! social service on PostgreSQL: device counts, transitions, expiry of a dead
//! gateway's registrations, rebuilding after data loss, routing and announcements.

// One fixture for both crates: it starts social and presence together.
#[path = "../../social/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use beehive_proto::v1::{
    AcceptFriendRequestRequest, Connection, GetPresenceRequest, HeartbeatRequest,
    RouteUsersRequest, SendFriendRequestRequest, UnregisterConnectionRequest, UserPresence, event,
};
use support::{Stack, connection, user};
use tonic::Code;

const LONG_TTL: Duration = Duration::from_secs(30);

async fn presence_of(stack: &Stack, users: &[&str]) -> Vec<UserPresence> {
    stack
        .presence
        .clone()
        .get_presence(GetPresenceRequest {
            user_ids: users.iter().map(|u| (*u).to_owned()).collect(),
        })
        .await
        .expect("get presence")
        .into_inner()
        .presence
}

async fn disconnect(stack: &Stack, instance: &str, user: &str, device: &str) -> bool {
    stack
        .presence
        .clone()
        .unregister_connection(UnregisterConnectionRequest {
            instance_id: instance.to_owned(),
            connection: Some(connection(user, device)),
        })
        .await
        .expect("unregister")
        .into_inner()
        .went_offline
}

async fn heartbeat(stack: &Stack, instance: &str, connections: Vec<Connection>) -> u32 {
    stack
        .presence
        .clone()
        .heartbeat(HeartbeatRequest {
            instance_id: instance.to_owned(),
            connections,
        })
        .await
        .expect("heartbeat")
        .into_inner()
        .ttl_seconds
}

async fn routes(stack: &Stack, users: &[&str]) -> Vec<(String, Vec<String>)> {
    stack
        .presence
        .clone()
        .route_users(RouteUsersRequest {
            user_ids: users.iter().map(|u| (*u).to_owned()).collect(),
        })
        .await
        .expect("route users")
        .into_inner()
        .routes
        .into_iter()
        .map(|r| {
            let mut users = r.user_ids;
            users.sort();
            (r.instance_id, users)
        })
        .collect()
}

async fn befriend(stack: &Stack, a: &str, b: &str) {
    let mut social = stack.social.clone();
    let request = social
        .send_friend_request(SendFriendRequestRequest {
            from_user_id: a.to_owned(),
            to_user_id: b.to_owned(),
            message: String::new(),
        })
        .await
        .expect("send")
        .into_inner()
        .request
        .expect("request");
    social
        .accept_friend_request(AcceptFriendRequestRequest {
            user_id: b.to_owned(),
            request_id: request.id,
        })
        .await
        .expect("accept");
}

/// Polls until `user` is offline, failing after 15 s.
async fn wait_offline(stack: &Stack, user: &str) -> UserPresence {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let p = presence_of(stack, &[user]).await.remove(0);
        if !p.online {
            return p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user} stayed online"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes every presence key of this test's installation, as a Redis that lost its
/// data would (never FLUSHALL: other tests share the server).
async fn lose_presence_data(stack: &Stack) {
    let mut redis = stack.ctx.infra.redis().await.expect("redis");
    let pattern = stack.ctx.settings.prefixed("presence:*");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut redis)
        .await
        .expect("keys");
    assert!(!keys.is_empty(), "registrations left keys under {pattern}");
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut redis)
        .await
        .expect("del");
}

#[tokio::test]
async fn devices_are_counted_and_transitions_reported_once() {
    let stack = Stack::start(LONG_TTL).await;
    let (a, b) = (user(), user());

    let before = presence_of(&stack, &[&a]).await.remove(0);
    assert!(!before.online);
    assert_eq!(before.devices, 0);
    assert!(before.last_seen.is_none(), "never seen");

    assert!(stack.connect_user("gw1", &a, "phone").await, "first device");
    assert!(
        !stack.connect_user("gw2", &a, "laptop").await,
        "second device"
    );
    assert!(
        !stack.connect_user("gw1", &a, "phone").await,
        "re-registration"
    );
    assert!(stack.connect_user("gw1", &b, "").await);

    let now = presence_of(&stack, &[&a, &b]).await;
    assert_eq!(now[0].user_id, a);
    assert!(now[0].online);
    assert_eq!(now[0].devices, 2);
    assert_eq!(
        now[1].devices, 1,
        "a socket without a device id is its own device"
    );

    assert!(!disconnect(&stack, "gw1", &a, "phone").await);
    assert_eq!(presence_of(&stack, &[&a]).await[0].devices, 1);
    // A gateway cannot remove a connection another instance holds.
    assert!(!disconnect(&stack, "gw1", &a, "laptop").await);
    assert_eq!(presence_of(&stack, &[&a]).await[0].devices, 1);
    assert!(disconnect(&stack, "gw2", &a, "laptop").await, "last device");
    assert!(!disconnect(&stack, "gw2", &a, "laptop").await, "only once");

    let after = presence_of(&stack, &[&a]).await.remove(0);
    assert!(!after.online);
    assert_eq!(after.devices, 0);
    let seen = after.last_seen.expect("last seen recorded");
    let age = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
        - seen.seconds;
    assert!((-5..60).contains(&age), "last seen {age}s ago");
}

#[tokio::test]
async fn a_dead_gateways_users_go_offline_after_the_ttl() {
    let stack = Stack::start(Duration::from_secs(2)).await;
    let (a, b) = (user(), user());
    assert!(stack.connect_user("gw-dead", &a, "phone").await);
    assert!(stack.connect_user("gw-live", &b, "phone").await);
    assert!(presence_of(&stack, &[&a]).await[0].online);

    // gw-live keeps heartbeating, gw-dead never does.
    let keep_alive = {
        let stack_presence = stack.presence.clone();
        let b = b.clone();
        tokio::spawn(async move {
            loop {
                let _ = stack_presence
                    .clone()
                    .heartbeat(HeartbeatRequest {
                        instance_id: "gw-live".into(),
                        connections: vec![connection(&b, "phone")],
                    })
                    .await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    let gone = wait_offline(&stack, &a).await;
    assert!(
        gone.last_seen.is_some(),
        "last seen is known from the moment it expired"
    );
    assert_eq!(
        routes(&stack, &[&a, &b]).await,
        vec![("gw-live".to_owned(), vec![b.clone()])]
    );
    assert!(
        presence_of(&stack, &[&b]).await[0].online,
        "heartbeats keep b online"
    );
    keep_alive.abort();

    // The connection was swept: a late unregister is not a second transition, and the
    // user comes online again normally.
    assert!(!disconnect(&stack, "gw-dead", &a, "phone").await);
    assert!(stack.connect_user("gw-new", &a, "phone").await);
}

#[tokio::test]
async fn heartbeats_rebuild_presence_after_redis_lost_it() {
    let stack = Stack::start(LONG_TTL).await;
    let (a, b, c) = (user(), user(), user());
    stack.connect_user("gw1", &a, "phone").await;
    stack.connect_user("gw1", &b, "phone").await;

    lose_presence_data(&stack).await;
    let lost = presence_of(&stack, &[&a, &b]).await;
    assert!(lost.iter().all(|p| !p.online));
    assert!(routes(&stack, &[&a, &b]).await.is_empty());

    let ttl = heartbeat(
        &stack,
        "gw1",
        vec![connection(&a, "phone"), connection(&b, "phone")],
    )
    .await;
    assert_eq!(ttl, 30);
    let back = presence_of(&stack, &[&a, &b]).await;
    assert!(back.iter().all(|p| p.online && p.devices == 1));
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(
        routes(&stack, &[&a, &b]).await,
        vec![("gw1".to_owned(), both)]
    );

    // c's socket closes while gw1's heartbeat list, taken a moment earlier, still
    // names it: the late heartbeat must not resurrect it.
    stack.connect_user("gw1", &c, "phone").await;
    let stale = vec![connection(&a, "phone"), connection(&c, "phone")];
    assert!(disconnect(&stack, "gw1", &c, "phone").await);
    heartbeat(&stack, "gw1", stale).await;
    assert!(!presence_of(&stack, &[&c]).await[0].online);
}

#[tokio::test]
async fn route_users_groups_by_instance_in_one_call() {
    let stack = Stack::start(LONG_TTL).await;
    let (a, b, offline) = (user(), user(), user());
    stack.connect_user("gw1", &a, "phone").await;
    stack.connect_user("gw1", &b, "phone").await;
    stack.connect_user("gw2", &b, "laptop").await;
    let mut got = routes(&stack, &[&a, &b, &offline, &a]).await;
    got.sort();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(
        got,
        vec![
            ("gw1".to_owned(), both),
            ("gw2".to_owned(), vec![b.clone()])
        ]
    );

    // Big batches are answered in one call (one pipelined Redis round trip).
    let many: Vec<String> = (0..5000).map(|_| user()).collect();
    let mut refs: Vec<&str> = many.iter().map(String::as_str).collect();
    refs[4999] = &a;
    assert_eq!(
        routes(&stack, &refs).await,
        vec![("gw1".to_owned(), vec![a.clone()])]
    );
    let too_many: Vec<String> = (0..5001).map(|_| user()).collect();
    let error = stack
        .presence
        .clone()
        .route_users(RouteUsersRequest { user_ids: too_many })
        .await
        .expect_err("over the cap");
    assert_eq!(error.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn bad_input_is_invalid_argument() {
    let stack = Stack::start(LONG_TTL).await;
    let a = user();
    let mut presence = stack.presence.clone();
    let register = |instance: &str, conn: Option<Connection>| {
        let mut presence = presence.clone();
        let instance = instance.to_owned();
        async move {
            presence
                .register_connection(beehive_proto::v1::RegisterConnectionRequest {
                    instance_id: instance,
                    connection: conn,
                })
                .await
        }
    };
    let mut long_device = connection(&a, "x");
    long_device.device_id = "d".repeat(129);
    let cases = [
        register("", Some(connection(&a, "phone"))).await,
        register("gw|1", Some(connection(&a, "phone"))).await,
        register("gw1", None).await,
        register("gw1", Some(connection("not-a-user-id-but-long", "phone"))).await,
        register("gw1", Some(long_device)).await,
    ];
    for (i, result) in cases.into_iter().enumerate() {
        let error = result.expect_err("refused");
        assert_eq!(error.code(), Code::InvalidArgument, "case {i}");
    }
    let error = presence
        .get_presence(GetPresenceRequest {
            user_ids: vec![a.clone(); 501],
        })
        .await
        .expect_err("over the cap");
    assert_eq!(error.code(), Code::InvalidArgument);
    let error = presence
        .get_presence(GetPresenceRequest {
            user_ids: vec!["bogus".into()],
        })
        .await
        .expect_err("bad id");
    assert_eq!(error.code(), Code::InvalidArgument);
    // Nothing was registered by the refused calls.
    assert!(!presence_of(&stack, &[&a]).await[0].online);
}

#[tokio::test]
async fn friends_hear_about_online_and_offline_transitions() {
    let stack = Stack::start(Duration::from_secs(2)).await;
    let (a, friend, stranger) = (user(), user(), user());
    befriend(&stack, &a, &friend).await;
    let mut friend_gateway = stack.gateway_queue("gw-friend").await;
    let mut stranger_gateway = stack.gateway_queue("gw-stranger").await;
    stack.connect_user("gw-friend", &friend, "phone").await;
    stack.connect_user("gw-stranger", &stranger, "phone").await;
    let keep_alive = {
        let presence = stack.presence.clone();
        let (friend, stranger) = (friend.clone(), stranger.clone());
        tokio::spawn(async move {
            loop {
                for (instance, user) in [("gw-friend", &friend), ("gw-stranger", &stranger)] {
                    let _ = presence
                        .clone()
                        .heartbeat(HeartbeatRequest {
                            instance_id: instance.into(),
                            connections: vec![connection(user, "phone")],
                        })
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    let is_about = |online: bool| {
        let a = a.clone();
        move |p: &event::Payload| matches!(p, event::Payload::Presence(e) if e.user_id == a && e.online == online)
    };

    // Explicit online and offline.
    assert!(stack.connect_user("gw-a", &a, "phone").await);
    let online = friend_gateway.expect("online", is_about(true)).await;
    assert_eq!(online.recipient_ids, vec![friend.clone()]);
    assert!(disconnect(&stack, "gw-a", &a, "phone").await);
    friend_gateway.expect("offline", is_about(false)).await;

    // Offline because gw-a died: announced by the sweeper after the TTL.
    assert!(stack.connect_user("gw-a", &a, "phone").await);
    friend_gateway.expect("online again", is_about(true)).await;
    friend_gateway
        .expect("offline by expiry", is_about(false))
        .await;
    keep_alive.abort();

    // A stranger's gateway never hears about a.
    let heard = stranger_gateway.drain(Duration::from_millis(500)).await;
    assert!(
        heard
            .iter()
            .all(|e| !matches!(&e.payload, Some(event::Payload::Presence(p)) if p.user_id == a)),
        "{heard:?}"
    );
}
