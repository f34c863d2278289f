//! `fault`: a fault-tolerant chat load that checks the delivery promise of API.md
//! while something else (tests/fault/run.py) kills and restarts gateways, services and
//! infrastructure underneath it.
//!
//! Senders keep every unacknowledged message and send it again, with the SAME
//! `client_msg_id`, after an error reply, a silent timeout or a reconnect (sends are
//! idempotent, so a resend must return the first message). Each recipient has several
//! devices; every device reconnects with backoff, and on connect and on any gap in the
//! live stream it `sync`s with its last contiguous seq per conversation, as a real
//! client does. After the sending phase and recovery, every device syncs once more on a
//! fresh connection, and the run checks: every acknowledged message reached every
//! recipient device exactly once after seq dedupe (raw duplicates are reported too),
//! with the stored message at each seq being the one acknowledged for it, seqs gap-free,
//! live frames never going backwards, resends returning the first message, and no send
//! left unacknowledged once the system is healthy again. Any violation makes the run
//! fail (non-zero exit).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Api, User, WsSink, WsStream, send_text};

/// Options of a fault run.
#[derive(Clone, Debug)]
pub struct FaultOptions {
    /// Gateway URLs; clients spread over them and move to another one on failure.
    pub gateways: Vec<String>,
    /// Sender/recipient pairs (each its own direct conversation).
    pub pairs: usize,
    /// Members of one extra group (besides its sender); 0 = no group.
    pub group_members: usize,
    /// Devices per recipient, each its own WebSocket.
    pub devices: usize,
    /// How long new messages are sent.
    pub duration: Duration,
    /// Messages per second per sender.
    pub rate: f64,
    /// Unacknowledged sends allowed per sender.
    pub window: usize,
    /// After sending stops: how long outstanding sends may take to be acknowledged and
    /// devices to catch up before the final sync.
    pub settle: Duration,
    /// Created once provisioning is done and sending starts, so the fault injector
    /// knows when to begin.
    pub ready_file: Option<PathBuf>,
}

/// Frame ids, connect and reply timeouts: how long a client waits before it treats a
/// silent server as gone. Generous, since a restarting PostgreSQL stalls calls.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RESEND_AFTER: Duration = Duration::from_secs(8);
const RETRY_AFTER_ERROR: Duration = Duration::from_millis(300);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    resent: AtomicU64,
    acked: AtomicU64,
    reconnects: AtomicU64,
    /// `reconnect` frames of draining gateways (each followed by a reconnect after
    /// the delay it names).
    reconnect_frames: AtomicU64,
    connect_failures: AtomicU64,
    syncs: AtomicU64,
    gap_syncs: AtomicU64,
    live_frames: AtomicU64,
    sync_frames: AtomicU64,
}

/// Error replies by code, and anything else notable, for the report.
#[derive(Default)]
struct Notes {
    error_codes: BTreeMap<String, u64>,
    violations: Vec<String>,
}

impl Notes {
    fn violation(&mut self, text: String) {
        // Keep the report readable; the counts carry the totals.
        if self.violations.len() < 50 {
            self.violations.push(text);
        }
    }
}

/// One pair's sender state, shared with the verification at the end.
#[derive(Default)]
struct SenderLog {
    conversation: Option<String>,
    /// client_msg_id -> (seq, message id) of its first ack.
    acked: HashMap<String, (u64, String)>,
    /// seq -> client_msg_id, to catch two messages stored under one seq.
    by_seq: HashMap<u64, String>,
    /// Sends not acknowledged when the run ended.
    unacked_at_end: usize,
    idempotency_violations: u64,
    seq_collisions: u64,
}

/// One recipient device's view, shared with the verification at the end.
#[derive(Default)]
struct DeviceLog {
    /// conversation -> seq -> client_msg_id, first arrival wins.
    received: HashMap<String, BTreeMap<u64, String>>,
    contiguous: HashMap<String, u64>,
    raw_frames: u64,
    duplicates: u64,
    live_order_violations: u64,
    final_sync_order_violations: u64,
}

impl DeviceLog {
    /// Records a message frame; returns whether it was new.
    fn record(&mut self, conversation: &str, seq: u64, client_msg_id: &str) -> bool {
        self.raw_frames += 1;
        let seqs = self.received.entry(conversation.to_owned()).or_default();
        if seqs.contains_key(&seq) {
            self.duplicates += 1;
            return false;
        }
        seqs.insert(seq, client_msg_id.to_owned());
        let contiguous = self.contiguous.entry(conversation.to_owned()).or_insert(0);
        while seqs.contains_key(&(*contiguous + 1)) {
            *contiguous += 1;
        }
        true
    }

    fn cursors(&self) -> Value {
        json!(self.contiguous)
    }
}

struct Shared {
    counters: Counters,
    notes: Mutex<Notes>,
    /// Set when the devices should stop their live loops (before the final sync).
    stop_devices: AtomicBool,
    started: Instant,
    /// Acks per second since the start of sending, to show what each fault did.
    timeline: Mutex<BTreeMap<u64, u64>>,
    /// Reconnects per second since the start, to show how a drain spreads them.
    reconnect_timeline: Mutex<BTreeMap<u64, u64>>,
}

impl Shared {
    /// Counts a reconnect (of a sender or a device) in the totals and the timeline.
    async fn reconnected(&self) {
        self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        let second = self.started.elapsed().as_secs();
        *self
            .reconnect_timeline
            .lock()
            .await
            .entry(second)
            .or_default() += 1;
    }

    /// A draining gateway's `reconnect` frame: when to come back (API.md: after about
    /// `after_ms`, to any gateway, then `sync`).
    fn reconnect_at(&self, frame: &Value) -> Instant {
        self.counters
            .reconnect_frames
            .fetch_add(1, Ordering::Relaxed);
        let after_ms = frame["data"]["after_ms"].as_u64().unwrap_or(0);
        Instant::now() + Duration::from_millis(after_ms)
    }
}

/// Before reconnecting after a `reconnect` frame: waits out its delay and moves on to
/// the next gateway (the draining one refuses new sockets anyway).
async fn honour_reconnect(told: &mut Option<Instant>, attempt: &mut usize) {
    if let Some(at) = told.take() {
        *attempt += 1;
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

/// One sender and the recipients of its conversation: a befriended pair's direct
/// conversation, or a group.
struct Flow {
    sender: User,
    recipients: Vec<User>,
    /// Known up front for a group; a direct conversation is created by the first send.
    conversation: Option<String>,
}

/// Registers users, befriends each pair and returns (senders, recipients).
pub async fn provision(api: &Api, prefix: &str, pairs: usize) -> anyhow::Result<Vec<(User, User)>> {
    let users = api
        .register_many(prefix, pairs * 2, 8)
        .await
        .context("registering users")?;
    let mut out = Vec::with_capacity(pairs);
    for chunk in users.chunks(2) {
        let [a, b] = chunk else { continue };
        api.befriend(a, b).await.context("befriending a pair")?;
        out.push((a.clone(), b.clone()));
    }
    Ok(out)
}

/// Runs the scenario; returns the report (with `"ok": false` on any violation).
pub async fn run(options: FaultOptions) -> anyhow::Result<Value> {
    anyhow::ensure!(!options.gateways.is_empty(), "no gateway given");
    anyhow::ensure!(options.rate > 0.0, "rate must be positive");
    let api = Api::new(&options.gateways[0])?;
    let prefix = format!("f{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let pairs = provision(&api, &prefix, options.pairs).await?;
    let mut flows: Vec<Flow> = pairs
        .into_iter()
        .map(|(sender, recipient)| Flow {
            sender,
            recipients: vec![recipient],
            conversation: None,
        })
        .collect();
    if options.group_members > 0 {
        let users = api
            .register_many(&format!("{prefix}g"), options.group_members + 1, 8)
            .await
            .context("registering group members")?;
        let (owner, members) = users
            .split_first()
            .ok_or_else(|| anyhow::anyhow!("no group owner"))?;
        let group = api
            .create_group(owner, members)
            .await
            .context("creating the group")?;
        flows.push(Flow {
            sender: owner.clone(),
            recipients: members.to_vec(),
            conversation: Some(group),
        });
    }
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        notes: Mutex::new(Notes::default()),
        stop_devices: AtomicBool::new(false),
        started: Instant::now(),
        timeline: Mutex::new(BTreeMap::new()),
        reconnect_timeline: Mutex::new(BTreeMap::new()),
    });

    let mut device_logs = Vec::new();
    let mut device_tasks = Vec::new();
    for (n, flow) in flows.iter().enumerate() {
        for (r, recipient) in flow.recipients.iter().enumerate() {
            for d in 0..options.devices {
                let k = r * options.devices + d;
                let log = Arc::new(Mutex::new(DeviceLog::default()));
                device_logs.push((n, k, recipient.clone(), log.clone()));
                device_tasks.push(tokio::spawn(device_loop(
                    options.gateways.clone(),
                    n + k + 1,
                    recipient.token.clone(),
                    format!("fault-f{n}-r{r}-d{d}"),
                    log,
                    shared.clone(),
                )));
            }
        }
    }
    if let Some(path) = &options.ready_file {
        std::fs::write(path, b"sending\n").context("writing the ready file")?;
    }
    eprintln!(
        "fault: {} pairs and a group of {} members, {} devices per recipient, provisioned; sending for {:?}",
        options.pairs, options.group_members, options.devices, options.duration
    );

    let send_deadline = Instant::now() + options.duration;
    let settle_deadline = send_deadline + options.settle;
    let mut sender_logs = Vec::new();
    let mut sender_tasks = Vec::new();
    for (n, flow) in flows.iter().enumerate() {
        let log = Arc::new(Mutex::new(SenderLog {
            conversation: flow.conversation.clone(),
            ..SenderLog::default()
        }));
        sender_logs.push((n, log.clone()));
        // A group send names the group; a direct one the recipient until the first
        // ack names the conversation.
        let to_user = flow
            .recipients
            .first()
            .map(|u| u.id.clone())
            .unwrap_or_default();
        sender_tasks.push(tokio::spawn(sender_loop(
            options.clone(),
            n,
            flow.sender.token.clone(),
            to_user,
            log,
            shared.clone(),
            send_deadline,
            settle_deadline,
        )));
    }
    for task in sender_tasks {
        let _ = task.await;
    }
    eprintln!(
        "fault: sending done after {:.1} s; waiting for devices to catch up",
        shared.started.elapsed().as_secs_f64()
    );

    // Let the live path and gap syncs deliver what was acknowledged, up to the settle
    // deadline (or a short grace period when the senders used it all).
    let expected = expected_per_recipient(&sender_logs).await;
    let catch_up_deadline = settle_deadline.max(Instant::now() + Duration::from_secs(5));
    loop {
        if caught_up(&device_logs, &expected).await || Instant::now() >= catch_up_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shared.stop_devices.store(true, Ordering::SeqCst);
    for task in device_tasks {
        let _ = task.await;
    }

    // The final sync, on a fresh connection per device, with the device's cursors.
    for (n, k, recipient, log) in &device_logs {
        let (r, d) = (k / options.devices.max(1), k % options.devices.max(1));
        final_sync(
            &options.gateways,
            n + k,
            &recipient.token,
            &format!("fault-f{n}-r{r}-d{d}"),
            log,
            &shared,
        )
        .await;
    }
    verify(&options, &sender_logs, &device_logs, &shared).await
}

/// What each recipient must have: conversation -> (seq -> client_msg_id).
async fn expected_per_recipient(
    sender_logs: &[(usize, Arc<Mutex<SenderLog>>)],
) -> HashMap<usize, (String, HashMap<u64, String>)> {
    let mut out = HashMap::new();
    for (n, log) in sender_logs {
        let log = log.lock().await;
        if let Some(conversation) = &log.conversation {
            let by_seq = log
                .acked
                .iter()
                .map(|(cmid, (seq, _))| (*seq, cmid.clone()))
                .collect();
            out.insert(*n, (conversation.clone(), by_seq));
        }
    }
    out
}

async fn caught_up(
    devices: &[(usize, usize, User, Arc<Mutex<DeviceLog>>)],
    expected: &HashMap<usize, (String, HashMap<u64, String>)>,
) -> bool {
    for (n, _, _, log) in devices {
        let Some((conversation, seqs)) = expected.get(n) else {
            continue;
        };
        let max = seqs.keys().copied().max().unwrap_or(0);
        let have = log
            .lock()
            .await
            .contiguous
            .get(conversation)
            .copied()
            .unwrap_or(0);
        if have < max {
            return false;
        }
    }
    true
}

/// Connects with backoff, moving to the next gateway after each failure, until
/// `give_up` says the run no longer needs this client.
async fn connect(
    gateways: &[String],
    attempt: &mut usize,
    token: &str,
    device: &str,
    shared: &Shared,
    give_up: impl Fn() -> bool,
) -> Option<(WsSink, WsStream)> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let base = &gateways[*attempt % gateways.len()];
        let result = tokio::time::timeout(
            CONNECT_TIMEOUT,
            client::connect_ws(base, token, device, None),
        )
        .await;
        match result {
            Ok(Ok(socket)) => return Some(socket),
            Ok(Err(_)) | Err(_) => {
                shared
                    .counters
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                // The next attempt goes to another gateway: the failed one may be down.
                *attempt += 1;
            }
        }
        if give_up() {
            return None;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A pending send: kept until acknowledged.
struct Pending {
    content: String,
    /// Copies sent so far (over all connections).
    attempts: u32,
    /// When the last copy went out; None = must be sent (again).
    sent_at: Option<Instant>,
    retry_at: Option<Instant>,
}

#[allow(clippy::too_many_arguments)]
async fn sender_loop(
    options: FaultOptions,
    n: usize,
    token: String,
    recipient_id: String,
    log: Arc<Mutex<SenderLog>>,
    shared: Arc<Shared>,
    send_deadline: Instant,
    settle_deadline: Instant,
) {
    let device = format!("fault-s{n}");
    let mut attempt = n;
    let mut next_i: u64 = 0;
    // Ordered by i so resends go out in the original order.
    let mut pending: BTreeMap<u64, (String, Pending)> = BTreeMap::new();
    let interval = Duration::from_secs_f64(1.0 / options.rate);
    let mut next_send = Instant::now();
    let mut first_connect = true;
    let mut told_to_reconnect = None;
    'connection: loop {
        let done = |pending: &BTreeMap<u64, (String, Pending)>| {
            (Instant::now() >= send_deadline && pending.is_empty())
                || Instant::now() >= settle_deadline
        };
        if done(&pending) {
            break;
        }
        honour_reconnect(&mut told_to_reconnect, &mut attempt).await;
        let Some((mut sink, mut stream)) = connect(
            &options.gateways,
            &mut attempt,
            &token,
            &device,
            &shared,
            || Instant::now() >= settle_deadline,
        )
        .await
        else {
            break;
        };
        if !first_connect {
            shared.reconnected().await;
        }
        first_connect = false;
        // Everything unacknowledged goes out again on the new connection.
        for (_, p) in pending.values_mut() {
            p.sent_at = None;
            p.retry_at = None;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if done(&pending) {
                break 'connection;
            }
            let now = Instant::now();
            // New messages, paced, within the window.
            while now < send_deadline && now >= next_send && pending.len() < options.window {
                next_i += 1;
                next_send += interval;
                let cmid = format!("{device}-{next_i}");
                let content = format!("{} {cmid}", client::now_nanos());
                pending.insert(
                    next_i,
                    (
                        cmid,
                        Pending {
                            content,
                            attempts: 0,
                            sent_at: None,
                            retry_at: None,
                        },
                    ),
                );
            }
            if now >= send_deadline || pending.len() >= options.window {
                // Do not build up a burst while the window is full or sending is over.
                next_send = next_send.max(now);
            }
            // (Re)send whatever is due, in order.
            let conversation = log.lock().await.conversation.clone();
            for (cmid, p) in pending.values_mut() {
                let due = match (p.sent_at, p.retry_at) {
                    (_, Some(retry)) => now >= retry,
                    (None, None) => true,
                    (Some(at), None) => now.duration_since(at) >= RESEND_AFTER,
                };
                if !due {
                    continue;
                }
                let resend = p.attempts > 0;
                let frame = send_frame(cmid, conversation.as_deref(), &recipient_id, &p.content);
                if send_text(&mut sink, frame).await.is_err() {
                    continue 'connection;
                }
                let counter = if resend {
                    &shared.counters.resent
                } else {
                    &shared.counters.sent
                };
                counter.fetch_add(1, Ordering::Relaxed);
                p.attempts += 1;
                p.sent_at = Some(now);
                p.retry_at = None;
            }
            tokio::select! {
                _ = tick.tick() => {}
                frame = stream.next() => {
                    let Some(Ok(frame)) = frame else { continue 'connection };
                    let Message::Text(text) = frame else { continue };
                    let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
                    match value["type"].as_str() {
                        Some("ack") => on_ack(&value, &mut pending, &log, &shared).await,
                        Some("reconnect") => told_to_reconnect = Some(shared.reconnect_at(&value)),
                        Some("error") => {
                            let code = value["data"]["code"].as_str().unwrap_or("?").to_owned();
                            *shared.notes.lock().await.error_codes.entry(code).or_default() += 1;
                            if let Some(id) = value["id"].as_str() {
                                for (cmid, p) in pending.values_mut() {
                                    if cmid == id {
                                        p.retry_at = Some(Instant::now() + RETRY_AFTER_ERROR);
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    let mut log = log.lock().await;
    log.unacked_at_end = pending.len();
}

fn send_frame(cmid: &str, conversation: Option<&str>, recipient: &str, content: &str) -> String {
    // The frame id is the client_msg_id, so an error reply names the send it answers.
    let mut data = json!({"client_msg_id": cmid, "msg_type": "text", "content": content});
    match conversation {
        Some(c) => data["conversation_id"] = json!(c),
        None => data["to_user_id"] = json!(recipient),
    }
    json!({"type": "send", "id": cmid, "data": data}).to_string()
}

async fn on_ack(
    value: &Value,
    pending: &mut BTreeMap<u64, (String, Pending)>,
    log: &Mutex<SenderLog>,
    shared: &Shared,
) {
    let message = &value["data"]["message"];
    let (Some(cmid), Some(seq), Some(id), Some(conversation)) = (
        value["data"]["client_msg_id"].as_str(),
        message["seq"].as_u64(),
        message["id"].as_str(),
        message["conversation_id"].as_str(),
    ) else {
        shared
            .notes
            .lock()
            .await
            .violation(format!("malformed ack: {value}"));
        return;
    };
    pending.retain(|_, (c, _)| c != cmid);
    let mut log = log.lock().await;
    if log.conversation.is_none() {
        log.conversation = Some(conversation.to_owned());
    }
    if log.conversation.as_deref() != Some(conversation) {
        shared.notes.lock().await.violation(format!(
            "{cmid} acked in conversation {conversation}, expected {:?}",
            log.conversation
        ));
    }
    match log.acked.get(cmid).cloned() {
        Some((first_seq, first_id)) => {
            if first_seq != seq || first_id != id {
                log.idempotency_violations += 1;
                shared.notes.lock().await.violation(format!(
                    "resend of {cmid} returned seq {seq} id {id}, first ack had seq {first_seq} id {first_id}"
                ));
            }
        }
        None => {
            log.acked.insert(cmid.to_owned(), (seq, id.to_owned()));
            if let Some(other) = log.by_seq.insert(seq, cmid.to_owned()) {
                log.seq_collisions += 1;
                shared
                    .notes
                    .lock()
                    .await
                    .violation(format!("seq {seq} acked for both {other} and {cmid}"));
            }
            shared.counters.acked.fetch_add(1, Ordering::Relaxed);
            let second = shared.started.elapsed().as_secs();
            *shared.timeline.lock().await.entry(second).or_default() += 1;
        }
    }
}

/// Sends a `sync` with the device's cursors; the frame id carries a counter so a late
/// `sync_done` of an earlier sync is not mistaken for this one's.
async fn send_sync(sink: &mut WsSink, log: &Mutex<DeviceLog>, k: u64) -> anyhow::Result<String> {
    let id = format!("sync-{k}");
    let cursors = log.lock().await.cursors();
    send_text(
        sink,
        json!({"type": "sync", "id": id, "data": {"cursors": cursors}}).to_string(),
    )
    .await?;
    Ok(id)
}

async fn device_loop(
    gateways: Vec<String>,
    first: usize,
    token: String,
    device: String,
    log: Arc<Mutex<DeviceLog>>,
    shared: Arc<Shared>,
) {
    let mut attempt = first;
    let mut sync_counter = 0u64;
    let mut first_connect = true;
    let mut told_to_reconnect = None;
    'connection: while !shared.stop_devices.load(Ordering::SeqCst) {
        honour_reconnect(&mut told_to_reconnect, &mut attempt).await;
        let Some((mut sink, mut stream)) =
            connect(&gateways, &mut attempt, &token, &device, &shared, || {
                shared.stop_devices.load(Ordering::SeqCst)
            })
            .await
        else {
            break;
        };
        if !first_connect {
            shared.reconnected().await;
        }
        first_connect = false;
        // Highest seq seen live on this connection, per conversation.
        let mut live_max: HashMap<String, u64> = HashMap::new();
        sync_counter += 1;
        shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
        let Ok(mut syncing) = send_sync(&mut sink, &log, sync_counter).await.map(Some) else {
            continue;
        };
        let mut resync_at: Option<Instant> = None;
        let mut gap_seen = false;
        let mut check = tokio::time::interval(Duration::from_millis(100));
        while !shared.stop_devices.load(Ordering::SeqCst) {
            if syncing.is_none()
                && let Some(at) = resync_at
                && Instant::now() >= at
            {
                resync_at = None;
                sync_counter += 1;
                shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
                match send_sync(&mut sink, &log, sync_counter).await {
                    Ok(id) => syncing = Some(id),
                    Err(_) => continue 'connection,
                }
            }
            tokio::select! {
                _ = check.tick() => {}
                frame = stream.next() => {
                    let Some(Ok(frame)) = frame else { continue 'connection };
                    let Message::Text(text) = frame else { continue };
                    let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
                    match value["type"].as_str() {
                        Some("message") => {
                            let in_sync = syncing.is_some();
                            let counter = if in_sync { &shared.counters.sync_frames } else { &shared.counters.live_frames };
                            counter.fetch_add(1, Ordering::Relaxed);
                            let Some((conversation, seq, cmid)) = message_fields(&value) else {
                                shared.notes.lock().await.violation(format!("malformed message frame: {value}"));
                                continue;
                            };
                            let mut l = log.lock().await;
                            let new = l.record(&conversation, seq, &cmid);
                            if !in_sync {
                                let max = live_max.entry(conversation.clone()).or_insert(0);
                                if new && seq < *max {
                                    l.live_order_violations += 1;
                                    drop(l);
                                    shared.notes.lock().await.violation(format!(
                                        "{device}: live seq {seq} of {conversation} after live seq {max}"
                                    ));
                                    l = log.lock().await;
                                }
                                *max = (*max).max(seq);
                            }
                            let contiguous = l.contiguous.get(&conversation).copied().unwrap_or(0);
                            if seq > contiguous + 1 {
                                // A gap: something was not delivered live; a client syncs.
                                gap_seen = true;
                            }
                            drop(l);
                            if gap_seen && syncing.is_none() && resync_at.is_none() {
                                shared.counters.gap_syncs.fetch_add(1, Ordering::Relaxed);
                                resync_at = Some(Instant::now());
                                gap_seen = false;
                            }
                        }
                        Some("reconnect") => told_to_reconnect = Some(shared.reconnect_at(&value)),
                        Some("sync_done") if value["id"].as_str() == syncing.as_deref() => {
                            syncing = None;
                            if value["data"]["has_more"] == true || gap_seen {
                                gap_seen = false;
                                resync_at = Some(Instant::now());
                            }
                        }
                        Some("error") if value["id"].as_str() == syncing.as_deref() => {
                            let code = value["data"]["code"].as_str().unwrap_or("?").to_owned();
                            *shared.notes.lock().await.error_codes.entry(format!("sync:{code}")).or_default() += 1;
                            syncing = None;
                            resync_at = Some(Instant::now() + RETRY_AFTER_ERROR);
                        }
                        _ => {}
                    }
                }
            }
        }
        break;
    }
}

fn message_fields(value: &Value) -> Option<(String, u64, String)> {
    let message = &value["data"]["message"];
    Some((
        message["conversation_id"].as_str()?.to_owned(),
        message["seq"].as_u64()?,
        message["client_msg_id"].as_str()?.to_owned(),
    ))
}

/// Syncs until `has_more` is false on a fresh connection; new messages must come in
/// ascending seq order per conversation.
async fn final_sync(
    gateways: &[String],
    first: usize,
    token: &str,
    device: &str,
    log: &Mutex<DeviceLog>,
    shared: &Shared,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = first;
    let mut k = 1_000_000u64;
    'connection: while Instant::now() < deadline {
        // The device loops are stopped, so `connect` would give up at once: connect here.
        let base = &gateways[attempt % gateways.len()];
        let Ok(Ok((mut sink, mut stream))) = tokio::time::timeout(
            CONNECT_TIMEOUT,
            client::connect_ws(base, token, device, None),
        )
        .await
        else {
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let mut last_new: HashMap<String, u64> = HashMap::new();
        loop {
            k += 1;
            shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
            let Ok(id) = send_sync(&mut sink, log, k).await else {
                continue 'connection;
            };
            let more = loop {
                let next = tokio::time::timeout(Duration::from_secs(30), stream.next()).await;
                let Ok(Some(Ok(frame))) = next else {
                    continue 'connection;
                };
                let Message::Text(text) = frame else { continue };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                match value["type"].as_str() {
                    Some("message") => {
                        shared.counters.sync_frames.fetch_add(1, Ordering::Relaxed);
                        let Some((conversation, seq, cmid)) = message_fields(&value) else {
                            continue;
                        };
                        let mut l = log.lock().await;
                        if l.record(&conversation, seq, &cmid) {
                            let last = last_new.entry(conversation.clone()).or_insert(0);
                            if seq < *last {
                                l.final_sync_order_violations += 1;
                                drop(l);
                                shared.notes.lock().await.violation(format!(
                                    "{device}: final sync gave seq {seq} of {conversation} after {last}"
                                ));
                            }
                            *last = (*last).max(seq);
                        }
                    }
                    Some("sync_done") if value["id"].as_str() == Some(id.as_str()) => {
                        break value["data"]["has_more"] == true;
                    }
                    Some("error") if value["id"].as_str() == Some(id.as_str()) => {
                        tokio::time::sleep(RETRY_AFTER_ERROR).await;
                        break true;
                    }
                    _ => {}
                }
            };
            if !more {
                return;
            }
        }
    }
    shared.notes.lock().await.violation(format!(
        "{device}: the final sync did not complete within 60 s"
    ));
}

async fn verify(
    options: &FaultOptions,
    sender_logs: &[(usize, Arc<Mutex<SenderLog>>)],
    device_logs: &[(usize, usize, User, Arc<Mutex<DeviceLog>>)],
    shared: &Shared,
) -> anyhow::Result<Value> {
    let expected = expected_per_recipient(sender_logs).await;
    let mut acked_total = 0u64;
    let mut unacked_at_end = 0u64;
    let mut idempotency = 0u64;
    let mut collisions = 0u64;
    for (_, log) in sender_logs {
        let log = log.lock().await;
        acked_total += log.acked.len() as u64;
        unacked_at_end += log.unacked_at_end as u64;
        idempotency += log.idempotency_violations;
        collisions += log.seq_collisions;
    }
    let mut notes = shared.notes.lock().await;
    let (mut expected_deliveries, mut delivered, mut missing, mut mismatched, mut gaps) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut raw, mut duplicates, mut live_order, mut final_order, mut unacked_delivered) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for (n, d, _, log) in device_logs {
        let log = log.lock().await;
        raw += log.raw_frames;
        duplicates += log.duplicates;
        live_order += log.live_order_violations;
        final_order += log.final_sync_order_violations;
        let Some((conversation, want)) = expected.get(n) else {
            continue;
        };
        let empty = BTreeMap::new();
        let have = log.received.get(conversation).unwrap_or(&empty);
        // A recipient is in exactly one conversation here; anything else is stray.
        for other in log.received.keys().filter(|c| *c != conversation) {
            notes.violation(format!(
                "flow {n} device {d} got messages of conversation {other}"
            ));
            mismatched += 1;
        }
        expected_deliveries += want.len() as u64;
        for (seq, cmid) in want {
            match have.get(seq) {
                None => {
                    missing += 1;
                    notes.violation(format!(
                        "flow {n} device {d}: acked seq {seq} ({cmid}) never arrived"
                    ));
                }
                Some(got) if got != cmid => {
                    mismatched += 1;
                    notes.violation(format!(
                        "flow {n} device {d}: seq {seq} is {got}, acked as {cmid}"
                    ));
                }
                Some(_) => delivered += 1,
            }
        }
        let wanted: std::collections::HashSet<&String> = want.values().collect();
        unacked_delivered += have.values().filter(|c| !wanted.contains(c)).count() as u64;
        let max = have.keys().next_back().copied().unwrap_or(0);
        let hole = max - have.len() as u64;
        if hole > 0 {
            gaps += hole;
            notes.violation(format!(
                "flow {n} device {d}: {hole} seqs missing below {max} (seqs must be gap-free)"
            ));
        }
    }
    let c = &shared.counters;
    let failures = missing
        + mismatched
        + gaps
        + live_order
        + final_order
        + idempotency
        + collisions
        + unacked_at_end;
    let progress = acked_total > 0;
    if !progress {
        notes.violation("no message was acknowledged at all".to_owned());
    }
    let timeline: Vec<Value> = shared
        .timeline
        .lock()
        .await
        .iter()
        .map(|(s, n)| json!([s, n]))
        .collect();
    let reconnect_timeline = shared.reconnect_timeline.lock().await.clone();
    let peak_reconnects_per_second = reconnect_timeline.values().max().copied().unwrap_or(0);
    let reconnects_per_second: Vec<Value> = reconnect_timeline
        .iter()
        .map(|(s, n)| json!([s, n]))
        .collect();
    Ok(json!({
        "scenario": "fault",
        "ok": failures == 0 && progress && notes.violations.is_empty(),
        "pairs": options.pairs,
        "group_members": options.group_members,
        "devices_per_recipient": options.devices,
        "gateways": options.gateways,
        "seconds": shared.started.elapsed().as_secs_f64(),
        "sent": c.sent.load(Ordering::Relaxed),
        "resent": c.resent.load(Ordering::Relaxed),
        "acked": acked_total,
        "unacked_at_end": unacked_at_end,
        "expected_deliveries": expected_deliveries,
        "delivered_exactly_once": delivered,
        "missing": missing,
        "mismatched": mismatched,
        "seq_gaps": gaps,
        "raw_message_frames": raw,
        "raw_duplicates": duplicates,
        "live_order_violations": live_order,
        "final_sync_order_violations": final_order,
        "idempotency_violations": idempotency,
        "seq_collisions": collisions,
        "delivered_but_never_acked": unacked_delivered,
        "reconnects": c.reconnects.load(Ordering::Relaxed),
        "reconnect_frames": c.reconnect_frames.load(Ordering::Relaxed),
        "peak_reconnects_per_second": peak_reconnects_per_second,
        "reconnects_per_second": reconnects_per_second,
        "connect_failures": c.connect_failures.load(Ordering::Relaxed),
        "syncs": c.syncs.load(Ordering::Relaxed),
        "gap_syncs": c.gap_syncs.load(Ordering::Relaxed),
        "live_frames": c.live_frames.load(Ordering::Relaxed),
        "sync_frames": c.sync_frames.load(Ordering::Relaxed),
        "error_replies": notes.error_codes,
        "violations": notes.violations,
        "acks_per_second": timeline,
    }))
}

/// One line for humans.
pub fn summary(v: &Value) -> String {
    format!(
        "fault: {} | acked {} of {} sent ({} resends), {} deliveries expected, {} exactly once, \
         missing {}, mismatched {}, seq gaps {}, raw duplicates {}, live order violations {}, \
         final sync order violations {}, idempotency violations {}, unacked at end {}, \
         reconnects {} (peak {}/s, {} reconnect frames), syncs {} ({} after gaps)",
        if v["ok"] == true { "OK" } else { "FAILED" },
        v["acked"],
        v["sent"],
        v["resent"],
        v["expected_deliveries"],
        v["delivered_exactly_once"],
        v["missing"],
        v["mismatched"],
        v["seq_gaps"],
        v["raw_duplicates"],
        v["live_order_violations"],
        v["final_sync_order_violations"],
        v["idempotency_violations"],
        v["unacked_at_end"],
        v["reconnects"],
        v["peak_reconnects_per_second"],
        v["reconnect_frames"],
        v["syncs"],
        v["gap_syncs"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: usize) -> User {
        User {
            id: format!("u{n}"),
            username: format!("u{n}"),
            token: String::new(),
        }
    }

    fn shared() -> Shared {
        Shared {
            counters: Counters::default(),
            notes: Mutex::new(Notes::default()),
            stop_devices: AtomicBool::new(false),
            started: Instant::now(),
            timeline: Mutex::new(BTreeMap::new()),
            reconnect_timeline: Mutex::new(BTreeMap::new()),
        }
    }

    fn options() -> FaultOptions {
        FaultOptions {
            gateways: vec!["http://127.0.0.1:1".into()],
            pairs: 1,
            group_members: 0,
            devices: 2,
            duration: Duration::from_secs(1),
            rate: 1.0,
            window: 1,
            settle: Duration::from_secs(1),
            ready_file: None,
        }
    }

    /// One pair whose sender got acks for seqs 1..=3, and two devices fed `frames`.
    async fn check(frames: [&[(u64, &str)]; 2]) -> Value {
        let mut sender = SenderLog {
            conversation: Some("c".into()),
            ..SenderLog::default()
        };
        for seq in 1..=3u64 {
            sender
                .acked
                .insert(format!("m{seq}"), (seq, format!("id{seq}")));
        }
        let senders = vec![(0, Arc::new(Mutex::new(sender)))];
        let mut devices = Vec::new();
        for (d, frames) in frames.iter().enumerate() {
            let mut log = DeviceLog::default();
            for (seq, cmid) in frames.iter() {
                log.record("c", *seq, cmid);
            }
            devices.push((0, d, user(1), Arc::new(Mutex::new(log))));
        }
        verify(&options(), &senders, &devices, &shared())
            .await
            .expect("verify")
    }

    const ALL: &[(u64, &str)] = &[(1, "m1"), (2, "m2"), (3, "m3")];

    #[tokio::test]
    async fn complete_delivery_passes_and_counts_raw_duplicates() {
        let v = check([ALL, &[(1, "m1"), (3, "m3"), (2, "m2"), (3, "m3")]]).await;
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["delivered_exactly_once"], 6);
        assert_eq!(v["raw_duplicates"], 1);
    }

    #[tokio::test]
    async fn a_missing_message_fails() {
        let v = check([ALL, &[(1, "m1"), (2, "m2")]]).await;
        assert_eq!(v["ok"], false);
        assert_eq!(v["missing"], 1);
    }

    #[tokio::test]
    async fn a_different_message_under_an_acked_seq_fails() {
        let v = check([ALL, &[(1, "m1"), (2, "other"), (3, "m3")]]).await;
        assert_eq!(v["ok"], false);
        assert_eq!(v["mismatched"], 1);
    }

    #[tokio::test]
    async fn a_gap_in_seqs_fails_even_beyond_the_acked_ones() {
        let v = check([ALL, &[(1, "m1"), (2, "m2"), (3, "m3"), (5, "late")]]).await;
        assert_eq!(v["ok"], false);
        assert_eq!(v["seq_gaps"], 1);
        assert_eq!(v["delivered_but_never_acked"], 1);
    }

    #[test]
    fn contiguous_cursor_advances_only_over_gap_free_prefixes() {
        let mut log = DeviceLog::default();
        assert!(log.record("c", 2, "m2"));
        assert_eq!(log.contiguous["c"], 0);
        assert!(log.record("c", 1, "m1"));
        assert_eq!(log.contiguous["c"], 2);
        assert!(!log.record("c", 1, "m1"));
        assert_eq!((log.raw_frames, log.duplicates), (3, 1));
    }
}
