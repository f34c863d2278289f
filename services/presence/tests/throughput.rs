//! A measurement, not a check of speed: prints how fast the presence service handles
//! registrations, a 10k-connection heartbeat and full-size RouteUsers/GetPresence
//! batches on this machine. Run with
//! `cargo test -p beehive-presence --release --test throughput -- --ignored --nocapture`.

// One fixture for both crates: it starts social and presence together.
#[path = "../../social/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use beehive_proto::v1::{
    GetPresenceRequest, HeartbeatRequest, RegisterConnectionRequest, RouteUsersRequest,
};
use futures::StreamExt as _;
use support::{Stack, connection, user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run explicitly"]
async fn presence_throughput() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let users: Vec<String> = (0..5000).map(|_| user()).collect();
    let conns: Vec<_> = users
        .iter()
        .flat_map(|u| [connection(u, "phone"), connection(u, "laptop")])
        .collect();

    let started = Instant::now();
    let came_online = futures::stream::iter(conns.clone())
        .map(|c| {
            let mut presence = stack.presence.clone();
            async move {
                presence
                    .register_connection(RegisterConnectionRequest {
                        instance_id: "gw-bench".into(),
                        connection: Some(c),
                    })
                    .await
                    .expect("register")
                    .into_inner()
                    .came_online
            }
        })
        .buffer_unordered(64)
        .filter(|came| futures::future::ready(*came))
        .count()
        .await;
    let elapsed = started.elapsed();
    assert_eq!(came_online, users.len(), "one online transition per user");
    println!(
        "register: {} connections in {elapsed:?} ({:.0}/s, 64 in flight)",
        conns.len(),
        conns.len() as f64 / elapsed.as_secs_f64()
    );

    let mut presence = stack.presence.clone();
    let started = Instant::now();
    presence
        .heartbeat(HeartbeatRequest {
            instance_id: "gw-bench".into(),
            connections: conns.clone(),
        })
        .await
        .expect("heartbeat");
    println!(
        "heartbeat: {} connections in one call: {:?}",
        conns.len(),
        started.elapsed()
    );

    let rounds = 20;
    let started = Instant::now();
    for _ in 0..rounds {
        let routes = presence
            .route_users(RouteUsersRequest {
                user_ids: users.clone(),
            })
            .await
            .expect("route")
            .into_inner()
            .routes;
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].user_ids.len(), users.len());
    }
    println!(
        "route_users: 5000 users per call, {:?} per call",
        started.elapsed() / rounds
    );

    let started = Instant::now();
    for chunk in users.chunks(500).take(rounds as usize) {
        let got = presence
            .get_presence(GetPresenceRequest {
                user_ids: chunk.to_vec(),
            })
            .await
            .expect("presence")
            .into_inner()
            .presence;
        assert!(got.iter().all(|p| p.online && p.devices == 2));
    }
    println!(
        "get_presence: 500 users per call, {:?} per call",
        started.elapsed() / rounds
    );
}
