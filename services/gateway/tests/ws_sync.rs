//! `sync`: offline users catch up exactly, in order, in pages of at most 1000, and a
//! gateway restart loses nothing.

mod common;

use std::collections::{BTreeMap, HashMap};

use beehive_proto::v1 as pb;
use common::{Cluster, Target, User, Ws};
use serde_json::{Value, json};

/// Sends `n` messages from `from` into `conversation` straight through the message
/// service (the gateway path is covered elsewhere; this is data for `sync`).
async fn send_direct(cluster: &Cluster, from: &User, target: Target<'_>, tag: &str, n: usize) {
    for k in 0..n {
        let target = match target {
            Target::Conversation(c) => pb::send_message_request::Target::ConversationId(c.into()),
            Target::User(u) => pb::send_message_request::Target::ToUserId(u.into()),
        };
        cluster
            .message
            .clone()
            .send_message(pb::SendMessageRequest {
                sender_id: from.id.clone(),
                client_msg_id: format!("{tag}-{k}"),
                target: Some(target),
                msg_type: pb::MessageType::Text as i32,
                content: format!("{tag} {k}"),
                file_id: None,
                device_id: "script".into(),
            })
            .await
            .expect("send");
    }
}

/// Seqs per conversation, in arrival order.
fn by_conversation(messages: &[Value]) -> HashMap<String, Vec<u64>> {
    let mut out: HashMap<String, Vec<u64>> = HashMap::new();
    for m in messages {
        out.entry(m["conversation_id"].as_str().expect("id").to_owned())
            .or_default()
            .push(m["seq"].as_u64().expect("seq"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offline_user_gets_everything_on_sync_in_order() {
    let cluster = Cluster::start(1).await;
    let (alice, bob, carol) = (
        cluster.user().await,
        cluster.user().await,
        cluster.user().await,
    );
    cluster.befriend(&alice, &bob).await;
    let group = cluster.group(&carol, &[alice.clone(), bob.clone()]).await;
    // The senders' own sockets see their messages live: once the last one arrived,
    // the relay has published everything, so none of it can reach Bob live later.
    let mut alice_ws = Ws::connect(cluster.gw(0), &alice, "watch").await;
    let mut carol_ws = Ws::connect(cluster.gw(0), &carol, "watch").await;
    send_direct(&cluster, &alice, Target::User(&bob.id), "dm", 30).await;
    send_direct(&cluster, &carol, Target::Conversation(&group), "grp", 12).await;
    alice_ws.expect_message("dm 29").await;
    carol_ws.expect_message("grp 11").await;

    let mut ws = Ws::connect(cluster.gw(0), &bob, "phone").await;
    let (messages, cursors) = ws.sync_all(json!({})).await;
    let seqs = by_conversation(&messages);
    assert_eq!(seqs.len(), 2, "{seqs:?}");
    assert_eq!(seqs[&group], (1..=12).collect::<Vec<_>>());
    let direct = seqs.keys().find(|k| **k != group).expect("direct").clone();
    assert_eq!(seqs[&direct], (1..=30).collect::<Vec<_>>());
    assert_eq!(cursors[&group], 12);
    assert_eq!(cursors[&direct], 30);
    let grp: Vec<&Value> = messages
        .iter()
        .filter(|m| m["conversation_id"] == group.as_str())
        .collect();
    assert_eq!(grp[0]["content"], "grp 0");
    assert_eq!(grp[11]["content"], "grp 11");

    // Synced with its cursors, nothing is missing any more.
    let (again, _) = ws.sync_all(cursors.clone()).await;
    assert!(again.is_empty(), "{again:?}");
    // A partial cursor returns exactly the gap.
    let (gap, _) = ws
        .sync_all(json!({ direct.clone(): 27, group.clone(): 12 }))
        .await;
    assert_eq!(
        gap.iter()
            .map(|m| m["seq"].as_u64().expect("seq"))
            .collect::<Vec<_>>(),
        vec![28, 29, 30]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_pages_at_most_1000_messages() {
    let cluster = Cluster::start(1).await;
    let (alice, bob) = (cluster.user().await, cluster.user().await);
    let group = cluster.group(&alice, std::slice::from_ref(&bob)).await;
    let mut alice_ws = Ws::connect(cluster.gw(0), &alice, "watch").await;
    send_direct(&cluster, &alice, Target::Conversation(&group), "bulk", 1003).await;
    alice_ws.expect_message("bulk 1002").await;
    let mut ws = Ws::connect(cluster.gw(0), &bob, "phone").await;

    let id = ws.request("sync", json!({"cursors": {}})).await;
    let mut first = Vec::new();
    let done = loop {
        let frame = ws.recv().await;
        if frame["type"] == "message" {
            first.push(frame["data"]["message"]["seq"].as_u64().expect("seq"));
        } else if frame["id"] == id.as_str() {
            break frame;
        }
    };
    assert_eq!(done["type"], "sync_done");
    assert_eq!(first.len(), 1000);
    assert_eq!(first, (1..=1000).collect::<Vec<_>>());
    assert_eq!(done["data"]["has_more"], true);
    assert_eq!(done["data"]["cursors"][&group], 1000);

    let (rest, cursors) = ws.sync_all(done["data"]["cursors"].clone()).await;
    assert_eq!(
        rest.iter()
            .map(|m| m["seq"].as_u64().expect("seq"))
            .collect::<Vec<_>>(),
        vec![1001, 1002, 1003]
    );
    assert_eq!(cursors[&group], 1003);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_gateway_loses_nothing() {
    let mut cluster = Cluster::start(2).await;
    let (alice, bob) = (cluster.user().await, cluster.user().await);
    cluster.befriend(&alice, &bob).await;
    let mut a = Ws::connect(cluster.gw(0), &alice, "a").await;
    let mut b = Ws::connect(cluster.gw(1), &bob, "b").await;
    let ack = a
        .send_message(Target::User(&bob.id), "before", "before")
        .await;
    let conversation = ack["data"]["message"]["conversation_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let last_seen = b.expect_message("before").await["seq"]
        .as_u64()
        .expect("seq");

    // Bob's gateway goes away; his socket is closed.
    let instance = cluster.stop_gateway(1).await;
    b.expect_close().await;
    for k in 0..5 {
        a.send_message(
            Target::Conversation(&conversation),
            &format!("down-{k}"),
            &format!("while down {k}"),
        )
        .await;
    }
    // It comes back under the same instance id; Bob reconnects and syncs his gap.
    let restarted = cluster.start_gateway(&instance).await;
    let mut b = Ws::connect(restarted.addr, &bob, "b").await;
    let (missed, cursors) = b.sync_all(json!({ conversation.clone(): last_seen })).await;
    // The relay may publish a message sent while Bob was away after he came back, so
    // its live copy can arrive next to the synced one: a client dedupes by seq.
    let unique: BTreeMap<u64, String> = missed
        .iter()
        .map(|m| {
            let seq = m["seq"].as_u64().expect("seq");
            (seq, m["content"].as_str().expect("content").to_owned())
        })
        .collect();
    assert_eq!(
        unique.keys().copied().collect::<Vec<_>>(),
        (last_seen + 1..=last_seen + 5).collect::<Vec<_>>()
    );
    assert_eq!(
        unique.into_values().collect::<Vec<_>>(),
        (0..5)
            .map(|k| format!("while down {k}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(cursors[&conversation], last_seen + 5);
    // Live delivery works again on the restarted instance; anything else arriving
    // first can only be such a duplicate.
    a.send_message(Target::Conversation(&conversation), "after", "after")
        .await;
    loop {
        let got = b.expect("message").await;
        if got["data"]["message"]["content"] == "after" {
            assert_eq!(got["data"]["message"]["seq"], last_seen + 6);
            break;
        }
        assert!(
            got["data"]["message"]["seq"].as_u64().expect("seq") <= last_seen + 5,
            "unexpected message {got}"
        );
    }
    cluster.gateways.push(restarted);
}
