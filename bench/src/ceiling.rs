//! Ceilings measured by the same tool in the same run, so results are ratios that
//! survive a noisy machine:
//! - the transport ceiling: a minimal WebSocket relay (no persistence, no auth) that
//!   speaks just enough of Beehive's frames (`send` -> `ack` + `message`) for the
//!   `chat` scenario to run against it unchanged;
//! - the durability ceiling: batched multi-row inserts of equivalent message rows
//!   (same columns and unique indexes as Beehive's messages) straight into PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::Executor;
use tokio::sync::{RwLock, mpsc};

type Peers = Arc<RwLock<HashMap<String, mpsc::Sender<String>>>>;

#[derive(Clone, Default)]
struct Relay {
    peers: Peers,
}

/// Starts the relay on a free loopback port; returns its base URL.
pub async fn start_relay() -> anyhow::Result<String> {
    let relay = Relay::default();
    let app = Router::new().route("/ws", get(upgrade)).with_state(relay);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

async fn upgrade(
    ws: WebSocketUpgrade,
    Query(q): Query<HashMap<String, String>>,
    State(relay): State<Relay>,
) -> Response {
    let user = q.get("token").cloned().unwrap_or_default();
    ws.read_buffer_size(4096)
        .on_upgrade(move |socket| serve(socket, user, relay))
}

async fn serve(socket: WebSocket, user: String, relay: Relay) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    relay.peers.write().await.insert(user.clone(), tx.clone());
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    });
    let mut local_seq: u64 = 0;
    while let Some(Ok(frame)) = stream.next().await {
        let Message::Text(text) = frame else { continue };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if v["type"] != "send" {
            continue;
        }
        let data = &v["data"];
        let to = data["to_user_id"].as_str().unwrap_or("").to_owned();
        // One conversation per sender socket here, so a local counter is its seq.
        local_seq += 1;
        let seq = local_seq;
        let message = json!({
            "id": seq.to_string(), "conversation_id": format!("{user}>{to}"), "seq": seq,
            "sender_id": user, "client_msg_id": data["client_msg_id"], "msg_type": "text",
            "content": data["content"], "created_at": "",
        });
        let ack = json!({"type": "ack", "id": v["id"], "data": {"client_msg_id": data["client_msg_id"], "message": message}});
        let _ = tx.send(ack.to_string()).await;
        let peer = relay.peers.read().await.get(&to).cloned();
        if let Some(peer) = peer {
            let _ = peer
                .send(json!({"type": "message", "data": {"message": message}}).to_string())
                .await;
        }
    }
    relay.peers.write().await.remove(&user);
    writer.abort();
}

/// Inserts message-shaped rows in batches of `batch` per transaction from `workers`
/// connections for `duration`; returns rows per second.
pub async fn postgres(
    database_url: &str,
    workers: usize,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<Value> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(workers as u32 + 1)
        .connect(database_url)
        .await?;
    let schema = format!(
        "bench_ceiling_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    pool.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.messages (
           id uuid PRIMARY KEY, conversation_id uuid NOT NULL, seq bigint NOT NULL,
           sender_id uuid NOT NULL, client_msg_id text NOT NULL, msg_type smallint NOT NULL,
           content text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
           UNIQUE (conversation_id, seq), UNIQUE (sender_id, client_msg_id));"
    ))))
    .await?;
    let rows = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let pool = pool.clone();
        let rows = rows.clone();
        let insert = format!(
            "INSERT INTO {schema}.messages (id, conversation_id, seq, sender_id, client_msg_id, msg_type, content)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::uuid[], $5::text[], $6::smallint[], $7::text[])"
        );
        tasks.push(tokio::spawn(async move {
            let conversation = uuid::Uuid::new_v4();
            let sender = uuid::Uuid::new_v4();
            let mut seq: i64 = 0;
            while Instant::now() < deadline {
                let mut ids = Vec::with_capacity(batch);
                let mut convs = Vec::with_capacity(batch);
                let mut seqs = Vec::with_capacity(batch);
                let mut senders = Vec::with_capacity(batch);
                let mut cids = Vec::with_capacity(batch);
                let mut types = Vec::with_capacity(batch);
                let mut contents = Vec::with_capacity(batch);
                for _ in 0..batch {
                    seq += 1;
                    ids.push(uuid::Uuid::now_v7());
                    convs.push(conversation);
                    seqs.push(seq);
                    senders.push(sender);
                    cids.push(format!("w{w}-{seq}"));
                    types.push(1i16);
                    contents.push("a typical short chat message of about one hundred bytes, like most messages are".to_owned());
                }
                let result = sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
                    .bind(ids).bind(convs).bind(seqs).bind(senders).bind(cids).bind(types).bind(contents)
                    .execute(&pool)
                    .await;
                match result {
                    Ok(done) => {
                        rows.fetch_add(done.rows_affected(), Ordering::Relaxed);
                    }
                    Err(error) => {
                        eprintln!("ceiling insert failed: {error}");
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    pool.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA {schema} CASCADE"
    ))))
    .await?;
    let total = rows.load(Ordering::Relaxed);
    Ok(json!({
        "ceiling": "postgres_batched_insert",
        "workers": workers,
        "batch": batch,
        "rows": total,
        "seconds": elapsed.as_secs_f64(),
        "rows_per_s": total as f64 / elapsed.as_secs_f64(),
    }))
}
