//! Load generator for the message path below the gateway: concurrent senders call
//! SendMessage over gRPC (one transaction with its outbox row each), the relay
//! publishes to RabbitMQ, and a consumer of a gateway instance's queue receives every
//! message. Prints sends per second, end-to-end messages per second and latency
//! percentiles (send call -> durable ack, send call -> arrival in the gateway queue).
//!
//! Runs against the machine's real PostgreSQL and RabbitMQ in a private test database:
//! `cargo run --release -p beehive-message --example message_load -- [senders] [messages]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{GatewayQueue, Harness, text};
use hdrhistogram::Histogram;
use uuid::Uuid;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let senders: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let total: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let per_sender = total.div_ceil(senders);

    let relay = beehive_message::RelayConfig::default();
    // The production pool size (tests use 8).
    let h = Harness::start_with(Some(relay), |s| s.database_max_connections = 16).await;
    let instance = "load-gw";
    let queue = GatewayQueue::consume(&h.settings, instance).await;

    // One direct conversation per sender, the peer online at the load gateway.
    let mut conversations = Vec::new();
    for i in 0..senders {
        let (me, peer) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
        h.routes.connect(&peer, instance);
        let opened = h.open_direct(&me, &peer, &format!("open{i}")).await;
        conversations.push((me, opened.conversation_id));
    }
    h.drained().await;
    let already = queue.messages().len();

    let sent_at: Arc<Mutex<HashMap<(String, u64), Instant>>> = Arc::default();
    let started = Instant::now();
    let tasks = conversations.iter().map(|(me, conversation)| {
        let mut client = h.message.clone();
        let (me, conversation) = (me.clone(), conversation.clone());
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let mut acks = Histogram::<u64>::new(3).expect("histogram");
            for i in 0..per_sender {
                let begin = Instant::now();
                let message = client
                    .send_message(text(&me, &conversation, &format!("load{i}")))
                    .await
                    .expect("send")
                    .into_inner()
                    .message
                    .expect("message");
                let _ = acks.record(begin.elapsed().as_micros() as u64);
                sent_at
                    .lock()
                    .expect("lock")
                    .insert((message.conversation_id, message.seq), begin);
            }
            acks
        })
    });
    let mut acks = Histogram::<u64>::new(3).expect("histogram");
    for task in futures::future::join_all(tasks).await {
        acks.add(task.expect("sender")).expect("merge");
    }
    let send_elapsed = started.elapsed();
    let expected = senders * per_sender;
    let deadline = Instant::now() + Duration::from_secs(300);
    while queue.messages().len() < already + expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let e2e_elapsed = started.elapsed();

    let arrivals = queue.arrivals();
    let mut e2e = Histogram::<u64>::new(3).expect("histogram");
    {
        let sent_at = sent_at.lock().expect("lock");
        for (key, arrived) in arrivals {
            if let Some(begin) = sent_at.get(&key) {
                let _ = e2e.record(arrived.saturating_duration_since(*begin).as_micros() as u64);
            }
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!("senders={senders} messages={expected}");
    println!(
        "send (durable ack): {:.0} msg/s, p50 {:.2} ms, p99 {:.2} ms",
        expected as f64 / send_elapsed.as_secs_f64(),
        ms(&acks, 0.5),
        ms(&acks, 0.99)
    );
    println!(
        "through the relay to the gateway queue: {} of {} in {:.2} s = {:.0} msg/s, p50 {:.2} ms, p99 {:.2} ms",
        e2e.len(),
        expected,
        e2e_elapsed.as_secs_f64(),
        e2e.len() as f64 / e2e_elapsed.as_secs_f64(),
        ms(&e2e, 0.5),
        ms(&e2e, 0.99)
    );
    h.cleanup_broker(&[instance]).await;
}
