//! Rollouts without reconnect storms: a gateway told to shut down fails its readiness,
//! refuses new sockets, tells every client to `reconnect` and closes the sockets in
//! waves spread over its drain window; its clients come back on another gateway,
//! `sync`, and lose nothing.
//!
//! Assertions are on the order of events and on counts, never on elapsed time: the
//! wave of each client is derived from the `after_ms` it was given (the plan is pure
//! and public), and the waves must close in order, one batch after another.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beehive_gateway::hub::drain::DrainPlan;
use common::{Cluster, Event, Target, TokenVia, User, Ws, readyz};
use serde_json::json;

/// What the test saw, in one order shared by every client task.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// The draining gateway's `/readyz` answered this status.
    Readyz(u16),
    /// Client `n` got `reconnect` with this delay.
    Reconnect { client: usize, after_ms: u64 },
    /// Client `n`'s socket was closed with this code.
    Closed { client: usize, code: Option<u16> },
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn record(log: &Log, seen: Seen) {
    log.lock().unwrap_or_else(|e| e.into_inner()).push(seen);
}

/// One client's view of the drain.
struct Drained {
    client: usize,
    after_ms: u64,
    /// Seqs received live on the draining gateway, in arrival order.
    live: Vec<u64>,
    /// Seqs the `sync` on the other gateway returned, in arrival order.
    synced: Vec<u64>,
    /// The client's socket on the other gateway.
    ws: Ws,
}

/// Reads `ws` (on the draining gateway) until the server closes it, recording the
/// `reconnect` and the close in `log`; then comes back on `other` after the delay it
/// was given, as API.md asks, and syncs from the last seq it saw.
async fn ride_out_the_drain(
    client: usize,
    mut ws: Ws,
    mut live: Vec<u64>,
    user: User,
    other: std::net::SocketAddr,
    group: String,
    log: Log,
) -> Drained {
    let mut reconnect = None;
    loop {
        match ws.next_event().await {
            Event::Frame(frame) if frame["type"] == "message" => {
                live.push(frame["data"]["message"]["seq"].as_u64().expect("seq"));
            }
            Event::Frame(frame) if frame["type"] == "reconnect" => {
                assert!(reconnect.is_none(), "a second reconnect frame: {frame}");
                let after_ms = frame["data"]["after_ms"].as_u64().expect("after_ms");
                record(&log, Seen::Reconnect { client, after_ms });
                reconnect = Some((tokio::time::Instant::now(), after_ms));
            }
            // E.g. a late `conversation_updated` of the group's creation.
            Event::Frame(frame) => assert_ne!(frame["type"], "error", "{frame}"),
            Event::Closed(close) => {
                let code = close.map(|c| u16::from(c.code));
                record(&log, Seen::Closed { client, code });
                break;
            }
        }
    }
    let (told_at, after_ms) = reconnect.expect("reconnect before the close");
    // A well-behaved client waits `after_ms` (this spreads the reconnects); the test
    // asserts nothing about the time this takes.
    tokio::time::sleep_until(told_at + Duration::from_millis(after_ms)).await;
    let mut ws = Ws::connect_via(other, &user.token, Some("phone"), TokenVia::Header)
        .await
        .unwrap_or_else(|e| panic!("client {client} reconnects to the other gateway: {e}"));
    let last_seen = live.last().copied().unwrap_or(0);
    let (synced, _) = ws.sync_all(json!({ group: last_seen })).await;
    // Live frames of the new socket arrive among the sync's output and can repeat it;
    // the set is what counts (a client dedupes by seq, API.md), checked below.
    let synced = synced
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    Drained {
        client,
        after_ms,
        live,
        synced,
        ws,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_draining_gateway_moves_its_clients_in_waves_and_loses_nothing() {
    const CLIENTS: usize = 8;
    const WINDOW: Duration = Duration::from_secs(3);
    let mut cluster = Cluster::start(1).await;
    let draining = cluster
        .start_gateway_with("gw-draining", |s| s.gateway_drain_window = WINDOW)
        .await;
    let draining_addr = draining.addr;
    cluster.gateways.push(draining);
    let staying = cluster.gw(0);

    let sender = cluster.user().await;
    let mut receivers = Vec::new();
    for _ in 0..CLIENTS {
        receivers.push(cluster.user().await);
    }
    let group = cluster.group(&sender, &receivers).await;
    let mut sender_ws = Ws::connect(staying, &sender, "sender").await;
    let mut sockets = Vec::new();
    for user in &receivers {
        sockets.push(Ws::connect(draining_addr, user, "phone").await);
    }
    // Every socket is live before the drain starts.
    let ack = sender_ws
        .send_message(Target::Conversation(&group), "before", "before")
        .await;
    let before = ack["data"]["message"]["seq"].as_u64().expect("seq");
    for ws in &mut sockets {
        let message = ws.expect_message("before").await;
        assert_eq!(message["seq"], before);
    }
    let log: Log = Arc::default();
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(client, ws)| {
            tokio::spawn(ride_out_the_drain(
                client,
                ws,
                vec![before],
                receivers[client].clone(),
                staying,
                group.clone(),
                log.clone(),
            ))
        })
        .collect();

    // A second device of one receiver, on the other gateway, sees when the stream of
    // messages is under way.
    let mut probe = Ws::connect(staying, &receivers[0], "probe").await;
    // The sender keeps talking to the group through the whole drain.
    let sending = Arc::new(AtomicBool::new(true));
    let sender_task = {
        let (sending, group) = (sending.clone(), group.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut k = 0;
            while sending.load(Ordering::Acquire) {
                let ack = sender_ws
                    .send_message(
                        Target::Conversation(&group),
                        &format!("drain-{k}"),
                        &format!("during the drain {k}"),
                    )
                    .await;
                acked.push(ack["data"]["message"]["seq"].as_u64().expect("seq"));
                k += 1;
                // Pacing only, so the drain sees a steady stream rather than a burst.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (sender_ws, acked)
        })
    };
    // Let a few messages through before the drain starts.
    let first_drain_seq = probe.expect_message("during the drain 2").await["seq"]
        .as_u64()
        .expect("seq");
    drop(probe);

    assert_eq!(readyz(draining_addr).await, 200);
    let stopping = cluster.begin_stop(1);
    // Readiness fails first and new sockets are refused while the old ones drain.
    record(&log, Seen::Readyz(readyz(draining_addr).await.as_u16()));
    let refused = Ws::connect_via(
        draining_addr,
        &receivers[0].token,
        Some("late"),
        TokenVia::Header,
    )
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(
                response.status(),
                503,
                "a draining gateway refuses upgrades"
            );
        }
        Err(other) => panic!("upgrade refused the wrong way: {other}"),
        Ok(_) => panic!("a draining gateway accepted a new socket"),
    }

    let mut drained = Vec::new();
    for task in tasks {
        drained.push(task.await.expect("client task"));
    }
    let instance = stopping.stopped().await;
    sending.store(false, Ordering::Release);
    let (mut sender_ws, acked) = sender_task.await.expect("sender");
    let ack = sender_ws
        .send_message(Target::Conversation(&group), "end", "end")
        .await;
    let end = ack["data"]["message"]["seq"].as_u64().expect("seq");
    assert!(
        acked.iter().any(|&seq| seq > first_drain_seq),
        "the sender kept sending during the drain"
    );

    // Each client, on the other gateway, reads on until the last message.
    let plan = DrainPlan::new(CLIENTS, WINDOW);
    let wave_of = |after_ms: u64| {
        let after = Duration::from_millis(after_ms);
        plan.waves()
            .iter()
            .position(|w| after >= w.offset && after < w.offset + plan.wave_interval())
            .unwrap_or_else(|| panic!("after_ms {after_ms} lies in no wave of {plan:?}"))
    };
    for client in &mut drained {
        let mut after_sync = Vec::new();
        while after_sync.last() != Some(&end) {
            let frame = client.ws.expect("message").await;
            after_sync.push(frame["data"]["message"]["seq"].as_u64().expect("seq"));
        }
        let n = client.client;
        // Live frames on the draining gateway: in order, no duplicates.
        assert!(
            client.live.windows(2).all(|w| w[0] < w[1]),
            "client {n}: live seqs out of order or duplicated: {:?}",
            client.live
        );
        // The sync returns exactly the gap after the last live frame (live frames of
        // the new socket can interleave with its output: compare as a set).
        let last_live = client.live.last().copied().unwrap_or(0);
        let synced: BTreeSet<u64> = client.synced.iter().copied().collect();
        assert!(
            synced.first().is_none_or(|&s| s == last_live + 1)
                && synced
                    .iter()
                    .zip(synced.iter().skip(1))
                    .all(|(a, b)| a + 1 == *b),
            "client {n}: sync after {last_live} returned {:?}",
            client.synced
        );
        // A message published after the client came back can also arrive live next to
        // its synced copy: a client dedupes by seq (API.md). Together: all, once each.
        let all: BTreeSet<u64> = client
            .live
            .iter()
            .chain(&client.synced)
            .chain(&after_sync)
            .copied()
            .collect();
        assert_eq!(
            all,
            (1..=end).collect::<BTreeSet<_>>(),
            "client {n} missed messages"
        );
        assert!(
            client.live.iter().all(|seq| !synced.contains(seq)),
            "client {n} got a message both live and from its sync: {:?} {:?}",
            client.live,
            client.synced
        );
        if wave_of(client.after_ms) == plan.waves().len() - 1 {
            // The consumer kept feeding the sockets not closed yet.
            assert!(
                client.live.iter().any(|&seq| seq >= first_drain_seq),
                "client {n} of the last wave got nothing live during the drain"
            );
        }
    }

    // The reconnect delays are the plan's: spread evenly, one slice per client.
    let mut delays: Vec<u64> = drained.iter().map(|d| d.after_ms).collect();
    delays.sort_unstable();
    let planned: Vec<u64> = (0..CLIENTS)
        .map(|i| plan.reconnect_after(i).expect("planned").as_millis() as u64)
        .collect();
    assert_eq!(delays, planned);

    let log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // Readiness failed while sockets were still open (before the last close).
    let readyz_at = log.iter().position(|s| matches!(s, Seen::Readyz(_)));
    let last_close = log.iter().rposition(|s| matches!(s, Seen::Closed { .. }));
    assert!(
        readyz_at.zip(last_close).is_some_and(|(r, c)| r < c),
        "/readyz was not checked during the drain: {log:?}"
    );
    assert!(log.contains(&Seen::Readyz(503)), "{log:?}");
    let after_ms_of = |client: usize| drained[client].after_ms;
    for client in 0..CLIENTS {
        let told = log
            .iter()
            .position(|s| matches!(s, Seen::Reconnect { client: c, .. } if *c == client));
        let closed = log
            .iter()
            .position(|s| matches!(s, Seen::Closed { client: c, .. } if *c == client));
        assert!(
            told.zip(closed).is_some_and(|(t, c)| t < c),
            "client {client}: reconnect must come before the close: {log:?}"
        );
    }
    let closes: Vec<(usize, Option<u16>)> = log
        .iter()
        .filter_map(|s| match s {
            Seen::Closed { client, code } => Some((*client, *code)),
            _ => None,
        })
        .collect();
    assert!(
        closes.iter().all(|(_, code)| *code == Some(1012)),
        "API.md: closed with 1012: {closes:?}"
    );
    // The close batches, in the order the clients saw them: waves close one after
    // another, and there are as many batches as planned waves.
    let waves_in_close_order: Vec<usize> = closes
        .iter()
        .map(|(client, _)| wave_of(after_ms_of(*client)))
        .collect();
    assert!(
        waves_in_close_order.windows(2).all(|w| w[0] <= w[1]),
        "a later wave closed before an earlier one: {waves_in_close_order:?}"
    );
    let mut batches = waves_in_close_order.clone();
    batches.dedup();
    assert_eq!(batches, (0..plan.waves().len()).collect::<Vec<_>>());
    assert!(
        batches.len() >= 3,
        "several waves, not one burst: {batches:?}"
    );
    eprintln!(
        "drained {CLIENTS} clients of {instance} in {} waves: {waves_in_close_order:?}",
        batches.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zero_window_closes_every_socket_at_once() {
    const CLIENTS: usize = 6;
    // The harness's gateways drain with a zero window.
    let mut cluster = Cluster::start(2).await;
    let sender = cluster.user().await;
    let mut receivers = Vec::new();
    for _ in 0..CLIENTS {
        receivers.push(cluster.user().await);
    }
    let group = cluster.group(&sender, &receivers).await;
    let mut sockets = Vec::new();
    for user in &receivers {
        sockets.push(Ws::connect(cluster.gw(1), user, "phone").await);
    }
    for ws in &mut sockets {
        ws.barrier().await;
    }
    let stopping = cluster.begin_stop(1);
    for ws in &mut sockets {
        // Events of the group's creation may still be on their way around it.
        let told = ws.expect("reconnect").await;
        assert_eq!(told["data"]["after_ms"], 0, "come back at once: {told}");
        let close = loop {
            match ws.next_event().await {
                Event::Closed(close) => break close,
                Event::Frame(frame) => assert_ne!(frame["type"], "reconnect", "told twice"),
            }
        };
        assert_eq!(close.map(|c| u16::from(c.code)), Some(1012));
    }
    stopping.stopped().await;
    // Nothing was lost for the clients that come back elsewhere.
    let mut sender_ws = Ws::connect(cluster.gw(0), &sender, "sender").await;
    sender_ws
        .send_message(Target::Conversation(&group), "after", "after")
        .await;
    let mut back = Ws::connect(cluster.gw(0), &receivers[0], "phone").await;
    let (missed, _) = back.sync_all(json!({ group.clone(): 0 })).await;
    // "after" may also arrive live on `back` (its publish can follow the socket's
    // registration): the same seq twice is one message to a client.
    let contents: BTreeSet<(u64, String)> = missed
        .iter()
        .map(|m| {
            let seq = m["seq"].as_u64().expect("seq");
            (seq, m["content"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(contents.len(), 1, "{missed:?}");
    assert!(contents.iter().all(|(_, c)| c == "after"), "{missed:?}");
}
