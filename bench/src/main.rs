//! `beehive-bench`: load generator and ceiling measurements for Beehive.
//!
//! Results go to stdout as JSON (one document per run) and to stderr as a summary.
//! The server under test needs `BEEHIVE_RATE_LIMITS=off`.

mod ceiling;
mod client;
mod report;
mod scenario;

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use scenario::chat::{ChatOptions, Pair};

#[derive(Parser)]
#[command(
    name = "beehive-bench",
    about = "Load generator and ceilings for Beehive"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (n, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a duration"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?} is not a duration")),
    }
}

#[derive(Subcommand)]
enum Command {
    /// P pairs sending 1:1 messages; throughput, latency, loss, duplicates, order.
    Chat {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        #[arg(long, default_value = "20s", value_parser = duration)]
        duration: Duration,
        /// Total messages per second; 0 = flat out.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Unacknowledged sends per sender.
        #[arg(long, default_value_t = 32)]
        window: usize,
        /// Also measure search lag during the run: a probe message every
        /// `--probe-interval`, searched for until found (needs the search component).
        #[arg(long)]
        search_probe: bool,
        #[arg(long, default_value = "1s", value_parser = duration)]
        probe_interval: Duration,
    },
    /// One sender, M online members; latency until the last member has each message.
    Group {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, default_value_t = 200)]
        members: usize,
        #[arg(long, default_value_t = 20)]
        messages: u64,
        #[arg(long, default_value = "200ms", value_parser = duration)]
        interval: Duration,
    },
    /// N idle authenticated WebSockets; connect rate and gateway RSS per connection.
    Connections {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Distinct users the connections belong to (devices spread over them).
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Client processes (each may hold at most ~20k sockets here).
        #[arg(long, default_value_t = 1)]
        procs: usize,
        /// Gateway process ids whose RSS to measure.
        #[arg(long, value_delimiter = ',')]
        pid: Vec<u32>,
        /// Loopback source addresses per client process.
        #[arg(long, default_value_t = 4)]
        sources: u8,
        /// Keep the connections open this long after measuring.
        #[arg(long, default_value = "0s", value_parser = duration)]
        hold: Duration,
        /// Gateway URLs the sockets go to, comma-separated; client process `p` uses
        /// the `p`-th (round robin). Defaults to `--url`. Users register via `--url`.
        #[arg(long, value_delimiter = ',')]
        gateways: Vec<String>,
    },
    #[command(hide = true)]
    ConnectionsChild {
        #[arg(long)]
        url: String,
        #[arg(long)]
        users_file: std::path::PathBuf,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        offset: usize,
        #[arg(long)]
        first_source: u8,
        #[arg(long)]
        sources: u8,
    },
    /// Chat under faults (see tests/fault/run.py): resends, reconnects, syncs, then
    /// checks that every acknowledged message reached every device exactly once, in
    /// order. Exits non-zero on any violation.
    Fault {
        /// Gateway URLs, comma-separated; clients spread over them.
        #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
        url: Vec<String>,
        #[arg(long, default_value_t = 20)]
        pairs: usize,
        /// Members of one extra group with its own sender (0 = none).
        #[arg(long, default_value_t = 0)]
        group_members: usize,
        /// Devices (WebSockets) per recipient.
        #[arg(long, default_value_t = 2)]
        devices: usize,
        #[arg(long, default_value = "60s", value_parser = duration)]
        duration: Duration,
        /// Messages per second per sender.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        #[arg(long, default_value_t = 16)]
        window: usize,
        /// Time after sending for outstanding sends and catch-up.
        #[arg(long, default_value = "60s", value_parser = duration)]
        settle: Duration,
        /// Created when sending starts (for the fault injector).
        #[arg(long)]
        ready_file: Option<std::path::PathBuf>,
    },
    /// The transport ceiling: `chat` against a minimal in-process WebSocket relay.
    CeilingRelay {
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        #[arg(long, default_value = "10s", value_parser = duration)]
        duration: Duration,
        #[arg(long, default_value_t = 32)]
        window: usize,
    },
    /// The durability ceiling: batched inserts of message rows into PostgreSQL.
    CeilingPostgres {
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        database_url: String,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, default_value = "10s", value_parser = duration)]
        duration: Duration,
    },
    /// The embedded search index in this process: bulk indexing of N generated
    /// messages (mixed Chinese and English), then query latency per query kind, index
    /// size and RSS. Run it in release mode.
    Search {
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
        #[arg(long, default_value_t = 3_000)]
        conversations: usize,
        /// Messages per commit.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        /// Queries per kind.
        #[arg(long, default_value_t = 500)]
        queries: usize,
        /// Index directory (a temporary one by default).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Keep the index directory afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// tus upload and download throughput of one file through the gateway, as ratios
    /// of a plain copy (1 MiB blocks + fsync) on the same disk in the same run; RSS of
    /// the gateway and file processes during parallel uploads and downloads of
    /// several sizes. Exits non-zero if any byte comes back different.
    Files {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Size of the throughput file.
        #[arg(long, default_value = "100MiB", value_parser = scenario::files::byte_size)]
        size: u64,
        /// Bytes per tus PATCH (the console's tus client sends 1 MiB).
        #[arg(long, default_value = "1MiB", value_parser = scenario::files::byte_size)]
        chunk: u64,
        /// Bytes per ranged download request.
        #[arg(long, default_value = "8MiB", value_parser = scenario::files::byte_size)]
        range: u64,
        /// Uploads (then downloads) at once while RSS is sampled.
        #[arg(long, default_value_t = 20)]
        parallel: usize,
        /// File sizes of the RSS phases, comma-separated (0: none).
        #[arg(long, value_delimiter = ',', default_value = "5MiB,50MiB", value_parser = scenario::files::byte_size)]
        rss_sizes: Vec<u64>,
        /// Gateway process ids whose RSS to sample.
        #[arg(long, value_delimiter = ',')]
        pid: Vec<u32>,
        /// File service process ids whose RSS to sample.
        #[arg(long, value_delimiter = ',')]
        file_pid: Vec<u32>,
        /// Directory of the reference copy: the file service's storage directory, or
        /// one on the same disk (default: the temporary directory).
        #[arg(long)]
        copy_dir: Option<std::path::PathBuf>,
    },
    /// Ceilings, then chat and group against the server, with ratios.
    All {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        database_url: String,
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        #[arg(long, default_value = "20s", value_parser = duration)]
        duration: Duration,
        #[arg(long, default_value_t = 200)]
        members: usize,
        /// Unacknowledged sends per sender in the flat-out chat.
        #[arg(long, default_value_t = 32)]
        window: usize,
    },
}

fn prefix() -> String {
    format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn synthetic_pairs(count: usize) -> Vec<Pair> {
    (0..count)
        .map(|n| Pair {
            sender_token: format!("s{n}"),
            recipient_id: format!("r{n}"),
            recipient_token: format!("r{n}"),
            conversation: None,
        })
        .collect()
}

async fn chat(
    url: &str,
    pairs: usize,
    options: ChatOptions,
    search_probe: Option<Duration>,
) -> anyhow::Result<Value> {
    let api = client::Api::new(url)?;
    let prefix = prefix();
    let pairs = scenario::chat::provision(&api, pairs, &prefix)
        .await
        .context("provisioning pairs")?;
    let probe = match search_probe {
        Some(interval) => {
            let probe = scenario::search_lag::Probe::provision(&api, &prefix)
                .await
                .context("provisioning the search probe")?;
            Some(tokio::spawn(probe.run(options.duration, interval)))
        }
        None => None,
    };
    let mut result = scenario::chat::run(url, pairs, options).await?;
    if let Some(probe) = probe {
        result["search_lag"] = probe.await.context("the search probe failed")?;
    }
    Ok(result)
}

async fn relay(pairs: usize, options: ChatOptions) -> anyhow::Result<Value> {
    let base = ceiling::start_relay().await?;
    let mut result = scenario::chat::run(&base, synthetic_pairs(pairs), options).await?;
    result["scenario"] = json!("ceiling_relay");
    Ok(result)
}

fn summary(v: &Value) -> String {
    match v["scenario"].as_str().or(v["ceiling"].as_str()) {
        Some("chat") | Some("ceiling_relay") => {
            format!(
                "{}: {:.0} msg/s, {} (send to ack {}) | sent {} acked {} received {} lost {} dup {} out-of-order {}",
                v["scenario"].as_str().unwrap_or(""),
                v["throughput_msgs_per_s"].as_f64().unwrap_or(0.0),
                v["latency_summary"].as_str().unwrap_or(""),
                v["ack_latency_summary"].as_str().unwrap_or(""),
                v["sent"],
                v["acked"],
                v["received"],
                v["lost"],
                v["duplicates"],
                v["out_of_order"]
            ) + &v["search_lag"]["lag_summary"]
                .as_str()
                .map(|lag| {
                    format!(
                        " | search lag {lag}, missing {}",
                        v["search_lag"]["missing"]
                    )
                })
                .unwrap_or_default()
        }
        Some("group") => format!(
            "group of {}: last member {} | missing {} duplicates {}",
            v["members"],
            v["last_member_summary"].as_str().unwrap_or(""),
            v["missing_deliveries"],
            v["duplicate_deliveries"]
        ),
        Some("connections") => format!(
            "connections: {} of {} in {:.1} s ({:.0}/s), gateway RSS {:.2} KiB per connection",
            v["connected"],
            v["requested"],
            v["connect_seconds"].as_f64().unwrap_or(0.0),
            v["connects_per_s"].as_f64().unwrap_or(0.0),
            v["gateway_rss_kib_per_connection"].as_f64().unwrap_or(0.0)
        ),
        Some("postgres_batched_insert") => format!(
            "postgres ceiling: {:.0} rows/s ({} workers x {} rows/txn)",
            v["rows_per_s"].as_f64().unwrap_or(0.0),
            v["workers"],
            v["batch"]
        ),
        _ => v.to_string(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Chat {
            url,
            pairs,
            duration,
            rate,
            window,
            search_probe,
            probe_interval,
        } => {
            chat(
                &url,
                pairs,
                ChatOptions {
                    duration,
                    rate,
                    window,
                },
                search_probe.then_some(probe_interval),
            )
            .await?
        }
        Command::Group {
            url,
            members,
            messages,
            interval,
        } => {
            let api = client::Api::new(&url)?;
            scenario::group::run(&api, &prefix(), members, messages, interval).await?
        }
        Command::Connections {
            url,
            count,
            users,
            procs,
            pid,
            sources,
            hold,
            gateways,
        } => {
            let api = client::Api::new(&url)?;
            let users = api
                .register_many(&prefix(), users, 8)
                .await
                .context("registering users")?;
            let gateways = if gateways.is_empty() {
                vec![url]
            } else {
                gateways
            };
            let plan = scenario::connections::Plan {
                gateways,
                count,
                procs,
                sources,
                hold,
            };
            scenario::connections::run(&plan, users, &pid).await?
        }
        Command::ConnectionsChild {
            url,
            users_file,
            count,
            offset,
            first_source,
            sources,
        } => {
            let raw: Vec<Value> = serde_json::from_slice(&std::fs::read(&users_file)?)?;
            let users = raw
                .iter()
                .map(|u| client::User {
                    id: u["id"].as_str().unwrap_or("").to_owned(),
                    username: u["username"].as_str().unwrap_or("").to_owned(),
                    token: u["token"].as_str().unwrap_or("").to_owned(),
                })
                .collect();
            return scenario::connections::child(&url, users, count, offset, first_source, sources)
                .await;
        }
        Command::Fault {
            url,
            pairs,
            group_members,
            devices,
            duration,
            rate,
            window,
            settle,
            ready_file,
        } => {
            let result = scenario::fault::run(scenario::fault::FaultOptions {
                gateways: url,
                pairs,
                group_members,
                devices,
                duration,
                rate,
                window,
                settle,
                ready_file,
            })
            .await?;
            report::emit(&scenario::fault::summary(&result), &result);
            anyhow::ensure!(result["ok"] == true, "delivery promise violated");
            return Ok(());
        }
        Command::Search {
            messages,
            conversations,
            batch,
            queries,
            dir,
            keep,
        } => {
            anyhow::ensure!(
                messages > 0 && conversations > 0 && batch > 0 && queries > 0,
                "--messages, --conversations, --batch and --queries must be positive"
            );
            let result = scenario::search::run(scenario::search::SearchOptions {
                messages,
                conversations,
                batch,
                queries,
                dir,
                keep,
                ..scenario::search::SearchOptions::default()
            })
            .await?;
            report::emit(&scenario::search::summary(&result), &result);
            return Ok(());
        }
        Command::Files {
            url,
            size,
            chunk,
            range,
            parallel,
            rss_sizes,
            pid,
            file_pid,
            copy_dir,
        } => {
            let api = client::Api::new(&url)?;
            let user = api
                .register(&format!("{}_files", prefix()))
                .await
                .context("registering the uploader")?;
            let result = scenario::files::run(
                scenario::files::FilesOptions {
                    url,
                    size,
                    chunk,
                    range,
                    parallel,
                    rss_sizes,
                    gateway_pids: pid,
                    file_pids: file_pid,
                    copy_dir: copy_dir.unwrap_or_else(std::env::temp_dir),
                },
                user.token,
            )
            .await?;
            report::emit(&scenario::files::summary(&result), &result);
            return Ok(());
        }
        Command::CeilingRelay {
            pairs,
            duration,
            window,
        } => {
            relay(
                pairs,
                ChatOptions {
                    duration,
                    rate: 0,
                    window,
                },
            )
            .await?
        }
        Command::CeilingPostgres {
            database_url,
            workers,
            batch,
            duration,
        } => ceiling::postgres(&database_url, workers, batch, duration).await?,
        Command::All {
            url,
            database_url,
            pairs,
            duration,
            members,
            window,
        } => {
            let options = ChatOptions {
                duration,
                rate: 0,
                window,
            };
            let pg =
                ceiling::postgres(&database_url, 4, 100, duration.min(Duration::from_secs(10)))
                    .await?;
            eprintln!("{}", summary(&pg));
            let ws = relay(pairs, options).await?;
            eprintln!("{}", summary(&ws));
            let chat = chat(&url, pairs, options, None).await?;
            eprintln!("{}", summary(&chat));
            let api = client::Api::new(&url)?;
            let group =
                scenario::group::run(&api, &prefix(), members, 20, Duration::from_millis(200))
                    .await?;
            let rate = chat["throughput_msgs_per_s"].as_f64().unwrap_or(0.0);
            json!({
                "ceilings": {"postgres": pg, "relay": ws},
                "chat": chat,
                "group": group,
                "ratios": {
                    "chat_to_postgres_ceiling": rate / pg["rows_per_s"].as_f64().unwrap_or(f64::INFINITY),
                    "chat_to_relay_ceiling": rate / ws["throughput_msgs_per_s"].as_f64().unwrap_or(f64::INFINITY),
                },
            })
        }
    };
    let text = if result.get("ratios").is_some() {
        format!("{}\n{}", summary(&result["group"]), result["ratios"])
    } else {
        summary(&result)
    };
    report::emit(&text, &result);
    Ok(())
}
