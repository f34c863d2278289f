//! `chat`: P sender/recipient pairs exchanging 1:1 messages, at a fixed total rate or
//! flat out (bounded by a per-sender window of unacknowledged sends). Measures
//! throughput, send-to-arrival latency, and lost, duplicated and out-of-order messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, WsStream, send_frame, send_text};
use crate::report;

/// One sender and its recipient; `conversation` when already known.
#[derive(Clone)]
pub struct Pair {
    pub sender_token: String,
    pub recipient_id: String,
    pub recipient_token: String,
    pub conversation: Option<String>,
}

/// Options of a chat run.
#[derive(Clone, Copy)]
pub struct ChatOptions {
    pub duration: Duration,
    /// Total messages per second over all pairs; 0 = flat out.
    pub rate: u64,
    /// Unacknowledged sends allowed per sender.
    pub window: usize,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
    out_of_order: AtomicU64,
    errors: AtomicU64,
}

/// Runs the scenario against `base` and returns the JSON result.
pub async fn run(base: &str, pairs: Vec<Pair>, options: ChatOptions) -> anyhow::Result<Value> {
    let counters = Arc::new(Counters::default());
    let latency = Arc::new(Mutex::new(report::latency_histogram()));
    // Send to ack: the message service's commit as the sender sees it (one lock per
    // ack is cheap at these rates and survives the ack readers being aborted).
    let ack_latency = Arc::new(std::sync::Mutex::new(report::latency_histogram()));
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    // Receivers stop on this signal and merge their last latencies before ending.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    for (n, pair) in pairs.iter().enumerate() {
        let (_rsink, rstream) =
            client::connect_ws(base, &pair.recipient_token, &format!("bench-r{n}"), None).await?;
        receivers.push(tokio::spawn(receive(
            rstream,
            counters.clone(),
            latency.clone(),
            stopped.clone(),
            _rsink,
        )));
        let (ssink, sstream) =
            client::connect_ws(base, &pair.sender_token, &format!("bench-s{n}"), None).await?;
        senders.push((pair.clone(), ssink, sstream));
    }
    let started = Instant::now();
    let deadline = started + options.duration;
    let per_sender_interval = if options.rate == 0 {
        None
    } else {
        Some(Duration::from_secs_f64(
            pairs.len() as f64 / options.rate as f64,
        ))
    };
    let mut tasks = Vec::new();
    for (n, (pair, mut sink, mut stream)) in senders.into_iter().enumerate() {
        let counters = counters.clone();
        let window = Arc::new(Semaphore::new(options.window.max(1)));
        let acks = {
            let window = window.clone();
            let counters = counters.clone();
            let ack_latency = ack_latency.clone();
            tokio::spawn(async move {
                while let Some(Ok(frame)) = stream.next().await {
                    if let Message::Text(text) = frame {
                        let value = serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
                        match value["type"].as_str() {
                            Some("ack") => {
                                let now = client::now_nanos();
                                let sent = sent_nanos(&value["data"]["message"]).unwrap_or(now);
                                if let Ok(mut h) = ack_latency.lock() {
                                    let _ = h.record(now.saturating_sub(sent) / 1000);
                                }
                                counters.acked.fetch_add(1, Ordering::Relaxed);
                                window.add_permits(1);
                            }
                            Some("error") => {
                                counters.errors.fetch_add(1, Ordering::Relaxed);
                                window.add_permits(1);
                            }
                            _ => {}
                        }
                    }
                }
            })
        };
        let senders = pairs.len();
        tasks.push(tokio::spawn(async move {
            // Senders are spread evenly over one interval: started in phase, they
            // would all fire at once and measure their own bursts.
            let mut next = match per_sender_interval {
                Some(interval) => started + interval.mul_f64(n as f64 / senders as f64),
                None => Instant::now(),
            };
            let mut i: u64 = 0;
            while Instant::now() < deadline {
                if let Some(interval) = per_sender_interval {
                    next += interval;
                    tokio::time::sleep_until(next.into()).await;
                }
                let Ok(permit) = window.acquire().await else {
                    break;
                };
                permit.forget();
                i += 1;
                let content = format!("{} {n}", client::now_nanos());
                let frame = match &pair.conversation {
                    Some(c) => send_frame(
                        i,
                        Some(c),
                        None,
                        &format!("b{n}-{i}-{}", uuid::Uuid::new_v4().simple()),
                        &content,
                    ),
                    None => send_frame(
                        i,
                        None,
                        Some(&pair.recipient_id),
                        &format!("b{n}-{i}"),
                        &content,
                    ),
                };
                if send_text(&mut sink, frame).await.is_err() {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            // Let outstanding acks arrive before closing.
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                window.acquire_many(options.window.max(1) as u32),
            )
            .await;
            acks.abort();
            drop(sink);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let sending = started.elapsed();
    // Drain: wait until every acknowledged message arrived, or 10 s.
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while counters.received.load(Ordering::Relaxed) < counters.acked.load(Ordering::Relaxed)
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    for r in receivers {
        let _ = r.await;
    }
    let h = latency.lock().await.clone();
    let acks = ack_latency
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| report::latency_histogram());
    let sent = counters.sent.load(Ordering::Relaxed);
    let acked = counters.acked.load(Ordering::Relaxed);
    let received = counters.received.load(Ordering::Relaxed);
    Ok(json!({
        "scenario": "chat",
        "pairs": pairs.len(),
        "seconds": sending.as_secs_f64(),
        "sent": sent,
        "acked": acked,
        "received": received,
        "lost": acked.saturating_sub(received),
        "duplicates": counters.duplicates.load(Ordering::Relaxed),
        "out_of_order": counters.out_of_order.load(Ordering::Relaxed),
        "errors": counters.errors.load(Ordering::Relaxed),
        "throughput_msgs_per_s": received as f64 / sending.as_secs_f64(),
        "latency": report::latency_json(&h),
        "latency_summary": report::latency_line(&h),
        "ack_latency": report::latency_json(&acks),
        "ack_latency_summary": report::latency_line(&acks),
    }))
}

/// The send time the bench wrote at the start of a message's content.
fn sent_nanos(message: &Value) -> Option<u64> {
    message["content"]
        .as_str()
        .and_then(|c| c.split(' ').next())
        .and_then(|t| t.parse().ok())
}

async fn receive<S>(
    mut stream: WsStream,
    counters: Arc<Counters>,
    latency: Arc<Mutex<Histogram<u64>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    _keep: S,
) {
    let mut last_seq: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut local = report::latency_histogram();
    let mut pending = 0;
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let Some(Ok(frame)) = frame else { break };
        let Message::Text(text) = frame else { continue };
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if value["type"] != "message" {
            continue;
        }
        let message = &value["data"]["message"];
        let now = client::now_nanos();
        let seq = message["seq"].as_u64().unwrap_or(0);
        let conversation = message["conversation_id"].as_str().unwrap_or("").to_owned();
        let last = last_seq.entry(conversation).or_insert(0);
        if seq <= *last && *last != 0 {
            counters.duplicates.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if *last != 0 && seq != *last + 1 {
            counters.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        *last = seq;
        let sent = sent_nanos(message).unwrap_or(now);
        let _ = local.record(now.saturating_sub(sent) / 1000);
        counters.received.fetch_add(1, Ordering::Relaxed);
        pending += 1;
        if pending >= 256 {
            let _ = latency.lock().await.add(&local);
            local.reset();
            pending = 0;
        }
    }
    let _ = latency.lock().await.add(&local);
}

/// Connects to Beehive, provisions `pairs` befriended pairs and their conversations.
pub async fn provision(api: &client::Api, pairs: usize, prefix: &str) -> anyhow::Result<Vec<Pair>> {
    let users = api.register_many(prefix, pairs * 2, 8).await?;
    let mut out = Vec::new();
    for chunk in users.chunks(2) {
        let (a, b) = (&chunk[0], &chunk[1]);
        api.befriend(a, b).await?;
        let conversation = api.direct_conversation(a, b).await?;
        out.push(Pair {
            sender_token: a.token.clone(),
            recipient_id: b.id.clone(),
            recipient_token: b.token.clone(),
            conversation: Some(conversation),
        });
    }
    Ok(out)
}
