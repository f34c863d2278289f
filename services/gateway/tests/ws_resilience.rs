//! Resilience of the push path: a gateway whose broker connection drops (a broker
//! restart as the gateway sees it) loses nothing, and a client that stops reading is
//! disconnected without stalling anyone else.

mod common;

use std::collections::BTreeSet;

use beehive_common::config::SecretUrl;
use beehive_proto::v1 as pb;
use common::proxy::Proxy;
use common::{Cluster, Event, Target, Ws};
use futures::future::join_all;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_broker_connection_loses_no_live_message() {
    const TOTAL: u64 = 120;
    let mut cluster = Cluster::start(1).await;
    let proxy = Proxy::start().await;
    let url = proxy.amqp_url();
    let gateway = cluster
        .start_gateway_with("gw-proxied", |s| s.amqp_url = SecretUrl::new(url))
        .await;
    let (alice, bob) = (cluster.user().await, cluster.user().await);
    cluster.befriend(&alice, &bob).await;
    let mut a = Ws::connect(cluster.gw(0), &alice, "a").await;
    let mut b = Ws::connect(gateway.addr, &bob, "b").await;
    cluster.gateways.push(gateway);

    let receiver = tokio::spawn(async move {
        let mut first_seen = Vec::new();
        let mut seen = BTreeSet::new();
        while (seen.len() as u64) < TOTAL {
            let frame = b.expect("message").await;
            let seq = frame["data"]["message"]["seq"].as_u64().expect("seq");
            // Deliveries in flight when the connection dropped come again.
            if seen.insert(seq) {
                first_seen.push(seq);
            }
        }
        first_seen
    });
    let mut conversation = String::new();
    for k in 0..TOTAL {
        let target = if conversation.is_empty() {
            Target::User(&bob.id)
        } else {
            Target::Conversation(&conversation)
        };
        let ack = a
            .send_message(target, &format!("m{k}"), &format!("n{k}"))
            .await;
        conversation = ack["data"]["message"]["conversation_id"]
            .as_str()
            .expect("id")
            .to_owned();
        if k == TOTAL / 3 {
            proxy.cut().await;
        }
        if k == 2 * TOTAL / 3 {
            // Down for a while: events routed meanwhile wait in the durable queue.
            proxy.resume();
        }
    }
    let first_seen = receiver.await.expect("receiver");
    assert_eq!(first_seen, (1..=TOTAL).collect::<Vec<_>>());
    assert!(
        proxy.accepted() >= 2,
        "the consumer never had to reconnect: the cut did not happen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_is_dropped_without_stalling_others() {
    // Enough 16 KiB frames to overflow the 1024-frame outbox plus every kernel buffer.
    const TOTAL: usize = 2400;
    let cluster = Cluster::start(1).await;
    let (sender, fast, slow) = (
        cluster.user().await,
        cluster.user().await,
        cluster.user().await,
    );
    let group = cluster.group(&sender, &[fast.clone(), slow.clone()]).await;
    let mut slow_ws = Ws::connect(cluster.gw(0), &slow, "slow").await;
    let mut fast_ws = Ws::connect(cluster.gw(0), &fast, "fast").await;
    let content = "x".repeat(16 * 1024 - 16);

    // The reader publishes how many frames it has taken; senders never run more than
    // WINDOW messages ahead of it, so the reader's backlog stays far below its outbox
    // however slow the machine is, while the slow client's backlog grows to TOTAL.
    const WINDOW: usize = 256;
    let (progress_tx, progress_rx) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::with_capacity(TOTAL);
        while seqs.len() < TOTAL {
            let frame = fast_ws.expect("message").await;
            seqs.push(frame["data"]["message"]["seq"].as_u64().expect("seq"));
            progress_tx.send_replace(seqs.len());
        }
        seqs
    });
    let senders = (0..8).map(|lane| {
        let message = cluster.message.clone();
        let (sender, group, content) = (sender.id.clone(), group.clone(), content.clone());
        let mut progress = progress_rx.clone();
        async move {
            for k in (lane..TOTAL).step_by(8) {
                if progress.wait_for(|&read| read + WINDOW >= k).await.is_err() {
                    return; // the reader failed; awaiting it below reports why
                }
                message
                    .clone()
                    .send_message(pb::SendMessageRequest {
                        sender_id: sender.clone(),
                        client_msg_id: format!("big-{k}"),
                        target: Some(pb::send_message_request::Target::ConversationId(
                            group.clone(),
                        )),
                        msg_type: pb::MessageType::Text as i32,
                        content: content.clone(),
                        file_id: None,
                        device_id: "script".into(),
                    })
                    .await
                    .expect("send");
            }
        }
    });
    join_all(senders).await;
    let seqs = reader.await.expect("reader");
    assert_eq!(seqs, (1..=TOTAL as u64).collect::<Vec<_>>());

    // The slow client finds some frames in its buffers and then the end of the socket.
    let mut received = 0;
    let end = loop {
        match slow_ws.next_event().await {
            Event::Frame(frame) if frame["type"] == "message" => received += 1,
            Event::Frame(_) => {}
            Event::Closed(frame) => break frame,
        }
    };
    assert!(
        received < TOTAL,
        "the slow client was never disconnected ({received} frames, end {end:?})"
    );
    // The gateway still serves it after a reconnect.
    let mut again = Ws::connect(cluster.gw(0), &slow, "slow").await;
    again.barrier().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connect_storm_queues_at_the_gateway_instead_of_failing() {
    // The services shed above 96 calls in flight; one gateway (whose own client limit
    // stays high) takes 400 simultaneous handshakes. It must hold its registrations
    // below the presence service's limit and let the handshakes wait, not fail them
    // with 503.
    const SOCKETS: usize = 400;
    let mut cluster = Cluster::start_with(0, |s| s.grpc_concurrency = 96).await;
    let gateway = cluster
        .start_gateway_with("gw-storm", |s| s.grpc_concurrency = 4096)
        .await;
    let addr = gateway.addr;
    cluster.gateways.push(gateway);
    let user = cluster.user().await;
    let attempts = (0..SOCKETS).map(|n| {
        let token = user.token.clone();
        async move {
            let device = format!("storm-{n}");
            Ws::connect_via(addr, &token, Some(&device), common::TokenVia::Header).await
        }
    });
    let results = join_all(attempts).await;
    let failures: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {SOCKETS} handshakes failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    let mut sockets: Vec<Ws> = results.into_iter().flatten().collect();
    sockets[SOCKETS - 1].barrier().await;
}
