//! Group traffic across two gateways: fan-out to every online device exactly once and
//! gap-free seqs under concurrent senders.

mod common;

use std::collections::BTreeSet;

use common::{Cluster, Target, User, Ws};
use futures::future::join_all;

async fn users(cluster: &Cluster, n: usize) -> Vec<User> {
    let mut all = Vec::with_capacity(n);
    // A few at a time: registration hashes passwords (argon2id) on 2 cores.
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        all.extend(join_all(chunk.iter().map(|_| cluster.user())).await);
    }
    all
}

async fn connect_all(cluster: &Cluster, users: &[User]) -> Vec<Ws> {
    join_all(
        users
            .iter()
            .enumerate()
            .map(|(i, u)| Ws::connect(cluster.gw(i % cluster.gateways.len()), u, "dev")),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fifty_member_group_message_reaches_every_online_device_once() {
    let cluster = Cluster::start(2).await;
    let members = users(&cluster, 50).await;
    let group = cluster.group(&members[0], &members[1..]).await;
    let mut sockets = connect_all(&cluster, &members).await;
    // A second device of one member: it must get the message too.
    let mut extra = Ws::connect(cluster.gw(0), &members[7], "second").await;

    let ack = sockets[3]
        .send_message(Target::Conversation(&group), "fanout", "to everyone")
        .await;
    let sent = ack["data"]["message"].clone();
    assert_eq!(sent["seq"], 1);
    let receivers = sockets
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, ws)| ws)
        .chain(std::iter::once(&mut extra));
    join_all(receivers.map(|ws| {
        let sent = sent.clone();
        async move {
            assert_eq!(ws.expect_message("to everyone").await, sent);
        }
    }))
    .await;

    // A second message is the next message every device sees: nobody got a copy of
    // the first one twice, and the sender got no copy at all.
    sockets[5]
        .send_message(Target::Conversation(&group), "marker", "marker")
        .await;
    let receivers = sockets
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| *i != 5)
        .map(|(_, ws)| ws)
        .chain(std::iter::once(&mut extra));
    join_all(receivers.map(|ws| async move {
        let next = ws.expect("message").await;
        assert_eq!(
            next["data"]["message"]["content"], "marker",
            "duplicate before the marker: {next}"
        );
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_senders_get_gap_free_seqs_delivered_in_order() {
    const PER_SENDER: usize = 5;
    let cluster = Cluster::start(2).await;
    let mut members = users(&cluster, 21).await;
    let observer_user = members.pop().expect("21 users");
    let group = cluster.group(&observer_user, &members).await;
    let mut observer = Ws::connect(cluster.gw(1), &observer_user, "watch").await;
    let sockets = connect_all(&cluster, &members).await;

    let acks = join_all(sockets.into_iter().enumerate().map(|(n, mut ws)| {
        let group = group.clone();
        async move {
            let mut seqs = Vec::new();
            for k in 0..PER_SENDER {
                let ack = ws
                    .send_message(
                        Target::Conversation(&group),
                        &format!("s{n}-{k}"),
                        &format!("from {n} #{k}"),
                    )
                    .await;
                seqs.push(ack["data"]["message"]["seq"].as_u64().expect("seq"));
            }
            seqs
        }
    }))
    .await;
    let total = members.len() * PER_SENDER;
    let all: BTreeSet<u64> = acks.iter().flatten().copied().collect();
    assert_eq!(all.len(), total, "every send got its own seq");
    assert_eq!(
        all,
        (1..=total as u64).collect::<BTreeSet<_>>(),
        "seqs are 1..=n without gaps"
    );
    for seqs in &acks {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one sender's messages keep their order: {seqs:?}"
        );
    }

    // The observer sees every message live, once, in seq order.
    let mut seen = Vec::new();
    while seen.len() < total {
        let frame = observer.expect("message").await;
        seen.push(frame["data"]["message"]["seq"].as_u64().expect("seq"));
    }
    assert_eq!(seen, (1..=total as u64).collect::<Vec<_>>());
    let history = cluster.history(&observer_user, &group).await;
    assert_eq!(
        history.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=total as u64).collect::<Vec<_>>()
    );
}
