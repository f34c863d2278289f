//! The outbox relay against real PostgreSQL and RabbitMQ: what a gateway instance's
//! queue receives, in which order, with several relays, through a broker outage and
//! with a queue that refuses publishes.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use beehive_proto::v1 as pb;
use common::{BrokerProxy, GatewayQueue, Harness, eventually, quick_relay, refusing_queue, text};
use uuid::Uuid;

fn uid() -> String {
    Uuid::now_v7().to_string()
}

/// Opens `n` direct conversations of `me` with fresh peers; returns (peer, conversation).
async fn conversations(h: &Harness, me: &str, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let peer = uid();
        let m = h.open_direct(me, &peer, &format!("open{i}")).await;
        out.push((peer, m.conversation_id));
    }
    out
}

/// Sends `per_conversation` messages to each conversation, all conversations at once.
async fn burst(
    h: &Harness,
    me: &str,
    convs: &[(String, String)],
    per_conversation: usize,
    tag: &str,
) {
    let sends = convs.iter().map(|(_, id)| {
        let mut client = h.message.clone();
        let (me, id, tag) = (me.to_owned(), id.clone(), tag.to_owned());
        async move {
            for i in 0..per_conversation {
                client
                    .send_message(text(&me, &id, &format!("{tag}-{id}-{i}")))
                    .await
                    .expect("send");
            }
        }
    });
    futures::future::join_all(sends).await;
}

/// A user on gw-a with four direct conversations, ten messages sent to each (tagged
/// `tag`), all 44 relayed to gw-a's queue (the four openings included).
async fn four_conversations_relayed_to_gw_a(
    h: &Harness,
    tag: &str,
) -> (String, GatewayQueue, Vec<(String, String)>) {
    let me = uid();
    h.routes.connect(&me, "gw-a");
    let queue = GatewayQueue::consume(&h.settings, "gw-a").await;
    let convs = conversations(h, &me, 4).await;
    burst(h, &me, &convs, 10, tag).await;
    eventually("every message reached gw-a", || async {
        queue.messages().len() >= 44
    })
    .await;
    (me, queue, convs)
}

/// The outbox partition locks held in the test's database: (holders, locks). Every
/// partition has at most one owner (exclusive locks cannot be held twice).
async fn partition_locks(h: &Harness) -> (i64, i64) {
    sqlx::query_as::<_, (i64, i64)>(
        "SELECT count(DISTINCT pid), count(*) FROM pg_locks
          WHERE locktype = 'advisory' AND granted AND classid = $1::bigint::oid AND objsubid = 2
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(i64::from(beehive_message::store::relay::PARTITION_LOCK_KEY))
    .fetch_one(&h.env.pool)
    .await
    .expect("pg_locks")
}

/// Per conversation, the seqs in arrival order.
fn arrival(messages: &[pb::Message]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in messages {
        out.entry(m.conversation_id.clone())
            .or_default()
            .push(m.seq);
    }
    out
}

#[tokio::test]
async fn every_row_is_published_once_in_seq_order_per_conversation() {
    let h = Harness::start(Some(quick_relay())).await;
    let me = uid();
    h.routes.connect(&me, "gw-a");
    let queue = GatewayQueue::consume(&h.settings, "gw-a").await;
    let convs = conversations(&h, &me, 6).await;
    // Peers are on another instance; their copies go there, not to gw-a.
    for (peer, _) in &convs {
        h.routes.connect(peer, "gw-b");
    }
    let queue_b = GatewayQueue::consume(&h.settings, "gw-b").await;
    burst(&h, &me, &convs, 40, "m").await;
    let expected = 6 * 41;
    eventually("every message reached gw-a", || async {
        queue.messages().len() >= expected
    })
    .await;
    h.drained().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let messages = queue.messages();
    assert_eq!(messages.len(), expected, "each exactly once");
    for (conversation, seqs) in arrival(&messages) {
        assert_eq!(
            seqs,
            (1..=41).collect::<Vec<_>>(),
            "in order in {conversation}"
        );
    }
    for event in queue.snapshot() {
        assert_eq!(
            event.recipient_ids,
            vec![me.clone()],
            "narrowed to gw-a's users"
        );
        assert_eq!(
            event.exclude_device_user_id, me,
            "the sending device gets the ack only"
        );
        assert_eq!(event.exclude_device_id, "phone");
    }
    // The peers' copies went to their own instance, narrowed to them.
    assert!(!queue_b.messages().is_empty());
    for event in queue_b.snapshot() {
        assert_eq!(event.recipient_ids.len(), 1);
        assert_ne!(event.recipient_ids[0], me);
    }
    assert_eq!(h.dead_len().await, 0);
    h.cleanup_broker(&["gw-a", "gw-b"]).await;
}

#[tokio::test]
async fn two_relays_share_partitions_without_double_publishing() {
    let h = Harness::start(Some(quick_relay())).await;
    let (_second, _second_shutdown) = h.another_replica(Some(quick_relay())).await;
    // Both relays hold partitions once they have rebalanced, and every partition has
    // exactly one owner (exclusive locks cannot be held twice; count them all).
    eventually("two relays share all 16 partitions", || async {
        partition_locks(&h).await == (2, 16)
    })
    .await;

    let me = uid();
    h.routes.connect(&me, "gw-a");
    let queue = GatewayQueue::consume(&h.settings, "gw-a").await;
    let convs = conversations(&h, &me, 16).await;
    burst(&h, &me, &convs, 20, "m").await;
    let expected = 16 * 21;
    eventually("every message arrived", || async {
        queue.messages().len() >= expected
    })
    .await;
    h.drained().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = queue.messages();
    assert_eq!(messages.len(), expected, "no row published twice");
    for (conversation, seqs) in arrival(&messages) {
        assert_eq!(
            seqs,
            (1..=21).collect::<Vec<_>>(),
            "in order in {conversation}"
        );
    }
    h.cleanup_broker(&["gw-a"]).await;
}

#[tokio::test]
async fn a_relay_that_stops_hands_its_partitions_over() {
    let mut h = Harness::start(Some(quick_relay())).await;
    let (mut second, _second_shutdown) = h.another_replica(Some(quick_relay())).await;
    let me = uid();
    h.routes.connect(&me, "gw-a");
    let queue = GatewayQueue::consume(&h.settings, "gw-a").await;
    let convs = conversations(&h, &me, 8).await;
    h.stop_message().await;
    // Only the second replica remains: it must take over every partition and relay
    // what is sent from now on.
    for (_, id) in &convs {
        for i in 0..5 {
            second
                .send_message(text(&me, id, &format!("after-stop-{id}-{i}")))
                .await
                .expect("send through the second replica");
        }
    }
    let expected = 8 * 6;
    eventually("the remaining relay published everything", || async {
        let seen: HashSet<(String, u64)> = queue
            .messages()
            .into_iter()
            .map(|m| (m.conversation_id, m.seq))
            .collect();
        seen.len() >= expected
    })
    .await;
    h.drained().await;
    let seen: HashSet<(String, u64)> = queue
        .messages()
        .into_iter()
        .map(|m| (m.conversation_id, m.seq))
        .collect();
    assert_eq!(seen.len(), expected);
    h.cleanup_broker(&["gw-a"]).await;
}

#[tokio::test]
async fn a_broker_outage_delays_but_loses_nothing() {
    // The broker the tests use, as TestEnv picks it.
    let mut map = std::collections::BTreeMap::new();
    if let Ok(url) = std::env::var("BEEHIVE_TEST_AMQP_URL") {
        map.insert("BEEHIVE_AMQP_URL".to_owned(), url);
    }
    let (broker, _) = beehive_common::Settings::from_map(&map).expect("settings");
    let proxy = BrokerProxy::start(&broker).await;
    let proxied = proxy.url(&broker);
    let h = Harness::start_with(Some(quick_relay()), |s| {
        s.amqp_url = beehive_common::config::SecretUrl::new(proxied.clone());
    })
    .await;
    let (me, queue, convs) = four_conversations_relayed_to_gw_a(&h, "before").await;

    proxy.cut();
    burst(&h, &me, &convs, 10, "during").await;
    // Sends keep succeeding (they only need PostgreSQL); the rows wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.outbox_len().await, 40, "every row waits for the broker");
    assert_eq!(h.dead_len().await, 0, "an outage dead-letters nothing");
    let attempts: i64 =
        sqlx::query_scalar("SELECT coalesce(max(attempts), 0)::int8 FROM message.outbox")
            .fetch_one(&h.env.pool)
            .await
            .expect("attempts");
    assert_eq!(attempts, 0, "an outage does not count against rows");

    proxy.restore();
    eventually("everything arrived after the outage", || async {
        let seen: HashSet<(String, u64)> = queue
            .messages()
            .into_iter()
            .map(|m| (m.conversation_id, m.seq))
            .collect();
        seen.len() >= 84
    })
    .await;
    h.drained().await;
    // At least once, and per conversation in order once duplicates are dropped (a
    // batch whose confirms were lost in the cut may be published again).
    for (conversation, seqs) in arrival(&queue.messages()) {
        let mut deduped: Vec<u64> = Vec::new();
        for seq in seqs {
            if !deduped.contains(&seq) {
                assert!(
                    deduped.last().is_none_or(|last| *last < seq),
                    "order in {conversation}"
                );
                deduped.push(seq);
            }
        }
        assert_eq!(deduped, (1..=21).collect::<Vec<_>>());
    }
    h.cleanup_broker(&["gw-a"]).await;
}

#[tokio::test]
async fn rows_the_broker_keeps_refusing_are_dead_lettered() {
    let h = Harness::start(Some(quick_relay())).await;
    let _refusing = refusing_queue(&h.settings, "gw-poison").await;
    let queue = GatewayQueue::consume(&h.settings, "gw-ok").await;
    let me = uid();
    let convs = conversations(&h, &me, 2).await;
    let (poisoned_peer, poisoned) = convs[0].clone();
    let (healthy_peer, healthy) = convs[1].clone();
    // The opening messages are relayed before anyone is online.
    h.drained().await;
    h.routes.connect(&poisoned_peer, "gw-poison");
    h.routes.connect(&healthy_peer, "gw-ok");
    for i in 0..3 {
        h.send(&me, &poisoned, &format!("p{i}")).await;
        h.send(&me, &healthy, &format!("h{i}")).await;
    }
    h.drained().await;
    let dead: Vec<(String, i64, i32)> = sqlx::query_as(
        "SELECT conversation_id::text, seq, attempts FROM message.outbox_dead ORDER BY id",
    )
    .fetch_all(&h.env.pool)
    .await
    .expect("dead rows");
    assert_eq!(
        dead,
        vec![
            (poisoned.clone(), 2, 3),
            (poisoned.clone(), 3, 3),
            (poisoned.clone(), 4, 3)
        ],
        "the refused rows, after three attempts each"
    );
    let healthy_seqs: Vec<u64> = queue
        .messages()
        .into_iter()
        .filter(|m| m.conversation_id == healthy)
        .map(|m| m.seq)
        .collect();
    assert_eq!(
        healthy_seqs,
        vec![2, 3, 4],
        "other conversations flow meanwhile"
    );
    // The messages themselves are stored: the poisoned peer gets them on sync.
    let sync = h
        .message
        .clone()
        .sync(pb::SyncRequest {
            user_id: poisoned_peer.clone(),
            cursors: HashMap::new(),
            limit: 0,
        })
        .await
        .expect("sync")
        .into_inner();
    assert_eq!(
        sync.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    h.cleanup_broker(&["gw-ok", "gw-poison"]).await;
}

#[tokio::test]
async fn receipts_typing_and_conversation_updates_reach_members() {
    let mut h = Harness::start(Some(quick_relay())).await;
    let users = h.register(4).await;
    let (owner, member, other, newcomer) = (&users[0], &users[1], &users[2], &users[3]);
    for user in &users {
        h.routes.connect(user, "gw-a");
    }
    let queue = GatewayQueue::consume(&h.settings, "gw-a").await;
    // Each step is relayed before the next, so each event shows the state of its step.
    let group = h.group(owner, &[member.clone(), other.clone()]).await;
    h.drained().await;
    let sent = h.send(owner, &group.id, "hello").await.message.expect("m");
    h.drained().await;
    h.message
        .clone()
        .mark_read(pb::MarkRequest {
            user_id: member.clone(),
            conversation_id: group.id.clone(),
            seq: sent.seq,
        })
        .await
        .expect("read");
    h.drained().await;
    h.message
        .clone()
        .notify_typing(pb::NotifyTypingRequest {
            user_id: other.clone(),
            conversation_id: group.id.clone(),
        })
        .await
        .expect("typing");
    h.message
        .clone()
        .add_members(pb::AddMembersRequest {
            user_id: owner.clone(),
            conversation_id: group.id.clone(),
            user_ids: vec![newcomer.clone()],
        })
        .await
        .expect("add");
    h.drained().await;
    h.message
        .clone()
        .remove_member(pb::RemoveMemberRequest {
            user_id: owner.clone(),
            conversation_id: group.id.clone(),
            member_id: other.clone(),
        })
        .await
        .expect("remove");
    h.drained().await;

    use pb::event::Payload;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    eventually("the last update arrived", || async {
        queue.snapshot().iter().any(|e| {
            matches!(&e.payload, Some(Payload::ConversationUpdated(c)) if c.member_ids.len() == 3 && c.member_ids.contains(newcomer))
        })
    })
    .await;
    let events = queue.snapshot();
    let receipt = events
        .iter()
        .find(|e| matches!(e.payload, Some(Payload::Receipt(_))))
        .expect("a receipt event");
    assert_eq!(
        sorted(receipt.recipient_ids.clone()),
        sorted(vec![owner.clone(), other.clone()])
    );
    let Some(Payload::Receipt(r)) = &receipt.payload else {
        unreachable!()
    };
    assert_eq!((r.user_id.as_str(), r.read_seq), (member.as_str(), 1));

    let typing = events
        .iter()
        .find(|e| matches!(e.payload, Some(Payload::Typing(_))))
        .expect("a typing event");
    assert_eq!(
        sorted(typing.recipient_ids.clone()),
        sorted(vec![owner.clone(), member.clone()])
    );

    let updates: Vec<&pb::Event> = events
        .iter()
        .filter(|e| matches!(e.payload, Some(Payload::ConversationUpdated(_))))
        .collect();
    assert!(!updates.is_empty());
    let last = updates.last().expect("update");
    assert!(
        last.recipient_ids.contains(other),
        "the removed member hears of it"
    );
    let Some(Payload::ConversationUpdated(c)) = &last.payload else {
        unreachable!()
    };
    assert!(!c.member_ids.contains(other));
    assert_eq!(c.owner_id.as_deref(), Some(owner.as_str()));
    // The group creation reached the three first members.
    let created = updates.first().expect("creation");
    assert_eq!(
        sorted(created.recipient_ids.clone()),
        sorted(vec![owner.clone(), member.clone(), other.clone()])
    );
    // The message went to everyone but the sending device, in one event.
    let message = events
        .iter()
        .find(|e| matches!(e.payload, Some(Payload::Message(_))))
        .expect("message");
    assert_eq!(message.recipient_ids.len(), 3);
    h.cleanup_broker(&["gw-a"]).await;
}

/// Two relays in one process, with neither a poll nor a rebalance within the test's
/// patience: only the process's own commits wake them, each relay for its own
/// partitions (no NOTIFY either, since no relay runs elsewhere). Messages are sent one
/// at a time to a conversation of every partition, each awaited before the next, so
/// a lost wake-up leaves one undelivered and fails the test.
#[tokio::test]
async fn relays_of_one_process_wake_on_its_commits_without_polling() {
    use beehive_message::RelayConfig;
    use beehive_message::conversation::{OUTBOX_PARTITIONS, outbox_partition};

    let h = Harness::start(None).await;
    let idle = RelayConfig {
        poll_interval: Duration::from_secs(3600),
        rebalance_interval: Duration::from_secs(3600),
        ..quick_relay()
    };
    let (replica, _replica_shutdown) = h.another_replica_with_tasks(Some(idle), 2).await;
    eventually("the two relays own all 16 partitions", || async {
        partition_locks(&h).await.1 == i64::from(OUTBOX_PARTITIONS)
    })
    .await;

    let me = uid();
    h.routes.connect(&me, "gw-a");
    let queue = GatewayQueue::consume(&h.settings, "gw-a").await;
    // One conversation per partition (opened through the first service, whose
    // NOTIFYs wake the relays for these).
    let mut by_partition: BTreeMap<i16, String> = BTreeMap::new();
    let mut opened = 0;
    while by_partition.len() < usize::from(OUTBOX_PARTITIONS) {
        let m = h.open_direct(&me, &uid(), &format!("open{opened}")).await;
        opened += 1;
        let id: Uuid = m.conversation_id.parse().expect("uuid");
        by_partition
            .entry(outbox_partition(id))
            .or_insert(m.conversation_id);
    }
    eventually("the openings arrived", || async {
        queue.messages().len() >= opened
    })
    .await;

    for (partition, conversation) in &by_partition {
        let tag = format!("p{partition}");
        replica
            .clone()
            .send_message(text(&me, conversation, &tag))
            .await
            .expect("send");
        eventually(
            &format!("the message of partition {partition} arrived"),
            || async { queue.messages().iter().any(|m| m.client_msg_id == tag) },
        )
        .await;
    }
    h.cleanup_broker(&["gw-a"]).await;
}

/// The relay vacuums the outbox after deleting `vacuum_after_deletes` rows, so its
/// index walks do not grow with every message ever relayed while autovacuum sleeps.
#[tokio::test]
async fn the_relay_vacuums_the_outbox_it_drains() {
    use beehive_message::RelayConfig;

    let vacuums = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT vacuum_count FROM pg_stat_user_tables
              WHERE schemaname = 'message' AND relname = 'outbox'",
        )
        .fetch_one(&pool)
        .await
        .expect("pg_stat_user_tables")
    };
    let h = Harness::start(Some(RelayConfig {
        vacuum_after_deletes: 20,
        ..quick_relay()
    }))
    .await;
    let before = vacuums(h.env.pool.clone()).await;
    let _relayed = four_conversations_relayed_to_gw_a(&h, "v").await;
    h.drained().await;
    eventually("the relay vacuumed the outbox", || async {
        vacuums(h.env.pool.clone()).await > before
    })
    .await;
    h.cleanup_broker(&["gw-a"]).await;
}
