//! Notifications that ride the same path as messages: friend requests and
//! acceptances, conversation updates and presence, across two gateways.

mod common;

use beehive_proto::v1 as pb;
use common::{Cluster, Ws};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn friend_request_and_acceptance_reach_both_sides() {
    let cluster = Cluster::start(2).await;
    let (alice, bob) = (cluster.user().await, cluster.user().await);
    let mut a = Ws::connect(cluster.gw(0), &alice, "a").await;
    let mut b1 = Ws::connect(cluster.gw(1), &bob, "b1").await;
    let mut b2 = Ws::connect(cluster.gw(0), &bob, "b2").await;

    let request = cluster
        .social
        .clone()
        .send_friend_request(pb::SendFriendRequestRequest {
            from_user_id: alice.id.clone(),
            to_user_id: bob.id.clone(),
            message: "let's chat".to_owned(),
        })
        .await
        .expect("request")
        .into_inner()
        .request
        .expect("request");
    for ws in [&mut b1, &mut b2] {
        let frame = ws.expect("friend_request").await;
        let shown = &frame["data"]["request"];
        assert_eq!(shown["id"], request.id.as_str());
        assert_eq!(shown["from_user_id"], alice.id.as_str());
        assert_eq!(shown["to_user_id"], bob.id.as_str());
        assert_eq!(shown["message"], "let's chat");
        assert_eq!(shown["status"], "pending");
    }

    cluster
        .social
        .clone()
        .accept_friend_request(pb::AcceptFriendRequestRequest {
            user_id: bob.id.clone(),
            request_id: request.id.clone(),
        })
        .await
        .expect("accept");
    let frame = a.expect("friend_accepted").await;
    assert_eq!(frame["data"]["request"]["id"], request.id.as_str());
    assert_eq!(frame["data"]["request"]["status"], "accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_changes_are_announced_with_conversation_updated() {
    let cluster = Cluster::start(2).await;
    let (owner, member, joiner) = (
        cluster.user().await,
        cluster.user().await,
        cluster.user().await,
    );
    let mut o = Ws::connect(cluster.gw(0), &owner, "o").await;
    let mut m = Ws::connect(cluster.gw(1), &member, "m").await;
    let mut j = Ws::connect(cluster.gw(1), &joiner, "j").await;

    let group = cluster.group(&owner, std::slice::from_ref(&member)).await;
    for ws in [&mut o, &mut m] {
        let frame = ws.expect("conversation_updated").await;
        let conversation = &frame["data"]["conversation"];
        assert_eq!(conversation["id"], group.as_str());
        assert_eq!(conversation["kind"], "group");
    }

    cluster
        .message
        .clone()
        .add_members(pb::AddMembersRequest {
            user_id: member.id.clone(),
            conversation_id: group.clone(),
            user_ids: vec![joiner.id.clone()],
        })
        .await
        .expect("add member");
    for ws in [&mut o, &mut m, &mut j] {
        loop {
            let frame = ws.expect("conversation_updated").await;
            let members = frame["data"]["conversation"]["member_ids"]
                .as_array()
                .expect("member ids")
                .clone();
            if members.iter().any(|id| id == joiner.id.as_str()) {
                assert_eq!(members.len(), 3);
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn friends_see_each_other_come_online_and_go_offline() {
    let cluster = Cluster::start(2).await;
    let (alice, bob) = (cluster.user().await, cluster.user().await);
    cluster.befriend(&alice, &bob).await;
    let mut a = Ws::connect(cluster.gw(0), &alice, "a").await;

    let b = Ws::connect(cluster.gw(1), &bob, "b").await;
    loop {
        let frame = a.expect("presence").await;
        if frame["data"]["user_id"] == bob.id.as_str() {
            assert_eq!(frame["data"]["online"], true);
            break;
        }
    }
    drop(b);
    loop {
        let frame = a.expect("presence").await;
        if frame["data"]["user_id"] == bob.id.as_str() && frame["data"]["online"] == false {
            break;
        }
    }
}
