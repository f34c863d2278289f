//! `group`: one sender, a group of M online members; for each message, the fan-out
//! latency until the LAST member has it, and the latency of every single delivery.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Api, send_frame, send_text};
use crate::report;

/// Runs the scenario with `members` members (plus the sender) and `messages` messages
/// sent `interval` apart.
pub async fn run(
    api: &Api,
    prefix: &str,
    members: usize,
    messages: u64,
    interval: Duration,
) -> anyhow::Result<Value> {
    let users = api.register_many(prefix, members + 1, 8).await?;
    let (owner, rest) = users
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("no users"))?;
    let group = api.create_group(owner, rest).await?;
    // seq -> arrival times (ns) at members
    let arrivals: Arc<Mutex<HashMap<u64, Vec<u64>>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut readers = Vec::new();
    for (n, member) in rest.iter().enumerate() {
        let (sink, mut stream) =
            client::connect_ws(api.base(), &member.token, &format!("g{n}"), None).await?;
        let arrivals = arrivals.clone();
        readers.push(tokio::spawn(async move {
            let _keep = sink;
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(text) = frame else { continue };
                let now = client::now_nanos();
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if v["type"] == "message" {
                    let seq = v["data"]["message"]["seq"].as_u64().unwrap_or(0);
                    arrivals.lock().await.entry(seq).or_default().push(now);
                }
            }
        }));
    }
    let (mut sink, mut stream) =
        client::connect_ws(api.base(), &owner.token, "g-owner", None).await?;
    let mut sent_at: HashMap<u64, u64> = HashMap::new();
    for i in 1..=messages {
        let t = client::now_nanos();
        send_text(
            &mut sink,
            send_frame(
                i,
                Some(&group),
                None,
                &format!("g-{i}-{}", uuid::Uuid::new_v4().simple()),
                &t.to_string(),
            ),
        )
        .await?;
        // The ack carries the seq the message got.
        let seq = loop {
            // Pings (every ping interval, so in any run longer than one) are not
            // answers; only a close or a broken connection ends the run.
            let text = match stream.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => anyhow::bail!("sender socket closed: {frame:?}"),
                Some(Ok(_)) => continue,
                Some(Err(error)) => anyhow::bail!("sender socket failed: {error}"),
                None => anyhow::bail!("sender socket closed"),
            };
            let v: Value = serde_json::from_str(&text)?;
            if v["type"] == "ack" {
                break v["data"]["message"]["seq"].as_u64().unwrap_or(0);
            }
            if v["type"] == "error" {
                anyhow::bail!("send refused: {v}");
            }
        };
        sent_at.insert(seq, t);
        tokio::time::sleep(interval).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let complete = {
            let a = arrivals.lock().await;
            sent_at
                .keys()
                .all(|s| a.get(s).is_some_and(|v| v.len() >= members))
        };
        if complete || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for r in &readers {
        r.abort();
    }
    let arrivals = arrivals.lock().await;
    let mut last = report::latency_histogram();
    let mut each = report::latency_histogram();
    let mut missing = 0usize;
    let mut duplicates = 0usize;
    for (seq, t0) in &sent_at {
        let times = arrivals.get(seq).cloned().unwrap_or_default();
        missing += members.saturating_sub(times.len());
        duplicates += times.len().saturating_sub(members);
        for t in &times {
            let _ = each.record(t.saturating_sub(*t0) / 1000);
        }
        if let Some(max) = times.iter().max() {
            let _ = last.record(max.saturating_sub(*t0) / 1000);
        }
    }
    Ok(json!({
        "scenario": "group",
        "members": members,
        "messages": messages,
        "missing_deliveries": missing,
        "duplicate_deliveries": duplicates,
        "last_member_latency": report::latency_json(&last),
        "last_member_summary": report::latency_line(&last),
        "delivery_latency": report::latency_json(&each),
    }))
}
