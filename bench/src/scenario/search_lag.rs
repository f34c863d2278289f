//! `--search-probe` of `chat`: how long after its `ack` a message becomes searchable,
//! measured while the chat load runs (issue 10: "search lag under 2 s while the chat
//! load generator runs at 1,000 msg/s").
//!
//! A probe user sends a message carrying a word nobody else uses every `interval`,
//! over REST, and then asks search for that word every [`POLL`] until the message is
//! found. The lag is from the send's reply (the message is stored) to the first hit,
//! so it covers the outbox relay, RabbitMQ, the indexer's batch and commit, and the
//! query: everything between a stored message and a user finding it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::{Api, User};
use crate::report;

/// How often the probe asks search while waiting for its message.
const POLL: Duration = Duration::from_millis(20);
/// A probe message not found within this is counted as missing.
const GIVE_UP: Duration = Duration::from_secs(30);

/// The probe's users and their conversation.
pub struct Probe {
    api: Api,
    sender: User,
    conversation: String,
}

impl Probe {
    /// Registers the probe's pair (names under `prefix`) and their conversation.
    pub async fn provision(api: &Api, prefix: &str) -> anyhow::Result<Self> {
        let users = api.register_many(&format!("{prefix}_probe"), 2, 2).await?;
        let (sender, other) = (&users[0], &users[1]);
        api.befriend(sender, other).await?;
        let conversation = api.direct_conversation(sender, other).await?;
        Ok(Self {
            api: api.clone(),
            sender: sender.clone(),
            conversation,
        })
    }

    /// Probes every `interval` for `duration`; returns the lag percentiles.
    pub async fn run(self, duration: Duration, interval: Duration) -> Value {
        let mut lags = report::latency_histogram();
        let (mut missing, mut errors) = (0u64, 0u64);
        let deadline = Instant::now() + duration;
        let mut next = Instant::now();
        let mut n = 0u64;
        while Instant::now() < deadline {
            tokio::time::sleep_until(next.into()).await;
            next += interval;
            n += 1;
            // One token: the tokenizer keeps a run of ASCII letters and digits together.
            let word = format!("probe{}x{n}", uuid::Uuid::new_v4().simple());
            if self
                .api
                .send_message(&self.sender, &self.conversation, &format!("lag {word}"))
                .await
                .is_err()
            {
                errors += 1;
                continue;
            }
            let stored = Instant::now();
            loop {
                match self.api.search(&self.sender, &word).await {
                    Ok(hits) if !hits.is_empty() => {
                        let _ = lags.record(stored.elapsed().as_micros() as u64);
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => errors += 1,
                }
                if stored.elapsed() > GIVE_UP {
                    missing += 1;
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
        }
        json!({
            "probes": n,
            "found": lags.len(),
            "missing": missing,
            "errors": errors,
            "lag": report::latency_json(&lags),
            "lag_summary": report::latency_line(&lags),
        })
    }
}
