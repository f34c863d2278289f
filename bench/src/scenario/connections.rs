//! `connections`: N authenticated idle WebSockets, spread over loopback source
//! addresses and (optionally) several client processes, since one process may hold at
//! most ~20k open files here. Reports the connect rate and the gateway's RSS growth per
//! connection.

use std::net::IpAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::client::{self, User};
use crate::report;

/// Opens `count` sockets for `users` (round robin, distinct device ids) from `sources`,
/// `parallel` handshakes at a time, and keeps them open (answering pings) until the
/// returned holders are dropped.
pub async fn open(
    base: &str,
    users: &[User],
    count: usize,
    offset: usize,
    sources: &[IpAddr],
    parallel: usize,
) -> (Vec<tokio::task::JoinHandle<()>>, u64, Duration) {
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let holders = futures::stream::iter(0..count)
        .map(|i| {
            let n = offset + i;
            let user = users[n % users.len()].clone();
            let source = (!sources.is_empty()).then(|| sources[n % sources.len()]);
            let base = base.to_owned();
            let failed = failed.clone();
            async move {
                match client::connect_ws(&base, &user.token, &format!("idle-{n}"), source).await {
                    Ok((sink, mut stream)) => Some(tokio::spawn(async move {
                        let _keep = sink;
                        // Reading answers the server's pings and notices closes.
                        while let Some(Ok(_)) = stream.next().await {}
                    })),
                    Err(error) => {
                        if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("connect failed: {error:#}");
                        }
                        None
                    }
                }
            }
        })
        .buffer_unordered(parallel.max(1))
        .filter_map(|h| async move { h })
        .collect::<Vec<_>>()
        .await;
    (holders, failed.load(Ordering::Relaxed), started.elapsed())
}

/// What the `connections` scenario opens and where.
pub struct Plan {
    /// Gateway base URLs; client process `p` connects to `gateways[p % len]`.
    pub gateways: Vec<String>,
    /// Sockets in all.
    pub count: usize,
    /// Client processes (one may hold at most ~20k sockets here).
    pub procs: usize,
    /// Loopback source addresses per client process.
    pub sources: u8,
    /// How long to keep the sockets open after measuring.
    pub hold: Duration,
}

/// Runs the scenario, spawning `plan.procs` child processes of this binary that each
/// open a share of the connections to one of the gateways.
pub async fn run(plan: &Plan, users: Vec<User>, pids: &[u32]) -> anyhow::Result<Value> {
    let (count, procs, sources) = (plan.count, plan.procs.max(1), plan.sources);
    anyhow::ensure!(!plan.gateways.is_empty(), "no gateway URL");
    anyhow::ensure!(
        (procs as u64) * (sources as u64) < 250,
        "procs x sources must stay below 250 (distinct 127.0.0.x source addresses)"
    );
    let rss_before: Vec<Option<u64>> = pids.iter().map(|p| report::rss_kib(*p)).collect();
    let users_file =
        std::env::temp_dir().join(format!("beehive-bench-users-{}.json", std::process::id()));
    let users_json: Vec<Value> = users
        .iter()
        .map(|u| json!({"id": u.id, "username": u.username, "token": u.token}))
        .collect();
    std::fs::write(&users_file, serde_json::to_vec(&users_json)?)?;
    let exe = std::env::current_exe()?;
    let per = count.div_ceil(procs);
    let started = Instant::now();
    let mut children = Vec::new();
    for p in 0..procs {
        let share = per.min(count.saturating_sub(p * per));
        if share == 0 {
            break;
        }
        let gateway = &plan.gateways[p % plan.gateways.len()];
        let mut child = tokio::process::Command::new(&exe)
            .args(["connections-child", "--url", gateway, "--users-file"])
            .arg(&users_file)
            .args([
                "--count",
                &share.to_string(),
                "--offset",
                &(p * per).to_string(),
            ])
            .args([
                "--first-source",
                &(2 + p * sources as usize).to_string(),
                "--sources",
                &sources.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        children.push((child, BufReader::new(stdout).lines()));
    }
    let mut connected = 0u64;
    let mut failed = 0u64;
    for (_, lines) in children.iter_mut() {
        if let Some(line) = lines.next_line().await? {
            let v: Value = serde_json::from_str(&line)?;
            connected += v["connected"].as_u64().unwrap_or(0);
            failed += v["failed"].as_u64().unwrap_or(0);
        }
    }
    let connect_time = started.elapsed();
    // Let allocations settle (first reads, pings) before measuring.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_after: Vec<Option<u64>> = pids.iter().map(|p| report::rss_kib(*p)).collect();
    tokio::time::sleep(plan.hold).await;
    drop(children);
    let _ = std::fs::remove_file(&users_file);
    let growth: u64 = rss_before
        .iter()
        .zip(&rss_after)
        .map(|(b, a)| a.unwrap_or(0).saturating_sub(b.unwrap_or(0)))
        .sum();
    let per_conn = if connected > 0 {
        growth as f64 / connected as f64
    } else {
        0.0
    };
    Ok(json!({
        "scenario": "connections",
        "requested": count,
        "connected": connected,
        "failed": failed,
        "client_processes": procs,
        "gateways": plan.gateways,
        "connect_seconds": connect_time.as_secs_f64(),
        "connects_per_s": connected as f64 / connect_time.as_secs_f64(),
        "gateway_pids": pids,
        "gateway_rss_before_kib": rss_before,
        "gateway_rss_after_kib": rss_after,
        "gateway_rss_kib_per_connection": per_conn,
    }))
}

/// The child side: opens its share, reports one JSON line, holds until stdin closes.
pub async fn child(
    base: &str,
    users: Vec<User>,
    count: usize,
    offset: usize,
    first_source: u8,
    sources: u8,
) -> anyhow::Result<()> {
    let sources = client::loopback_sources(first_source, sources);
    let (holders, failed, elapsed) = open(base, &users, count, offset, &sources, 256).await;
    println!(
        "{}",
        json!({"connected": holders.len(), "failed": failed, "seconds": elapsed.as_secs_f64()})
    );
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = stdin.next_line().await {}
    drop(holders);
    Ok(())
}
